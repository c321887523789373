"""The Student-t interval of a mean, shared by the studies' verdicts (paired differences over
seeds, arms of the removal study)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t ``level`` interval of the mean of the finite
    ``values`` (n,); NaN mean with no finite value, NaN bounds with fewer than two."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1)
                 / math.sqrt(len(values)))
    return mean, mean - half, mean + half
