"""Weight spectra: the generalization study (``memlab spectra-study``) and the figures and
reports of single-model and population analyses. See :mod:`memlab.studies.spectra_study.study`
and :mod:`memlab.studies.spectra_study.figures`."""

from memlab.studies.base import Result
from memlab.studies.spectra_study import figures as _figures
from memlab.studies.spectra_study.figures import (
           population_report,
           single_model_report,
           write_report,
)
from memlab.studies.spectra_study.study import STUDY, SpectraStudyConfig, run

Result.FIGURES[STUDY] = _figures.draw_figures
Result.REPORTS[STUDY] = _figures.build_report

__all__ = ["STUDY", "Result", "SpectraStudyConfig", "population_report", "run",
           "single_model_report", "write_report"]
