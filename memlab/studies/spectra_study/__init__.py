"""Weight spectra and generalization (Martin & Mahoney; docs/science.md §5): the study
``memlab spectra-study`` (MLPs trained one knob at a time; α and norm metrics against test
accuracy, with bootstrap intervals), and the figures and reports of single-model and
population analyses (``memlab spectra``).

    from memlab.studies.spectra_study import SpectraStudyConfig, run
    result = run(SpectraStudyConfig.quick(), out="runs/spectra_study")
    result.tables["correlations"], result.summary["alpha_spearman"], result.report()

``population_report``, ``single_model_report`` and ``write_report`` (the ``memlab spectra``
reports, :mod:`memlab.studies.spectra_study.figures`) are imported on first use.
"""

from typing import Any

from memlab.studies.base import Result, Study, register_study
from memlab.studies.spectra_study.config import RECIPE, SpectraStudyConfig

run = STUDY = register_study(Study(
    name="spectra_study", package=__name__, config=SpectraStudyConfig,
    summary="train MLPs on MNIST-1D varying one knob at a time; relate α to test accuracy",
    description=(
        "Generalization study: a family of MLPs on MNIST-1D (batch size, width, fraction "
        "of random labels, training length varied one at a time around the base recipe); "
        "Spearman ρ (with bootstrap intervals over models) and Kendall τ between each "
        "spectral metric and test accuracy per knob."),
    science="§5", docs="docs/spectra.md"))

_REPORTS = ("population_report", "single_model_report", "write_report")


def __getattr__(name: str) -> Any:
    """The ``memlab spectra`` reports, imported when first asked for (not by the CLI)."""
    if name not in _REPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from memlab.studies.spectra_study import figures

    return getattr(figures, name)


__all__ = ["RECIPE", "STUDY", "Result", "SpectraStudyConfig", "population_report", "run",
           "single_model_report", "write_report"]
