"""The memorization report's finding, planted both ways: every sentence it leads with is a
function of the summary (memlab.studies.memorize.figures.finding), and the statistics it
reads (noise floors from a permuted membership mask, the reliability verdict, AUROC
intervals) are computed at analysis time (memlab.studies.memorize.study). Synthetic
summaries and tiny simulated populations: no training, seconds."""

import numpy as np
import pytest
from scipy import stats

from memlab.measures import memorization as mz
from memlab.measures.stats import UNDECIDED, auroc_interval
from memlab.studies.memorize.figures import (
    finding,
    label_noise_sentence,
    memorized_sentence,
    pairs_sentence,
    pointer_sentence,
)
from memlab.studies.memorize.floors import (
    ABOVE_NOISE,
    RELIABLE,
    UNRELIABLE,
    count_memorized,
    count_pairs,
    count_verdict,
    noise_floors,
    null_upper,
    reliability_verdict,
)

# ------------------------------------------------------------------ synthetic summaries


def summary(n_pairs: int = 302, pair_counts=(10, 14, 12, 9, 15), reliability: float = 0.99,
            reliability_sd: float = 0.002, train_acc: float = 0.993, noise: bool = True,
            noise_auroc=(0.936, 0.92, 0.95), n_memorized: int = 2312,
            memorized_counts=(40, 52, 47, 38, 45)) -> dict:
    """A summary as the study writes it (the demo's numbers by default), its verdicts
    computed by the study's own functions from the counts given."""
    pairs, memorized = np.asarray(pair_counts, float), np.asarray(memorized_counts, float)
    s = {
        "dataset": "mnist1d", "run_dir": "runs/memorize/population", "n_train": 4000,
        "n_models": 512, "epochs": 30, "target_se": 0.1, "mem_min": 0.25, "infl_min": 0.15,
        "same_label": True, "duplicate_threshold": 0.95, "train_acc_in_mean": train_acc,
        "n_memorized": n_memorized, "memorized_fraction": n_memorized / 4000,
        "memorized_fraction_lo": n_memorized / 4000 - 0.004,
        "memorized_fraction_hi": n_memorized / 4000 + 0.004,
        "n_memorized_null": memorized.mean(), "n_memorized_null_sd": memorized.std(ddof=1),
        "memorized_verdict": count_verdict(n_memorized, null_upper(memorized)),
        "reliability": reliability, "reliability_sd": reliability_sd,
        "reliability_verdict": reliability_verdict(reliability, reliability_sd),
        "n_pairs": n_pairs, "n_pair_tests": max(1, n_pairs // 2), "n_pairs_near_duplicate": 1,
        "n_pairs_null": pairs.mean(), "n_pairs_null_sd": pairs.std(ddof=1),
        "pairs_verdict": count_verdict(n_pairs, null_upper(pairs)), "null_permutations": 5,
        "estimator": {"estimator": "probit", "reason": "test"},
        "models_needed": {"binary": 900, "probit": 600}, "has_label_error": True,
    }
    if noise:
        auroc, low, high = noise_auroc
        s.update({"label_noise_fraction": 0.1, "n_flipped": 400, "noise_auroc": auroc,
                  "noise_auroc_lo": low, "noise_auroc_hi": high,
                  "label_error_auroc": 0.948, "label_error_auroc_lo": 0.93,
                  "label_error_auroc_hi": 0.96, "final_loss_auroc": 0.989,
                  "final_loss_auroc_lo": 0.98, "final_loss_auroc_hi": 0.995})
    return s


def test_pairs_above_their_noise_floor_are_a_finding():
    s = summary(n_pairs=302)
    assert s["pairs_verdict"] == ABOVE_NOISE
    sentence = pairs_sentence(s)
    assert sentence.startswith("302 high-influence pairs (mem ≥ 0.25, infl ≥ 0.15, same label)")
    assert "give 12.0 ± 2.5" in sentence and "about 290 more than chance" in sentence
    assert UNDECIDED not in sentence and "not a finding" not in sentence


def test_pairs_within_their_noise_floor_cannot_be_told_from_noise():
    s = summary(n_pairs=961, pair_counts=(955, 990, 940, 970, 962))
    assert s["pairs_verdict"] == UNDECIDED
    sentence = pairs_sentence(s)
    assert "cannot be told from noise" in sentence and UNDECIDED in sentence
    assert "more than chance" not in sentence
    # Just above the mean but inside the floor's spread: still undecided.
    assert summary(n_pairs=20)["pairs_verdict"] == UNDECIDED
    # No pair at all: said, with the floor.
    assert pairs_sentence(summary(n_pairs=0)).startswith("No pair passes")


def test_low_reliability_flags_the_pairs_and_rankings():
    # The case: 979 pairs beside a split-half reliability of 0.25. Even a count far
    # above its floor is not presented as a finding.
    s = summary(n_pairs=979, reliability=0.25, reliability_sd=0.03)
    assert s["reliability_verdict"] == UNRELIABLE and s["pairs_verdict"] == ABOVE_NOISE
    sentences = finding(s)
    assert sentences[1].startswith("The 979 high-influence pairs")
    assert "are not a finding" in sentences[1] and "more than chance" not in sentences[1]
    assert "The scores are not reliable: split-half reliability 0.250 ± 0.030" in sentences[0]
    assert "--models 600" in sentences[0]  # the chosen (probit) estimator's models_needed
    # A reliability whose interval reaches 0.5 cannot be told from it: flagged too.
    s = summary(reliability=0.55, reliability_sd=0.05)
    assert s["reliability_verdict"] == UNDECIDED
    assert "cannot be told from 0.5 (cannot decide)" in memorized_sentence(s)
    assert "are not a finding" in pairs_sentence(s)
    # The demo's reliability: the scores are reproducible, the count is a finding.
    assert "The scores are reproducible" in memorized_sentence(summary())


def test_memorized_count_beside_its_floor_both_ways():
    s = summary()
    sentence = memorized_sentence(s)
    assert sentence.startswith("2,312 of 4,000 training examples have mem ≥ 0.25: "
                               "57.80% [57.40%, 58.20%]")
    assert "against 44.4 ± 5.6 from the same population with its membership mask permuted" \
        in sentence
    null = summary(n_memorized=300, memorized_counts=(290, 310, 305, 296, 301))
    assert null["memorized_verdict"] == UNDECIDED
    assert "cannot decide whether they are memorized or noise" in memorized_sentence(null)


def test_models_that_do_not_fit_point_to_the_scores_that_find_label_noise():
    # The case: training accuracy 0.90, mem's AUROC 0.37 for the planted flips.
    s = summary(train_acc=0.90, noise_auroc=(0.37, 0.33, 0.41))
    sentence = pointer_sentence(s)
    assert "fit only 90.0% of their own training examples" in sentence
    assert "memorization cannot find mislabeled examples in this population" in sentence
    assert "AUROC of mem for the planted flips: 0.370 [0.330, 0.410]" in sentence
    assert "label_error column of the scores table" in sentence and "0.948" in sentence
    assert "memlab attribute runs/memorize/population" in sentence
    assert "final_loss column of the proxies table: AUROC 0.989" in sentence
    assert "--epochs, now 30" in sentence
    assert finding(s)[2] == sentence
    # Without planted noise the pointer stands, without AUROCs.
    bare = pointer_sentence(summary(train_acc=0.90, noise=False))
    assert "memlab attribute" in bare and "AUROC" not in bare
    # Models that fit: no pointer anywhere; the third sentence is the label-noise result.
    fitted = summary()
    assert pointer_sentence(fitted) is None
    assert not any("memlab attribute" in x for x in finding(fitted))
    assert finding(fitted)[2] == label_noise_sentence(fitted)
    assert len(finding(summary(noise=False))) == 2


def test_label_noise_sentence_follows_the_auroc_interval():
    found = label_noise_sentence(summary())
    assert "mem ranks the 400 flipped labels above the clean ones, AUROC 0.936 [0.920, 0.950]" \
        in found
    assert "label-error score" in found and "0.948 [0.930, 0.960]" in found
    chance = label_noise_sentence(summary(noise_auroc=(0.52, 0.47, 0.57)))
    assert "cannot decide whether mem ranks the 400 flipped labels above" in chance
    below = label_noise_sentence(summary(noise_auroc=(0.37, 0.33, 0.41)))
    assert "below the clean ones" in below
    assert label_noise_sentence(summary(noise=False)) is None


def test_verdict_rules():
    # 5 permutations: mean + t(4) · sqrt(1.2) · spread, spread at least sqrt(mean) and 1
    assert null_upper(np.zeros(5)) == pytest.approx(stats.t.ppf(0.975, 4) * np.sqrt(1.2))
    assert null_upper(np.full(5, 100.0)) == pytest.approx(
        100 + stats.t.ppf(0.975, 4) * np.sqrt(1.2) * 10)
    assert count_verdict(4, null_upper(np.zeros(5))) == ABOVE_NOISE
    assert count_verdict(3, null_upper(np.zeros(5))) == UNDECIDED
    assert count_verdict(10, None) == UNDECIDED
    with pytest.raises(ValueError, match="at least 2"):
        null_upper(np.zeros(1))
    assert reliability_verdict(0.9, 0.01) == RELIABLE
    assert reliability_verdict(0.3, 0.05) == UNRELIABLE
    assert reliability_verdict(0.5, 0.0) == UNDECIDED
    assert reliability_verdict(None, None) == UNDECIDED
    assert reliability_verdict(float("nan"), 0.1) == UNDECIDED


# ------------------------------------------------------------------ AUROC interval


def _delong_by_loops(scores, positives):
    pos, neg = scores[positives], scores[~positives]
    psi = lambda a, b: 1.0 if a > b else 0.5 if a == b else 0.0  # noqa: E731
    v10 = np.array([np.mean([psi(p, q) for q in neg]) for p in pos])
    v01 = np.array([np.mean([psi(p, q) for p in pos]) for q in neg])
    return v10.mean(), np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))


