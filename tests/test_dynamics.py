"""Per-example learning dynamics on hand-made correctness histories with known answers."""

import numpy as np
import pytest

from memlab.measures.dynamics import (
    accuracy_curve,
    binomial_reference,
    dispersion_interval,
    dispersion_test,
    epochs_to_reach,
    first_learned,
    forgetting_events,
    learned_for_good,
    misclassification_rates,
    order_consistency,
)

# Rows are examples, columns epochs 1..5 (transposed below to the engine's (epochs, n)).
HISTORY = np.array([
    [0, 1, 1, 1, 1],  # learned at 2, for good at 2, never forgotten
    [1, 0, 1, 0, 1],  # learned at 1, for good at 5, forgotten twice
    [1, 1, 0, 0, 0],  # learned at 1, forgotten once, wrong at the end
    [0, 0, 0, 0, 0],  # never learned
    [1, 1, 1, 1, 1],  # learned at once, for good
], dtype=bool).T


def test_hand_made_history():
    nan = np.nan
    np.testing.assert_array_equal(first_learned(HISTORY), [2, 1, 1, nan, 1])
    np.testing.assert_array_equal(learned_for_good(HISTORY), [2, 5, nan, nan, 1])
    np.testing.assert_array_equal(forgetting_events(HISTORY), [0, 2, 1, 0, 0])


def test_model_axis_and_mask():
    stacked = np.stack([HISTORY, ~HISTORY])  # (2 models, 5 epochs, 5 examples)
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=bool)
    events = forgetting_events(stacked, mask)
    assert events.shape == (2, 5)
    np.testing.assert_array_equal(events[0], [0, 2, 1, 0, np.nan])
    # ~HISTORY: ex0 [1,0,0,0,0] forgotten once, ex1 [0,1,0,1,0] twice, the rest never.
    np.testing.assert_array_equal(events[1], [1, 2, 0, 0, 0])
    np.testing.assert_array_equal(learned_for_good(stacked)[1], [np.nan, np.nan, 3, 1, np.nan])


def test_accuracy_curve_and_epochs_to_reach():
    curve = accuracy_curve(HISTORY[None])[0]
    np.testing.assert_allclose(curve, [3 / 5, 3 / 5, 3 / 5, 2 / 5, 3 / 5])
    only = accuracy_curve(HISTORY[None], examples=np.array([1, 0, 0, 0, 1], bool))[0]
    np.testing.assert_allclose(only, [0.5, 1, 1, 1, 1])
    np.testing.assert_array_equal(epochs_to_reach(np.array([[0.2, 0.9, 1.0], [0.1, 0.2, 0.3]]),
                                                  0.9), [2, np.nan])


def test_misclassification_rates_count_members_only():
    correct = np.array([[1, 0, 1], [0, 0, 1]], dtype=bool)
    mask = np.array([[1, 1, 0], [1, 1, 1]], dtype=bool)
    errors, trials = misclassification_rates(correct, mask)
    np.testing.assert_array_equal(errors, [1, 2, 0])
    np.testing.assert_array_equal(trials, [2, 2, 1])


def test_dispersion_binomial_fits_equally_hard_examples():
    rng = np.random.default_rng(0)
    trials = np.full(2000, 100)
    errors = rng.binomial(trials, 0.3)
    result = dispersion_test(errors, trials)
    assert result.mean_rate == pytest.approx(0.3, abs=0.01)
    assert result.dispersion_index == pytest.approx(1.0, abs=0.1)
    assert not result.over_dispersed
    reference = binomial_reference(trials, 0.3, seed=1)
    assert reference.shape == (2000,) and abs(reference.mean() - 0.3) < 0.01


def test_dispersion_detects_easy_and_hard_examples():
    # Half the examples are always right, half wrong 60% of the time: mean rate 0.3.
    rng = np.random.default_rng(0)
    trials = np.full(2000, 100)
    errors = np.concatenate([np.zeros(1000, int), rng.binomial(trials[:1000], 0.6)])
    result = dispersion_test(errors, trials)
    assert result.over_dispersed and result.dispersion_index > 20


def test_order_consistency():
    order = np.arange(50, dtype=float)
    assert order_consistency(np.stack([order, order, order])) == pytest.approx(1.0)
    assert order_consistency(np.stack([order, order[::-1]])) == pytest.approx(-1.0)
    with_gaps = np.stack([order, order])
    with_gaps[0, :10] = np.nan  # non-members are left out of the pair, not counted as ties
    assert order_consistency(with_gaps) == pytest.approx(1.0)


def test_dispersion_within_groups_removes_a_group_effect():
    # Two classes with different but homogeneous error rates: over-dispersed as one
    # population, Binomial within each class.
    rng = np.random.default_rng(0)
    trials = np.full(2000, 100)
    labels = np.repeat([0, 1], 1000)
    errors = rng.binomial(trials, np.where(labels == 0, 0.1, 0.6))
    assert dispersion_test(errors, trials).over_dispersed
    within = dispersion_test(errors, trials, groups=labels)
    assert within.dispersion_index == pytest.approx(1.0, abs=0.1)
    assert not within.over_dispersed and within.dof == 1998


def test_dispersion_interval_covers_one_for_equal_examples_and_not_for_a_mix():
    rng = np.random.default_rng(1)
    trials = np.full(1000, 100)
    covered = 0
    for repeat in range(20):  # a 95% interval: covers the true index 1 about 19 times in 20
        errors = rng.binomial(trials, 0.3)
        low, high = dispersion_interval(errors, trials, n_bootstrap=200, seed=repeat)
        covered += low <= 1 <= high
        assert high - low < 0.4  # sd of the index ~ sqrt(2 / 1000) per term: narrow
    assert covered >= 16
    mixed = np.concatenate([np.zeros(500, int), rng.binomial(trials[:500], 0.6)])
    low, high = dispersion_interval(mixed, trials, n_bootstrap=200)
    index = dispersion_test(mixed, trials).dispersion_index
    assert 1 < low < index < high
    # A pure class effect: over-dispersed as one population, covers 1 within class.
    labels = np.repeat([0, 1], 500)
    errors = rng.binomial(trials, np.where(labels == 0, 0.1, 0.6))
    assert dispersion_interval(errors, trials, n_bootstrap=200)[0] > 1
    low, high = dispersion_interval(errors, trials, labels, n_bootstrap=200)
    assert low <= 1 <= high
