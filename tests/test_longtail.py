"""The long-tailed mixture generator and Feldman's τ₁ (memlab.data.longtail): known answers."""

import numpy as np
import pytest
from scipy import stats

from memlab.data.longtail import (
    LongTailSpec,
    expected_singletons,
    frequency_bucket,
    make_longtail,
    monte_carlo_singleton_cost,
    prior_frequencies,
    singleton_cost,
    singleton_mass,
)
from memlab.errors import ConfigError


def _chi_square_p(counts: np.ndarray, frequencies: np.ndarray) -> float:
    expected = counts.sum() * frequencies
    assert expected.min() >= 5  # the chi-square approximation holds
    return float(stats.chisquare(counts, expected).pvalue)


@pytest.mark.parametrize("prior, exponent", [("zipf", 1.0), ("zipf", 1.5), ("uniform", 0.0)])
def test_subpopulation_frequencies_follow_the_prior(prior, exponent):
    data = make_longtail(LongTailSpec(n_subpopulations=40, prior=prior, exponent=exponent,
                                      n_train=20000, n_test=10, seed=3))
    # The frequencies are the prior's, in a random order over subpopulations.
    np.testing.assert_allclose(np.sort(data.frequencies)[::-1],
                               prior_frequencies(prior, 40, exponent))
    assert _chi_square_p(data.train_counts, data.frequencies) > 0.01
    # The test has power: the same counts reject a different prior.
    other = prior_frequencies("uniform" if prior == "zipf" else "zipf", 40, 1.0)
    assert _chi_square_p(data.train_counts, other) < 1e-6


def test_zipf_frequencies_are_rank_to_the_minus_s():
    p = prior_frequencies("zipf", 100, 1.2)
    np.testing.assert_allclose(p[0] / p[9], 10**1.2)
    assert p.sum() == pytest.approx(1)


def test_tags_are_exact():
    data = make_longtail(LongTailSpec(n_subpopulations=300, n_train=600, n_test=400,
                                      spread=0.05, label_noise=0.1, seed=1))
    train, test = data.train_tags, data.test_tags
    assert list(train["index"]) == list(range(600)) and list(test["index"]) == list(range(400))
    counts = np.bincount(train.subpopulation, minlength=300)
    np.testing.assert_array_equal(counts, data.train_counts)
    for tags in (train, test):
        np.testing.assert_array_equal(tags.train_count, counts[tags.subpopulation])
        np.testing.assert_array_equal(tags.frequency, data.frequencies[tags.subpopulation])
    np.testing.assert_array_equal(train.label, data.dataset.y_train)
    np.testing.assert_array_equal(test.label, data.dataset.y_test)
    # Every input lies in its subpopulation's cluster (spread 0.05 ≪ centre distances).
    for x, tags in ((data.dataset.x_train, train), (data.dataset.x_test, test)):
        distances = ((x[:, None, :] - data.centres[None]) ** 2).sum(-1)
        np.testing.assert_array_equal(distances.argmin(1), tags.subpopulation)
        # Labels are the subpopulation's, except the ones tagged noisy, which differ.
        own = data.subpopulation_labels[tags.subpopulation]
        np.testing.assert_array_equal(tags.label != own, tags.noisy)
    assert 0.05 < train.noisy.mean() < 0.15
    # Buckets: every training example's count is >= 1; some test subpopulations are unseen.
    assert (train.train_count >= 1).all() and (test.train_count == 0).any()
    assert set(train.bucket) == {"1", "2-3", "4+"}
    assert list(frequency_bucket(np.array([0, 1, 2, 3, 4, 9]))) == ["0", "1", "2-3", "2-3",
                                                                   "4+", "4+"]


def test_generator_is_deterministic_and_a_valid_dataset():
    spec = LongTailSpec(n_subpopulations=50, n_train=100, n_test=50, seed=7)
    a, b = make_longtail(spec), make_longtail(spec)
    assert a.dataset.fingerprint() == b.dataset.fingerprint()
    assert a.dataset.fingerprint() != make_longtail(LongTailSpec(
        n_subpopulations=50, n_train=100, n_test=50, seed=8)).dataset.fingerprint()
    assert a.dataset.x_train.shape == (100, 16) and a.dataset.x_train.dtype == np.float32
    assert a.dataset.provenance["longtail"]["seed"] == 7


@pytest.mark.parametrize("changes", [{"prior": "pareto"}, {"exponent": -1.0},
                                     {"n_subpopulations": 0}, {"label_noise": 1.0},
                                     {"n_classes": 1}])
def test_bad_specs_name_the_problem(changes):
    with pytest.raises(ConfigError):
        LongTailSpec(**changes)


# ---------------------------------------------------------------- theory


@pytest.mark.parametrize("prior, exponent, k, n", [("zipf", 0.5, 500, 500),
                                                   ("zipf", 1.0, 500, 500),
                                                   ("zipf", 1.5, 1000, 300),
                                                   ("uniform", 0.0, 800, 500)])
def test_tau1_matches_monte_carlo_on_the_same_prior(prior, exponent, k, n):
    p = prior_frequencies(prior, k, exponent)
    estimate, se = monte_carlo_singleton_cost(p, n, n_draws=4000, seed=0)
    # (+ a rounding margin: on a uniform prior every singleton has frequency 1/k, se = 0)
    assert abs(singleton_cost(p, n) - estimate) <= 4 * se + 1e-12
    assert se < 0.02 * estimate  # the simulation is precise enough to mean something


def test_tau1_closed_forms():
    # Uniform over k: every subpopulation has frequency 1/k, so the one seen once does too.
    assert singleton_cost(prior_frequencies("uniform", 37, 0), 100) == pytest.approx(1 / 37)
    # One draw: the subpopulation drawn is a singleton, of expected frequency Σ p².
    p = prior_frequencies("zipf", 20, 1.0)
    assert singleton_cost(p, 1) == pytest.approx((p**2).sum())
    # A subpopulation of frequency 1 is never seen once in n > 1 draws.
    assert np.isnan(singleton_cost(np.array([1.0]), 5))
    # Very frequent subpopulations underflow without breaking the ratio.
    assert 0 < singleton_cost(prior_frequencies("zipf", 10, 3.0), 100_000) < 1
    assert singleton_mass(p, 50) == pytest.approx(singleton_cost(p, 50)
                                                  * expected_singletons(p, 50))


def test_expected_singletons_match_generated_training_sets():
    spec = dict(n_subpopulations=400, prior="zipf", exponent=1.0, n_train=400, n_test=1)
    observed = [int((make_longtail(LongTailSpec(**spec, seed=s)).train_counts == 1).sum())
                for s in range(200)]
    p = prior_frequencies("zipf", 400, 1.0)
    se = np.std(observed, ddof=1) / np.sqrt(len(observed))
    assert abs(np.mean(observed) - expected_singletons(p, 400)) < 4 * se


def test_tau1_rejects_bad_input():
    with pytest.raises(ConfigError):
        singleton_cost(np.array([0.5, 0.6]), 10)
    with pytest.raises(ConfigError):
        singleton_cost(np.array([0.5, 0.5]), 0)
