"""The long-tail study's four claims (docs/longtail.md), each a verdict computed from the
tables with a 95% interval (normal approximation), in :mod:`memlab.measures.stats`'s
words: "yes", "no" or "cannot decide".

1. per Zipf prior, singletons have the highest memorization scores: the baseline's mean
   score on singletons minus that of the highest other bucket;
2. per Zipf prior, knobs that stop fitting singletons (fit < :data:`LIMITING_FIT`) lose
   accuracy mostly on subpopulations seen once: each knob's drop on subpopulations seen
   once minus its drop on those seen 4+ times, pooled (mean) over the knobs;
3. the singleton cost shrinks on the no-tail control: the smallest Zipf prior's extra
   test error on singleton subpopulations minus the control's (absolute);
4. the measured singleton cost is within a factor of :data:`FACTOR` of Feldman's τ₁ × the
   extra unfitted singletons: the ratio, pooled (mean) over the limiting knobs, "yes" when
   its interval lies within [1/FACTOR, FACTOR], "no" when it lies outside.

Pooled intervals combine the rows' standard errors as if independent, which is
conservative for the positively correlated paired drops. Each row also counts how many
knobs settle the claim on their own (``n_yes`` of ``n_tested``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from memlab.data.longtail import TRAIN_BUCKETS
from memlab.measures.stats import NO, UNDECIDED, YES, Z95, verdict_from_interval
from memlab.studies.longtail.config import BASELINE, CONTROL

LIMITING_FIT = 0.9  # a knob that fits fewer of its training singletons limits memorization
FACTOR = 2.0  # "the theory predicts the cost" within this factor
COLUMNS = ["finding", "prior", "measured", "estimate", "ci_low", "ci_high", "verdict",
           "holds", "n_yes", "n_tested"]


def interval(estimate: float, se: float) -> tuple[float, float]:
    """The 95% normal interval estimate ± 1.96 se (NaN bounds when either is undefined)."""
    if not (np.isfinite(estimate) and np.isfinite(se)):
        return math.nan, math.nan
    return estimate - Z95 * se, estimate + Z95 * se


def verdict(difference: float, se: float) -> str:
    """"yes" when the 95% interval difference ± 1.96 se lies above 0, "no" when below,
    "cannot decide" when it contains 0 (or the se is undefined)."""
    return verdict_from_interval(*interval(difference, se))


def within_factor(low: float, high: float, factor: float = FACTOR) -> str:
    """"yes" when the interval [low, high] of a ratio lies within [1/factor, factor], "no"
    when it lies wholly outside, else (or undefined) "cannot decide"."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return UNDECIDED
    if low >= 1 / factor and high <= factor:
        return YES
    if high < 1 / factor or low > factor:
        return NO
    return UNDECIDED


def pooled(values: pd.Series, ses: pd.Series) -> tuple[float, float]:
    """Mean of ``values`` and its standard error from theirs, as if independent."""
    return float(values.mean()), float(math.sqrt((ses**2).sum()) / len(values))


def limiting(cost: pd.DataFrame) -> pd.DataFrame:
    """The cost rows of knobs that limit memorization on a Zipf prior (they fit fewer than
    :data:`LIMITING_FIT` of their training singletons)."""
    return cost[(cost.prior != CONTROL) & (cost.fit_singletons < LIMITING_FIT)]