def test_auroc_interval_is_delongs_and_covers():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # ties on purpose
    positives = rng.random(60) < 0.3
    scores[positives] += 0.8
    auroc, low, high = auroc_interval(scores, positives)
    expected, se = _delong_by_loops(scores, positives)
    assert auroc == pytest.approx(expected)
    assert auroc == pytest.approx(mz.detection_auroc(scores, positives))
    logit = np.log(auroc / (1 - auroc))
    half = 1.959963984540054 * se / (auroc * (1 - auroc))
    assert (low, high) == pytest.approx((1 / (1 + np.exp(-(logit - half))),
                                         1 / (1 + np.exp(-(logit + half)))))
    # Perfect separation, one-sided groups, NaN scores (ranked lowest).
    assert auroc_interval(np.arange(6.0), np.arange(6) >= 3) == (1.0, 1.0, 1.0)
    assert all(np.isnan(auroc_interval(np.arange(4.0), np.zeros(4, bool))))
    assert np.isnan(auroc_interval(np.arange(4.0), np.arange(4) == 3)[1])
    assert auroc_interval(np.array([np.nan, 1, 2, 3, 4]), np.array([1, 0, 1, 0, 1], bool))[0] \
        == pytest.approx(mz.detection_auroc(np.array([np.nan, 1, 2, 3, 4]),
                                            np.array([1, 0, 1, 0, 1], bool)))
    # Coverage: 30 positives shifted by 1 sd against 70 negatives, true AUROC Φ(1/√2).
    truth = stats.norm.cdf(1 / np.sqrt(2))
    hits = 0
    for _ in range(400):
        x = rng.normal(size=100)
        labels = np.arange(100) < 30
        x[labels] += 1
        _, lo, hi = auroc_interval(x, labels)
        hits += lo <= truth <= hi
    assert 0.91 <= hits / 400 <= 0.99, hits


