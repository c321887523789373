"""Memorization from fewer models (docs/memorization.md, "Ground truth from fewer models"):
the probit estimator on margins against known answers, its interval's coverage by
simulation, the automatic choice, the label-error score, 0/1 floats, and agreement with a
reference population at CI size."""

import numpy as np
import pytest
from scipy import special

from memlab.errors import ConfigError
from memlab.measures import memorization as mz
from memlab.measures.agreement import agreement, summarize
from memlab.measures.inout import (
    in_out,
    in_out_margin,
    in_out_pairs,
    in_out_pairs_margin,
    moderated_prior,
    out_mean,
)

# The coverage grid: models (r = 0.7: about 0.7 k IN, 0.3 k OUT), θ = μ/σ on each side from
# a barely-fitted IN side to a well-fitted one, and OUT sides from wrong to right; the null
# cells (θ_in = θ_out: mem 0) included. Every cell holds EXAMPLES examples of one
# population, each an independent replicate; σ differs per example (log-normal, sd 0.5 in
# log σ), so the moderated variance has work to do.
MODELS = (16, 32, 64)
THETAS = [(0.5, -1.0), (0.5, 0.5), (1.5, 0.0), (1.5, 1.5), (3.0, -1.0), (3.0, 1.0),
          (3.0, 3.0), (1.0, 2.0)]
EXAMPLES = 2000  # per cell: Monte Carlo error of a coverage near 0.95 about 0.005


def _population(k: int, rng: np.random.Generator, thetas=THETAS, examples=EXAMPLES):
    """Gaussian margins with known θ per side: (mask, margins, true mem, cell of each)."""
    cells = np.repeat(np.arange(len(thetas)), examples)
    theta = np.asarray(thetas, float)[cells]
    n = len(cells)
    sigma = np.exp(rng.normal(0, 0.5, n))
    mask = rng.random((k, n)) < 0.7
    mask[0], mask[1], mask[2], mask[3] = True, True, False, False  # ≥ 2 per side
    mu = np.where(mask, theta[:, 0] * sigma, theta[:, 1] * sigma)
    margins = mu + sigma * rng.standard_normal((k, n))
    truth = special.ndtr(theta[:, 0]) - special.ndtr(theta[:, 1])
    return mask, margins, truth, cells


def test_probit_point_estimate_equals_brute_force():
    rng = np.random.default_rng(0)
    mask, margins, _, _ = _population(20, rng, examples=5)
    for variance in ("per-example", "pooled", "moderated"):
        result = in_out_margin(mask, margins, variance)
        d0, s0 = moderated_prior(in_out(mask, margins, binary=False).var_in,
                                 mask.sum(0) - 1.0)
        for i in range(mask.shape[1]):
            inside = margins[mask[:, i], i]
            var = {"per-example": inside.var(ddof=1),
                   "moderated": (d0 * s0 + (len(inside) - 1) * inside.var(ddof=1))
                   / (d0 + len(inside) - 1)}.get(variance)
            if var is not None:
                want = special.ndtr(inside.mean() / np.sqrt(var))
                assert result.mean_in[i] == pytest.approx(want, rel=1e-9)


def test_moderated_prior_recovers_known_degrees_of_freedom():
    """Variances drawn from a scaled inverse-χ² prior with d0 = 8, s0² = 2, observed with 10
    df each: Smyth's moments give d0 and s0² back."""
    rng = np.random.default_rng(1)
    true_var = 8 * 2.0 / rng.chisquare(8, 20_000)
    observed = true_var * rng.chisquare(10, 20_000) / 10
    d0, s0 = moderated_prior(observed, np.full(20_000, 10.0))
    assert d0 == pytest.approx(8, rel=0.15)
    assert s0 == pytest.approx(2.0, rel=0.05)
    d0, s0 = moderated_prior(np.full(100, 3.0) * rng.chisquare(10, 100) / 10, np.full(100, 10.0))
    assert d0 > 50 or np.isinf(d0)  # one shared variance: (almost) all prior


@pytest.mark.parametrize("k", MODELS)
def test_probit_interval_covers_the_known_value(k):
    """Coverage of the 95% interval of Φ(θ_in) − Φ(θ_out) in every cell ≥ 0.93 (null cells
    included), mean over the cells ≤ 0.975, from 2,000 examples per cell."""
    mask, margins, truth, cells = _population(k, np.random.default_rng(k))
    lo, hi = in_out_margin(mask, margins).interval()
    covered = (lo <= truth) & (truth <= hi)
    coverage = np.array([covered[cells == c].mean() for c in range(len(THETAS))])
    assert coverage.min() >= 0.93, dict(zip(THETAS, coverage.round(3)))
    assert coverage.mean() <= 0.975, coverage.round(3)


