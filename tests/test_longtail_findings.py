"""The long-tail report's finding: each claim's verdict and sentence from planted tables,
both ways ("yes" where the planted structure holds, "no" where it is reversed, "cannot
decide" where the interval holds the line), the pointers when a measure cannot answer,
and the measured/theory ratio's standard error. Synthetic tables only: milliseconds."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from memlab.data.longtail import TEST_BUCKETS
from memlab.measures.stats import NO, UNDECIDED, YES, Z95
from memlab.studies.longtail.config import BASELINE, CONTROL
from memlab.studies.longtail.figures import (
    control_theory_sentence,
    cost_sentence,
    memorization_sentence,
)
from memlab.studies.longtail.study import cost_row
from memlab.studies.longtail.verdicts import findings, within_factor

PRIOR = "zipf1"


def memorization(once: tuple[float, float], middle: tuple[float, float],
                 frequent: tuple[float, float]) -> pd.DataFrame:
    """The baseline's (mean, s.e.) memorization on singletons, 2-3 and 4+ buckets."""
    return pd.DataFrame([{"prior": PRIOR, "knob": BASELINE, "bucket": b, "mem": m, "mem_se": s}
                         for b, (m, s) in zip(("1", "2-3", "4+"), (once, middle, frequent))])


def accuracy(drop_once: float, drop_frequent: float, se: float = 0.01,
             knobs: tuple[str, ...] = ("weight_decay", "dropout")) -> pd.DataFrame:
    """Each knob's (paired) accuracy drop by bucket: ``drop_once`` on subpopulations seen
    once, ``drop_frequent`` on those seen 4+ times."""
    drops = {"0": 0.0, "1": drop_once, "2-3": (drop_once + drop_frequent) / 2,
             "4+": drop_frequent}
    return pd.DataFrame([{"prior": PRIOR, "knob": k, "bucket": b, "accuracy": 0.5,
                          "drop": drops[b], "drop_se": se}
                         for k in (BASELINE, *knobs) for b in TEST_BUCKETS])


def cost(zipf_error: float = 0.05, control_error: float = 0.0, ratio: float = 1.0,
         ratio_se: float = 0.05, fit: float = 0.5,
         knobs: tuple[str, ...] = ("weight_decay", "dropout")) -> pd.DataFrame:
    """The knobs' extra error on singleton subpopulations (Zipf and the control) and their
    measured / theory ratios."""
    rows = []
    for prior, error in ((PRIOR, zipf_error), (CONTROL, control_error)):
        for knob in knobs:
            rows.append({"prior": prior, "knob": knob, "fit_singletons": fit,
                         "extra_error_1": error, "extra_error_1_se": 0.002,
                         "measured_over_theory": ratio if prior == PRIOR else np.nan,
                         "measured_over_theory_se": ratio_se, "carry_over": 0.9})
    return pd.DataFrame(rows)


