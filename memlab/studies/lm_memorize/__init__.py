"""Counterfactual memorization of language models (Zhang et al.; docs/science.md §2). See
:mod:`memlab.studies.lm_memorize.study`."""

from memlab.studies.base import Result
from memlab.studies.lm_memorize import figures as _figures
from memlab.studies.lm_memorize.study import (
    LM_RECIPE,
    STUDY,
    LMMemorizeConfig,
    lm_documents,
    open_lm_run,
    run,
    simplicity_shape,
    train_lm_population,
)

Result.FIGURES[STUDY] = _figures.draw_figures
Result.REPORTS[STUDY] = _figures.build_report

__all__ = ["LM_RECIPE", "STUDY", "LMMemorizeConfig", "Result", "lm_documents", "open_lm_run",
           "run", "simplicity_shape", "train_lm_population"]
