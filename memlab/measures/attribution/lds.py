"""The linear datamodeling score (LDS; Park et al. 2023): does a method's attribution predict
what a population of subset-trained models actually does?

For a target z, model k with training subset S_k (row k of the membership mask M) and a
method's scores tau (n_train,) for z, the method predicts the model's output as

    g_k(z) = sum_{i in S_k} tau_i(z) = M[k] @ tau,

and LDS(z) is the Spearman correlation over held-out models k of g_k(z) with the actual
output f_k(z) (the float32 log-odds record log p_y / (1 - p_y)). One sign convention holds
for every method in :mod:`memlab.measures.attribution`: tau_i(z) > 0 means that training
on i raises z's output. The reported LDS is the mean over targets; its standard error comes
from a bootstrap over *both* targets and held-out models, because the per-target
correlations share the same models and are not independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from memlab.errors import ConfigError
from memlab.measures.stats import mean_se


@dataclass
class LDS:
    """LDS of one method. ``per_target`` (n_targets,) Spearman correlations (NaN where a
    side is constant over the models); ``mean`` their mean over finite values; ``se`` its
    bootstrap standard error (targets and models resampled); ``se_targets`` the naive
    standard error over targets alone; ``n_models`` held-out models used."""

    mean: float
    se: float
    se_targets: float
    per_target: np.ndarray
    n_models: int

    def as_dict(self) -> dict:
        return {"lds": self.mean, "lds_se": self.se, "lds_se_targets": self.se_targets,
                "n_heldout_models": self.n_models}


def predict(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n_models, n_targets) predicted outputs M @ tau, from scores (n_train, n_targets)
    and the membership mask (n_models, n_train) bool."""
    scores = np.asarray(scores, np.float64)
    mask = np.asarray(mask)
    if mask.shape[1] != scores.shape[0]:
        raise ConfigError(f"scores cover {scores.shape[0]} training examples but the mask "
                          f"has {mask.shape[1]}; pass scores of shape (n_train, n_targets)")
    return mask.astype(np.float64) @ scores


def column_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of every column of a with the same column of b (n, m)."""
    ra = stats.rankdata(a, axis=0)
    rb = stats.rankdata(b, axis=0)
    ra -= ra.mean(0)
    rb -= rb.mean(0)
    denominator = np.sqrt((ra**2).sum(0) * (rb**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(0) / denominator, np.nan)


def lds_from_predictions(predicted: np.ndarray, actual: np.ndarray, n_boot: int = 200,
                         seed: int = 0) -> LDS:
    """LDS from predicted and actual outputs, both (n_models, n_targets)."""
    predicted, actual = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    if predicted.shape != actual.shape:
        raise ConfigError(f"predictions {predicted.shape} and outputs {actual.shape} differ")
    n_models, n_targets = actual.shape
    if n_models < 3:
        raise ConfigError(f"LDS needs at least 3 held-out models, got {n_models}")
    per_target = column_spearman(predicted, actual)
    over_targets = mean_se(per_target)  # over the finite targets
    mean, se_targets = over_targets.mean, over_targets.se
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        rows = rng.integers(0, n_models, n_models)
        cols = rng.integers(0, n_targets, n_targets)
        values = column_spearman(predicted[np.ix_(rows, cols)], actual[np.ix_(rows, cols)])
        if np.isfinite(values).any():
            boots.append(np.nanmean(values))
    se = float(np.std(boots, ddof=1)) if len(boots) > 1 else float("nan")
    return LDS(mean, se, se_targets, per_target, n_models)


def lds(scores: np.ndarray, mask: np.ndarray, outputs: np.ndarray, n_boot: int = 200,
        seed: int = 0) -> LDS:
    """LDS of ``scores`` (n_train, n_targets) against held-out models: their membership
    ``mask`` (n_models, n_train) bool and actual ``outputs`` (n_models, n_targets)."""
    outputs = np.asarray(outputs)
    if outputs.shape[0] != np.shape(mask)[0]:
        raise ConfigError(f"mask has {np.shape(mask)[0]} models, outputs {outputs.shape[0]}")
    if outputs.shape[1] != np.shape(scores)[1]:
        raise ConfigError(f"scores have {np.shape(scores)[1]} targets, outputs "
                          f"{outputs.shape[1]}")
    return lds_from_predictions(predict(scores, mask), outputs, n_boot, seed)
