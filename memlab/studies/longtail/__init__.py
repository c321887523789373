"""Why memorization pays (Feldman 2020; docs/science.md §1): memorization and its test-accuracy
payoff by subpopulation frequency on long-tailed mixtures. See
:mod:`memlab.studies.longtail.study`."""

from memlab.studies.base import Result
from memlab.studies.longtail import figures as _figures
from memlab.studies.longtail.study import (
    BASELINE,
    CONTROL,
    STUDY,
    LongtailConfig,
    default_knobs,
    measure_population,
    model_counts,
    run,
    strength_grid,
)

Result.FIGURES[STUDY] = _figures.draw_figures
Result.REPORTS[STUDY] = _figures.build_report

__all__ = ["BASELINE", "CONTROL", "STUDY", "LongtailConfig", "Result", "default_knobs",
           "measure_population", "model_counts", "run", "strength_grid"]