def populations(fit: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame([{"prior": PRIOR, "knob": BASELINE, "fit_singletons": fit,
                          "train_accuracy": 0.4 + 0.6 * fit}])


def claims(mem: pd.DataFrame | None = None, acc: pd.DataFrame | None = None,
           costs: pd.DataFrame | None = None) -> pd.DataFrame:
    return findings({"memorization": memorization((0.85, 0.02), (0.3, 0.02), (0.05, 0.01))
                     if mem is None else mem,
                     "accuracy": accuracy(0.4, 0.01) if acc is None else acc,
                     "cost": cost() if costs is None else costs})


def verdict_of(table: pd.DataFrame, starts: str) -> pd.Series:
    return table[table.finding.str.startswith(starts)].iloc[0]


# ------------------------------------------------------------------ singletons memorized most


def test_singletons_memorized_most_both_ways():
    found = claims()
    row = verdict_of(found, f"{PRIOR}: singletons")
    assert row.verdict == YES and row.estimate == pytest.approx(0.55)
    assert row.ci_low == pytest.approx(0.55 - Z95 * math.hypot(0.02, 0.02))
    sentence = memorization_sentence(found, populations(), 40)
    assert sentence.startswith("Singletons are memorized most")
    assert f"{PRIOR} 0.550 [0.495, 0.605] ({YES})" in sentence and "Flag" not in sentence

    reversed_ = claims(mem=memorization((0.05, 0.01), (0.3, 0.02), (0.6, 0.02)))
    assert verdict_of(reversed_, f"{PRIOR}: singletons").verdict == NO
    assert memorization_sentence(reversed_, populations(), 40).startswith(
        "Singletons are not memorized most")

    null = claims(mem=memorization((0.10, 0.05), (0.12, 0.05), (0.05, 0.02)))
    assert verdict_of(null, f"{PRIOR}: singletons").verdict == UNDECIDED
    assert memorization_sentence(null, populations(), 40).startswith(
        f"Whether singletons are memorized most: {UNDECIDED}")


def test_baseline_that_does_not_fit_points_to_training_longer():
    sentence = memorization_sentence(claims(), populations(fit=0.3), 5)
    assert "The baseline models fit only 30% of their training singletons" in sentence
    assert "train longer (--epochs, now 5)" in sentence


# ------------------------------------------------------------------ the cost of not memorizing


def test_cost_on_subpopulations_seen_once_both_ways():
    found = claims()
    row = verdict_of(found, f"{PRIOR}: knobs that stop fitting")
    assert row.verdict == YES and (row.n_yes, row.n_tested) == (2, 2)
    assert row.estimate == pytest.approx(0.39)
    sentence = cost_sentence(found)
    assert sentence.startswith("Not memorizing costs accuracy mostly on subpopulations seen "
                               "once") and f"({YES}; 2 of 2 knobs on their own)" in sentence

    reversed_ = claims(acc=accuracy(0.01, 0.3))
    assert verdict_of(reversed_, f"{PRIOR}: knobs").verdict == NO
    assert cost_sentence(reversed_).startswith("Not memorizing does not cost accuracy")

    null = claims(acc=accuracy(0.05, 0.04, se=0.02))
    assert verdict_of(null, f"{PRIOR}: knobs").verdict == UNDECIDED
    assert cost_sentence(null).startswith(f"Whether not memorizing costs accuracy mostly on "
                                          f"subpopulations seen once: {UNDECIDED}")


def test_no_limiting_knob_points_to_stronger_knobs():
    found = claims(costs=cost(fit=0.97))  # every knob still fits its singletons
    assert not found.finding.str.contains("knobs that stop fitting").any()
    assert "give stronger knobs (--knobs, or --grid" in cost_sentence(found)


# ------------------------------------------------------------------ control and theory


def test_control_and_theory_both_ways():
    sentence = control_theory_sentence(claims())
    assert sentence.startswith("The singleton cost shrinks on the no-tail control")
    assert ("Feldman's τ₁ × extra unfitted singletons predicts the measured cost within a "
            "factor of 2 (measured / predicted 1.000 [0.931, 1.069], mean over 2 knobs)"
            in sentence)

    # The control pays as much as the tail; the theory is 5x off.
    found = claims(costs=cost(zipf_error=0.01, control_error=0.05, ratio=5.0, ratio_se=0.2))
    assert verdict_of(found, "the singleton cost shrinks").verdict == NO
    assert verdict_of(found, "measured singleton cost").verdict == NO
    sentence = control_theory_sentence(found)
    assert "The singleton cost does not shrink on the no-tail control" in sentence
    assert "does not predict the measured cost within a factor of 2" in sentence

    # Too noisy to tell either.
    found = claims(costs=cost(zipf_error=0.003, control_error=0.001, ratio=1.5, ratio_se=1.0))
    assert verdict_of(found, "the singleton cost shrinks").verdict == UNDECIDED
    assert verdict_of(found, "measured singleton cost").verdict == UNDECIDED
    sentence = control_theory_sentence(found)
    assert f"Whether the singleton cost shrinks on the no-tail control: {UNDECIDED}" in sentence
    assert f"whether Feldman's τ₁ predicts the measured cost within a factor of 2: {UNDECIDED}" \
        in sentence


def test_an_undefined_ratio_cannot_decide_instead_of_no():
    # The tiny preset's knobs left no singleton unfitted beyond the baseline: the ratio is
    # NaN, which used to read "no".
    found = claims(costs=cost(ratio=np.nan, ratio_se=np.nan))
    row = verdict_of(found, "measured singleton cost")
    assert row.verdict == UNDECIDED and "no ratio to compare" in row.measured
    assert (within_factor(0.6, 1.9), within_factor(2.1, 3.0), within_factor(0.3, 0.45),
            within_factor(0.4, 1.2)) == (YES, NO, NO, UNDECIDED)


def test_measured_over_theory_standard_error_by_the_delta_method():
    """cost_row's ratio e / (τ₁ u) with se² = se_e² / t² + e² se_t² / t⁴ (t = τ₁ u), from
    per-model arrays whose means and standard errors are known."""
    models = 4
    zero = {b: np.zeros(models) for b in TEST_BUCKETS}
    baseline = SimpleNamespace(error_mass=zero, test_acc=np.full(models, 0.8),
                               unfit=np.zeros(models), singletons=np.full(models, 20.0),
                               transfer=(10, 9, 10, 1))
    error = np.array([0.02, 0.03, 0.04, 0.03])
    unfit = np.array([8.0, 10.0, 12.0, 10.0])
    knob = SimpleNamespace(error_mass={**zero, "1": error}, test_acc=np.full(models, 0.77),
                           unfit=unfit, singletons=np.full(models, 20.0),
                           transfer=(10, 8, 10, 1))
    tau1 = 0.003
    row = cost_row(PRIOR, "weight_decay", knob, baseline, tau1)
    e, se_e = error.mean(), error.std(ddof=1) / 2
    t, se_t = tau1 * unfit.mean(), tau1 * unfit.std(ddof=1) / 2
    assert row["measured_over_theory"] == pytest.approx(e / t)
    assert row["measured_over_theory_se"] == pytest.approx(
        math.sqrt(se_e**2 / t**2 + e**2 * se_t**2 / t**4))


def test_the_reproduce_line_recreates_knobs_given_as_json():
    """The page shows a --knobs JSON argument double-quoted; the shell reads it as the
    same argument, so the line still recreates the config."""
    from pathlib import Path

    from memlab.studies.base import Result
    from memlab.studies.longtail import STUDY, LongtailConfig
    from memlab.studies.longtail.figures import reproduce_text
    from memlab.testing import config_from_command

    config = LongtailConfig.tiny().replace(knobs={"wd": {"weight_decay": 0.03},
                                                  "narrow": {"model_kwargs": {"hidden": [8]}}})
    text = reproduce_text(Result("longtail", config.to_dict(), out=Path("runs/lt")))
    assert '--knobs "{\\"wd\\":' in text and "'{" not in text
    assert config_from_command(STUDY, text) == config
