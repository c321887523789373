"""The DP audit of a run: ε lower bounds from its privacy canaries, beside the accountant's ε.

A run trained with ``dp_canaries`` (100 by default with DP) has privacy canaries at the end of
its training set (:meth:`memlab.data.Dataset.with_privacy_canaries`: random inputs with
random labels); each model trains on each canary with probability 1/2, independently in a DP
run (``memlab.engine.config.privacy_canary_columns``). Every (model, canary) pair is a trial
with a known answer. The black-box score is the model's log-odds of the canary's label (its
final outputs only, nothing from the other models). A DP run also carries as many white-box
gradient canaries (:class:`memlab.engine.dp.GradientCanaries`): Dirac gradients of norm 10·C,
clipped like examples, scored by the sum of the model's released noisy gradients at their
coordinate. Two estimators for each kind (:mod:`memlab.measures.dp_audit`):

- **population** (Clopper–Pearson): one trial per model — model k's score on canary
  k mod N — so the trials are independent (every model is its own training run); the
  threshold is chosen on half of them and the bound computed on the other half.
- **one run, pooled** (Steinke, Nasr & Jagielski 2023): every (model, canary) pair. Each
  model's canaries are in independently with probability 1/2 and only model k sees its
  draws, so the population as one algorithm is ε-DP in each of the K·N inclusions and is
  one of their one-run audits; the guesses may read every model. Scores are centred per
  canary on their median over the models (a canary that scores high everywhere is not in
  every model). The shares of trials guessed IN and OUT are chosen on half the models and
  the bound computed on the other half.

ε̂ is a lower bound at ``confidence``: above the accountant's ε it shows the run leaks more
than claimed (a bug); below it, it shows nothing about whether the claim holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memlab import io, streams
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


def gradient_canary_trials(run: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(scores (K, N), included (K, N)) of the white-box gradient canaries (DP runs with
    canaries: :class:`memlab.engine.dp.GradientCanaries`), or None."""
    if "dp_gradient_canary_score" not in run.record_names:
        return None
    rows = run.usable_models()
    return (np.asarray(run.records("dp_gradient_canary_score")[rows], dtype=np.float64),
            np.asarray(run.records("dp_gradient_canary_in")[rows], dtype=bool))


def audit_privacy_canaries(run: Any, confidence: float = 0.95, seed: int = 0) -> dict:
    """The run's DP audit: the ε lower bounds of every variant (black-box from the privacy
    canaries; white-box from the gradient canaries when the run has them), the accountant's
    ε and a verdict."""
    plans = run.manifest.get("dp") or []
    # explicit masks of several subset sizes have several plans: the weakest claim counts
    epsilon = max((plan["dp_epsilon"] for plan in plans), default=None)
    delta = plans[0]["dp_delta"] if plans else DEFAULT_DELTA
    variants = {"blackbox": canary_trials(run)}
    whitebox = gradient_canary_trials(run)
    if whitebox is not None:
        variants["whitebox"] = whitebox
    return audit_variants(variants, epsilon, delta, confidence, seed,
                          independent_inclusion=bool(plans))


def audit_variants(variants: dict[str, tuple[np.ndarray, np.ndarray]],
                   epsilon: float | None, delta: float, confidence: float = 0.95,
                   seed: int = 0, independent_inclusion: bool = True) -> dict:
    """The audit of several kinds of canaries (name -> (scores, included), each (K, N)):
    every bound as ``epsilon_lower_bound_<name>_<estimator>``, their best as
    ``epsilon_lower_bound``, and the verdict against the accountant's ``epsilon``."""
    parts = {name: audit_trials(scores, included, epsilon, delta, confidence, seed,
                                independent_inclusion)
             for name, (scores, included) in variants.items()}
    summary = {key: value for key, value in parts["blackbox"].items()
               if not key.startswith("epsilon_lower_bound")}
    for name, part in parts.items():
        for estimator in ("population", "one_run"):
            summary[f"epsilon_lower_bound_{name}_{estimator}"] = part[
                f"epsilon_lower_bound_{estimator}"]
        summary[name] = {key: part[key] for key in ("population", "one_run")}
        if name != "blackbox":
            summary[f"{name}_canaries"] = part["n_canaries"]
    summary.pop("population"), summary.pop("one_run")
    best = max(value for key, value in summary.items()
               if key.startswith("epsilon_lower_bound_"))
    summary["epsilon_lower_bound"] = best
    summary["verdict"] = _verdict(best, epsilon, confidence)
    return summary


def _verdict(best: float, epsilon: float | None, confidence: float) -> str:
    if epsilon is None:
        return "no DP claim to check (the run trained without DP)"
    if best > epsilon:
        return (f"violated: the audited lower bound {best:.2f} exceeds the accountant's "
                f"ε = {epsilon:.2f} at {confidence:.0%} confidence")
    return (f"no violation found: ε̂ = {best:.2f} ≤ ε = {epsilon:.2f} (a lower bound below ε "
            "does not show that the claim holds)")


def audit_trials(scores: np.ndarray, included: np.ndarray, epsilon: float | None,
                 delta: float, confidence: float = 0.95, seed: int = 0,
                 independent_inclusion: bool = True) -> dict:
    """One kind of canaries' audit from (K, N) scores and their answers: the two bounds
    (``epsilon_lower_bound_population``, ``epsilon_lower_bound_one_run``), their best, the
    canaries' accuracy in and out and a verdict."""
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

    def one_run(models: np.ndarray, shares: tuple[float, float],
                centre_on: np.ndarray | None = None) -> dict:
        # Each canary's scores centred on their median over the models (``centre_on``,
        # default ``models``): a canary whose random label or coordinate draws high scores
        # in every model is not a member of all. (The guesses may read every model: the
        # population as one algorithm is ε-DP in each (model, canary) inclusion, since only
        # model k sees k's draw.)
        centre = np.median(scores[models if centre_on is None else centre_on], axis=0)
        flat = (scores[models] - centre).ravel()
        answers = included[models].ravel()
        guess_in, guess_out = (int(share * len(flat)) for share in shares)
        return dp_audit.one_run_audit(flat, answers, guess_in, guess_out, delta, confidence)

    # IN and OUT guesses apart: a canary out of a model can still score high by chance (its
    # random label may be the class the model gives its random input), never the reverse
    shares = max(((a, b) for a in (0.0, *GUESS_SHARES) for b in (0.0, *GUESS_SHARES)
                  if a + b > 0),
                 key=lambda pair: one_run(select, pair)["epsilon_lower_bound"])
    # For comparison, what one training run alone gives (Steinke et al.'s setting): the
    # same audit on each evaluation model by itself; the median over them (never the
    # maximum, which would be the luckiest of many audits).
    single = [one_run(evaluate[i:i + 1], shares, centre_on=evaluate)["epsilon_lower_bound"]
              for i in range(len(evaluate))]
    pooled = {**one_run(evaluate, shares), "guess_share_in": shares[0],
              "guess_share_out": shares[1], "n_models": len(evaluate),
              "single_model_median": float(np.median(single))}
    bounds = {"population": float(population["epsilon_lower_bound"]),
              "one_run": float(pooled["epsilon_lower_bound"])}
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
        "population": io.strict_jsonable(population),
        "one_run": io.strict_jsonable(pooled),
    }
    summary["verdict"] = _verdict(best, epsilon, confidence)
    return summary
