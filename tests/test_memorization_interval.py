"""The memorization interval (Wilson per side, Newcombe's hybrid score for the difference):
published values, brute force against the estimator, coverage by Monte Carlo, and no
standard error of 0 where models disagree with nothing."""

import math

import numpy as np
import pytest

from memlab.measures import memorization as mz

# The coverage grid: models per side (n_in, n_out) from the 36-75 to the
# papers' 1,000-model scale at r = 0.7, IN accuracies up to 0.97, OUT accuracies
# 0.1-0.7, and one example that is not memorized (0.9 on both sides).
SIDES = [(36, 75), (75, 36), (70, 30), (140, 60), (700, 300)]
ACCURACIES = [(p_in, p_out) for p_in in (0.5, 0.7, 0.9, 0.97)
              for p_out in (0.1, 0.3, 0.5, 0.7)] + [(0.9, 0.9)]
REPLICATES = 20_000  # Monte Carlo error of a coverage near 0.95: 0.0015


def test_newcombe_1998_worked_examples():
    """Newcombe (1998), Table II, method 10: 56/70 - 48/80, 9/10 - 3/10, 5/56 - 0/29."""
    for (x1, n1, x2, n2), (lo, hi) in [((56, 70, 48, 80), (0.0524, 0.3339)),
                                       ((9, 10, 3, 10), (0.1705, 0.8090)),
                                       ((5, 56, 0, 29), (-0.0381, 0.1926))]:
        got = mz.newcombe_interval(x1 / n1, n1, x2 / n2, n2)
        assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_closed_form_at_zero_and_one():
    # x = n: the lower bound is n / (n + z^2), the upper bound 1; x = 0 mirrors it.
    lo, hi = mz.wilson_interval(np.array([1.0, 0.0]), 40)
    z2 = mz.Z95**2
    np.testing.assert_allclose(lo, [40 / (40 + z2), 0.0], atol=1e-12)
    np.testing.assert_allclose(hi, [1.0, z2 / (40 + z2)], atol=1e-12)


def test_estimator_interval_equals_brute_force():
    rng = np.random.default_rng(3)
    t, n = 50, 40
    mask = rng.random((t, n)) < 0.7
    mask[0], mask[1] = True, False  # every example has IN and OUT models
    correct = rng.random((t, n)) < np.where(mask, 0.9, 0.5)
    correct[:, :5] = True  # five examples every model gets right
    stats = mz.in_out(mask, correct)
    lo, hi = stats.interval()
    for i in range(n):
        inside, outside = correct[mask[:, i], i], correct[~mask[:, i], i]
        want = mz.newcombe_interval(inside.mean(), len(inside), outside.mean(), len(outside))
        assert (lo[i], hi[i]) == pytest.approx(want, abs=1e-12)
        assert stats.se[i] == pytest.approx((want[1] - want[0]) / (2 * 1.959963984540054))
    assert (stats.se > 0).all()


def test_no_standard_error_of_zero_unless_one_side_is_empty():
    """All models right (the plug-in error is 0 there) with 36 IN / 75 OUT models:
    se is the Wilson half-widths combined, (hi - lo) / 3.92 with lo = -(1 - 36/(36+z^2))
    and hi = 1 - 75/(75+z^2); an example with no OUT model gets NaN, not 0."""
    t = 111
    mask = np.zeros((t, 3), bool)
    mask[:36, :2] = True
    mask[:, 2] = True  # example 2: every model trained on it
    stats = mz.in_out(mask, np.ones((t, 3), bool))
    z2 = mz.Z95**2
    expected = ((1 - 75 / (75 + z2)) + (1 - 36 / (36 + z2))) / (2 * mz.Z95)
    assert mz.binomial_se(1.0, 36, 1.0, 75) == 0  # the collapse this replaces
    assert stats.se[0] == pytest.approx(expected, rel=1e-12) and stats.se[0] > 0.03
    assert np.isnan(stats.se[2]) and np.isnan(stats.score[2])


@pytest.mark.parametrize("n_in, n_out", SIDES)
def test_coverage_of_the_95_percent_interval(n_in, n_out):
    """For every (p_in, p_out) of the grid: draw REPLICATES IN and OUT counts, and count
    how often [lo, hi] holds the true p_in - p_out. The plug-in interval fails this
    (coverage 0.90 at n = 70/30, p = 0.97/0.1)."""
    rng = np.random.default_rng([n_in, n_out])
    for p_in, p_out in ACCURACIES:
        acc_in = rng.binomial(n_in, p_in, REPLICATES) / n_in
        acc_out = rng.binomial(n_out, p_out, REPLICATES) / n_out
        lo, hi = mz.newcombe_interval(acc_in, n_in, acc_out, n_out)
        coverage = np.mean((lo <= p_in - p_out) & (p_in - p_out <= hi))
        assert 0.93 <= coverage <= 0.97, (n_in, n_out, p_in, p_out, coverage)


def test_coverage_through_the_estimator():
    """The same check end to end: a population of 200 models in which 3,000 examples have
    IN accuracy 0.9 and OUT accuracy 0.4; in_out's intervals hold 0.5 about 95% of the
    time, and se matches the spread of the scores."""
    rng = np.random.default_rng(5)
    t, n = 200, 3000
    mask = np.argsort(rng.random((t, n)), axis=0) < 140  # exactly 140 IN models each
    correct = rng.random((t, n)) < np.where(mask, 0.9, 0.4)
    stats = mz.in_out(mask, correct)
    lo, hi = stats.interval()
    coverage = np.mean((lo <= 0.5) & (0.5 <= hi))
    assert 0.93 <= coverage <= 0.97
    true_se = math.sqrt(0.9 * 0.1 / 140 + 0.4 * 0.6 / 60)
    assert np.mean(stats.se) == pytest.approx(true_se, rel=0.03)


def test_influence_standard_errors_use_the_same_interval():
    rng = np.random.default_rng(7)
    mask = rng.random((60, 20)) < 0.6
    mask[0], mask[1] = True, False
    test_correct = rng.random((60, 9)) < 0.95
    test_correct[:, 0] = True  # a test example every model gets right
    infl = mz.estimate_influence(mask, test_correct)
    for i, j in [(0, 0), (5, 3), (19, 8)]:
        inside, outside = test_correct[mask[:, i], j], test_correct[~mask[:, i], j]
        lo, hi = mz.newcombe_interval(inside.mean(), len(inside), outside.mean(),
                                      len(outside))
        assert infl.se[i, j] == pytest.approx((hi - lo) / (2 * mz.Z95), abs=1e-6)
    assert (np.asarray(infl.se) > 0).all()
