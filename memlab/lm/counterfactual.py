"""Counterfactual memorization and influence (Zhang et al. 2021; SCIENCE.md §2).

The estimator of Feldman & Zhang with a real-valued performance P (per-token accuracy, or
minus the loss) instead of 0/1 correctness. With M the (t, n) membership mask of t models
and P the (t, n) performance of every model on every training document:

    cf_mem(i)     = mean_k{ P[k, i]  : M[k, i] } − mean_k{ P[k, i]  : not M[k, i] }
    cf_infl(i, j) = mean_k{ P'[k, j] : M[k, i] } − mean_k{ P'[k, j] : not M[k, i] }

with P' the (t, m) performance on validation documents. Influence for all (i, j) pairs
comes from matrix products, (Mᵀ P')/(Mᵀ 1) − ((1−M)ᵀ P')/((1−M)ᵀ 1), never a loop over
pairs. Standard errors use the sample variances of the two groups,
se = sqrt(var_in / n_in + var_out / n_out) (the binomial formula of memorization.py is the
special case of 0/1 scores). "Simplicity" is the mean performance over *all* models.

(``memlab.measures.memorization`` implements the same masked means for boolean
correctness; this module is the real-valued version.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from memlab.errors import ConfigError
from memlab.measures import memorization
from memlab.measures.memorization import spearman  # noqa: F401  (part of this API)


@dataclass
class MaskedMeans:
    """IN/OUT statistics per column: counts (n,), means (n,) and sample variances (n,)
    (or (n, m) for influence)."""

    n_in: np.ndarray
    n_out: np.ndarray
    mean_in: np.ndarray
    mean_out: np.ndarray
    var_in: np.ndarray
    var_out: np.ndarray

    @property
    def score(self) -> np.ndarray:
        """mean_in − mean_out (NaN where there is no IN or no OUT model)."""
        return self.mean_in - self.mean_out

    @property
    def se(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(self.var_in / self.n_in + self.var_out / self.n_out)


def _mean_var(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased sample variance from a sum, a sum of squares and a count."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        var = (total_sq - count * mean**2) / (count - 1)
        var = np.where(count > 1, np.maximum(var, 0.0), np.nan)
    return mean, var


def _check(mask: np.ndarray, performance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(mask, dtype=bool)
    performance = np.asarray(performance, dtype=np.float64)
    if mask.ndim != 2 or performance.ndim != 2 or mask.shape[0] != performance.shape[0]:
        raise ConfigError(f"mask {mask.shape} and performance {performance.shape} must be "
                          "(models, documents) arrays with the same number of models")
    if not np.isfinite(performance).all():
        raise ConfigError("performance holds NaN or infinite values")
    return mask, performance


def in_out_means(mask: np.ndarray, performance: np.ndarray) -> MaskedMeans:
    """IN/OUT means of every column of ``performance`` (t, n) under ``mask`` (t, n) bool:
    the counterfactual memorization estimate of every document at once."""
    mask, performance = _check(mask, performance)
    if mask.shape != performance.shape:
        raise ConfigError(f"mask {mask.shape} and performance {performance.shape} differ")
    n_in = mask.sum(0)
    n_out = mask.shape[0] - n_in
    sum_in = (performance * mask).sum(0)
    sq_in = (performance**2 * mask).sum(0)
    mean_in, var_in = _mean_var(sum_in, sq_in, n_in)
    mean_out, var_out = _mean_var(performance.sum(0) - sum_in,
                                  (performance**2).sum(0) - sq_in, n_out)
    return MaskedMeans(n_in, n_out, mean_in, mean_out, var_in, var_out)


def counterfactual_influence(mask: np.ndarray, performance_test: np.ndarray) -> MaskedMeans:
    """Influence of every training document i on every validation document j: fields are
    (n_train, n_test) arrays (counts (n_train, 1)). mask (t, n_train) bool,
    performance_test (t, n_test). Four matrix products in all."""
    mask, performance = _check(mask, performance_test)
    member = mask.astype(np.float64)  # (t, n)
    n_in = member.sum(0)[:, None]  # (n, 1)
    n_out = mask.shape[0] - n_in
    sum_in = member.T @ performance  # (n, m)
    sq_in = member.T @ performance**2
    mean_in, var_in = _mean_var(sum_in, sq_in, n_in)
    mean_out, var_out = _mean_var(performance.sum(0)[None, :] - sum_in,
                                  (performance**2).sum(0)[None, :] - sq_in, n_out)
    return MaskedMeans(n_in, n_out, mean_in, mean_out, var_in, var_out)


def _cf_score(mask: np.ndarray, performance: np.ndarray) -> np.ndarray:
    return in_out_means(mask, performance).score


def split_half_reliability(mask: np.ndarray, performance: np.ndarray,
                           n_models: int | None = None, n_splits: int = 5, seed: int = 0
                           ) -> tuple[float, float]:
    """Draw ``n_models`` models (all by default) ``n_splits`` times, split them into two
    disjoint halves, estimate cf_mem from each half and correlate the two rankings.
    Returns (mean Spearman, its standard deviation over splits). The splitting is the
    classification estimator's (memlab.measures.memorization), scored with cf_mem."""
    mask, performance = _check(mask, performance)
    t = mask.shape[0]
    n_models = t if n_models is None else n_models
    if not 4 <= n_models <= t:
        raise ConfigError(f"split-half reliability needs 4 <= n_models <= {t}, got {n_models}")
    result = memorization.split_half_reliability(mask, performance, n_models, n_splits, seed,
                                                 score=_cf_score)
    return result.spearman, result.spearman_sd


def reliability_curve(mask: np.ndarray, performance: np.ndarray,
                      sizes: Sequence[int] | None = None, n_splits: int = 5, seed: int = 0
                      ) -> pd.DataFrame:
    """Split-half reliability for growing numbers of models (default: doubling from 8 up to
    all). Columns: n_models, spearman, spearman_sd."""
    mask, performance = _check(mask, performance)
    t = mask.shape[0]
    if sizes is None:
        sizes = sorted({*(2**k for k in range(3, 20) if 2**k < t), t})
    return memorization.reliability_curve(mask, performance, [s for s in sizes if 4 <= s <= t],
                                          n_splits, seed, score=_cf_score)
