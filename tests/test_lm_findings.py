"""The language-model report's finding: each headline sentence from planted summaries,
both ways ("grows" / "shrinks" / "cannot decide"; above the noise floor or not), the
flags that point to the fix when the count cannot answer, and the noise floor itself on
planted scores. Synthetic numbers only: milliseconds."""

import numpy as np
import pytest

from memlab.measures.shape import PEAKS, RISES, UNDECIDED
from memlab.studies.lm_memorize.figures import (
    FLOOR_ABOVE,
    FLOOR_BELOW,
    copies_sentence,
    memorized_sentence,
    memorized_verdict,
    simplicity_caption,
)
from memlab.studies.lm_memorize.study import memorized_noise_floor


def summary(**changes) -> dict:
    """A summary of a population that fits its documents, with reliable scores."""
    base = {"n_train": 600, "n_models": 64, "epochs": 40, "memorized_threshold": 0.25,
            "fraction_memorized": 0.1, "n_memorized": 60,
            "memorized_noise_floor": {"expected": 2.0, "sd": 1.4, "n": 600},
            "train_acc_in": 0.9, "reliability_all_models": 0.85,
            "reliability_all_models_sd": 0.02, "documents_without_in_or_out": 0,
            "spearman_mem_copies": {"rho": 0.3, "ci_low": 0.2, "ci_high": 0.4, "n": 600},
            "spearman_mem_copies_random": None}
    return {**base, **changes}


def rho(value: float, low: float, high: float, n: int = 300) -> dict:
    return {"rho": value, "ci_low": low, "ci_high": high, "n": n}


# ------------------------------------------------------------------ copies


def test_memorization_with_copies_grows_shrinks_or_cannot_decide():
    grows = copies_sentence(summary(spearman_mem_copies_random=rho(0.41, 0.32, 0.49)))
    assert grows == ("Memorization grows with the number of exact copies of a document "
                     "(Spearman ρ 0.410 [0.320, 0.490] over 300 random documents, 95% "
                     "interval).")
    shrinks = copies_sentence(summary(spearman_mem_copies_random=rho(-0.4, -0.5, -0.3)))
    assert shrinks.startswith("Memorization shrinks with the number of exact copies")
    null = copies_sentence(summary(spearman_mem_copies_random=rho(-0.05, -0.16, 0.07)))
    assert null.startswith(f"Whether memorization grows with the number of exact copies: "
                           f"{UNDECIDED}") and "holds 0" in null
    # Without the synthetic corpus's random documents: every document.
    assert "over 600 documents" in copies_sentence(summary())
    # No document has a copy: Spearman is undefined (null in summary.json).
    none = copies_sentence(summary(spearman_mem_copies=rho(None, None, None)))
    assert UNDECIDED in none and "no training document has an exact copy" in none


# ------------------------------------------------------------------ the count and its floor


def test_memorized_count_beside_its_noise_floor_both_ways():
    above = memorized_sentence(summary())
    assert above == ("60 of 600 documents (10.0%) have counterfactual memorization ≥ 0.25, "
                     f"against 2.0 ± 1.4 expected from estimation noise alone: {FLOOR_ABOVE}.")
    within = summary(n_memorized=4, fraction_memorized=4 / 600)
    assert memorized_verdict(within) == UNDECIDED
    assert memorized_sentence(within).startswith(
        f"Whether any document is memorized: {UNDECIDED} — 4 of 600 documents")
    fewer = summary(n_memorized=0, memorized_noise_floor={"expected": 20.0, "sd": 4.0})
    assert memorized_verdict(fewer) == FLOOR_BELOW
    # A result saved before the floor was kept: the count, no verdict.
    old = summary()
    del old["memorized_noise_floor"]
    assert memorized_verdict(old) == UNDECIDED


def test_flags_point_to_the_fix():
    unfit = memorized_sentence(summary(train_acc_in=0.21, epochs=1))
    assert ("Flag: the models reach only 0.21 per-token accuracy on their own documents"
            in unfit) and "train longer (--epochs, now 1)" in unfit
    noisy = memorized_sentence(summary(reliability_all_models=0.25, n_models=8,
                                       reliability_all_models_sd=0.04))
    assert "split-half reliability is 0.250 ± 0.040 (below 0.5)" in noisy
    assert "more models make the scores reliable (--models, now 8)" in noisy
    missing = memorized_sentence(summary(documents_without_in_or_out=5))
    assert "5 documents have no IN or no OUT model and no score (more --models)" in missing
    assert "Flag" not in memorized_sentence(summary())


def test_noise_floor_on_planted_scores():
    rng = np.random.default_rng(0)
    n, threshold = 20_000, 0.25
    se = rng.uniform(0.05, 0.15, n)
    null = rng.normal(0, se)  # no document memorized: only estimation noise
    floor = memorized_noise_floor(null, se, threshold)
    observed = int((null >= threshold).sum())
    assert floor["n"] == n and floor["expected"] > 10
    assert abs(observed - floor["expected"]) < 4 * floor["sd"]  # the floor is the null count
    assert memorized_verdict({"n_memorized": observed, "memorized_noise_floor": floor}) \
        != FLOOR_ABOVE
    planted = null.copy()
    planted[:500] += 0.6  # 500 documents really memorized
    assert memorized_verdict({"n_memorized": int((planted >= threshold).sum()),
                              "memorized_noise_floor": memorized_noise_floor(
                                  planted, se, threshold)}) == FLOOR_ABOVE
    # NaN scores (no IN or no OUT model) and zero standard errors are handled.
    edge = memorized_noise_floor(np.array([np.nan, 0.3, 0.0]), np.array([0.1, 0.0, 0.1]),
                                 threshold)
    assert edge["n"] == 2 and edge["expected"] == pytest.approx(0.0062, abs=1e-4)


# ------------------------------------------------------------------ the shape


def line(slope: float, low: float, high: float) -> dict:
    return {"slope": slope, "ci_low": low, "ci_high": high, "intercept": 0.0}


def test_simplicity_sentence_says_the_verdict():
    shape = {"verdict": PEAKS, "breakpoint": 0.55, "n_documents": 600,
             "left": line(0.8, 0.5, 1.1), "right": line(-0.9, -1.2, -0.6),
             "overall": line(0.05, -0.1, 0.2)}
    assert simplicity_caption(shape).startswith(f"Memorization {PEAKS}, as in the paper's "
                                                "inverted U (two-lines test broken at "
                                                "simplicity 0.55")
    rises = simplicity_caption({**shape, "verdict": RISES})
    assert rises.startswith(f"Memorization {RISES} with simplicity: no inverted U")
    undecided = simplicity_caption({**shape, "verdict": UNDECIDED})
    assert f"the data {UNDECIDED} between a peak and a monotone trend" in undecided
    assert UNDECIDED in simplicity_caption({"verdict": UNDECIDED, "left": None,
                                            "reason": "fewer than 3 bins"})