# ------------------------------------------------------------------ the noise floors


def _population(t: int, n: int, seed: int, p: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).random((t, n)) < p


def test_count_pairs_is_the_studys_pair_rule():
    """On the real mask, the null's counter counts exactly the study's pairs: binary
    influence from the streamed estimator, probit from the margins, same label."""
    rng = np.random.default_rng(1)
    mask = _population(40, 60, seed=2)
    correct = rng.random((40, 25)) < 0.6
    margins = rng.normal(0.3, 1.0, (40, 25))
    y_train, y_test = rng.integers(0, 3, 60), rng.integers(0, 3, 25)
    rows = np.arange(0, 60, 2)
    same = y_train[rows, None] == y_test[None, :]
    binary = np.asarray(mz.estimate_influence(mask, correct).values)[rows]
    assert count_pairs(mask[:, rows], correct, 0.15, "binary", y_train[rows], y_test) == \
        int(((binary >= 0.15) & same).sum()) > 0
    # brute force: the IN models' accuracy minus the OUT models' per pair
    loops = np.array([[correct[mask[:, i], j].mean() - correct[~mask[:, i], j].mean()
                       for j in range(25)] for i in rows])
    assert count_pairs(mask[:, rows], correct, 0.15, "binary") == int(
        (loops.astype(np.float32) >= 0.15).sum())
    probit = mz.in_out_pairs_margin(mask, margins).score.astype(np.float32)[rows]
    assert count_pairs(mask[:, rows], margins, 0.15, "probit", y_train[rows], y_test) == \
        int(((probit >= 0.15) & same).sum()) > 0
    assert count_memorized(mask, {"train_correct": mask}, "binary", 0.25) == 60


