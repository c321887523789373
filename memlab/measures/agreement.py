"""How well memorization estimated from a few models agrees with a large reference
population (docs/memorization.md, "Against a reference of 2,048 models").

From one population of T models: draw k models, estimate every example's memorization
from them with each estimator, and compare with the *binary* estimator (Feldman & Zhang's
definition) on the other T − k models, the reference. Reported per estimator, k and draw:

- ``rho``: Spearman correlation with the reference over all examples;
- ``rho_ratio``: rho / sqrt(r_ref), r_ref the reference's Spearman–Brown corrected
  split-half reliability: rho divided by the most any estimate could reach against a
  reference that is itself noisy (1 = as good as the reference allows);
- ``rho_memorized``: rho over the examples with reference mem ≥ 0.05 (the order among the
  zeros is the reference's noise);
- ``coverage``: the fraction of examples whose 95% interval holds the reference value;
- ``consistent``: the fraction whose estimate and reference agree within both their
  errors (the MOVER interval of estimate − reference holds 0): the coverage a small
  reference, itself noisy, can check (for a large reference the two are equal).

    table = agreement(mask, {"train_correct": c, "train_margin": m}, ks=(8, 16, 32))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from memlab.errors import ConfigError
from memlab.measures.inout import in_out
from memlab.measures.memorization import ESTIMATORS, estimate
from memlab.measures.stats import mover_interval, spearman, spearman_brown

MEMORIZED_REFERENCE = 0.05  # reference mem from which the order is signal, not noise


def reference_reliability(mask: np.ndarray, correct: np.ndarray, seed: int = 0) -> float:
    """Spearman–Brown corrected split-half reliability of the binary estimator on these
    models (one random split)."""
    order = np.random.default_rng([seed, 7]).permutation(mask.shape[0])
    a, b = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])
    return spearman_brown(spearman(in_out(mask[a], correct[a]).score,
                                   in_out(mask[b], correct[b]).score))


def agreement(mask: np.ndarray, records: Mapping[str, np.ndarray], ks: Sequence[int],
              draws: int = 3, estimators: Sequence[str] = ESTIMATORS, seed: int = 0
              ) -> pd.DataFrame:
    """One row per (estimator, k, draw): rho, rho_ratio, rho_memorized, coverage,
    median_width (of the 95% intervals), r_ref and the reference's model count. ``records``:
    ``train_correct`` (T, n) bool and ``train_margin`` (T, n) float, as a run records them."""
    mask = np.asarray(mask, bool)
    correct = np.asarray(records["train_correct"], bool)
    t = mask.shape[0]
    if max(ks) > t // 2:
        raise ConfigError(f"k up to {max(ks)} needs a population of at least {2 * max(ks)} "
                          f"models for its reference; this one has {t}")
    rows = []
    for k in ks:
        for draw in range(draws):
            order = np.random.default_rng([seed, k, draw]).permutation(t)
            drawn, rest = np.sort(order[:k]), np.sort(order[k:])
            reference_stats = in_out(mask[rest], correct[rest])
            reference = reference_stats.score
            ref_bounds = reference_stats.interval()
            r_ref = reference_reliability(mask[rest], correct[rest], seed=draw)
            memorized = reference >= MEMORIZED_REFERENCE
            subset = {name: np.asarray(values)[drawn] for name, values in records.items()}
            for name in estimators:
                result = estimate(mask[drawn], subset, name)
                lo, hi = result.interval()
                score = result.score
                gap_lo, gap_hi = mover_interval(score, (lo, hi), reference, ref_bounds)
                finite = np.isfinite(score) & np.isfinite(reference)
                rho = spearman(score, reference)
                rows.append({
                    "estimator": name, "k": k, "draw": draw, "rho": rho,
                    "rho_ratio": rho / np.sqrt(r_ref),
                    "rho_memorized": spearman(score[memorized], reference[memorized]),
                    "coverage": float(np.mean(((lo <= reference) & (reference <= hi))[finite])),
                    "consistent": float(np.mean(((gap_lo <= 0) & (0 <= gap_hi))[finite])),
                    "median_width": float(np.nanmedian(hi - lo)),
                    "r_ref": r_ref, "reference_models": len(rest)})
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over draws per (estimator, k)."""
    columns = ["rho", "rho_ratio", "rho_memorized", "coverage", "consistent", "median_width",
               "r_ref"]
    return table.groupby(["estimator", "k"], sort=False)[columns].mean().reset_index()