def test_probit_has_a_smaller_error_than_binary_from_the_same_models():
    """On Gaussian margins the probit's RMS error from 32 models is under 0.85 of the binary
    estimator's (the efficiency of Φ(x̄/σ) over the fraction of x > 0: about 1.6× at θ = 0,
    more in the tails)."""
    rng = np.random.default_rng(5)
    mask, margins, truth, _ = _population(32, rng, examples=300)
    binary = in_out(mask, margins > 0).score
    probit = in_out_margin(mask, margins).score
    assert np.sqrt(np.mean((probit - truth) ** 2)) < 0.85 * np.sqrt(
        np.mean((binary - truth) ** 2))


# Influence: every test example j has one influential training example (j mod N_TRAIN)
# that shifts its margin by β (in units of its σ); every other pair has influence 0.
INFLUENCE_CELLS = [(mu, beta) for mu in (-1.0, 0.0, 1.0, 2.0) for beta in (0.0, 0.3, 0.6)]
N_TRAIN = 40


def _influence_population(rng: np.random.Generator, models: int = 64, per_cell: int = 400):
    cells = np.repeat(np.arange(len(INFLUENCE_CELLS)), per_cell)
    mu, beta = np.asarray(INFLUENCE_CELLS)[cells].T
    m = len(cells)
    sigma = np.exp(rng.normal(0, 0.5, m))
    mask = rng.random((models, N_TRAIN)) < 0.5
    mask[:2], mask[2:4] = True, False
    source = np.arange(m) % N_TRAIN
    margins = sigma * (mu + beta * mask[:, source] + rng.standard_normal((models, m)))
    truth = special.ndtr(mu + beta) - special.ndtr(mu)
    return mask, margins, truth, cells, source


@pytest.mark.parametrize("estimator", ["binary", "probit"])
def test_influence_intervals_cover_the_known_value(estimator):
    """Coverage of the influential pair of every test example ≥ 0.93 in every (μ, β) cell
    (β = 0: null), mean ≤ 0.975, 400 per cell, 64 models; and of the pairs whose
    influence is 0, within [0.93, 0.99]."""
    mask, margins, truth, cells, source = _influence_population(np.random.default_rng(7))
    if estimator == "binary":
        pairs = in_out_pairs(mask, (margins > 0).astype(np.float64))  # 0/1: Newcombe
        assert pairs.binary
    else:
        pairs = in_out_pairs_margin(mask, margins)
    lo, hi = pairs.interval()
    m = margins.shape[1]
    own = (lo[source, np.arange(m)] <= truth) & (truth <= hi[source, np.arange(m)])
    coverage = np.array([own[cells == c].mean() for c in range(len(INFLUENCE_CELLS))])
    assert coverage.min() >= 0.93, dict(zip(INFLUENCE_CELLS, coverage.round(3)))
    assert coverage.mean() <= 0.975
    others = np.ones(lo.shape, bool)
    others[source, np.arange(m)] = False
    null = ((lo <= 0) & (0 <= hi))[others].mean()
    assert 0.93 <= null <= 0.99


def test_zero_one_floats_get_the_binomial_interval():
    """Correctness stored as floats: no Welch interval of width 0 where every model agrees."""
    rng = np.random.default_rng(2)
    mask = rng.random((40, 30)) < 0.5
    correct = rng.random((40, 30)) < 0.8
    correct[:, 0] = True
    as_float = in_out(mask, correct.astype(np.float32))
    as_bool = in_out(mask, correct)
    assert as_float.binary
    np.testing.assert_array_equal(as_float.interval()[0], as_bool.interval()[0])
    assert as_float.se[0] > 0
    real = in_out(mask, correct * 0.5 + 0.25)  # not 0/1: Welch
    assert not real.binary
    with pytest.raises(ConfigError, match="all 0 or 1"):
        in_out(mask, correct * 0.5 + 0.25, binary=True)


