"""The DP audit of a run: ε lower bounds from its privacy canaries, beside the accountant's ε.

A run trained with ``dp_canaries`` (100 by default with DP) has privacy canaries at the end of
its training set (:meth:`memlab.data.Dataset.with_privacy_canaries`: random inputs with
random labels); each model trains on each canary with probability 1/2, independently in a DP
run (``memlab.engine.config.privacy_canary_columns``). Every (model, canary) pair is a trial
with a known answer. The score is black-box: the model's log-odds of the canary's label (its
final outputs only, nothing from the other models). Two estimators
(:mod:`memlab.measures.dp_audit`):

- **population** (Clopper–Pearson): one trial per model — model k's score on canary
  k mod N — so the trials are independent (every model is its own training run); the
  threshold is chosen on half of them and the bound computed on the other half.
- **one run per model, pooled** (Steinke, Nasr & Jagielski 2023): every (model, canary)
  pair. Each model's canaries are in independently with probability 1/2, so each model is
  one of their one-run audits, and the count of correct guesses over independent models is
  dominated by the binomial as each model's is. The share of trials guessed on is chosen on
  half the models and the bound computed on the other half.

ε̂ is a lower bound at ``confidence``: above the accountant's ε it shows the run leaks more
than claimed (a bug); below it, it shows nothing about whether the claim holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memlab import streams
from memlab.errors import ConfigError
from memlab.measures import dp_audit

# Shares of the trials the one-run auditor guesses IN (and, apart, OUT) on, tried on the
# selection half (and 0: no guesses on that side).
GUESS_SHARES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
DEFAULT_DELTA = 1e-5  # a non-DP run's audit (the accountant's δ otherwise)


def canary_trials(run: Any) -> tuple[np.ndarray, np.ndarray]:
    """(scores (K, N) float64, included (K, N) bool) of the run's usable models on its N
    privacy canaries; a one-line error if the run has none."""
    planted = run.manifest["dataset"].get("corruption", {}).get("privacy_canaries")
    if not planted:
        raise ConfigError(f"{run.path} has no privacy canaries: train it with DP (100 by "
                          "default) or --dp-canaries N, then audit it with --dp")
    indices = np.asarray(planted["indices"])
    rows = run.usable_models()
    scores = np.asarray(run.records("train_logodds")[rows][:, indices], dtype=np.float64)
    return scores, np.asarray(run.membership_mask[rows][:, indices], dtype=bool)


def audit_privacy_canaries(run: Any, confidence: float = 0.95, seed: int = 0) -> dict:
    """The run's DP audit: both ε lower bounds, the accountant's ε and a verdict."""
    scores, included = canary_trials(run)
    plans = run.manifest.get("dp") or []
    # explicit masks of several subset sizes have several plans: the weakest claim counts
    epsilon = max((plan["dp_epsilon"] for plan in plans), default=None)
    delta = plans[0]["dp_delta"] if plans else DEFAULT_DELTA
    return audit_trials(scores, included, epsilon, delta, confidence, seed,
                        independent_inclusion=bool(plans))


def audit_trials(scores: np.ndarray, included: np.ndarray, epsilon: float | None,
                 delta: float, confidence: float = 0.95, seed: int = 0,
                 independent_inclusion: bool = True) -> dict:
    """:func:`audit_privacy_canaries` on (K, N) canary scores and their answers."""
    n_models, n_canaries = scores.shape
    if n_models < 4:
        raise ConfigError(f"a DP audit needs at least 4 models, the run has {n_models}")
    rng = np.random.default_rng([seed, streams.DP_AUDIT_SPLIT])
    order = rng.permutation(n_models)
    select, evaluate = order[:n_models // 2], order[n_models // 2:]

    one_trial = scores[np.arange(n_models), np.arange(n_models) % n_canaries]
    one_answer = included[np.arange(n_models), np.arange(n_models) % n_canaries]
    if one_answer.all() or not one_answer.any():
        population = {"epsilon_lower_bound": 0.0, "note": "every trial on one side"}
    else:
        population = dp_audit.epsilon_lower_bound(one_trial[one_answer],
                                                  one_trial[~one_answer], delta, confidence,
                                                  rng=seed)

    def one_run(models: np.ndarray, shares: tuple[float, float]) -> dict:
        flat, answers = scores[models].ravel(), included[models].ravel()
        guess_in, guess_out = (int(share * len(flat)) for share in shares)
        return dp_audit.one_run_audit(flat, answers, guess_in, guess_out, delta, confidence)

    # IN and OUT guesses apart: a canary out of a model can still score high by chance (its
    # random label may be the class the model gives its random input), never the reverse
    shares = max(((a, b) for a in (0.0, *GUESS_SHARES) for b in (0.0, *GUESS_SHARES)
                  if a + b > 0),
                 key=lambda pair: one_run(select, pair)["epsilon_lower_bound"])
    pooled = {**one_run(evaluate, shares), "guess_share_in": shares[0],
              "guess_share_out": shares[1], "n_models": len(evaluate)}
    bounds = {"blackbox_population": float(population["epsilon_lower_bound"]),
              "blackbox_one_run": float(pooled["epsilon_lower_bound"])}
    best = max(bounds.values())
    summary = {
        "epsilon": epsilon, "delta": delta, "confidence": confidence,
        "epsilon_lower_bound": best,
        **{f"epsilon_lower_bound_{name}": value for name, value in bounds.items()},
        "n_models": n_models, "n_canaries": n_canaries,
        "inclusion": ("independent, probability 1/2 (DP run)" if independent_inclusion
                      else "a random half per model (non-DP run: the one-run bound assumes "
                           "independent inclusion; as a bound on an infinite ε it cannot be "
                           "wrong)"),
        "canary_accuracy_in": float((scores[included] > 0).mean()) if included.any() else None,
        "canary_accuracy_out": (float((scores[~included] > 0).mean())
                                if (~included).any() else None),
        "population": _plain(population), "one_run": _plain(pooled),
    }
    if epsilon is None:
        summary["verdict"] = "no DP claim to check (the run trained without DP)"
    elif best > epsilon:
        summary["verdict"] = (f"violated: the audited lower bound {best:.2f} exceeds the "
                              f"accountant's ε = {epsilon:.2f} at {confidence:.0%} confidence")
    else:
        summary["verdict"] = (f"no violation found: ε̂ = {best:.2f} ≤ ε = {epsilon:.2f} (a "
                              "lower bound below ε does not show that the claim holds)")
    return summary


def _plain(values: dict) -> dict:
    """JSON-ready: numpy scalars as Python numbers."""
    return {key: value.item() if isinstance(value, np.generic) else value
            for key, value in values.items()}
