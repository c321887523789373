"""The LE-SDE (Zhang, Wang & Su 2021) and locally elastic stability (Deng, He & Su 2021):
phase diagram, fit to real networks, stability table (docs/science.md §6).

    from memlab.studies.lesde import LESDEConfig, run
    result = run(LESDEConfig.quick(), out="runs/lesde")
    result.summary["phase"]["ce"]["threshold"], result.tables["stability"], result.report()

See :mod:`memlab.studies.lesde.study`."""

from memlab.studies.base import Result, Study, register_study
from memlab.studies.lesde.config import RECIPE, LESDEConfig

run = STUDY = register_study(Study(
    name="lesde", package=__name__, config=LESDEConfig,
    headline="memlab.studies.lesde.figures:headline_lines",
    summary="LE-SDE phase diagram, fit to real networks, locally elastic stability",
    description=(
        "Simulate locally elastic SDEs (Zhang, Wang & Su 2021) over intra/inter strength "
        "ratios and noise levels; fit their strengths to one-hidden-layer MLPs trained on "
        "MNIST-1D and digits and compare trajectories; estimate uniform and locally elastic "
        "stability (Deng, He & Su 2021) from a population, with permuted-mask noise floors. "
        "Writes tables/, summary.json and report.html to --out; the populations it trains "
        "resume under --out/populations."),
    science="§6", docs="docs/lesde.md"))

__all__ = ["RECIPE", "STUDY", "LESDEConfig", "Result", "run"]
