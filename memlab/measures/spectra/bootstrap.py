"""How sure is a tail fit? Bootstrap interval of α and x_min, and the goodness-of-fit p.

Both refit the whole robust procedure of :func:`memlab.measures.spectra.powerlaw.fit_power_law`
(x_min chosen by least KS distance, unbiased α, minimum tail size and span) on B
resampled spectra at once: the resamples are a (B, n) array and every candidate x_min of
every resample is scanned in one vectorized pass over blocks of candidates.

* Interval (nonparametric bootstrap): resample the n eigenvalues with replacement; the
  central ``level`` quantiles of the refitted α and x_min. It captures the uncertainty of
  the x_min choice too, so a spectrum with two competing tails gets a wide, often bimodal,
  interval instead of one confident α.
* Goodness of fit (Clauset, Shalizi & Newman 2009, §4, semi-parametric bootstrap): each
  synthetic spectrum draws each point from the fitted power law above x_min with
  probability n_tail/n, otherwise from the observed eigenvalues below x_min; p is the share
  of synthetic spectra whose refitted KS distance is at least the observed one. p < 0.1
  rules the power law out (their threshold). B = 200 resolves p to about ±0.03 near 0.1.

What the bootstrap assumes: the eigenvalues are exchangeable draws from one distribution.
Eigenvalues of one matrix are not independent (they repel; the bulk is more regular than
an i.i.d. sample), so the interval is an approximation; tests/test_spectra_stats.py measures
its coverage both on exact power-law spectra and on Gaussian matrices with a power-law
column scale (W = G diag(√λ), whose eigenvalues are dependent and mixed with an MP bulk).

Candidates: with more than ``max_candidates`` admissible x_min values, the refits scan
that many, evenly spaced in rank (the observed statistic of the GOF test uses the same
grid, so the comparison stays like for like). The main fit always scans all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from memlab.measures.spectra.powerlaw import (
    DEFAULT_MIN_TAIL,
    DEFAULT_MIN_TAIL_FRACTION,
    DEFAULT_MIN_TAIL_SPAN,
    REFERENCE_EIGENVALUE_FLOOR,
    PowerLawFit,
)

DEFAULT_BOOTSTRAP = 200
DEFAULT_LEVEL = 0.95
DEFAULT_MAX_CANDIDATES = 96
GOF_REJECT_P = 0.1  # Clauset et al.: p below this rules the power law out
_BLOCK_ELEMENTS = 1 << 23  # elements per (resamples × candidates × points) block, ~64 MB


@dataclass(frozen=True)
class TailUncertainty:
    """alpha_lo/alpha_hi, xmin_lo/xmin_hi: bootstrap interval at ``level``; gof_p: the
    goodness-of-fit p-value (nan if not computed); n_bootstrap: resamples per quantity;
    failed_share: share of resamples where no admissible tail existed (left out)."""

    alpha_lo: float
    alpha_hi: float
    xmin_lo: float
    xmin_hi: float
    gof_p: float
    n_bootstrap: int
    level: float
    failed_share: float


def _robust_floor(values: np.ndarray) -> float:
    return max(REFERENCE_EIGENVALUE_FLOOR, 1e-12 * (values.max() if values.size else 0.0))


def candidate_ranks(n: int, needed: int, max_candidates: int) -> np.ndarray:
    """Ranks (0-based, ascending) scanned as x_min: tails of ≥ ``needed`` points, at most
    ``max_candidates`` of them evenly spaced in rank."""
    last = n - max(needed, 2)
    if last < 0:
        return np.zeros(0, dtype=np.int64)
    if last + 1 <= max_candidates:
        return np.arange(last + 1)
    return np.unique(np.linspace(0, last, max_candidates).round().astype(np.int64))


def batched_fit(samples: np.ndarray, *, min_tail: int = DEFAULT_MIN_TAIL,
                min_tail_fraction: float = DEFAULT_MIN_TAIL_FRACTION,
                min_tail_span: float = DEFAULT_MIN_TAIL_SPAN,
                max_candidates: int = DEFAULT_MAX_CANDIDATES,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The robust fit of each row of ``samples`` (B, n), positive values, any order.

    Returns (alpha, xmin, D), each (B,); nan where no candidate is admissible. Every row
    has the same n, so the same candidate ranks are scanned in all of them.
    """
    x = torch.as_tensor(np.sort(samples, axis=1), dtype=torch.float64)
    rows, n = x.shape
    needed = max(min_tail, math.ceil(min_tail_fraction * n))
    ranks = candidate_ranks(n, needed, max_candidates)
    best_d = torch.full((rows,), math.inf, dtype=torch.float64)
    best_alpha = torch.full((rows,), math.nan, dtype=torch.float64)
    best_xmin = torch.full((rows,), math.nan, dtype=torch.float64)
    if ranks.size == 0:
        return best_alpha.numpy(), best_xmin.numpy(), best_d.numpy()
    log_x = x.log()
    suffix = log_x.flip(1).cumsum(1).flip(1)  # Σ_{j ≥ i} ln x_j
    ranks_t = torch.as_tensor(ranks)
    n_tail = (n - ranks_t).to(torch.float64)  # (C,)
    log_ratio_sum = suffix[:, ranks_t] - n_tail * log_x[:, ranks_t]  # (B, C)
    alphas = 1.0 + (n_tail - 1.0) / log_ratio_sum
    admissible = (alphas > 1.0) & (x[:, ranks_t] * min_tail_span <= x[:, -1:])
    alphas = torch.where(admissible, alphas, torch.full_like(alphas, 2.0))  # placeholder
    block = max(1, _BLOCK_ELEMENTS // max(rows * n, 1))
    for start in range(0, ranks.size, block):
        chunk = slice(start, start + block)
        first = int(ranks[start])
        cols = torch.arange(first, n, dtype=torch.float64)  # columns j ≥ smallest rank
        r = ranks_t[chunk].to(torch.float64)  # (c,)
        # As in powerlaw.candidate_scan: columns j < i get k = 0 and ln(λ_j/x_min) = 0,
        # whose gap equals the one at j = i (already in the maximum), so no mask is needed.
        rank_in_tail = (cols[None, :] - r[:, None]).clamp_min_(0.0)  # (c, m)
        log_ratio = (log_x[:, None, first:] - log_x[:, ranks_t[chunk], None]).clamp_min_(0.0)
        fitted = torch.exp(log_ratio.mul_((1.0 - alphas[:, chunk])[:, :, None])).neg_().add_(1)
        inverse = 1.0 / n_tail[chunk]  # (c,)
        steps = (rank_in_tail + 0.5) * inverse[:, None]  # (c, m)
        distance = fitted.sub_(steps[None]).abs_().amax(dim=2) + 0.5 * inverse[None, :]
        distance = torch.where(admissible[:, chunk], distance, torch.full_like(distance, math.inf))
        value, where = distance.min(dim=1)
        better = value < best_d
        best_d = torch.where(better, value, best_d)
        chosen = ranks_t[chunk][where]
        best_alpha = torch.where(better, alphas[:, chunk].gather(1, where[:, None])[:, 0],
                                 best_alpha)
        best_xmin = torch.where(better, x.gather(1, chosen[:, None])[:, 0], best_xmin)
    failed = ~torch.isfinite(best_d)
    best_alpha[failed] = math.nan
    best_xmin[failed] = math.nan
    return best_alpha.numpy(), best_xmin.numpy(), best_d.numpy()


def _quantiles(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def tail_uncertainty(eigenvalues: np.ndarray, fit: PowerLawFit, *,
                     n_bootstrap: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL,
                     gof: bool = True, seed: int = 0,
                     max_candidates: int = DEFAULT_MAX_CANDIDATES,
                     **fit_options: float) -> TailUncertainty:
    """Bootstrap interval of α and x_min and (``gof=True``) the Clauset GOF p-value of a
    robust ``fit`` of ``eigenvalues``. Seeded: the same inputs give the same numbers."""
    nan = math.nan
    if not fit.ok:
        return TailUncertainty(nan, nan, nan, nan, nan, 0, level, nan)
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())
    values = values[np.isfinite(values)]
    x = values[values > _robust_floor(values)]
    n = x.size
    rng = np.random.default_rng(seed)
    resamples = x[rng.integers(0, n, size=(n_bootstrap, n))]
    alphas, xmins, _ = batched_fit(resamples, max_candidates=max_candidates, **fit_options)
    alpha_lo, alpha_hi = _quantiles(alphas, level)
    xmin_lo, xmin_hi = _quantiles(xmins, level)
    gof_p = nan
    if gof:
        gof_p = goodness_of_fit(x, fit, n_bootstrap=n_bootstrap, rng=rng,
                                max_candidates=max_candidates, **fit_options)
    return TailUncertainty(alpha_lo, alpha_hi, xmin_lo, xmin_hi, gof_p, n_bootstrap, level,
                           float(np.mean(~np.isfinite(alphas))))


def goodness_of_fit(x: np.ndarray, fit: PowerLawFit, *, n_bootstrap: int,
                    rng: np.random.Generator, max_candidates: int = DEFAULT_MAX_CANDIDATES,
                    **fit_options: float) -> float:
    """Clauset's semi-parametric bootstrap p-value of the power law fitted to x (sorted,
    above the floor): the share of synthetic spectra fitting no better than the data."""
    n = x.size
    _, _, observed = batched_fit(x[None], max_candidates=max_candidates, **fit_options)
    below = x[x < fit.xmin]
    in_tail = rng.random((n_bootstrap, n)) < fit.n_tail / n
    if below.size == 0:
        in_tail[:] = True
    # Power-law draws above x_min by the inverse CDF (the reported, unbiased α).
    tail_draws = fit.xmin * (1 - rng.random((n_bootstrap, n))) ** (-1 / (fit.alpha - 1))
    body_draws = below[rng.integers(0, max(below.size, 1), size=(n_bootstrap, n))] \
        if below.size else tail_draws
    synthetic = np.where(in_tail, tail_draws, body_draws)
    _, _, distances = batched_fit(synthetic, max_candidates=max_candidates, **fit_options)
    finite = np.isfinite(distances)
    if not finite.any() or not np.isfinite(observed[0]):
        return math.nan
    return float(np.mean(distances[finite] >= observed[0]))


def fixed_xmin_uncertainty(eigenvalues: np.ndarray, xmin: float, *,
                           n_bootstrap: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL,
                           seed: int = 0) -> tuple[float, float, float, float]:
    """For the tail ≥ ``xmin`` with x_min held fixed: (α, α_lo, α_hi, GOF p).

    α is the unbiased MLE; the interval resamples the tail points; the GOF p draws
    synthetic tails of the same size from the fitted power law, refits α on each and
    compares two-sided KS distances. This judges one given tail (e.g. WeightWatcher's),
    not the x_min choice: use :func:`tail_uncertainty` for that.
    """
    tail = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    tail = tail[tail >= xmin]
    n = tail.size
    if n < 3 or tail[-1] <= xmin:
        return (math.nan,) * 4
    rng = np.random.default_rng(seed)

    def alpha_of(samples: np.ndarray) -> np.ndarray:
        return 1.0 + (n - 1) / np.log(samples / xmin).sum(axis=-1)

    def distance(samples: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        ordered = np.sort(samples, axis=-1)
        fitted = 1 - (ordered / xmin) ** (1 - alphas[..., None])
        steps = (np.arange(n) + 0.5) / n
        return np.abs(fitted - steps).max(axis=-1) + 0.5 / n

    alpha = float(alpha_of(tail))
    resampled = alpha_of(tail[rng.integers(0, n, size=(n_bootstrap, n))])
    low, high = _quantiles(resampled, level)
    observed = distance(tail, np.asarray(alpha))
    synthetic = xmin * (1 - rng.random((n_bootstrap, n))) ** (-1 / (alpha - 1))
    gof_p = float(np.mean(distance(synthetic, alpha_of(synthetic)) >= observed))
    return alpha, low, high, gof_p
