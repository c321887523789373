"""Moved to :mod:`memlab.models.lm` (the models layer); kept so old imports work."""

from memlab.models.lm import *  # noqa: F401,F403
from memlab.models.lm import build_lm  # noqa: F401
