"""Real data vs noise (Arpit et al. 2017; docs/science.md §3): learning order, one-epoch
difficulty, capacity, critical samples and regularizers, each of the paper's directions a
verdict with an interval.

    from memlab.studies.noise import NoiseConfig, run
    result = run(NoiseConfig.quick().replace(data="digits"), out="runs/noise-digits")
    result.tables["directions"][["finding", "verdict"]]

See :mod:`memlab.studies.noise.study` (the parts: :mod:`~memlab.studies.noise.parts`, the
verdicts: :mod:`~memlab.studies.noise.verdicts`).
"""

from memlab.studies.base import Result, Study, register_study
from memlab.studies.noise.config import RECIPE, NoiseConfig

run = STUDY = register_study(Study(
    name="noise", package=__name__, config=NoiseConfig,
    summary="real data vs noise: learning order, critical samples, regularizers",
    description=(
        "Train the same network on real data, random labels (randY), random inputs (randX) "
        "and partial label noise, over many seeds, and measure learning order, one-epoch "
        "difficulty, capacity/time, critical sample ratio and a regularizer sweep (Arpit et "
        "al. 2017); each of the paper's directions gets a verdict from its 95% interval. "
        "Results go to --out: summary.json, tables/*.parquet, report.html; the populations "
        "it trains (under --out/populations) resume when the command is run again."),
    science="§3", docs="docs/noise.md"))

__all__ = ["RECIPE", "STUDY", "NoiseConfig", "Result", "run"]
