"""Counterfactual memorization and influence of language models (Zhang et al. 2021;
docs/science.md §2): which training documents a population of small language models
memorizes, which validation documents depend on one training document, and the shape of
memorization against simplicity.

    from memlab.studies.lm_memorize import LMMemorizeConfig, run
    result = run(LMMemorizeConfig.quick(), out="runs/lm_memorize")
    result.summary["simplicity"]["verdict"], result.tables["lm_memorization"], result.report()

The LM population helpers (``train_lm_population``, ``lm_documents``, ``open_lm_run``) and
``simplicity_shape`` are imported from here on first use (the command line imports no
science).
"""

from typing import Any

from memlab.studies.base import Result, Study, register_study
from memlab.studies.lm_memorize.config import LM_RECIPE, LMMemorizeConfig

run = STUDY = register_study(Study(
    name="lm_memorize", package=__name__, config=LMMemorizeConfig,
    summary="counterfactual memorization and influence of language models",
    description=(
        "Train a population of small language models, each on a random subset (default "
        "25%) of the documents, and measure which training documents they memorize "
        "counterfactually and which validation documents depend on a single training "
        "document (Zhang et al. 2021). Writes the run, Parquet tables, summary.json and "
        "report.html to --out; re-running resumes. Figures: lm_<corpus>_<name>.png."),
    science="§2", docs="docs/lm.md", figure_prefix="lm_"))

_LAZY = {"train_lm_population": "study", "lm_documents": "study", "open_lm_run": "study",
         "simplicity_shape": "shape"}


def __getattr__(name: str) -> Any:
    """The science, imported when first asked for (not by ``memlab lm-memorize --help``)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = ("memlab.measures.shape" if _LAZY[name] == "shape"
              else "memlab.studies.lm_memorize.study")
    return getattr(importlib.import_module(module), name)


__all__ = ["LM_RECIPE", "STUDY", "LMMemorizeConfig", "Result", "lm_documents", "open_lm_run",
           "run", "simplicity_shape", "train_lm_population"]
