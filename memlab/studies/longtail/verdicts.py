"""The long-tail study's four claims (docs/longtail.md), each a verdict computed from the
tables with an interval, in :mod:`memlab.measures.stats`'s words: "yes", "no" or "cannot
decide" (95%, normal approximation)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from memlab.data.longtail import TRAIN_BUCKETS
from memlab.measures.stats import NO, UNDECIDED, YES, verdict_from_interval
from memlab.studies.longtail.config import BASELINE, CONTROL

Z95 = 1.959964  # two-sided 95% normal quantile, for the verdicts' intervals


def verdict(difference: float, se: float) -> str:
    """"yes" when the 95% interval difference ± 1.96 se lies above 0, "no" when below,
    "cannot decide" when it contains 0 (or the se is undefined)."""
    if not (np.isfinite(difference) and np.isfinite(se)):
        return UNDECIDED
    return verdict_from_interval(difference - Z95 * se, difference + Z95 * se)


def findings(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The issue's four claims, each with the measured numbers and a verdict computed from
    the intervals ("yes", "no", "cannot decide"; 95%, normal approximation; the standard
    errors of two buckets are combined as if independent, which is conservative for the
    positively correlated paired drops)."""
    mem, cost, acc = tables["memorization"], tables["cost"], tables["accuracy"]
    rows = []

    def add(finding: str, measured: str, answer: str) -> None:
        rows.append({"finding": finding, "measured": measured, "verdict": answer,
                     "holds": answer == YES})

    base = mem[(mem.knob == BASELINE) & (mem.prior != CONTROL)]
    for prior, group in base.groupby("prior", sort=False):
        by = group.set_index("bucket")
        others = [b for b in TRAIN_BUCKETS[1:] if np.isfinite(by.mem.get(b, np.nan))]
        if "1" not in by.index or not np.isfinite(by.mem["1"]) or not others:
            answer = UNDECIDED
        else:  # singletons above the highest other bucket, by more than the noise
            top = max(others, key=lambda b: by.mem[b])
            answer = verdict(by.mem["1"] - by.mem[top],
                             math.hypot(by.mem_se["1"], by.mem_se[top]))
        add(f"{prior}: singletons have the highest memorization scores",
            ", ".join(f"mem[{b}] = {by.mem[b]:.3f} ± {by.mem_se[b]:.3f}"
                      for b in TRAIN_BUCKETS if b in by.index), answer)

    limiting_all = cost[(cost.prior != CONTROL) & (cost.fit_singletons < 0.9)]
    for prior, group in acc[acc.knob != BASELINE].groupby("prior", sort=False):
        if prior == CONTROL:
            continue
        knobs = set(limiting_all[limiting_all.prior == prior].knob)
        wide = group[group.knob.isin(knobs)].set_index(["knob", "bucket"])
        if not knobs or wide.empty:
            continue
        answers, parts = [], []
        for knob in dict.fromkeys(group.knob):
            if knob not in knobs:
                continue
            once, frequent = wide.loc[(knob, "1")], wide.loc[(knob, "4+")]
            answers.append(verdict(once["drop"] - frequent["drop"],
                                   math.hypot(once["drop_se"], frequent["drop_se"])))
            parts.append(f"{knob}: −{once['drop']:.3f} (seen once) vs −{frequent['drop']:.3f} "
                         "(4+)")
        answer = (YES if answers.count(YES) > len(answers) / 2
                  else NO if answers.count(NO) > len(answers) / 2 else UNDECIDED)
        add(f"{prior}: knobs that stop fitting singletons lose accuracy mostly on "
            "subpopulations seen once",
            "; ".join(parts) + f" ({answers.count('yes')} of {len(answers)} knobs by more "
            "than the noise)", answer)

    if not cost.empty:
        by_prior = cost.groupby("prior", sort=False)
        total = by_prior["extra_error_1"].mean()
        se = by_prior["extra_error_1_se"].apply(lambda s: math.sqrt((s**2).sum()) / len(s))
        tail = total.drop(CONTROL, errors="ignore")
        if CONTROL in total.index and len(tail):
            smallest = tail.idxmin()
            add("the singleton cost shrinks on the no-tail control",
                f"mean extra test error on singleton subpopulations: control "
                f"{total[CONTROL]:.4f} ± {se[CONTROL]:.4f} vs Zipf "
                f"{tail.min():.4f}–{tail.max():.4f}",
                verdict(tail[smallest] - abs(total[CONTROL]),
                        math.hypot(se[smallest], se[CONTROL])))
        if len(limiting_all):
            ratio = limiting_all.measured_over_theory
            within = bool(0.5 <= ratio.median() <= 2)
            add("measured singleton cost vs Feldman's τ₁ × extra unfitted singletons "
                "(within a factor of 2)",
                f"measured / theory: median {ratio.median():.2f} "
                f"(range {ratio.min():.2f}–{ratio.max():.2f}; carry-over of fitting to the "
                f"subpopulation's test draws {limiting_all.carry_over.median():.2f})",
                YES if within else NO)
    return pd.DataFrame(rows, columns=["finding", "measured", "verdict", "holds"])
