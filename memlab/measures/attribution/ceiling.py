"""The LDS ceiling that training noise sets: how well the best possible attribution could
predict the outputs of models trained on the held-out masks.

A model trained on mask S_k with seed s has output f_k = T_k + e_ks: T_k what the mask
determines (the mean over seeds), e_ks what the seed adds (initialization, minibatch order,
augmentation, dropout). No attribution method sees the seed, so even the perfect one,
g_k = T_k, correlates with f_k only as far as T explains f. Two replicates A and B, the
same masks trained with independent seeds, measure that: per target z,

    r(z)     = Spearman over masks k of f_k^A(z) with f_k^B(z)   (one replicate's reliability)
    r_SB(z)  = 2 r / (1 + r)                                      (Spearman-Brown: the
               reliability of the mean of the two replicates)
    c(z)     = sqrt(r_SB(z))                                      (the correlation of that
               mean with T: the ceiling of an LDS measured against the mean of A and B)

and the ceiling is the mean of c(z) over targets, as the LDS is the mean of its per-target
correlations. Its companion is :func:`against_replicates`: a method's LDS against the mean
of the two replicates' outputs (the target the ceiling belongs to) and its ratio to the
ceiling. ``single`` = mean sqrt(r) is the ceiling of the plain LDS (against one replicate).

A negative r is sampling noise around a reliability near 0; it gives a negative c(z)
(``sign * sqrt(|r_SB|)``, r_SB clipped to [-1, 1]) instead of 0, so that when outputs are
pure seed noise the mean over targets is centred on 0 rather than pushed up by the square
root's steepness near 0. Standard errors: a bootstrap over targets *and* masks together,
as for the LDS (:mod:`memlab.measures.attribution.lds`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from memlab.errors import ConfigError
from memlab.measures.attribution.lds import column_spearman
from memlab.measures.stats import spearman_brown


def signed_sqrt(x: np.ndarray) -> np.ndarray:
    """sign(x) sqrt(|x|): a square root that keeps noise around 0 centred on 0."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.sqrt(np.abs(x))


@dataclass
class Ceiling:
    """The LDS ceiling from two replicates of the held-out masks.

    mean: mean over targets of sqrt(r_SB), the ceiling of an LDS against the mean of the two
        replicates; se: its bootstrap standard error (targets and masks resampled).
    single: mean over targets of sqrt(r), the ceiling of an LDS against one replicate.
    reliability, reliability_sb: mean over targets of r and of r_SB.
    per_target_r: (n_targets,) Spearman r of the replicates (NaN where one is constant).
    n_models: masks (held-out models) each replicate has.
    """

    mean: float
    se: float
    single: float
    reliability: float
    reliability_sb: float
    per_target_r: np.ndarray
    n_models: int
    boots: np.ndarray | None = None  # the ceiling of each bootstrap resample (NaN: none)
    seed: int = 0

    @property
    def per_target(self) -> np.ndarray:
        """(n_targets,) sqrt(r_SB) per target (signed)."""
        return signed_sqrt(spearman_brown(self.per_target_r))

    def as_dict(self) -> dict:
        return {"ceiling": self.mean, "ceiling_se": self.se, "ceiling_single": self.single,
                "reliability": self.reliability, "reliability_sb": self.reliability_sb,
                "n_models": self.n_models,
                "n_targets": int(np.isfinite(self.per_target_r).sum())}


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ConfigError(f"the two replicates' outputs must both be (n_models, n_targets); "
                          f"got {a.shape} and {b.shape}")
    if a.shape[0] < 3:
        raise ConfigError(f"the ceiling needs at least 3 masks, got {a.shape[0]}")
    return a, b


def _resamples(n_models: int, n_targets: int, n_boot: int, seed: int
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The index (rows, cols) of each bootstrap resample, drawn as lds_from_predictions
    draws them, so that the ceiling and every ratio to it see the same resamples."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.ix_(rng.integers(0, n_models, n_models), rng.integers(0, n_targets, n_targets))


def _mean(values: np.ndarray) -> float:
    """Mean over the finite targets, as the LDS's (NaN when none is)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def noise_ceiling(a: np.ndarray, b: np.ndarray, n_boot: int = 200, seed: int = 0) -> Ceiling:
    """The ceiling from outputs ``a`` and ``b`` (n_models, n_targets) of the same masks
    trained with independent seeds (row k of both: mask k)."""
    a, b = _check(a, b)
    r = column_spearman(a, b)
    boots = np.array([_mean(signed_sqrt(spearman_brown(column_spearman(a[at], b[at]))))
                      for at in _resamples(*a.shape, n_boot, seed)])
    return Ceiling(_mean(signed_sqrt(spearman_brown(r))), _sd(boots), _mean(signed_sqrt(r)),
                   _mean(r), _mean(spearman_brown(r)), r, a.shape[0], boots, seed)


def _sd(values: np.ndarray) -> float:
    """Standard deviation of the finite bootstrap values (NaN with fewer than 2)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def against_replicates(predicted: np.ndarray, a: np.ndarray, b: np.ndarray,
                       n_boot: int = 200, seed: int = 0, ceiling: Ceiling | None = None
                       ) -> dict:
    """A method's predictions (n_models, n_targets) of the held-out masks against the mean
    of the two replicates' outputs: ``lds_replicates`` (the LDS against that mean) ± se,
    and ``ceiling_ratio`` = lds_replicates / ceiling ± se (both from one bootstrap over
    targets and masks, the same resamples as :func:`noise_ceiling` with this seed).
    ``ceiling``: :func:`noise_ceiling` of ``a`` and ``b`` with the same ``n_boot`` and
    ``seed``, to reuse its resamples' ceilings instead of computing them again."""
    a, b = _check(a, b)
    predicted = np.asarray(predicted, np.float64)
    if predicted.shape != a.shape:
        raise ConfigError(f"predictions {predicted.shape} and outputs {a.shape} differ")
    if ceiling is None or ceiling.boots is None or len(ceiling.boots) != n_boot \
            or ceiling.seed != seed:
        ceiling = noise_ceiling(a, b, n_boot, seed)
    mean_output = (a + b) / 2
    lds_value = _mean(column_spearman(predicted, mean_output))
    lds_boots = np.array([_mean(column_spearman(predicted[at], mean_output[at]))
                          for at in _resamples(*a.shape, n_boot, seed)])
    # A ceiling at or below 0 (outputs that are seed noise) leaves nothing to be a fraction of.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_boots = np.where(ceiling.boots > 0, lds_boots / ceiling.boots, np.nan)
    ratio = lds_value / ceiling.mean if ceiling.mean > 0 else float("nan")
    return {"lds_replicates": lds_value, "lds_replicates_se": _sd(lds_boots),
            "ceiling_ratio": ratio, "ceiling_ratio_se": _sd(ratio_boots)}
