"""The LE-SDE (Zhang, Wang & Su 2021) and locally elastic stability (Deng, He & Su 2021):
phase diagram, fit to real networks, stability table. See :mod:`memlab.studies.lesde.study`."""

from memlab.studies.base import Result
from memlab.studies.lesde import figures as _figures
from memlab.studies.lesde.study import STUDY, FeatureCallback, LESDEConfig, run

Result.FIGURES[STUDY] = _figures.draw_figures
Result.REPORTS[STUDY] = _figures.build_report

__all__ = ["STUDY", "FeatureCallback", "LESDEConfig", "Result", "run"]
