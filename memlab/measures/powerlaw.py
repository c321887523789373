"""Moved to :mod:`memlab.measures.spectra.powerlaw`; this name keeps old imports working."""

from memlab.measures.spectra.powerlaw import *  # noqa: F403
from memlab.measures.spectra.powerlaw import (  # noqa: F401
    DEFAULT_MIN_TAIL,
    DEFAULT_MIN_TAIL_FRACTION,
    DEFAULT_MIN_TAIL_SPAN,
    REFERENCE_EIGENVALUE_FLOOR,
    REFERENCE_SMALL_N,
    PowerLawFit,
    candidate_scan,
    fit_power_law,
    fit_truncated_power_law,
    truncated_power_law_mle,
)
