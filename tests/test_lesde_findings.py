"""The LE-SDE report's finding, computed from the data with planted cases both ways (issue
31): where the phase transition lies (a bracket of resolved growth rates: at the predicted
α/β = 1, away from it, or cannot decide), which side of 1 fitted networks sit on, and
whether the locally elastic constant stands above its noise floor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memlab.measures.stats import UNDECIDED
from memlab.studies.lesde.figures import (
    fit_sentence,
    lesde_finding,
    stability_sentence,
    transition_sentence,
)
from memlab.studies.lesde.verdicts import (
    AT_ONE,
    NOT_AT_ONE,
    NOT_SEPARATING,
    SEPARATING,
    ratio_interval,
    stability_verdict,
    threshold_bracket,
    transition_summary,
)

RATIOS = np.round(np.arange(0.8, 1.201, 0.05), 2)


def scan(threshold: float, se: float, noises=(0.0, 0.3), ratios=RATIOS) -> pd.DataFrame:
    """A threshold scan whose growth rate is ratio − threshold, with standard error se."""
    return pd.DataFrame([{"drift": "ce", "noise": noise, "ratio": r, "rate": r - threshold,
                          "rate_se": se} for noise in noises for r in ratios])


def test_threshold_bracket_known_answers():
    rates = RATIOS - 1.0
    assert threshold_bracket(RATIOS, rates, np.full(len(RATIOS), 0.01)) == (0.95, 1.05)
    # se 0.04: ±0.078 leaves 0.95 and 1.05 unresolved, so the bracket widens
    assert threshold_bracket(RATIOS, rates, np.full(len(RATIOS), 0.04)) == (0.9, 1.1)
    assert threshold_bracket(RATIOS, rates, np.full(len(RATIOS), 1.0)) is None  # unresolved
    assert threshold_bracket(RATIOS, rates, np.full(len(RATIOS), np.nan)) is None  # one run
    assert threshold_bracket([1.0], [0.0], [0.01]) is None  # one scanned ratio
    interleaved = np.array([-1, 1, -1, 1, 1, 1, 1, 1, 1], float)
    assert threshold_bracket(RATIOS, interleaved, np.full(len(RATIOS), 0.01)) is None


@pytest.mark.parametrize("threshold, se, verdict, words", [
    (1.0, 0.01, AT_ONE, "at the predicted α/β = 1"),
    # the scanned ratio 1 resolved above 0: the crossing lies within one scan step of 1
    (0.98, 0.001, AT_ONE, "between α/β = 0.95 and 1 at all 2 noise levels"),
    (1.1, 0.01, NOT_AT_ONE, "between 1.05 and 1.15 at σ = 0; between 1.05 and 1.15 at σ = 0.3, "
                            "a bracket that excludes the predicted α/β = 1"),
    (1.0, 1.0, UNDECIDED, "cannot decide where it turns positive: the scan resolves the sign "
                          "change at 0 of 2 noise levels"),
])
def test_transition_verdict_planted_both_ways(threshold, se, verdict, words):
    found = transition_summary(scan(threshold, se))["ce"]
    assert found["transition"] == verdict
    sentence = transition_sentence({"ce": found})
    assert words in sentence
    assert ("--n-runs" in sentence) == (verdict == UNDECIDED)  # the pointer when undecided
    if verdict == AT_ONE and threshold == 1.0:
        assert (found["threshold_lo"], found["threshold_hi"]) == (0.95, 1.05)
        assert "between α/β = 0.95 and 1.05 at all 2 noise levels" in sentence


def test_one_unresolved_noise_level_cannot_decide_but_a_miss_is_a_miss():
    resolved, noisy = scan(1.0, 0.01, noises=(0.0,)), scan(1.0, 5.0, noises=(1.0,))
    assert transition_summary(pd.concat([resolved, noisy]))["ce"]["transition"] == UNDECIDED
    away = scan(1.15, 0.01, noises=(0.0,))
    assert transition_summary(pd.concat([away, noisy]))["ce"]["transition"] == NOT_AT_ONE


def test_fitted_ratio_sides_of_one():
    assert ratio_interval([1.8, 2.0, 2.2])["verdict"] == SEPARATING
    assert ratio_interval([0.5, 0.55, 0.6])["verdict"] == NOT_SEPARATING
    assert ratio_interval([0.5, 1.5, 1.0])["verdict"] == UNDECIDED  # the interval holds 1
    single = ratio_interval([2.0])
    assert single["verdict"] == UNDECIDED and single["low"] is None


def fit_summary(ratios: list[float]) -> dict:
    return {"digits": {"models": len(ratios), "ratio_interval": ratio_interval(ratios),
                       "strengths": {"ratio": {"mean": float(np.mean(ratios)), "se": 0.1}},
                       "error_fitted": {"loss": {"relative_to_range": 0.08}}}}


def test_fit_sentence_planted_both_ways():
    separating = fit_sentence(fit_summary([1.8, 2.0, 2.2]))
    assert "on digits, α/β = 2.00 [1.50, 2.50] over 3 networks: above 1, the separating " \
           "phase" in separating
    assert "off by 8.0% of the real loss's range" in separating
    assert "cannot decide which side of 1" in fit_sentence(fit_summary([0.5, 1.5, 1.0]))


def stability_row(above: bool, vacuous: bool = False) -> dict:
    return {"beta_le_above_floor": above, "beta_uniform_above_floor": above,
            "bound_le": 0.3, "bound_uniform": 0.9, "bound_le_vacuous": vacuous,
            "n_models": 16}


def test_stability_sentence_counts_only_constants_above_their_floor():
    both = stability_sentence({"digits/zero_one": stability_row(True),
                               "digits/cross_entropy_clipped": stability_row(False)})
    assert "above its permuted-mask noise floor in 1 of 2 dataset/loss settings (cannot " \
           "decide in 1)" in both
    assert "tighter than the uniform one in 1 of 1 and non-vacuous (below M) in 1 of 1" in both
    null = stability_sentence({"digits/zero_one": stability_row(False)})
    assert "cannot be told from its permuted-mask noise floor in any of the 1" in null
    assert "tighter" not in null  # the bound comparison is suppressed at the floor


def test_one_permutation_cannot_decide_the_floor():
    row = stability_row(False)
    assert "cannot decide (one permuted mask" in stability_verdict(row, n_permutations=1)
    assert "cannot be told from its noise floor with 16 models" in stability_verdict(row, 5)


def test_finding_has_one_sentence_per_part():
    summary = {"phase": transition_summary(scan(1.0, 0.01)), "fit": fit_summary([2.0, 2.1]),
               "stability": {"digits/zero_one": stability_row(True)}}
    assert len(lesde_finding(summary)) == 3
    assert len(lesde_finding({"phase": summary["phase"]})) == 1
