"""Attributions fitted on the population itself: datamodels and difference in means.

Datamodels (Ilyas et al. 2022): per target z, a regression of the models' outputs on their
membership masks, f_k(z) ~ theta_z . M[k] + b_z, fitted on some of the population's models.
theta_z is the reference attribution; its LDS on *other* models is the ceiling of a linear
attribution only once the population has many more models than training examples (below
that it is limited by the fit, and gradient methods can beat it: see ``models_curve``).
All targets share the design matrix M, so the ridge fit of every target is one SVD of
the centred mask:

    theta(lam) = V diag(s / (s^2 + lam)) U^T Y_c,    M_c = U diag(s) V^T,

and the ridge strength is chosen per population (not per target) by the LDS on a validation
part of the fitting models. With fixed-size subsets (every model trains on the same number of
examples) the weights are identified only up to a common constant, absorbed by the bias: the
minimum-norm fit returns them up to their mean; the LDS is unaffected.

The difference-in-means estimator (Feldman & Zhang's influence
on a continuous output) is mean f over models that trained on i minus mean over those that
did not: the ridge solution's limit for balanced random masks, up to scale. It is the IN/OUT
estimator of :mod:`memlab.measures.inout` (:func:`~memlab.measures.inout.difference_in_means`,
importable from here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memlab.errors import ConfigError
from memlab.measures.attribution.lds import LDS, lds, lds_from_predictions
from memlab.measures.inout import difference_in_means

RIDGE_GRID = tuple(10.0 ** e for e in np.arange(-2, 4.01, 0.5))


@dataclass
class Datamodels:
    """weights (n_train, n_targets) = theta; bias (n_targets,); the chosen ridge strength
    ``alpha`` and the validation LDS of every candidate (``path``: alpha -> LDS)."""

    weights: np.ndarray
    bias: np.ndarray
    alpha: float
    path: dict[float, float]
    n_models: int


def _ridge_path(mask: np.ndarray, outputs: np.ndarray):
    """Centre the mask and outputs and return (mean_x, mean_y, V, s, U^T Y_c)."""
    x = np.asarray(mask, np.float64)
    y = np.asarray(outputs, np.float64)
    mean_x, mean_y = x.mean(0), y.mean(0)
    u, s, vt = np.linalg.svd(x - mean_x, full_matrices=False)
    return mean_x, mean_y, vt.T, s, u.T @ (y - mean_y)


def _ridge_solution(parts, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    mean_x, mean_y, v, s, uty = parts
    weights = v @ ((s / (s**2 + alpha))[:, None] * uty)
    return weights, mean_y - mean_x @ weights


def fit_datamodels(mask: np.ndarray, outputs: np.ndarray, alphas=RIDGE_GRID,
                   validation: float = 0.2, seed: int = 0) -> Datamodels:
    """Per-target ridge regressions of ``outputs`` (n_models, n_targets) on ``mask``
    (n_models, n_train) bool. The ridge strength maximizes the LDS on a random
    ``validation`` fraction of the models; the final fit uses all of them."""
    mask, outputs = np.asarray(mask, bool), np.asarray(outputs, np.float64)
    t = mask.shape[0]
    if outputs.shape[0] != t:
        raise ConfigError(f"mask has {t} models, outputs {outputs.shape[0]}")
    n_val = int(round(validation * t))
    if t - n_val < 3 or n_val < 3:
        raise ConfigError(f"datamodels need at least 6 fitting models, got {t}")
    order = np.random.default_rng(seed).permutation(t)
    val, fit = order[:n_val], order[n_val:]
    parts = _ridge_path(mask[fit], outputs[fit])
    path = {}
    for alpha in alphas:
        weights, bias = _ridge_solution(parts, alpha)
        predicted = mask[val] @ weights + bias
        path[float(alpha)] = lds_from_predictions(predicted, outputs[val], n_boot=0).mean
    finite = {a: v for a, v in path.items() if np.isfinite(v)}
    best = max(finite, key=finite.get) if finite else float(alphas[len(alphas) // 2])
    weights, bias = _ridge_solution(_ridge_path(mask, outputs), best)
    return Datamodels(weights.astype(np.float32), bias, best, path, t)


def fit_lasso(mask: np.ndarray, outputs: np.ndarray, alpha: float) -> np.ndarray:
    """(n_train, n_targets) per-target lasso weights (scikit-learn coordinate descent;
    ``alpha`` in its units: the l1 penalty per model of mean squared error)."""
    from sklearn.linear_model import Lasso

    x = np.asarray(mask, np.float64)
    y = np.asarray(outputs, np.float64)
    model = Lasso(alpha=alpha, max_iter=5000)
    model.fit(x, y)
    return np.asarray(model.coef_.T, np.float32).reshape(x.shape[1], -1)


def models_curve(mask: np.ndarray, outputs: np.ndarray, heldout_mask: np.ndarray,
                 heldout_outputs: np.ndarray, sizes=None, seed: int = 0) -> list[dict]:
    """Held-out LDS of datamodels and of difference in means fitted on the first n of the
    fitting models, for several n: how many models each needs to be stable."""
    t = mask.shape[0]
    if sizes is None:
        sizes = sorted({*(s for s in (25, 50, 100, 200, 400, 800, 1600, 3200) if s < t), t})
    rows = []
    for n in sizes:
        if n < 10:
            continue
        model = fit_datamodels(mask[:n], outputs[:n], seed=seed)
        dm: LDS = lds(model.weights, heldout_mask, heldout_outputs)
        dim: LDS = lds(np.nan_to_num(difference_in_means(mask[:n], outputs[:n])), heldout_mask,
                       heldout_outputs)
        rows.append({"n_models": n, "datamodels_lds": dm.mean, "datamodels_lds_se": dm.se,
                     "diff_means_lds": dim.mean, "diff_means_lds_se": dim.se,
                     "ridge_alpha": model.alpha})
    return rows
