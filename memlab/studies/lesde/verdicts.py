"""The lesde study's verdicts: where the phase transition lies (a bracket of the growth
rate's sign change, resolved at 95%), which side of α/β = 1 fitted networks are on, and
whether a stability constant stands above its permuted-mask noise floor. Each answer can
be "cannot decide" (:data:`memlab.measures.stats.UNDECIDED`). docs/lesde.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from memlab.measures.stats import ABOVE, BELOW, UNDECIDED, Z95, interval_side, t_interval

# The verdicts of the headline questions (besides stats.UNDECIDED, "cannot decide").
AT_ONE, NOT_AT_ONE = "at α/β = 1", "not at α/β = 1"  # where does the transition lie?
SEPARATING, NOT_SEPARATING = "separating", "not separating"  # α/β of a fitted network


def threshold_bracket(ratios: np.ndarray, rates: np.ndarray, ses: np.ndarray,
                      z: float = Z95) -> tuple[float, float] | None:
    """The two scanned ratios that bracket the sign change of the growth rate: the largest
    ratio whose rate lies below 0 (95% interval rate ± z·se) and the smallest above it
    whose rate lies above 0. None without a resolved ratio on each side (one run per ratio
    gives no se), or when resolved signs interleave (no single change)."""
    ratios, rates, ses = (np.asarray(a, np.float64) for a in (ratios, rates, ses))
    below = ratios[rates + z * ses < 0]  # NaN se: never resolved
    above = ratios[rates - z * ses > 0]
    if not len(below) or not len(above) or below.max() >= above.min():
        return None
    return float(below.max()), float(above.min())


def transition_summary(scan: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per drift, where the growth rate along the own class changes sign, as the scan
    resolves it: the bracket at each noise level (:func:`threshold_bracket`), their hull
    [threshold_lo, threshold_hi], and the verdict "at α/β = 1" (every noise level's
    bracket holds 1, possibly as one of its ends: within one scan step), "not at α/β = 1"
    (some bracket excludes it), or
    "cannot decide" (some noise level has no bracket, and none excludes 1)."""
    out: dict[str, dict[str, Any]] = {}
    for drift, part in scan.groupby("drift", sort=False):
        brackets = {f"{noise:g}": threshold_bracket(rows["ratio"], rows["rate"],
                                                    rows["rate_se"])
                    for noise, rows in part.groupby("noise")}
        found = [b for b in brackets.values() if b is not None]
        # 1 may be an end of a bracket: the scanned ratio 1 itself resolved on one side
        # puts the crossing within one scan step of 1, the scan's resolution.
        if any(not low <= 1.0 <= high for low, high in found):
            verdict = NOT_AT_ONE
        elif found and len(found) == len(brackets):
            verdict = AT_ONE
        else:
            verdict = UNDECIDED
        out[str(drift)] = {
            "bracket_by_noise": {k: list(b) if b else None for k, b in brackets.items()},
            "threshold_lo": min(b[0] for b in found) if found else None,
            "threshold_hi": max(b[1] for b in found) if found else None,
            "noises_bracketed": len(found), "n_noises": len(brackets),
            "transition": verdict}
    return out


def ratio_interval(ratios: np.ndarray) -> dict[str, Any]:
    """The fitted intra/inter strength ratio α/β over models (n,) with its Student-t 95%
    interval, and which side of the LE-SDE's threshold α/β = 1 the networks are on:
    "separating" (interval above 1), "not separating" (below 1) or "cannot decide" (the
    interval holds 1, or fewer than two models give none)."""
    ratios = np.asarray(ratios, np.float64)
    mean, low, high = t_interval(ratios)
    side = interval_side(low, high, reference=1.0)
    return {"mean": mean if np.isfinite(mean) else None,
            "low": low if np.isfinite(low) else None,
            "high": high if np.isfinite(high) else None,
            "n": int(np.isfinite(ratios).sum()),
            "verdict": {ABOVE: SEPARATING, BELOW: NOT_SEPARATING}.get(side, UNDECIDED)}


def stability_verdict(row: dict, n_permutations: int = 2) -> str:
    """Whether each constant stands above its permuted-mask noise floor (mean + 3 sd), or
    cannot be told from it."""
    parts = []
    for const, label in (("beta_le", "β_LE"), ("beta_uniform", "β_U")):
        if row[f"{const}_above_floor"]:
            parts.append(f"{label} is above its noise floor")
        elif n_permutations < 2:
            parts.append(f"{label}: cannot decide (one permuted mask gives the floor no "
                         "spread; use --n-permutations 2 or more)")
        else:
            parts.append(f"{label} cannot be told from its noise floor with "
                         f"{row['n_models']} models")
    return "; ".join(parts)
