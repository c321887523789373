"""Data attribution against a population's ground truth: LDS of cheap methods, datamodels,
self-influence, top-k removal. See :mod:`memlab.studies.attribute.study`."""

from memlab.studies.attribute import figures as _figures
from memlab.studies.attribute.study import STUDY, AttributeConfig, run
from memlab.studies.base import Result

Result.FIGURES[STUDY] = _figures.draw_figures
Result.REPORTS[STUDY] = _figures.build_report

__all__ = ["STUDY", "AttributeConfig", "Result", "run"]