def test_pure_noise_population_counts_as_many_as_its_floor():
    """Random mask, records that ignore it: the real counts are one more draw from the
    null, so they sit at their floors and neither is a finding."""
    rng = np.random.default_rng(3)
    t, n, m = 64, 300, 80
    mask = _population(t, n, seed=4)
    train = {"train_correct": rng.random((t, n)) < 0.6}
    test = rng.random((t, m)) < 0.6
    mem = mz.estimate(mask, train, "binary").score
    memorized = np.flatnonzero(np.nan_to_num(mem, nan=-1) >= 0.15)
    n_memorized = count_memorized(mask, train, "binary", 0.15)
    n_pairs = count_pairs(mask[:, memorized], test, 0.2, "binary")
    floors = noise_floors(mask, train, test, memorized, estimator="binary",
                          influence_estimator="binary", mem_min=0.15, infl_min=0.2, seed=5)
    assert n_memorized > 10 and n_pairs > 50  # enough noise to count
    for count, null in ((n_memorized, floors["n_memorized_null"]),
                        (n_pairs, floors["n_pairs_null"])):
        assert abs(count - null) <= 4 * np.sqrt(null), (count, floors)
    assert count_verdict(n_memorized, floors["n_memorized_null_upper"]) == UNDECIDED
    assert count_verdict(n_pairs, floors["n_pairs_null_upper"]) == UNDECIDED
    assert len(floors["n_pairs_null_counts"]) == floors["null_permutations"] == 5
    # Seeded: the same floors again.
    again = noise_floors(mask, train, test, memorized, estimator="binary",
                         influence_estimator="binary", mem_min=0.15, infl_min=0.2, seed=5)
    assert again == floors


def test_planted_pairs_are_counted_and_their_floor_is_zero():
    """Every training example memorized (right iff trained on); test example j copies the
    membership of training example j for j < 10 (its only influence); the rest are always
    right. The 10 planted pairs are the count; the permuted population gives none."""
    t, n, m, planted = 64, 50, 20, 10
    mask = _population(t, n, seed=6)
    train = {"train_correct": mask.copy()}
    test = np.ones((t, m), bool)
    test[:, :planted] = mask[:, :planted]
    memorized = np.flatnonzero(mz.estimate(mask, train, "binary").score >= 0.25)
    assert len(memorized) == n
    n_pairs = count_pairs(mask[:, memorized], test, 0.5, "binary")
    assert n_pairs == planted
    floors = noise_floors(mask, train, test, memorized, estimator="binary",
                          influence_estimator="binary", mem_min=0.25, infl_min=0.5, seed=0)
    assert floors["n_pairs_null"] <= 0.2 and floors["n_memorized_null"] <= 0.2 * n
    assert count_verdict(n_pairs, floors["n_pairs_null_upper"]) == ABOVE_NOISE
    assert count_verdict(n, floors["n_memorized_null_upper"]) == ABOVE_NOISE
    # One planted pair is counted, and the permuted population gives ~0 for it — but one
    # pair cannot be told from a floor of 0 from 5 permutations.
    single = np.ones((t, m), bool)
    single[:, 0] = mask[:, 0]
    assert count_pairs(mask[:, memorized], single, 0.5, "binary") == 1
    floors = noise_floors(mask, train, single, memorized, estimator="binary",
                          influence_estimator="binary", mem_min=0.25, infl_min=0.5, seed=0)
    assert floors["n_pairs_null"] <= 0.2
    assert count_verdict(1, floors["n_pairs_null_upper"]) == UNDECIDED


def test_memorized_examples_without_influence_are_not_called_pairs():
    """Every example memorized, test records pure noise: the pairs that pass are chance
    pairs of truly memorized examples. The floor keeps the memorized set, so it counts
    them too (a floor that re-chose the set on the permuted mask would count almost none
    and call the noise a finding)."""
    rng = np.random.default_rng(7)
    t, n, m = 48, 120, 60
    mask = _population(t, n, seed=8)
    train = {"train_correct": mask.copy()}
    test = rng.random((t, m)) < 0.5
    memorized = np.arange(n)
    n_pairs = count_pairs(mask, test, 0.25, "binary")
    floors = noise_floors(mask, train, test, memorized, estimator="binary",
                          influence_estimator="binary", mem_min=0.25, infl_min=0.25, seed=1)
    assert n_pairs > 50
    assert abs(n_pairs - floors["n_pairs_null"]) <= 4 * np.sqrt(floors["n_pairs_null"])
    assert count_verdict(n_pairs, floors["n_pairs_null_upper"]) == UNDECIDED
    assert floors["n_memorized_null"] < 0.2 * n  # mem itself is real: its floor is low
