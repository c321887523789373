"""Does a score peak at intermediate values of an axis, rise or fall with it, or can the data
not tell? The two-lines test (Simonsohn 2018) with heteroskedasticity-robust slopes.

    from memlab.measures.shape import simplicity_shape
    shape = simplicity_shape(run.records("train_acc").mean(0), mem.score)
    shape["verdict"]   # PEAKS, RISES, FALLS or UNDECIDED ("cannot decide")

Zhang et al. (2021) find counterfactual memorization highest at intermediate simplicity
(mean accuracy over all models): :func:`simplicity_shape` tests that inverted U
(docs/science.md §2; the language-model study, :mod:`memlab.studies.lm_memorize`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memlab.measures.stats import ABOVE, BELOW, UNDECIDED, Z95, interval_side

N_BINS = 10  # bins of width 0.1 over [0, 1]
MIN_BIN = 5  # points a bin needs to enter the test
PEAKS, RISES, FALLS = ("peaks at intermediate simplicity", "rises monotonically",
                       "falls monotonically")  # or UNDECIDED ("cannot decide")

__all__ = ["FALLS", "MIN_BIN", "N_BINS", "PEAKS", "RISES", "UNDECIDED", "robust_line",
           "simplicity_shape"]


def robust_line(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line y = a + b x with the slope's heteroskedasticity-robust (HC1)
    standard error and 95% interval; NaN where fewer than 3 points or x is constant."""
    nan = float("nan")
    if len(x) < 3 or np.ptp(x) == 0:
        return {"slope": nan, "intercept": nan, "se": nan, "ci_low": nan, "ci_high": nan,
                "n": int(len(x))}
    dx = x - x.mean()
    slope = float((dx * (y - y.mean())).sum() / (dx * dx).sum())
    intercept = float(y.mean() - slope * x.mean())
    residual = y - intercept - slope * x
    se = float(np.sqrt(len(x) / (len(x) - 2) * (dx * dx * residual**2).sum())
               / (dx * dx).sum())
    return {"slope": slope, "intercept": intercept, "se": se, "ci_low": slope - Z95 * se,
            "ci_high": slope + Z95 * se, "n": int(len(x))}


def simplicity_shape(simplicity: np.ndarray, mem: np.ndarray, n_bins: int = N_BINS,
                     min_documents: int = MIN_BIN) -> dict[str, Any]:
    """Does memorization peak at intermediate simplicity (the paper's inverted U), rise or
    fall monotonically with it, or can the data not tell? ``simplicity`` (in [0, 1]),
    ``mem``: (n,) per document (NaN entries are dropped).

    The two-lines test (Simonsohn 2018): cut simplicity in [0, 1] into ``n_bins`` equal
    bins, take the bin with the highest mean memorization among bins of at least
    ``min_documents``, break at its mean simplicity x*, and fit one least-squares line to
    the documents with simplicity <= x* and one to those >= x* (HC1 standard errors).
    Verdict:

    - ``peaks at intermediate simplicity``: the left slope's 95% interval lies above 0 and
      the right slope's below 0;
    - ``rises monotonically``: the slope over all documents lies above 0, the right slope
      is not significantly negative and the left one not significantly negative;
    - ``falls monotonically``: the mirror image;
    - ``cannot decide``: anything else (flat, too few bins, conflicting slopes).

    Choosing x* at the highest bin favours finding a peak a little (the usual caveat of
    the test); the 95% intervals are per slope. Returns the verdict with every slope.
    """
    simplicity, mem = np.asarray(simplicity, np.float64), np.asarray(mem, np.float64)
    ok = np.isfinite(simplicity) & np.isfinite(mem)
    x, y = simplicity[ok], mem[ok]
    bins = np.minimum((x * n_bins).astype(int), n_bins - 1)
    labels, counts = np.unique(bins, return_counts=True)
    kept = labels[counts >= min_documents]
    result: dict[str, Any] = {"verdict": UNDECIDED, "n_documents": int(len(x)),
                              "bins_tested": int(len(kept)), "n_bins": n_bins,
                              "breakpoint": None, "peak_bin": None, "left": None,
                              "right": None, "overall": robust_line(x, y)}
    if len(kept) < 3:
        result["reason"] = (f"fewer than 3 simplicity bins hold {min_documents} or more "
                            "documents")
        return result
    means = np.array([y[bins == b].mean() for b in kept])
    peak = kept[int(np.argmax(means))]
    breakpoint = float(x[bins == peak].mean())
    left, right, overall = robust_line(x[x <= breakpoint], y[x <= breakpoint]), \
        robust_line(x[x >= breakpoint], y[x >= breakpoint]), result["overall"]

    def above(line):  # slope significantly > 0 (False where undefined)
        return interval_side(line["ci_low"], line["ci_high"]) == ABOVE

    def below(line):
        return interval_side(line["ci_low"], line["ci_high"]) == BELOW

    if above(left) and below(right):
        verdict = PEAKS
    elif above(overall) and not below(right) and not below(left):
        verdict = RISES
    elif below(overall) and not above(left) and not above(right):
        verdict = FALLS
    else:
        verdict = UNDECIDED
    result.update(verdict=verdict, breakpoint=breakpoint, peak_bin=float(peak / n_bins),
                  left=left, right=right)
    return result
