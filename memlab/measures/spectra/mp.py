"""Marchenko–Pastur (MP) fit of the bulk of an ESD, spikes, and the random-matrix edge.

A matrix of i.i.d. entries with standard deviation σ has its WᵀW eigenvalues in
[λ⁻, λ⁺] = N σ² (1 ∓ √(M/N))² (N ≥ M); eigenvalues beyond λ⁺ (plus a Tracy–Widom margin)
are spikes: directions the training put there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Eigenvalues beyond the MP edge by more than this share of it count as spikes, so that
# a few percent of error in the fitted σ does not invent spikes in a random matrix.
SPIKE_MARGIN = 0.05


@lru_cache(maxsize=256)
def _mp_quantile_table(ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, CDF) of the MP law with variance 1 and ratio y = M/N ≤ 1 on a fine grid.

    The substitution x = a + (b − a)(1 − cos θ)/2 removes the square-root singularities
    at both edges, so a plain trapezoid rule is accurate.
    """
    a, b = (1 - math.sqrt(ratio)) ** 2, (1 + math.sqrt(ratio)) ** 2
    theta = np.linspace(0.0, math.pi, 4001)
    x = a + (b - a) * (1 - np.cos(theta)) / 2
    half_width = (b - a) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = half_width**2 * np.sin(theta) ** 2 / (2 * math.pi * ratio * x)
    weight = np.nan_to_num(weight)
    cdf = np.concatenate([[0.0], np.cumsum((weight[1:] + weight[:-1]) / 2 * np.diff(theta))])
    return x, cdf / cdf[-1]


@dataclass(frozen=True)
class MarchenkoPasturFit:
    """MP fit of the bulk. sigma: entry standard deviation of the equivalent random matrix;
    bulk_min/bulk_max: edges λ∓ = N σ² (1 ∓ √(M/N))², in raw eigenvalue units (the
    normalized edge σ²(1 + 1/√Q)² of docs/science.md §5 times N); num_spikes: eigenvalues
    beyond the edge (+ margin); softrank: λ⁺/λ_max."""

    sigma: float
    bulk_min: float
    bulk_max: float
    num_spikes: int
    softrank: float


def mp_edge(sigma: float, n_rows: int, n_cols: int) -> tuple[float, float]:
    """(λ⁻, λ⁺) of WᵀW for an n_rows × n_cols matrix of i.i.d. entries with std ``sigma``."""
    big, small = max(n_rows, n_cols), min(n_rows, n_cols)
    ratio = small / big
    return (big * sigma**2 * (1 - math.sqrt(ratio)) ** 2,
            big * sigma**2 * (1 + math.sqrt(ratio)) ** 2)


def spike_threshold(bulk_max: float, sigma: float, n_rows: int, n_cols: int) -> float:
    """Edge plus margin: the larger of 4 Tracy–Widom widths and SPIKE_MARGIN·λ⁺."""
    big, small = max(n_rows, n_cols), min(n_rows, n_cols)
    tracy_widom = sigma**2 * (math.sqrt(big) + math.sqrt(small)) * (
        1 / math.sqrt(big) + 1 / math.sqrt(small)) ** (1 / 3)
    return max(bulk_max + 4 * tracy_widom, (1 + SPIKE_MARGIN) * bulk_max)


def fit_marchenko_pastur(eigenvalues: np.ndarray, n_rows: int, n_cols: int
                         ) -> MarchenkoPasturFit:
    """Fit σ of the MP law to the bulk by least squares on the 5–75% quantiles.

    Closed form (no search): the MP quantiles scale with σ², so σ² = Σ q_emp q_MP / Σ q_MP².
    The upper quarter is left out so that spikes and a heavy tail do not inflate σ.
    """
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    big, small = max(n_rows, n_cols), min(n_rows, n_cols)
    grid, cdf = _mp_quantile_table(round(small / big, 6))
    probabilities = np.linspace(0.05, 0.75, 29)
    theory = np.interp(probabilities, cdf, grid)  # MP quantiles for σ = 1, in units of N
    empirical = np.quantile(values / big, probabilities)
    sigma = math.sqrt(max(float(empirical @ theory / (theory @ theory)), 0.0))
    bulk_min, bulk_max = mp_edge(sigma, n_rows, n_cols)
    threshold = spike_threshold(bulk_max, sigma, n_rows, n_cols)
    lambda_max = float(values[-1]) if values.size else float("nan")
    return MarchenkoPasturFit(
        sigma=sigma, bulk_min=bulk_min, bulk_max=bulk_max,
        num_spikes=int((values > threshold).sum()),
        softrank=bulk_max / lambda_max if lambda_max > 0 else float("nan"),
    )