def findings(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The four claims (module docstring), one row per claim and prior: finding, prior
    (empty for claims over all priors), measured (text), estimate, ci_low, ci_high (95%),
    verdict, holds (verdict == "yes"), n_yes / n_tested (knobs that settle the claim on
    their own, for the pooled claims)."""
    mem, cost, acc = tables["memorization"], tables["cost"], tables["accuracy"]
    rows: list[dict[str, Any]] = []

    def add(finding: str, prior: str, measured: str, estimate: float, low: float,
            high: float, answer: str, n_yes: int | None = None,
            n_tested: int | None = None) -> None:
        rows.append({"finding": finding, "prior": prior, "measured": measured,
                     "estimate": estimate, "ci_low": low, "ci_high": high, "verdict": answer,
                     "holds": answer == YES, "n_yes": n_yes, "n_tested": n_tested})

    base = mem[(mem.knob == BASELINE) & (mem.prior != CONTROL)]
    for prior, group in base.groupby("prior", sort=False):
        by = group.set_index("bucket")
        others = [b for b in TRAIN_BUCKETS[1:] if np.isfinite(by.mem.get(b, np.nan))]
        estimate = se = math.nan
        if "1" in by.index and np.isfinite(by.mem["1"]) and others:
            # singletons above the highest other bucket, by more than the noise
            top = max(others, key=lambda b: by.mem[b])
            estimate = by.mem["1"] - by.mem[top]
            se = math.hypot(by.mem_se["1"], by.mem_se[top])
        add(f"{prior}: singletons have the highest memorization scores", prior,
            ", ".join(f"mem[{b}] = {by.mem[b]:.3f} ± {by.mem_se[b]:.3f}"
                      for b in TRAIN_BUCKETS if b in by.index),
            estimate, *interval(estimate, se), verdict(estimate, se))

    limiting_all = limiting(cost)
    for prior, group in acc[acc.knob != BASELINE].groupby("prior", sort=False):
        if prior == CONTROL:
            continue
        knobs = [k for k in dict.fromkeys(group.knob)
                 if k in set(limiting_all[limiting_all.prior == prior].knob)]
        if not knobs:
            continue
        wide = group.set_index(["knob", "bucket"])
        once = wide.xs("1", level="bucket").loc[knobs]
        frequent = wide.xs("4+", level="bucket").loc[knobs]
        differences = once["drop"] - frequent["drop"]
        ses = np.hypot(once["drop_se"], frequent["drop_se"])
        each = [verdict(d, s) for d, s in zip(differences, ses)]
        estimate, se = pooled(differences, ses)
        parts = [f"{knob}: −{once.loc[knob, 'drop']:.3f} (seen once) vs "
                 f"−{frequent.loc[knob, 'drop']:.3f} (4+)" for knob in knobs]
        add(f"{prior}: knobs that stop fitting singletons lose accuracy mostly on "
            "subpopulations seen once", prior,
            "; ".join(parts) + f" ({each.count(YES)} of {len(each)} knobs by more than the "
            "noise)", estimate, *interval(estimate, se), verdict(estimate, se),
            each.count(YES), len(each))

    if not cost.empty:
        by_prior = cost.groupby("prior", sort=False)
        total = by_prior["extra_error_1"].mean()
        se = by_prior["extra_error_1_se"].apply(lambda s: math.sqrt((s**2).sum()) / len(s))
        tail = total.drop(CONTROL, errors="ignore")
        if CONTROL in total.index and len(tail):
            smallest = tail.idxmin()
            estimate = tail[smallest] - abs(total[CONTROL])
            spread = math.hypot(se[smallest], se[CONTROL])
            add("the singleton cost shrinks on the no-tail control", "",
                f"mean extra test error on singleton subpopulations: control "
                f"{total[CONTROL]:.4f} ± {se[CONTROL]:.4f} vs Zipf "
                f"{tail.min():.4f}–{tail.max():.4f}",
                estimate, *interval(estimate, spread), verdict(estimate, spread))
        ratios = limiting_all[np.isfinite(limiting_all.measured_over_theory)
                              & np.isfinite(limiting_all.measured_over_theory_se)]
        if len(limiting_all):
            each = [within_factor(*interval(r, s)) for r, s in
                    zip(ratios.measured_over_theory, ratios.measured_over_theory_se)]
            estimate, spread = (pooled(ratios.measured_over_theory,
                                       ratios.measured_over_theory_se) if len(ratios)
                                else (math.nan, math.nan))
            low, high = interval(estimate, spread)
            measured = (f"measured / theory: mean {estimate:.2f} over {len(ratios)} knobs "
                        f"(range {ratios.measured_over_theory.min():.2f}–"
                        f"{ratios.measured_over_theory.max():.2f}; {each.count(YES)} within "
                        f"a factor of {FACTOR:g} on their own)" if len(ratios) else
                        "no limiting knob leaves more singletons unfitted than the baseline: "
                        "no ratio to compare")
            add(f"measured singleton cost vs Feldman's τ₁ × extra unfitted singletons "
                f"(within a factor of {FACTOR:g})", "",
                measured + f"; carry-over of fitting to the subpopulation's test draws "
                f"{limiting_all.carry_over.median():.2f}",
                estimate, low, high, within_factor(low, high), each.count(YES), len(each))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    # counts, NaN where a claim pools no knobs: one dtype however many rows have them
    return frame.astype({"n_yes": float, "n_tested": float})
