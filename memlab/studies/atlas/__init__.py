"""The atlas (docs/atlas.md): every measure of one population side by side — memorization,
C-scores and proxies, learning order, local elasticity, membership-inference exposure,
weight spectra — and the questions the five lines of work ask each other, each answered
with a number, an interval and a figure.

    from memlab.studies.atlas import AtlasConfig, run
    result = run(AtlasConfig(run_dir="runs/memorize/population"), out="runs/atlas")
    result.tables["examples"], result.tables["models"], result.summary["questions"]
"""

from memlab.studies.atlas.config import RECIPE, AtlasConfig
from memlab.studies.base import Result, Study, register_study

run = STUDY = register_study(Study(
    name="atlas", package=__name__, config=AtlasConfig,
    headline="memlab.studies.atlas.figures:headline_lines",
    summary="every measure of one population side by side, and the cross-questions",
    description=(
        "Join every per-example measure of one population (memorization with its interval, "
        "label-error score, C-score estimate and cheap proxies, learning order, "
        "near-duplicates, local elasticity, membership-inference vulnerability) and every "
        "per-model one (accuracies, per-layer alpha raw and aspect-corrected, norms), then "
        "answer the questions the research lines ask each other with a Spearman rho, its "
        "95% interval and a verdict. Reads the run RUN (results in RUN/atlas unless --out), "
        "or trains the population first into OUT/population."),
    science="§1-§7", docs="docs/atlas.md", beside_run=True))

__all__ = ["RECIPE", "STUDY", "AtlasConfig", "Result", "run"]
