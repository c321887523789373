"""Empirical ε lower bounds (memlab.measures.dp_audit): known answers, and coverage of the
95% bounds under mechanisms whose true ε is known.

Mechanisms simulated (each trial or canary independent):
- randomized response at ε: an IN trial says 1 with probability e^ε/(1 + e^ε), an OUT trial
  with 1/(1 + e^ε); pure ε-DP and tight (the best test meets TPR = e^ε·FPR exactly);
- the Gaussian mechanism: IN ~ N(μ, 1), OUT ~ N(0, 1), (ε, δ(ε))-DP with
  δ(ε) = Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2) for every ε (Balle & Wang 2018);
- the Laplace mechanism: score = included + Laplace(1/ε), pure ε-DP, tight in the tails;
- the null: IN and OUT identically distributed (0-DP: ε̂ must be 0).

A valid 95% bound exceeds the true ε in at most 5% of replicates. Each coverage test
allows the count that a rate of exactly 5% would exceed only 1% of the time
(binom.ppf(0.99, n, 0.05)); the measured counts are far below where the mechanism is not
tight, and `pytest -s` prints them.
"""

import math

import numpy as np
import pytest
from scipy import optimize, stats

from memlab.errors import ConfigError
from memlab.measures import dp_audit as dp


def allowed_exceedances(n: int) -> int:
    return int(stats.binom.ppf(0.99, n, 0.05))


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The smallest ε at which N(μ, 1) vs N(0, 1) is (ε, δ)-DP."""

    def curve(eps):
        return (
            stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
        )

    return optimize.brentq(lambda e: curve(e) - delta, 0.0, 60.0)


def randomized_response(rng, eps: float, n_in: int, n_out: int):
    p = 1.0 / (1.0 + math.exp(-eps))
    return (rng.random(n_in) < p).astype(float), (rng.random(n_out) < 1 - p).astype(float)


# ----------------------------------------------------------------------- known answers


def test_clopper_pearson_known_values():
    alpha = 0.05
    for n in (1, 7, 100, 2500):
        assert dp.clopper_pearson_upper(0, n, 1 - alpha) == pytest.approx(1 - alpha ** (1 / n))
        assert dp.clopper_pearson_lower(n, n, 1 - alpha) == pytest.approx(alpha ** (1 / n))
        assert dp.clopper_pearson_lower(0, n, 1 - alpha) == 0.0
        assert dp.clopper_pearson_upper(n, n, 1 - alpha) == 1.0
    # The textbook two-sided 95% interval for 5 of 10 is (0.1871, 0.8129).
    assert dp.clopper_pearson_lower(5, 10, 0.975) == pytest.approx(0.18709, abs=1e-4)
    assert dp.clopper_pearson_upper(5, 10, 0.975) == pytest.approx(0.81291, abs=1e-4)


def test_clopper_pearson_exact_coverage():
    """Summed over the binomial distribution, not simulated: each one-sided bound misses
    the true p with probability ≤ 1 − level, and is not grossly conservative."""
    n, level = 40, 0.95
    k = np.arange(n + 1)
    lo, hi = dp.clopper_pearson_lower(k, n, level), dp.clopper_pearson_upper(k, n, level)
    worst_lo = worst_hi = 0.0
    for p in np.linspace(0.01, 0.99, 99):
        pmf = stats.binom.pmf(k, n, p)
        miss_lo, miss_hi = pmf[lo > p].sum(), pmf[hi < p].sum()
        assert miss_lo <= 1 - level + 1e-12 and miss_hi <= 1 - level + 1e-12
        worst_lo, worst_hi = max(worst_lo, miss_lo), max(worst_hi, miss_hi)
    assert worst_lo > 0.03 and worst_hi > 0.03


def test_epsilon_from_rates_formula():
    assert dp.epsilon_from_rates(0.5, 0.1, 0.0) == pytest.approx(math.log(5))
    assert dp.epsilon_from_rates(0.5, 0.1, 0.1) == pytest.approx(math.log(4))
    # The complementary inequality wins when the test is sure of its OUTs: (1 − 0.01)/(1 − 0.9)
    assert dp.epsilon_from_rates(0.9, 0.01, 0.0) == pytest.approx(math.log(90))
    assert dp.epsilon_from_rates(0.98, 0.2, 0.0) == pytest.approx(math.log(0.8 / 0.02))
    assert dp.epsilon_from_rates(0.05, 0.1, 0.0) < 0  # worse than chance: no evidence
    assert dp.epsilon_from_rates(0.05, 0.99, 0.05) == -np.inf


def test_population_result_is_the_held_out_clopper_pearson_bound():
    rng = np.random.default_rng(3)
    s_in, s_out = rng.normal(1.5, 1, 1001), rng.normal(0, 1, 600)
    for fraction in (0.5, 0.3):
        res = dp.epsilon_lower_bound(s_in, s_out, delta=1e-3, rng=4, select_fraction=fraction)
        assert res["n_in"] == 1001 - round(fraction * 1001)
        assert res["n_out"] == 600 - round(fraction * 600)
        tp, fp = res["tpr"] * res["n_in"], res["fpr"] * res["n_out"]
        assert tp == pytest.approx(round(tp)) and fp == pytest.approx(round(fp))
        level = 1 - 0.05 / 2  # Bonferroni over the two rates
        assert res["tpr_low"] == pytest.approx(
            dp.clopper_pearson_lower(round(tp), res["n_in"], level)
        )
        assert res["fpr_high"] == pytest.approx(
            dp.clopper_pearson_upper(round(fp), res["n_out"], level)
        )
        assert res["epsilon_lower_bound"] == pytest.approx(
            max(0.0, dp.epsilon_from_rates(res["tpr_low"], res["fpr_high"], 1e-3))
        )
        assert res["direction"] == ">=" and res["method"] == dp.POPULATION_METHOD
        assert res["confidence"] == 0.95 and res["delta"] == 1e-3
    # The split is random: the same seed reproduces, another seed moves the result.
    a = dp.epsilon_lower_bound(s_in, s_out, 1e-3, rng=4)
    assert a == dp.epsilon_lower_bound(s_in, s_out, 1e-3, rng=np.random.default_rng(4))
    assert a != dp.epsilon_lower_bound(s_in, s_out, 1e-3, rng=5)


def test_threshold_depends_on_the_selection_trials_only():
    """Replace every evaluation trial's score: the rule (threshold, direction) must not
    move, only its held-out rates. A rule chosen with any look at the evaluation trials
    would make their bounds optimistic."""
    rng = np.random.default_rng(9)
    s_in, s_out = rng.normal(1.0, 1, 800), rng.normal(0, 1, 700)
    split = np.random.default_rng(12)  # the documented split: permute IN, then OUT
    ev_in, ev_out = split.permutation(800)[400:], split.permutation(700)[350:]
    before = dp.epsilon_lower_bound(s_in, s_out, 0.0, rng=12)
    s_in[ev_in], s_out[ev_out] = rng.normal(5, 1, 400), rng.normal(-5, 1, 350)
    after = dp.epsilon_lower_bound(s_in, s_out, 0.0, rng=12)
    assert (after["threshold"], after["direction"]) == (before["threshold"], before["direction"])
    assert after["tpr"] != before["tpr"] and after["epsilon_lower_bound"] > 3


def test_reversed_scores_are_caught():
    rng = np.random.default_rng(6)
    s_in, s_out = rng.normal(0, 1, 2000), rng.normal(3, 1, 2000)  # IN scores *lower*
    res = dp.epsilon_lower_bound(s_in, s_out, 0.0)
    assert res["direction"] == "<=" and res["epsilon_lower_bound"] > 2


# ------------------------------------------------------------------- population coverage


def test_null_gives_zero_and_in_sample_selection_would_not():
    """IN and OUT identically distributed: ε̂ must be 0 in ≥ 95% of audits. Choosing the
    threshold on the very trials that bound it (the best of ~1,000 thresholds, in-sample)
    claims ε > 0 far more often, which is why the audit holds trials out."""
    rng = np.random.default_rng(1)
    n_runs, n = 200, 1000
    level = 0.975
    held_out = in_sample = 0
    for k in range(n_runs):
        a, b = rng.normal(size=n), rng.normal(size=n)
        held_out += dp.epsilon_lower_bound(a, b, 0.0, rng=k)["epsilon_lower_bound"] > 0
        sa, sb, best = np.sort(a), np.sort(b), -np.inf
        for direction in (">=", "<="):
            tp, fp = dp._rates_at(sa, sb, sa, direction)
            eps = dp.epsilon_from_rates(
                dp.clopper_pearson_lower(tp, n, level), dp.clopper_pearson_upper(fp, n, level), 0
            )
            best = max(best, eps.max())
        in_sample += best > 0
    print(f"null: held out {held_out}/{n_runs} > 0, in-sample {in_sample}/{n_runs}")
    assert held_out <= 0.05 * n_runs  # measured: 0 of 200
    assert in_sample > allowed_exceedances(n_runs)  # measured: 25 of 200


def test_randomized_response_coverage_and_power():
    """Randomized response is tight (threshold 1 meets TPR = e^ε·FPR), so ε̂ sits close to
    ε and a bound that were too narrow would exceed it in up to half the runs."""
    rng = np.random.default_rng(2)
    eps, n_runs = 1.0, 1000
    est = np.array([
        dp.epsilon_lower_bound(*randomized_response(rng, eps, 2000, 2000), 0.0, rng=k)[
            "epsilon_lower_bound"
        ]
        for k in range(n_runs)
    ])
    print(f"population RR: {(est > eps).sum()}/{n_runs} > ε, mean ε̂ {est.mean():.3f}")
    assert (est > eps).sum() <= allowed_exceedances(n_runs)  # measured: 9 of 1000
    assert est.mean() > 0.8  # and not vacuous
    res = dp.epsilon_lower_bound(*randomized_response(rng, 2.0, 5000, 5000), 0.0, rng=0)
    assert 1.5 <= res["epsilon_lower_bound"] <= 2.0


@pytest.mark.parametrize("mu, delta", [(1.0, 0.05), (2.0, 1e-2), (3.0, 1e-3)])
def test_gaussian_mechanism_coverage(mu, delta):
    rng = np.random.default_rng(int(mu * 10))
    true_eps = gaussian_epsilon(mu, delta)
    n_runs = 200
    est = np.array([
        dp.epsilon_lower_bound(rng.normal(mu, 1, 1000), rng.normal(0, 1, 1000), delta, rng=k)[
            "epsilon_lower_bound"
        ]
        for k in range(n_runs)
    ])
    print(f"gaussian μ={mu}: {(est > true_eps).sum()}/{n_runs} > ε={true_eps:.3f}, "
          f"mean ε̂ {est.mean():.3f}")
    assert (est > true_eps).sum() <= allowed_exceedances(n_runs)  # measured: 0 of 200
    assert est.mean() > 0.4 * min(true_eps, 5.0)


def test_non_private_bound_grows_with_trials():
    """Perfectly separated scores: ε̂ is limited only by the number of trials."""
    est = [
        dp.epsilon_lower_bound(np.ones(n // 2), np.zeros(n // 2), 0.0)["epsilon_lower_bound"]
        for n in (100, 1000, 10_000)
    ]
    assert est[0] < est[1] < est[2] and est[2] > 4
    # n/4 held-out trials per side, all right: TPR_lo = α^(1/n'), FPR_hi = 1 − α^(1/n').
    alpha = 0.025
    q = alpha ** (1 / 2500)
    assert est[2] == pytest.approx(math.log(q / (1 - q)))


# ------------------------------------------------------------------------- one-run audit


def paper_p_value(m, r, v, eps, delta):
    """Steinke, Nasr & Jagielski (2023), Algorithm 2, transcribed loop for loop."""
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha = total = 0.0
    for i in range(1, v + 1):
        total += stats.binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return min(beta + alpha * delta * 2 * m, 1)


def test_one_run_p_value_matches_the_paper():
    for m, r, v, eps, delta in [
        (1000, 100, 80, 0.5, 1e-5),
        (1000, 100, 80, 1.5, 1e-3),
        (50, 20, 20, 2.0, 1e-2),
        (10_000, 500, 300, 0.3, 1e-6),
        (100, 30, 10, 1.0, 0.0),
    ]:
        assert dp.one_run_p_value(v, r, m, eps, delta) == pytest.approx(
            paper_p_value(m, r, v, eps, delta), rel=1e-9
        )


def test_one_run_bound_known_values():
    alpha = 0.05
    # δ = 0: the bound is logit of the Clopper–Pearson lower bound of v/r.
    for v, r in [(10, 10), (80, 100), (600, 1000), (51, 100)]:
        lo = dp.clopper_pearson_lower(v, r, 1 - alpha)
        expected = max(0.0, math.log(lo / (1 - lo)))
        assert dp.one_run_epsilon_lower_bound(v, r, 2000, 0.0) == pytest.approx(
            expected, abs=1e-7
        )
    # All r correct: P[Bin(r, q) ≥ r] = q^r = α, so q = α^(1/r); increasing in r.
    prev = 0.0
    for r in (5, 20, 100, 1000):
        q = alpha ** (1 / r)
        got = dp.one_run_epsilon_lower_bound(r, r, 1000, 0.0)
        assert got == pytest.approx(math.log(q / (1 - q)), abs=1e-7) and got > prev
        prev = got
    # Chance-level guessing, or no guesses: no evidence.
    assert dp.one_run_epsilon_lower_bound(50, 100, 100, 0.0) == 0.0
    assert dp.one_run_epsilon_lower_bound(0, 0, 100, 0.0) == 0.0
    # δ > 0: the bound sits where the paper's p-value crosses α, and δ only lowers it.
    got = dp.one_run_epsilon_lower_bound(180, 200, 1000, 1e-5)
    assert paper_p_value(1000, 200, 180, got, 1e-5) < alpha
    assert paper_p_value(1000, 200, 180, got + 1e-6, 1e-5) >= alpha
    assert 0 < got < dp.one_run_epsilon_lower_bound(180, 200, 1000, 0.0)


def test_one_run_audit_counts():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.5, 0.7, 0.3])
    included = np.array([1, 0, 0, 1, 1, 1, 0])
    res = dp.one_run_audit(scores, included, n_guesses_in=2, n_guesses_out=3, delta=0.0)
    # IN guesses: 0.9 (right), 0.8 (wrong); OUT guesses: 0.1 (right), 0.2 (wrong), 0.3 (right)
    assert (res["correct_in"], res["correct_out"]) == (1, 2)
    assert (res["guesses_correct"], res["guesses_made"], res["n_canaries"]) == (3, 5, 7)
    assert res["epsilon_lower_bound"] == dp.one_run_epsilon_lower_bound(3, 5, 7, 0.0)
    # Ties are not broken by position: listing the included canaries first gains nothing.
    inc = np.arange(1000) < 500
    res = dp.one_run_audit(np.zeros(1000), inc, 100, 100, 0.0)
    assert res["epsilon_lower_bound"] == 0.0 and 70 < res["guesses_correct"] < 130
    # Perfect separation, every canary guessed: logit(α^(1/m)).
    res = dp.one_run_audit(inc.astype(float), inc, 500, 500, 0.0)
    q = 0.05 ** (1 / 1000)
    assert res["epsilon_lower_bound"] == pytest.approx(math.log(q / (1 - q)), abs=1e-7)


def test_one_run_coverage_randomized_response_and_null():
    """Randomized response on every canary, all guessed: a guess that follows the response
    is right with probability q = e^ε/(1 + e^ε), the theorem's worst case. Nearly tight
    (the few canaries beyond 500 with the same response must be guessed against it)."""
    rng = np.random.default_rng(7)
    eps, m, n_runs = 1.0, 1000, 600
    p = 1 / (1 + math.exp(-eps))
    rr, null = [], []
    for _ in range(n_runs):
        s = rng.random(m) < 0.5
        rr_scores = np.where(rng.random(m) < p, s, ~s).astype(float)
        rr.append(dp.one_run_audit(rr_scores, s, 500, 500, 0.0)["epsilon_lower_bound"])
        null.append(dp.one_run_audit(rng.normal(size=m), s, 100, 100, 0.0)["epsilon_lower_bound"])
    rr, null = np.array(rr), np.array(null)
    print(f"one-run RR: {(rr > eps).sum()}/{n_runs} > ε; null: {(null > 0).sum()} > 0")
    assert (rr > eps).sum() <= allowed_exceedances(n_runs)  # measured: 11 of 600 (1.8%)
    # The null is tight too (each guess right with probability 1/2 = q at ε = 0).
    assert (null > 0).sum() <= allowed_exceedances(n_runs)  # measured: 25 of 600
    assert rr.mean() > 0.7  # and not vacuous (measured mean 0.85)


def test_one_run_laplace_tails_meet_the_theorem_exactly():
    """Laplace mechanism (score = included + Laplace(1/ε), ε-DP): every score ≥ 1 or ≤ 0
    has posterior odds exactly e^ε, and the 100 highest and 100 lowest of 1,000 always lie
    there, so the correct guesses are exactly Binomial(200, q), the theorem's bound. The
    audit exceeds ε exactly when v reaches the binomial's 5% critical value, which happens
    with probability 4.80% (≤ 5%): coverage holds, with nothing to spare."""
    rng = np.random.default_rng(11)
    eps, m, n_runs, r = 1.0, 1000, 600, 200
    q = 1 / (1 + math.exp(-eps))
    critical = int(stats.binom.isf(0.05, r, q)) + 1  # smallest v with P[Bin ≥ v] < 0.05
    rate = stats.binom.sf(critical - 1, r, q)
    assert 0.045 < rate <= 0.05
    v, est = [], []
    for _ in range(n_runs):
        s = rng.random(m) < 0.5
        res = dp.one_run_audit(s + rng.laplace(scale=1 / eps, size=m), s, 100, 100, 0.0)
        v.append(res["guesses_correct"])
        est.append(res["epsilon_lower_bound"])
    v, est = np.array(v), np.array(est)
    assert np.array_equal(est > eps, v >= critical)  # the rejection region, exactly
    assert abs(v.mean() - r * q) < 4 * math.sqrt(r * q * (1 - q) / n_runs)
    print(f"one-run Laplace: {(est > eps).sum()}/{n_runs} > ε (expected {rate * n_runs:.1f})")
    assert (est > eps).sum() <= stats.binom.ppf(0.999, n_runs, rate)


def test_one_run_delta_correction():
    """A mechanism that is (ε, δ)-DP but not ε-DP: with probability δ a canary's score
    reveals its membership outright (±10), otherwise randomized response at ε. Guessing on
    the highest and lowest scores hits the leaks: the δ = 0 bound exceeds ε in every run,
    the paper's δ-corrected bound never (here 2mδ = 50 drives it to 0: the correction costs
    in proportion to m·δ, so the one-run audit is informative only when m·δ ≪ 1). On the
    Gaussian mechanism the corrected bound holds at the true ε(δ)."""
    rng = np.random.default_rng(8)
    eps, delta, m, n_runs = 1.0, 0.005, 5000, 100
    p = 1 / (1 + math.exp(-eps))
    ignoring = corrected = 0
    for _ in range(n_runs):
        s = rng.random(m) < 0.5
        scores = np.where(rng.random(m) < p, s, ~s).astype(float)
        leak = rng.random(m) < delta
        scores[leak] = np.where(s[leak], 10.0, -10.0)
        res = dp.one_run_audit(scores, s, 8, 8, delta)
        corrected += res["epsilon_lower_bound"] > eps
        v, r = res["guesses_correct"], res["guesses_made"]
        ignoring += dp.one_run_epsilon_lower_bound(v, r, m, 0.0) > eps
    print(f"leak: δ ignored {ignoring}/{n_runs} > ε, corrected {corrected}/{n_runs}")
    assert ignoring > n_runs / 2 and corrected == 0

    mu, delta, m = 1.0, 1e-4, 1000
    true_eps = gaussian_epsilon(mu, delta)
    est = []
    for _ in range(100):
        s = rng.random(m) < 0.5
        est.append(dp.one_run_audit(mu * s + rng.normal(size=m), s, 100, 100, delta)[
            "epsilon_lower_bound"
        ])
    est = np.array(est)
    print(f"one-run gaussian: {(est > true_eps).sum()}/100 > ε={true_eps:.3f}, "
          f"mean ε̂ {est.mean():.3f}")
    assert (est > true_eps).sum() <= allowed_exceedances(100)
    assert np.mean(est) > 1.0


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dp.epsilon_lower_bound([], [1.0, 2.0], 0.0), "scores_in is empty"),
        (lambda: dp.epsilon_lower_bound([1.0, 2.0], [np.nan, 1.0], 0.0), "NaN"),
        (lambda: dp.epsilon_lower_bound([1.0, 2.0], [1.0, 2.0], 1.0), "delta"),
        (lambda: dp.epsilon_lower_bound([1.0, 2.0], [1.0, 2.0], -0.1), "delta"),
        (lambda: dp.epsilon_lower_bound([1.0, 2.0], [1.0, 2.0], 0.0, confidence=1.0), "confid"),
        (lambda: dp.epsilon_lower_bound([1.0, 2.0], [1.0, 2.0], 0.0, confidence=0), "confid"),
        (lambda: dp.epsilon_lower_bound([1.0], [1.0, 2.0], 0.0), "too few"),
        (lambda: dp.epsilon_lower_bound([1, 2], [1, 2], 0.0, select_fraction=1), "select"),
        (lambda: dp.epsilon_lower_bound(["a", "b"], [1, 2], 0.0), "numeric"),
        (lambda: dp.one_run_epsilon_lower_bound(5, 4, 10, 0.0), "guesses_correct ≤"),
        (lambda: dp.one_run_epsilon_lower_bound(4, 11, 10, 0.0), "guesses_made ≤"),
        (lambda: dp.one_run_epsilon_lower_bound(-1, 4, 10, 0.0), "non-negative"),
        (lambda: dp.one_run_epsilon_lower_bound(2.5, 4, 10, 0.0), "non-negative"),
        (lambda: dp.one_run_epsilon_lower_bound(2, 4, 10, 0.0, confidence=1.5), "confid"),
        (lambda: dp.one_run_audit([1.0, 2.0], [1], 1, 0, 0.0), "included has 1"),
        (lambda: dp.one_run_audit([1.0, 2.0], [1, 2], 1, 0, 0.0), "bool or 0/1"),
        (lambda: dp.one_run_audit([1.0, 2.0], [1, 0], 2, 1, 0.0), "exceeds 2"),
        (lambda: dp.one_run_audit([1.0, np.nan], [1, 0], 1, 1, 0.0), "NaN"),
    ],
)
def test_bad_inputs_are_one_line_config_errors(call, match):
    with pytest.raises(ConfigError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
