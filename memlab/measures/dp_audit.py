"""Empirical lower bounds on the ε of a differentially private training algorithm.

A DP guarantee is a claim about *every* membership test: if training is (ε, δ)-DP, then for
any rule that reads a trained model and says "IN" or "OUT" about one example,

    TPR ≤ e^ε·FPR + δ    and    (1 − FPR) ≤ e^ε·(1 − TPR) + δ,

(and the same with IN and OUT swapped). So a test that is observed to do better than this
refutes the claim: from measured rates we get ε̂, a number such that, with probability at
least ``confidence`` over the randomness of training, the algorithm is *not* (ε, δ)-DP for
any ε < ε̂. ε̂ is a lower bound on the true ε; the gap to the claimed ε is what the attack
failed to exploit, never evidence that the claim holds.

Two audits:

- :func:`epsilon_lower_bound`, the population audit (Jagielski et al. 2020; Nasr et al.
  2021): many (model, canary) trials, each with a known truth and an attack score. A
  threshold on the score is a membership test; its TPR and FPR are bounded with
  Clopper–Pearson intervals. The threshold is chosen on one random part of the trials and
  evaluated on the other, because picking the best of many thresholds on the same trials
  that bound it would report the luckiest threshold, not a guarantee.
- :func:`one_run_audit` / :func:`one_run_epsilon_lower_bound`, Steinke, Nasr & Jagielski
  (NeurIPS 2023), "Privacy Auditing with One (1) Training Run": m canaries each included
  independently with probability 1/2 in *one* training run; the auditor guesses on some of
  them and counts correct guesses. Their theorem makes the count a valid test even though
  all the canaries share one model.

    res = epsilon_lower_bound(scores[mask], scores[~mask], delta=1e-5)
    res["epsilon_lower_bound"]                   # ε̂ at 95% confidence

The population audit treats trials as independent Bernoulli draws, which holds when each
training run carries one canary (or the canaries of a run do not interact). With many
canaries per model, trials that share a model are correlated and the Clopper–Pearson
intervals are too narrow; the one-run audit is the version whose guarantee holds there.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from memlab.errors import ConfigError

POPULATION_METHOD = "clopper-pearson, threshold chosen on held-out trials"
ONE_RUN_METHOD = "steinke-nasr-jagielski 2023, one training run"
# Canaries tied on score are ordered by this fixed permutation, never by their position: a
# caller who lists the included canaries first must not turn ties into correct guesses.
_TIE_SEED = 0


# ------------------------------------------------------------------------- Clopper–Pearson


def clopper_pearson_lower(successes, trials, level: float):
    """One-sided Clopper–Pearson lower bound on a binomial proportion at ``level``: the
    smallest p that is not rejected, so P[p_true < bound] ≤ 1 − level exactly (never
    approximately, unlike a normal interval, which fails at the rates near 0 and 1 where
    audits live). 0 successes give 0. Vectorized over ``successes`` and ``trials``."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = stats.beta.ppf(1.0 - level, k, n - k + 1.0)
    return np.where(k <= 0, 0.0, bound)[()]