def test_zero_one_float_coverage_at_the_extremes():
    """p_in = 0.999, p_out = 0.001 (the case where Welch's se was 0 and covered 1%)."""
    rng = np.random.default_rng(3)
    covered = []
    for _ in range(400):
        mask = np.zeros((100, 1), bool)
        mask[:70] = True
        values = np.where(mask, rng.random((100, 1)) < 0.999, rng.random((100, 1)) < 0.001)
        lo, hi = in_out(mask, values.astype(np.float64)).interval()
        covered.append(lo[0] <= 0.998 <= hi[0])
    assert np.mean(covered) >= 0.93


def test_choice_falls_back_to_binary_when_margins_do_not_fit():
    """Margins that are Gaussian choose the probit; margins whose sign disagrees with their
    Gaussian model choose the binary estimator, with the reason: here a model is right with
    margin +1 or wrong with margin −p/(1 − p), so every mean is 0 (probit: mem 0) while the
    accuracies are p_in ~ U(0.6, 1) and p_out ~ U(0, 0.6) (binary: mem about 0.5)."""
    rng = np.random.default_rng(4)
    mask, margins, _, _ = _population(64, rng, examples=150)
    good = mz.choose_estimator(mask, {"train_correct": margins > 0, "train_margin": margins})
    assert good.estimator == "probit" and "fit" in good.reason
    n = mask.shape[1]
    p = np.where(mask, rng.uniform(0.6, 0.95, n), rng.uniform(0.05, 0.6, n))
    right = rng.random(mask.shape) < p
    skewed = np.where(right, 1.0, -p / (1 - p)) + 0.01 * rng.standard_normal(mask.shape)
    bad = mz.choose_estimator(mask, {"train_correct": skewed > 0, "train_margin": skewed})
    assert bad.estimator == "binary" and "disagrees" in bad.reason
    none = mz.choose_estimator(mask, {"train_correct": margins > 0})
    assert none.estimator == "binary" and "no margins" in none.reason


def test_label_error_score_is_the_out_models_mean_log_odds():
    rng = np.random.default_rng(6)
    mask = rng.random((20, 10)) < 0.6
    logodds = rng.normal(size=(20, 10))
    errors = mz.label_errors(mask, logodds)
    for i in range(10):
        out = logodds[~mask[:, i], i]
        assert errors.mean[i] == pytest.approx(-out.mean())
        assert errors.se[i] == pytest.approx(out.std(ddof=1) / np.sqrt(len(out)))
    assert out_mean(mask, logodds).mean[0] == pytest.approx(-errors.mean[0])


def test_models_needed_for_se_scales_with_the_square():
    se = np.full(100, 0.2)
    assert mz.models_needed_for_se(se, 32, 0.1) == 128
    assert mz.models_needed_for_se(se, 32, 0.4) == 8
    with pytest.raises(ConfigError):
        mz.models_needed_for_se(se, 32, 0.0)


@pytest.fixture(scope="module")
def digits_population(tmp_path_factory):
    """The memorize quick preset's recipe on digits with 10% flipped labels: 96 models."""
    import dataclasses

    from memlab.population import train_population
    from memlab.studies.base import training_data
    from memlab.studies.memorize import MemorizeConfig

    config = MemorizeConfig.quick()
    recipe = dataclasses.replace(config.population, n_models=96)
    return train_population(training_data(config), recipe,
                            out=tmp_path_factory.mktemp("digits") / "run", progress=False)


def test_label_error_finds_planted_flips_from_16_models(digits_population):
    run = digits_population
    frame = mz.memorization(run, models=range(16))
    assert mz.detection_auroc(frame["label_error"].to_numpy(),
                              frame["corrupted"].to_numpy()) >= 0.99


def test_agreement_with_a_reference_at_ci_size(digits_population):
    """16 models against the other 80 (a small reference): the probit ranks at least as
    well as the binary estimator, and for ≥ 90% of examples the estimate and the reference
    agree within both their errors (the docs' table checks coverage against 2,048 models)."""
    run = digits_population
    records = {n: np.asarray(run.records(n)) for n in ("train_correct", "train_margin")}
    table = summarize(agreement(run.membership_mask, records, ks=[16], draws=2))
    by = table.set_index("estimator")
    assert by.loc["probit", "rho"] >= by.loc["binary", "rho"] - 0.01
    assert by.loc["probit", "consistent"] >= 0.90
    assert by.loc["binary", "consistent"] >= 0.90
    frame = mz.memorization(run, models=range(16), estimator="auto")
    assert frame.attrs["estimator"]["estimator"] in ("probit", "binary")
    assert frame.attrs["estimator"]["reason"]
