"""Real data vs noise (Arpit et al. 2017; docs/science.md §3). See
:mod:`memlab.studies.noise.study`."""

from memlab.studies.base import Result
from memlab.studies.noise import figures as _figures
from memlab.studies.noise.callbacks import AdversarialTraining, CriticalSamples, ValidationAccuracy
from memlab.studies.noise.parts import (
    corrupted_examples,
    learning_dynamics,
    make_conditions,
    sweep_populations,
    take_subset,
)
from memlab.studies.noise.study import STUDY, NoiseConfig, run
from memlab.studies.noise.verdicts import NOT_REPRODUCED, REPRODUCED, UNDECIDED, directions

Result.FIGURES[STUDY] = _figures.draw_figures
Result.REPORTS[STUDY] = _figures.build_report

__all__ = ["NOT_REPRODUCED", "REPRODUCED", "STUDY", "UNDECIDED", "AdversarialTraining",
           "CriticalSamples", "NoiseConfig", "Result", "ValidationAccuracy",
           "corrupted_examples", "directions", "learning_dynamics", "make_conditions", "run",
           "sweep_populations", "take_subset"]
