"""Privacy audit of a population: membership inference (LiRA, RMIA, baselines) against every
model in turn, exposure next to memorization. See :mod:`memlab.studies.audit.study`."""

from memlab.studies.audit import figures as _figures
from memlab.studies.audit.study import STUDY, AuditConfig, run
from memlab.studies.base import Result

Result.FIGURES[STUDY] = _figures.draw_figures
Result.REPORTS[STUDY] = _figures.build_report

__all__ = ["STUDY", "AuditConfig", "Result", "run"]
