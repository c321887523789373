"""Memorization and influence of a population (Feldman & Zhang; docs/science.md §1):
scores, influence, high-influence pairs, reliability, C-scores and the removal study.
See :mod:`memlab.studies.memorize.study`.

    from memlab.studies.memorize import MemorizeConfig, run
    result = run(MemorizeConfig(), out="runs/memorize")
    result.summary["memorized_fraction"], result.tables["scores"], result.report()
"""

from memlab.studies.base import Result
from memlab.studies.memorize import figures as _figures
from memlab.studies.memorize.removal import t_interval
from memlab.studies.memorize.study import (
    RECIPE,
    STUDY,
    MemorizeConfig,
    TargetSEWarning,
    python_only,
    reproduce_command,
    run,
)

Result.FIGURES[STUDY] = _figures.draw_figures
Result.REPORTS[STUDY] = _figures.build_report

__all__ = ["RECIPE", "STUDY", "MemorizeConfig", "Result", "TargetSEWarning", "python_only",
           "reproduce_command", "run", "t_interval"]
