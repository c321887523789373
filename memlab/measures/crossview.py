"""Cross-views: how the measures of one population relate to each other.

Per example (memorization, C-scores and their proxies, learning order, elasticity,
membership-inference exposure, ...) the question is a rank correlation, with an interval
from the bootstrap over examples: :func:`correlation_matrix`. Per model, HT-SR's question
"does a layer's power-law exponent α predict test accuracy beyond its norm?" is a partial
rank correlation of α and accuracy given the log Frobenius norm, with Fisher's interval:
:func:`partial_spearman`, :func:`beyond_norm`. Each answer carries a verdict computed from
its interval (:func:`memlab.measures.stats.verdict_from_interval`): "cannot decide" when
the interval holds zero. The intervals' coverage is checked by simulation in
``tests/test_crossview.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from memlab.measures.stats import _z, spearman_interval, verdict_from_interval

# Spearman's ρ through Fisher's z: the Fieller-Hartley-Pearson variance 1.06 / (n - 3),
# one more degree of freedom lost per variable controlled for.
FHP = 1.06


def correlation_matrix(frame: pd.DataFrame, columns: Sequence[str], *, n_bootstrap: int = 200,
                       level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Spearman ρ of every pair of ``columns`` over the rows finite in both, with a
    bootstrap interval over rows (on Fisher's z scale: ``spearman_interval``'s
    ``bootstrap_z``). One row per pair: a, b, rho, low, high, n."""
    rows = []
    for i, a in enumerate(columns):
        for b in columns[i + 1:]:
            x = frame[a].to_numpy(np.float64)
            y = frame[b].to_numpy(np.float64)
            rho, low, high = spearman_interval(x, y, n_bootstrap=n_bootstrap, level=level,
                                               seed=seed, method="bootstrap_z")
            rows.append({"a": a, "b": b, "rho": rho, "low": low, "high": high,
                         "n": int((np.isfinite(x) & np.isfinite(y)).sum())})
    return pd.DataFrame(rows, columns=["a", "b", "rho", "low", "high", "n"])


def partial_spearman(x: np.ndarray, y: np.ndarray, control: np.ndarray | Sequence[np.ndarray],
                     level: float = 0.95) -> dict[str, float | int]:
    """The rank correlation of ``x`` and ``y`` with the ``control`` variables held fixed:
    the ranks of x and y, each regressed (least squares) on the ranks of the controls, and
    the residuals correlated. Interval: Fisher's z with variance FHP / (n - 3 - k) for k
    controls. Rows where any value is missing are left out. Returns rho, low, high, n."""
    controls = [np.asarray(control, np.float64)] if np.ndim(control) == 1 else [
        np.asarray(c, np.float64) for c in control]
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    for c in controls:
        keep &= np.isfinite(c)
    n, k = int(keep.sum()), len(controls)
    nan = {"rho": float("nan"), "low": float("nan"), "high": float("nan"), "n": n}
    if n <= 3 + k:
        return nan
    design = np.column_stack([np.ones(n)] + [scipy_stats.rankdata(c[keep]) for c in controls])

    def residual(values: np.ndarray) -> np.ndarray:
        ranks = scipy_stats.rankdata(values[keep])
        return ranks - design @ np.linalg.lstsq(design, ranks, rcond=None)[0]

    rx, ry = residual(x), residual(y)
    scale = np.sqrt((rx @ rx) * (ry @ ry))
    if scale == 0:  # a side is fully explained by the controls (or constant)
        return nan
    rho = float(np.clip(rx @ ry / scale, -1.0, 1.0))
    z, half = np.arctanh(np.clip(rho, -0.999999, 0.999999)), _z(level) * np.sqrt(
        FHP / (n - 3 - k))
    return {"rho": rho, "low": float(np.tanh(z - half)), "high": float(np.tanh(z + half)),
            "n": n}


def answer(rho: float, low: float, high: float, n: int, *, above: str, below: str
           ) -> dict[str, float | int | str]:
    """A question's answer: the number, its interval, and the verdict its interval allows
    (``above`` when it lies above zero, ``below`` under it, "cannot decide" otherwise)."""
    return {"rho": rho, "low": low, "high": high, "n": n,
            "verdict": verdict_from_interval(low, high, above=above, below=below)}


def beyond_norm(models: pd.DataFrame, alpha: str, norm: str, accuracy: str = "test_acc",
                by: str | None = None, level: float = 0.95) -> pd.DataFrame:
    """Does ``alpha`` predict ``accuracy`` beyond ``norm``? Per group of ``by`` (a knob)
    and pooled over all models: the plain Spearman ρ(α, accuracy) and the partial one
    given the norm, each with its interval and verdict. One row per group ("pooled" last)."""
    groups = [] if by is None else [(str(value), part) for value, part in
                                    models.groupby(by, sort=False)]
    groups.append(("pooled", models))
    rows = []
    for name, part in groups:
        a, acc = part[alpha].to_numpy(np.float64), part[accuracy].to_numpy(np.float64)
        plain = dict(zip(("rho", "low", "high"),
                         spearman_interval(a, acc, level=level, method="fisher")))
        partial = partial_spearman(a, acc, part[norm].to_numpy(np.float64), level)
        rows.append({
            "group": name, "n": partial["n"], "spearman": plain["rho"],
            "spearman_low": plain["low"], "spearman_high": plain["high"],
            "partial": partial["rho"], "partial_low": partial["low"],
            "partial_high": partial["high"],
            "verdict": verdict_from_interval(
                partial["low"], partial["high"],
                above="higher alpha, higher accuracy beyond the norm",
                below="higher alpha, lower accuracy beyond the norm")})
    return pd.DataFrame(rows)