def clopper_pearson_upper(successes, trials, level: float):
    """One-sided Clopper–Pearson upper bound at ``level`` (P[p_true > bound] ≤ 1 − level).
    n successes of n give 1; 0 of n give 1 − (1 − level)^(1/n)."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = stats.beta.ppf(level, k + 1.0, n - k)
    return np.where(k >= n, 1.0, bound)[()]


def epsilon_from_rates(tpr_low, fpr_high, delta: float):
    """The ε that a test with TPR ≥ ``tpr_low`` and FPR ≤ ``fpr_high`` refutes:
    max(log((TPR − δ)/FPR), log((1 − FPR − δ)/(1 − TPR))), the two DP inequalities solved
    for ε. Both are monotone the right way (larger TPR, smaller FPR: larger ε), so bounds
    on the rates give a bound on ε. −inf where neither is defined; may be negative (no
    evidence). Vectorized."""
    tpr = np.asarray(tpr_low, dtype=float)
    fpr = np.asarray(fpr_high, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        first = np.where(
            (tpr - delta > 0) & (fpr > 0), np.log(tpr - delta) - np.log(fpr), -np.inf
        )
        second = np.where(
            (1.0 - fpr - delta > 0) & (1.0 - tpr > 0),
            np.log(1.0 - fpr - delta) - np.log(1.0 - tpr),
            -np.inf,
        )
    return np.maximum(first, second)[()]


# -------------------------------------------------------------------------- validation


def _check_delta_confidence(delta: float, confidence: float) -> None:
    if not isinstance(delta, int | float | np.floating | np.integer) or not (
        0.0 <= float(delta) < 1.0
    ):
        raise ConfigError(f"delta must be a number in [0, 1), got {delta!r}")
    if not isinstance(confidence, int | float | np.floating | np.integer) or not (
        0.0 < float(confidence) < 1.0
    ):
        raise ConfigError(f"confidence must be a number in (0, 1), got {confidence!r}")


def _scores(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be numeric scores, got {type(values).__name__}") from None
    if arr.size == 0:
        raise ConfigError(f"{name} is empty: an audit needs at least 2 trials on each side")
    if np.isnan(arr).any():
        raise ConfigError(
            f"{name} has {int(np.isnan(arr).sum())} NaN scores: drop or fix those trials"
        )
    return arr


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------- the population audit


def _rates_at(sorted_in, sorted_out, thresholds, direction: str):
    """(true positives, false positives) of the rule "IN iff score ≥ t" (direction ">=") or
    "IN iff score ≤ t" ("<=") at each t, by binary search in the sorted scores."""
    if direction == ">=":
        tp = sorted_in.size - np.searchsorted(sorted_in, thresholds, side="left")
        fp = sorted_out.size - np.searchsorted(sorted_out, thresholds, side="left")
    else:
        tp = np.searchsorted(sorted_in, thresholds, side="right")
        fp = np.searchsorted(sorted_out, thresholds, side="right")
    return tp, fp


def epsilon_lower_bound(
    scores_in: np.ndarray,
    scores_out: np.ndarray,
    delta: float,
    confidence: float = 0.95,
    rng: np.random.Generator | int = 0,
    select_fraction: float = 0.5,
) -> dict:
    """ε̂ from membership trials: with probability ≥ ``confidence`` the algorithm is not
    (ε, ``delta``)-DP for any ε < ε̂.

    ``scores_in``: the attack's scores on IN trials (canary trained on), ``scores_out`` on
    OUT trials; higher means "more likely IN" (a reversed score is caught too: both rule
    directions are tried). Arrays of any shape are flattened, one entry per trial; trials
    are assumed independent (see the module docstring).

    How: the trials of each side are split at random into a selection part
    (``select_fraction``) and an evaluation part: ``rng.permutation`` of the IN trials, then
    of the OUT trials, the first round(select_fraction·n) of each selecting (so a caller can
    reproduce the split). On the selection part every threshold t
    at an IN score, for both rules "IN iff score ≥ t" and "IN iff score ≤ t", is scored by
    the ε its Clopper–Pearson bounds would give, and the best is kept. On the held-out part
    only that one rule is evaluated: a one-sided Clopper–Pearson lower bound on its TPR and
    upper bound on its FPR, each at level 1 − (1 − confidence)/2, so both hold at once with
    probability ≥ ``confidence`` (Bonferroni), and ε̂ = :func:`epsilon_from_rates` of them,
    0 when that is not positive. Because the rule is fixed before the evaluation trials are
    looked at, the search over thresholds costs nothing in validity; it costs the selection
    trials' worth of power.

    Returns ``epsilon_lower_bound`` (≥ 0), ``threshold`` and ``direction`` (">=" or "<=")
    of the rule, ``tpr``/``fpr`` (its point estimates on the held-out trials),
    ``tpr_low``/``fpr_high`` (their bounds), ``n_in``/``n_out`` (held-out counts),
    ``confidence``, ``delta``, ``method``.
    """
    _check_delta_confidence(delta, confidence)
    s_in = _scores(scores_in, "scores_in")
    s_out = _scores(scores_out, "scores_out")
    if not isinstance(select_fraction, int | float | np.floating) or not (
        0.0 < float(select_fraction) < 1.0
    ):
        raise ConfigError(f"select_fraction must be in (0, 1), got {select_fraction!r}")
    n_sel = {}
    for name, arr in (("scores_in", s_in), ("scores_out", s_out)):
        k = int(round(select_fraction * arr.size))
        if not 1 <= k <= arr.size - 1:
            raise ConfigError(
                f"{name} has {arr.size} trials: too few to split {select_fraction:g} for "
                "choosing the threshold and the rest for evaluating it"
            )
        n_sel[name] = k
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    perm_in = gen.permutation(s_in.size)
    perm_out = gen.permutation(s_out.size)
    sel_in = np.sort(s_in[perm_in[: n_sel["scores_in"]]])
    sel_out = np.sort(s_out[perm_out[: n_sel["scores_out"]]])
    ev_in = np.sort(s_in[perm_in[n_sel["scores_in"] :]])
    ev_out = np.sort(s_out[perm_out[n_sel["scores_out"] :]])

    level = 1.0 - (1.0 - float(confidence)) / 2.0
    delta = float(delta)
    # An optimal rule puts its threshold on an IN score: moving t towards the nearest IN
    # score (without crossing an OUT score) gains true positives and costs nothing.
    candidates = np.unique(sel_in)
    best = (-np.inf, None, None)
    for direction in (">=", "<="):
        tp, fp = _rates_at(sel_in, sel_out, candidates, direction)
        eps = epsilon_from_rates(
            clopper_pearson_lower(tp, sel_in.size, level),
            clopper_pearson_upper(fp, sel_out.size, level),
            delta,
        )
        i = int(np.argmax(eps))
        if best[1] is None or eps[i] > best[0]:
            best = (float(eps[i]), float(candidates[i]), direction)
    _, threshold, direction = best

    tp, fp = _rates_at(ev_in, ev_out, np.array([threshold]), direction)
    tp, fp = int(tp[0]), int(fp[0])
    tpr_low = float(clopper_pearson_lower(tp, ev_in.size, level))
    fpr_high = float(clopper_pearson_upper(fp, ev_out.size, level))
    eps_hat = float(epsilon_from_rates(tpr_low, fpr_high, delta))
    return {
        "epsilon_lower_bound": max(0.0, eps_hat),
        "threshold": threshold,
        "direction": direction,
        "tpr": tp / ev_in.size,
        "fpr": fp / ev_out.size,
        "tpr_low": tpr_low,
        "fpr_high": fpr_high,
        "n_in": int(ev_in.size),
        "n_out": int(ev_out.size),
        "confidence": float(confidence),
        "delta": delta,
        "method": POPULATION_METHOD,
    }


# ------------------------------------------------------------------------ the one-run audit


def one_run_p_value(
    guesses_correct: int, guesses_made: int, n_canaries: int, epsilon: float, delta: float
) -> float:
    """P[≥ v correct of r guesses] under the hypothesis "(ε, δ)-DP": the quantity that
    Steinke, Nasr & Jagielski (2023) bound in their main theorem, as their Algorithm 2
    computes it. With q = e^ε/(1 + e^ε) (the accuracy of ε-randomized response, the most an
    ε-DP algorithm can give a guesser) and f(u) = P[Binomial(r, q) ≥ u]:

        p = f(v) + 2·m·δ · max_{i = 1..v} (f(v − i) − f(v)) / i,

    capped at 1. For δ = 0 it is the binomial tail: the correct guesses of an ε-DP
    algorithm are stochastically dominated by Binomial(r, q). The δ term is their price
    for approximate DP, which grows with m because δ is paid once per canary."""
    v, r, m = guesses_correct, guesses_made, n_canaries
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    # pmf at v − 1, v − 2, ..., 0; their cumulative sums are f(v − i) − f(v), i = 1..v.
    below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * alpha, 1.0)


def one_run_epsilon_lower_bound(
    guesses_correct: int,
    guesses_made: int,
    n_canaries: int,
    delta: float,
    confidence: float = 0.95,
) -> float:
    """ε̂ from one training run (Steinke, Nasr & Jagielski 2023): ``n_canaries`` (m)
    canaries were each included independently with probability 1/2, the auditor guessed on
    ``guesses_made`` (r) of them (a number fixed in advance; abstaining on the rest) and
    ``guesses_correct`` (v) were right. ε̂ is the largest ε whose p-value
    (:func:`one_run_p_value`, their δ-corrected bound) is below 1 − ``confidence``: every
    smaller ε is rejected at that level. Found by bisection to 1e-10 in ε; 0 when even ε = 0
    is not rejected (e.g. v ≤ r/2).

    The independence of the inclusions is what makes one run suffice: the theorem needs
    nothing about how the canaries interact in the model. For δ = 0 this equals
    logit(Clopper–Pearson lower bound of v/r), so the bound can never exceed
    logit((1 − confidence)^(1/r)): more guesses, not more accuracy, lift its ceiling.
    """
    _check_delta_confidence(delta, confidence)
    v = _count(guesses_correct, "guesses_correct")
    r = _count(guesses_made, "guesses_made")
    m = _count(n_canaries, "n_canaries")
    if not v <= r <= m or m == 0:
        raise ConfigError(
            f"need 0 ≤ guesses_correct ≤ guesses_made ≤ n_canaries, n_canaries ≥ 1; got "
            f"{v}, {r}, {m}"
        )
    alpha = 1.0 - float(confidence)
    delta = float(delta)

    def p_value(eps: float) -> float:
        return one_run_p_value(v, r, m, eps, delta)

    if p_value(0.0) >= alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    # q reaches 1.0 in floating point by ε ≈ 37, where the tail is 1, so this stops.
    while p_value(hi) < alpha:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        if p_value(mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_audit(
    scores: np.ndarray,
    included: np.ndarray,
    n_guesses_in: int,
    n_guesses_out: int,
    delta: float,
    confidence: float = 0.95,
) -> dict:
    """The one-run audit from scores: guess IN for the ``n_guesses_in`` highest-scoring
    canaries, OUT for the ``n_guesses_out`` lowest, abstain on the rest, and bound ε with
    :func:`one_run_epsilon_lower_bound`. ``included`` is the truth (bool or 0/1), one per
    canary, drawn independently with probability 1/2 before training: the guarantee rests
    on that draw. The numbers of guesses must be fixed before looking at the scores
    (choosing them to maximize ε̂ on the same run is the optimism the theorem does not
    cover). Ties in score are ordered by a fixed permutation, independent of ``included``.

    Returns ``epsilon_lower_bound``, ``guesses_correct``, ``guesses_made``,
    ``correct_in``, ``correct_out``, ``n_guesses_in``, ``n_guesses_out``, ``n_canaries``,
    ``confidence``, ``delta``, ``method``.
    """
    _check_delta_confidence(delta, confidence)
    s = _scores(scores, "scores")
    inc = np.asarray(included).ravel()
    if inc.shape != s.shape:
        raise ConfigError(f"included has {inc.size} entries but scores has {s.size}")
    if inc.dtype != bool:
        if not np.isin(inc, (0, 1)).all():
            raise ConfigError("included must be bool or 0/1, one per canary")
        inc = inc.astype(bool)
    k_in = _count(n_guesses_in, "n_guesses_in")
    k_out = _count(n_guesses_out, "n_guesses_out")
    m = s.size
    if k_in + k_out > m:
        raise ConfigError(f"n_guesses_in + n_guesses_out = {k_in + k_out} exceeds {m} canaries")
    perm = np.random.default_rng(_TIE_SEED).permutation(m)
    order = perm[np.argsort(s[perm], kind="stable")]  # ascending score
    guessed_out = order[:k_out]
    guessed_in = order[m - k_in :]
    correct_in = int(inc[guessed_in].sum())
    correct_out = int((~inc[guessed_out]).sum())
    v, r = correct_in + correct_out, k_in + k_out
    return {
        "epsilon_lower_bound": one_run_epsilon_lower_bound(v, r, m, delta, confidence),
        "guesses_correct": v,
        "guesses_made": r,
        "correct_in": correct_in,
        "correct_out": correct_out,
        "n_guesses_in": k_in,
        "n_guesses_out": k_out,
        "n_canaries": m,
        "confidence": float(confidence),
        "delta": float(delta),
        "method": ONE_RUN_METHOD,
    }
