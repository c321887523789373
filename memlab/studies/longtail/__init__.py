"""Why memorization pays (Feldman 2020; docs/science.md §1): memorization and its
test-accuracy payoff by subpopulation frequency on long-tailed mixtures.

    from memlab.studies.longtail import LongtailConfig, run
    result = run(LongtailConfig.quick(), out="runs/longtail")
    result.tables["findings"]

See :mod:`memlab.studies.longtail.study` (the measurements:
:mod:`memlab.measures.longtail`; the verdicts: :mod:`memlab.studies.longtail.verdicts`).
"""

from memlab.studies.base import Result, Study, register_study
from memlab.studies.longtail.config import (
    BASELINE,
    CONTROL,
    RECIPE,
    LongtailConfig,
    default_knobs,
    strength_grid,
)

run = STUDY = register_study(Study(
    name="longtail", package=__name__, config=LongtailConfig,
    summary="long-tail laboratory: the test-accuracy cost of not memorizing",
    description=(
        "Draw long-tailed mixtures of subpopulations (Zipf priors and a uniform no-tail "
        "control), train one population of MLPs per memorization-limiting knob (weight "
        "decay, early stopping, dropout, label smoothing, a small model), and measure "
        "memorization and test accuracy by how often each subpopulation was seen, beside "
        "Feldman's τ₁ estimate of the cost of each unfitted singleton. Writes Parquet "
        "tables, summary.json and report.html to --out; re-running resumes the populations. "
        "The defaults are the --quick preset (Zipf 0.5, 1, 1.5 and the control, one strength "
        "per knob, 96 models per population); --full: six exponents, 512 models, every knob "
        "at several strengths."),
    science="§1", docs="docs/longtail.md"))

__all__ = ["BASELINE", "CONTROL", "RECIPE", "STUDY", "LongtailConfig", "Result",
           "default_knobs", "run", "strength_grid"]
