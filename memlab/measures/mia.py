"""Membership-inference attacks scored from a population (docs/science.md §7).

A population of t models, model k trained on subset I_k (membership mask M, t × n), is a
ready-made audit: every (model k, example i) is a trial whose answer M[k, i] is known, and
the other t − 1 models are the attacker's shadow (reference) models — leave-one-model-out.
Every attack below scores all t × n trials at once from per-example sums over the shadows
(the target's own row subtracted), never a loop over models or examples.

Inputs, model axis first (``AttackInputs``):

    score       (t, n[, A]) float  φ: higher = more member-like. For classifiers LiRA's
                           logit-scaled confidence log p_y/(1 − p_y), the float32 ``logodds``
                           record; for language models minus the per-document loss. A last
                           axis A holds several augmented queries of the same example.
    mask        (t, n) bool        M[k, i]: example i in model k's training subset
    log_prob    (t, n) float       log Pr(x_i | θ_k) for RMIA (log p_y, or −loss per token)
    population  (t, m) float       log Pr(z_j | θ_k) of m non-member population points z
                                   (the test set) for RMIA
    confidence  (t, n) float       log of the largest softmax probability (label-free
                                   baseline), optional

Attacks (all return (t, n) float64 scores, higher = "member"; NaN where undefined):

    lira_online        Λ = log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²), per-example
                       Gaussians over the IN and OUT shadows (Carlini et al. 2022)
    lira_online_fixed  the same with one variance for all examples (pooled over them)
    lira_offline       (φ − μ_out)/σ_out: OUT shadows only, the one-sided test (a monotone
                       function of 1 − p-value)
    lira_offline_fixed the same with the pooled variance
    rmia_online        fraction of population points z with LR(x)/LR(z) ≥ γ, LR(x) =
                       Pr(x|θ)/Pr(x), Pr(x) the mean over IN and OUT shadows (Zarifzadeh
                       et al. 2024)
    rmia_offline       Pr(x) ≈ ((1 + a)/2)·mean_OUT Pr(x|θ') + (1 − a)/2 (OUT shadows only)
    loss               −loss (one global threshold; Yeom et al.)
    confidence         the largest softmax probability (one global threshold)

Shadow cap (how power grows with shadows): ``cap = S`` gives every trial S IN and S OUT
shadows per side (fewer where the population has fewer): for each example, the S models
that follow the target in a fixed random cyclic order of the example's IN models, and
likewise for OUT. With S = 1 no variance can be estimated from the shadows: the
per-example variants then use the pooled variance and the pooled variance is taken as 1
(a pure difference-of-means test; ranking within one target is unchanged by it).

Metrics (``roc_metrics``, ``audit_metrics``): the pooled ROC over all trials (one
threshold for all targets and examples), AUC, balanced accuracy (the best threshold's), TPR
at FPR 0.1% and 1% (the largest TPR whose FPR does not exceed it), exact, each with a 95%
interval from one bootstrap over models (``bootstrap_weights``): a resample draws t models
with replacement and is a population of its own — its models are the targets (a model
drawn w times counts its trials w times) *and* the shadows (shadow sums weighted by w, the
target's own copies left out), so ``audit_metrics`` scores every attack again in every
resample. Holding the shadows fixed and resampling only targets misses the shadows' share
of the variance: in null populations LiRA online's "95%" interval covered AUC 0.5 in 87%
of them (fixed variance: 78%). The interval is estimate ± Student-t(t − 1) × √(t/(t − 1))
× the replicates' SD, for AUC, TPR and balanced accuracy on the arcsine-√ scale
(``_interval``: centred on the estimate, because resampled populations have duplicate
shadows and weaker attacks). Every attack and every cap uses the same resamples, so a
difference of two attacks is paired (``paired_difference``). Coverage with known answers:
tests/test_audit_coverage.py, docs/audit.md ("Intervals that hold").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from memlab import streams
from memlab.errors import ConfigError
from memlab.measures.inout import masked_means

ATTACKS = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed",
           "rmia_online", "rmia_offline", "loss", "confidence")
FPRS = (0.001, 0.01)
_VAR_FLOOR = 1e-8  # variances below this (identical shadow scores) are clipped to it


# ------------------------------------------------------------------ inputs


@dataclass
class AttackInputs:
    """What the attacks read, model axis first (see the module docstring for shapes)."""

    score: np.ndarray
    mask: np.ndarray
    log_prob: np.ndarray | None = None
    population: np.ndarray | None = None
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.ndim != 2:
            raise ConfigError(f"membership mask must be (models, examples), got {self.mask.shape}")
        t, n = self.mask.shape
        if t < 2:
            raise ConfigError("an audit needs at least 2 models (a target and a shadow)")
        self.score = np.asarray(self.score, dtype=np.float64)
        if self.score.shape[:2] != (t, n) or self.score.ndim not in (2, 3):
            raise ConfigError(f"scores {self.score.shape} must be (models, examples[, "
                              f"augmentations]) matching the mask {self.mask.shape}")
        for name in ("log_prob", "confidence"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                if value.shape != (t, n):
                    raise ConfigError(f"{name} {value.shape} must match the mask {(t, n)}")
                setattr(self, name, value)
        if self.population is not None:
            self.population = np.asarray(self.population, dtype=np.float64)
            if self.population.ndim != 2 or self.population.shape[0] != t:
                raise ConfigError(f"population {self.population.shape} must be (models={t}, "
                                  "points)")
        if not np.isfinite(self.score).all():
            raise ConfigError("attack scores contain NaN or inf; use the float32 logodds "
                              "record (never float16 losses, which overflow)")

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    @classmethod
    def from_logits_records(cls, mask: np.ndarray, logodds: np.ndarray,
                            test_logodds: np.ndarray | None = None,
                            margin: np.ndarray | None = None) -> AttackInputs:
        """Inputs of a classifier population from its float32 ``{split}_logodds`` records
        (log p_y/(1 − p_y)) and, for the confidence baseline, ``train_margin`` (true-class
        logit minus the best other)."""
        logodds = np.asarray(logodds, dtype=np.float64)
        log_p = -np.logaddexp(0.0, -logodds)  # log sigmoid(φ) = log p_y, stable
        confidence = None
        if margin is not None:
            # log p_max = log p_y when the model is right, log p_y − margin when it is not.
            confidence = log_p + np.maximum(0.0, -np.asarray(margin, dtype=np.float64))
        population = None
        if test_logodds is not None:
            population = -np.logaddexp(0.0, -np.asarray(test_logodds, dtype=np.float64))
        return cls(logodds, mask, log_p, population, confidence)


# ------------------------------------------------------------------ shadow sums


@dataclass
class _Side:
    """Shadow statistics of one side (IN or OUT) for every trial: counts ([B,] t, n) and
    sums."""

    count: np.ndarray
    sums: list[np.ndarray]

    def mean(self, j: int = 0) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums[j] / self.count

    @functools.cached_property
    def ss(self) -> np.ndarray:
        """Σ (v − mean)² of sums[0] (values) and sums[1] (squares), per trial (computed
        once: every variant of LiRA reads it)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            ss = self.sums[1] - self.sums[0] ** 2 / self.count
        return np.where(self.count > 0, np.maximum(ss, 0.0), 0.0)


def _side_stats(values: Sequence[np.ndarray], side: np.ndarray, cap: int | None,
                order: np.ndarray | None, weights: np.ndarray | None = None) -> _Side:
    """Counts and sums of ``values`` (each (t, n)) over the shadows on ``side`` ((t, n) bool:
    the models on this side of each example), leaving out the target's own row.

    cap None: all shadows on the side. cap S: the S side-models that follow the target in
    the cyclic order ``order`` (a permutation of the models), per example.

    ``weights`` (B, t): B resamples of the population, model j drawn ``weights[b, j]``
    times. Each resample is a population of its own: a model drawn w times is w shadows
    (w copies, adjacent in the cyclic order), and no copy of the target is its own shadow
    (it would be the target itself). Counts and sums then have a leading resample axis,
    (B, t, n); without weights every model is drawn once and the axis is dropped."""
    t, n = side.shape
    on = side.astype(np.float64)
    if cap is None or cap >= t:
        if weights is None:
            count = side.sum(0)[None, :] - side
            sums = [(v * on).sum(0)[None, :] - v * on for v in values]
            return _Side(count.astype(np.int64), sums)
        own = weights[:, :, None]
        return _Side((weights @ on)[:, None, :] - own * on,
                     [(weights @ (v * on))[:, None, :] - own * (v * on) for v in values])
    # In the cyclic order, each example's side copies form a list (a model off the side,
    # or not drawn, has none) of at most t copies. The target at position p has `through`
    # = its own copies and all those before it, so its shadows are list items through ..
    # through + width − 1, wrapping around once at most (width ≤ length − own copies).
    # Each (resample, example) list is one row of a (B·n, t + 1) table of running sums
    # (row-wise, like a per-example sum over t values, so no precision is lost), which
    # answers every window in O(1): no search.
    b_count = 1 if weights is None else len(weights)
    w = np.ones((1, t)) if weights is None else np.asarray(weights, dtype=np.float64)
    copies = (w[:, order, None] * side[order][None]).astype(np.int64)  # (B, t, n)
    through = np.cumsum(copies, axis=1)
    length = through[:, -1:, :]
    width = np.minimum(cap, length - copies)
    # Every copy's row (resample, example), place in its list and source (example, model).
    counts = np.ascontiguousarray(copies.transpose(0, 2, 1)).ravel()  # (B, n, t) order
    lengths = length.ravel()
    row = np.repeat(np.arange(b_count * n), lengths)
    place = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    source = np.repeat(np.tile(np.arange(n * t), b_count), counts)
    # Flat positions in the table of the windows' ends (the table's row starts at 0).
    start = (np.arange(b_count)[:, None, None] * n + np.arange(n)) * (t + 1)
    first = start + through
    last = start + np.minimum(through + width, length)
    # The few windows that wrap around take their last copies from the list's start.
    wraps = np.nonzero(through + width > length)
    wrap_start = np.broadcast_to(start, through.shape)[wraps]
    wrap_end = wrap_start + (through + width - length)[wraps]
    sums = []
    for v in values:
        table = np.zeros((b_count * n, t + 1))
        table[row, place + 1] = v[order].T.ravel()[source]
        running = np.cumsum(table, axis=1).ravel()
        window = running[last] - running[first]
        window[wraps] += running[wrap_end] - running[wrap_start]
        sums.append(np.where(width > 0, window, 0.0))
    inverse = np.argsort(order)
    count, sums = width[:, inverse], [s[:, inverse] for s in sums]
    if weights is None:
        return _Side(count[0].astype(np.int64), [s[0] for s in sums])
    return _Side(count, sums)


# ------------------------------------------------------------------ the attacks


def _flatten(score: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(t, n, A) scores as (t, n·A) with the mask repeated along A."""
    if score.ndim == 2:
        return score, mask, 1
    t, n, a = score.shape
    return score.reshape(t, n * a), np.repeat(mask, a, axis=1), a


def _pooled_variance(*sides: _Side) -> np.ndarray:
    """([B,] t, 1) one variance per target, pooled over its examples and the given sides:
    Σ centred squares / Σ (count − 1). 1.0 where no side has two shadows."""
    ss = sum(side.ss.sum(-1) for side in sides)
    dof = sum(np.maximum(side.count - 1, 0).sum(-1) for side in sides)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(dof > 0, ss / np.maximum(dof, 1), 1.0)
    return np.maximum(var, _VAR_FLOOR)[..., None]


def _variance(side: _Side, pooled: np.ndarray) -> np.ndarray:
    """Per-trial sample variance; the pooled one where fewer than two shadows."""
    with np.errstate(invalid="ignore", divide="ignore"):
        var = side.ss / (side.count - 1)
    return np.maximum(np.where(side.count >= 2, var, pooled), _VAR_FLOOR)


def _gaussian_loglik(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) ** 2 / var + np.log(var))


def lira(inputs: AttackInputs, cap: int | None = None, seed: int = 0,
         variants: Sequence[str] = ("lira_online", "lira_online_fixed", "lira_offline",
                                    "lira_offline_fixed"),
         weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """LiRA scores (t, n) of every trial, name -> array; see the module docstring.
    Augmented queries (A > 1) contribute the sum of their per-query statistics.
    ``weights`` (B, t): score B resamples of the models at once, (B, t, n) each
    (:func:`_side_stats`)."""
    mask = inputs.mask
    phi, side_mask, a = _flatten(inputs.score, mask)
    order = _cyclic_order(mask.shape[0], cap, seed)
    want_in = any(v.startswith("lira_online") for v in variants)
    sides = {"out": _side_stats([phi, phi ** 2], ~side_mask, cap, order, weights)}
    if want_in:
        sides["in"] = _side_stats([phi, phi ** 2], side_mask, cap, order, weights)
    out_side = sides["out"]
    mu_out = out_side.mean()
    results = {}
    t, n = mask.shape

    def fold(x: np.ndarray) -> np.ndarray:  # sum over augmentations
        return x.reshape(*x.shape[:-1], n, a).sum(-1) if a > 1 else x

    if want_in:
        in_side = sides["in"]
        mu_in = in_side.mean()
        pooled = _pooled_variance(in_side, out_side)
        undefined = (in_side.count == 0) | (out_side.count == 0)
        if "lira_online" in variants:
            llr = (_gaussian_loglik(phi, mu_in, _variance(in_side, pooled))
                   - _gaussian_loglik(phi, mu_out, _variance(out_side, pooled)))
            results["lira_online"] = fold(np.where(undefined, np.nan, llr))
        if "lira_online_fixed" in variants:
            llr = (_gaussian_loglik(phi, mu_in, pooled) - _gaussian_loglik(phi, mu_out, pooled))
            results["lira_online_fixed"] = fold(np.where(undefined, np.nan, llr))
    if any(v.startswith("lira_offline") for v in variants):
        pooled_out = _pooled_variance(out_side)
        undefined = out_side.count == 0
        if "lira_offline" in variants:
            z = (phi - mu_out) / np.sqrt(_variance(out_side, pooled_out))
            results["lira_offline"] = fold(np.where(undefined, np.nan, z))
        if "lira_offline_fixed" in variants:
            z = (phi - mu_out) / np.sqrt(pooled_out)
            results["lira_offline_fixed"] = fold(np.where(undefined, np.nan, z))
    return {v: results[v] for v in variants if v in results}


def rmia(inputs: AttackInputs, cap: int | None = None, seed: int = 0, a: float = 0.3,
         gamma: float = 1.0, variants: Sequence[str] = ("rmia_online", "rmia_offline"),
         weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """RMIA scores (t, n): the fraction of population points z that x dominates,
    Pr(x|θ)/Pr(x) ≥ γ · Pr(z|θ)/Pr(z). Within one target this is a monotone function of
    its likelihood ratio; ties (the same count) are broken by the ratio itself, which is
    the limit with more population points. ``a``: the offline IN-from-OUT correction.
    ``weights`` (B, t): B resamples of the models at once, (B, t, n) each."""
    if inputs.log_prob is None or inputs.population is None:
        raise ConfigError("RMIA needs log_prob and population (non-member) log-probabilities")
    if not 0 <= a <= 1 or gamma <= 0:
        raise ConfigError(f"RMIA needs 0 <= a <= 1 and gamma > 0, got a={a}, gamma={gamma}")
    mask = inputs.mask
    t, n = mask.shape
    order = _cyclic_order(t, cap, seed)
    prob = np.exp(inputs.log_prob)
    pop_prob = np.exp(inputs.population)
    out_side = _side_stats([prob], ~mask, cap, order, weights)
    # Population points are non-members of every model: their references are simply the
    # other models (the 2·cap following the target for online, cap for offline).
    all_out = np.ones((t, pop_prob.shape[1]), bool)
    results = {}
    for variant in variants:
        if variant == "rmia_online":
            in_side = _side_stats([prob], mask, cap, order, weights)
            with np.errstate(invalid="ignore"):
                ref = 0.5 * (in_side.mean() + out_side.mean())
            undefined = (in_side.count == 0) | (out_side.count == 0)
            pop_ref = _side_stats([pop_prob], all_out, None if cap is None else 2 * cap,
                                  order, weights).mean()
        elif variant == "rmia_offline":
            ref = 0.5 * (1 + a) * out_side.mean() + 0.5 * (1 - a)
            undefined = out_side.count == 0
            pop_ref = 0.5 * (1 + a) * _side_stats([pop_prob], all_out, cap, order,
                                                  weights).mean() + 0.5 * (1 - a)
        else:
            raise ConfigError(f"unknown RMIA variant {variant!r}")
        with np.errstate(divide="ignore", invalid="ignore"):
            log_lr = inputs.log_prob - np.log(ref)
            pop_log_lr = inputs.population - np.log(pop_ref)
        results[variant] = np.where(undefined, np.nan,
                                    _dominated_fraction(log_lr - np.log(gamma), pop_log_lr))
    return results


def _dominated_fraction(values: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Per row: the fraction of ``population`` ([B,] t, m) at or below each of ``values``
    ([B,] t, n), plus a tie-breaker below one step (1/m) that orders equal counts by the
    value."""
    m = population.shape[-1]
    pop = torch.sort(torch.from_numpy(np.ascontiguousarray(
        np.nan_to_num(population, nan=np.inf)))).values.contiguous()
    val = torch.from_numpy(np.ascontiguousarray(np.nan_to_num(values, nan=-np.inf)))
    count = torch.searchsorted(pop, val, right=True).numpy()
    # arctan: an order-preserving tie-breaker in (−0.49, 0.49) that never saturates.
    return (count + 0.5 + 0.98 / np.pi * np.arctan(values)) / (m + 1)


def baselines(inputs: AttackInputs) -> dict[str, np.ndarray]:
    """Global-threshold baselines: loss (−loss, i.e. log Pr(x|θ)) and confidence (the
    largest softmax probability), where available."""
    results = {}
    loss_score = inputs.log_prob if inputs.log_prob is not None else (
        inputs.score if inputs.score.ndim == 2 else inputs.score.mean(2))
    results["loss"] = np.asarray(loss_score, dtype=np.float64)
    if inputs.confidence is not None:
        results["confidence"] = inputs.confidence
    return results


def _cyclic_order(t: int, cap: int | None, seed: int) -> np.ndarray | None:
    if cap is None or cap >= t:
        return None
    if cap < 1:
        raise ConfigError(f"the shadow cap must be at least 1, got {cap}")
    return np.random.default_rng([seed, streams.MIA_SHADOWS]).permutation(t)


def attack_scores(inputs: AttackInputs, attacks: Sequence[str] = ATTACKS,
                  cap: int | None = None, seed: int = 0, rmia_a: float = 0.3,
                  rmia_gamma: float = 1.0, weights: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """name -> (t, n) scores of the requested attacks (those whose inputs exist).
    ``weights`` (B, t): the attacks of B resamples of the models (:func:`_side_stats`),
    (B, t, n) each; the global-threshold baselines use no shadows and stay (t, n)."""
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        raise ConfigError(f"unknown attacks {unknown}; choose from {', '.join(ATTACKS)}")
    results: dict[str, np.ndarray] = {}
    lira_wanted = [x for x in attacks if x.startswith("lira")]
    if lira_wanted:
        results.update(lira(inputs, cap, seed, lira_wanted, weights))
    rmia_wanted = [x for x in attacks if x.startswith("rmia")]
    if rmia_wanted and inputs.population is not None and inputs.log_prob is not None:
        results.update(rmia(inputs, cap, seed, rmia_a, rmia_gamma, rmia_wanted, weights))
    if {"loss", "confidence"} & set(attacks):
        results.update({k: v for k, v in baselines(inputs).items() if k in attacks})
    return {name: results[name] for name in attacks if name in results}


def n_shadows(mask: np.ndarray, cap: int | None = None) -> dict[str, float]:
    """Shadows per trial: mean IN and OUT counts (leave-one-model-out, capped)."""
    t = mask.shape[0]
    n_in = mask.sum(0)[None, :] - mask
    n_out = (t - mask.sum(0))[None, :] - ~mask
    if cap is not None:
        n_in, n_out = np.minimum(n_in, cap), np.minimum(n_out, cap)
    return {"shadows_in_mean": float(n_in.mean()), "shadows_out_mean": float(n_out.mean()),
            "shadow_models": int(t - 1 if cap is None else min(t - 1, 2 * cap))}


# ------------------------------------------------------------------ ROC metrics


@dataclass
class Trials:
    """All trials of one attack, flattened: scores (NaN → −inf: an undefined score never
    flags a member), member (int8 0/1) and the target model of each."""

    scores: np.ndarray  # (T,) float64
    member: np.ndarray  # (T,) int8
    model: np.ndarray  # (T,) int32
    n_models: int

    @classmethod
    def of(cls, scores: np.ndarray, mask: np.ndarray) -> Trials:
        scores = np.asarray(scores, dtype=np.float64)
        mask = np.asarray(mask, dtype=bool)
        if scores.shape != mask.shape or scores.ndim != 2:
            raise ConfigError(f"scores {scores.shape} and mask {mask.shape} must both be "
                              "(models, examples)")
        flat = np.where(np.isnan(scores), -np.inf, scores).ravel()
        model = np.repeat(np.arange(scores.shape[0], dtype=np.int32), scores.shape[1])
        return cls(flat, mask.ravel().astype(np.int8), model, scores.shape[0])

    def exact_counts(self) -> tuple[np.ndarray, ...]:
        """pos, neg, d_pos, d_neg: member and non-member counts above every distinct
        threshold, high scores first, and their increments (one point per run of ties)."""
        *counts, last = _ranked_counts(self.scores, self.member.astype(np.float64))
        return tuple(c[last] for c in counts)

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """FPR and TPR at every distinct threshold, starting from (0, 0)."""
        pos, neg, _, _ = self.exact_counts()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.r_[0.0, neg / neg[-1]], np.r_[0.0, pos / pos[-1]]


def _ranked_counts(scores: np.ndarray, member: np.ndarray,
                   weights: np.ndarray | None = None, order: np.ndarray | None = None
                   ) -> tuple[np.ndarray, ...]:
    """Member and non-member counts down the ranking of ``scores`` (high first) along the
    last axis: pos, neg (cumulative), d_pos, d_neg (increments) and ``last``, the last
    trial of each run of tied scores. ``member`` (T,) 0/1 follows the last axis, trials
    model-major (T = t·n); ``weights`` (B, t) counts model k's trials ``weights[:, k]``
    times, one ROC per row (a 1-D ``scores`` is ranked once for all rows). A run of ties is
    one threshold: inside it the counts stay at the previous run's end with zero
    increments, and jump by the run's totals at its last trial, so every position is a
    point of the ROC. ``order``: the ranking (:func:`_ranking`), when already known."""
    order = _ranking(scores) if order is None else order
    ranked = np.take_along_axis(scores, order, -1)
    d_pos = member[order]
    if weights is None:
        d_neg = 1.0 - d_pos
    else:
        # Each trial's weight is its model's: gathered from the small (B, t) table.
        target = order // (scores.shape[-1] // weights.shape[-1])
        ranked_weight = weights[:, target] if target.ndim == 1 else np.take_along_axis(
            weights, target, -1)
        d_pos = d_pos * ranked_weight
        d_neg = ranked_weight - d_pos
    pos, neg = np.cumsum(d_pos, -1), np.cumsum(d_neg, -1)
    last = np.concatenate([ranked[..., 1:] != ranked[..., :-1],
                           np.ones(ranked.shape[:-1] + (1,), bool)], -1)
    if not last.all():
        # The previous run's end before every trial (−1: none), from the ranking's shape.
        ends = np.maximum.accumulate(np.where(last, np.arange(last.shape[-1]), -1), -1)
        previous = np.concatenate([np.full(ends.shape[:-1] + (1,), -1), ends[..., :-1]], -1)
        at = np.broadcast_to(np.maximum(previous, 0), pos.shape)

        def before(cumulative: np.ndarray) -> np.ndarray:
            return np.where(previous >= 0, np.take_along_axis(cumulative, at, -1), 0.0)

        pos_before, neg_before = before(pos), before(neg)
        d_pos, d_neg = np.where(last, pos - pos_before, 0.0), np.where(last, neg - neg_before,
                                                                      0.0)
        pos, neg = np.where(last, pos, pos_before), np.where(last, neg, neg_before)
    return pos, neg, d_pos, d_neg, np.broadcast_to(last, pos.shape)


def _ranking(scores: np.ndarray) -> np.ndarray:
    """The trials from the highest score down, along the last axis. Any order within a
    run of ties will do (runs are merged): the default sort is three times faster than a
    stable one."""
    return np.argsort(-scores, axis=-1)


def _metrics_from_counts(pos: np.ndarray, neg: np.ndarray, d_pos: np.ndarray,
                         d_neg: np.ndarray, fprs: Sequence[float]) -> dict[str, np.ndarray]:
    """AUC (trapezoids: ties count one half), best balanced accuracy and TPR at each FPR
    (the largest TPR whose FPR does not exceed it) from cumulative counts along the last
    axis (one ROC per row when 2-D)."""
    n_pos, n_neg = pos[..., -1], neg[..., -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        # Trapezoids: each step right by d_neg spans heights pos − d_pos .. pos.
        area = (d_neg * pos).sum(-1) - 0.5 * (d_neg * d_pos).sum(-1)
        tpr, fpr = pos / n_pos[..., None], neg / n_neg[..., None]
        metrics = {"auc": area / (n_pos * n_neg),
                   "balanced_accuracy": 0.5 + 0.5 * np.maximum(0.0, (tpr - fpr).max(-1))}
    for alpha in fprs:
        ok = fpr <= alpha * (1 + 1e-12)
        metrics[f"tpr_at_fpr_{alpha:g}"] = np.where(ok, tpr, 0.0).max(-1)
    return metrics


# ------------------------------------------------------------------ the model bootstrap

_BLOCK = 1 << 18  # scores per block of resamples scored at once: small blocks stay in cache


def bootstrap_weights(n_models: int, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """(n_bootstrap, n_models): how often each model is drawn in each resample of the
    models (t draws with replacement; stream ``[seed, MIA_BOOTSTRAP]``). The one set of
    resamples behind every interval and every paired difference of an audit."""
    rng = np.random.default_rng([seed, streams.MIA_BOOTSTRAP])
    return np.stack([np.bincount(rng.integers(0, n_models, n_models), minlength=n_models)
                     for _ in range(n_bootstrap)]).astype(np.float64)


def _weighted_metrics(scores: np.ndarray, mask: np.ndarray, weights: np.ndarray,
                      fprs: Sequence[float], order: np.ndarray | None = None
                      ) -> dict[str, np.ndarray]:
    """The pooled metrics of each resample, (B,) each: ``weights`` (B, t) copies of target
    k's trials, scored ``scores`` ((B, t, n), or (t, n) in every resample, whose ranking
    ``order`` may be given)."""
    t, n = mask.shape
    flat = np.where(np.isnan(scores), -np.inf, scores).reshape(*scores.shape[:-2], t * n)
    counts = _ranked_counts(flat, mask.ravel().astype(np.float64), weights, order)
    return _metrics_from_counts(*counts[:4], fprs)


def _replicates(rescore: Callable[[np.ndarray], dict[str, np.ndarray]], mask: np.ndarray,
                weights: np.ndarray, fprs: Sequence[float], per_model: int
                ) -> dict[str, dict[str, np.ndarray]]:
    """name -> metric -> (B,) replicates: ``rescore(w)`` scores resamples ``w`` (b, t) of
    the models ((b, t, n) per attack, or (t, n) for scores that read no other model), a
    block of resamples at a time (``per_model``: the largest array per model and resample,
    to bound memory)."""
    t = mask.shape[0]
    step = max(1, _BLOCK // max(1, t * per_model))
    parts: dict[str, dict[str, list[np.ndarray]]] = {}
    fixed: dict[str, np.ndarray] = {}  # the ranking of scores that read no shadow, once
    for low in range(0, len(weights), step):
        block = weights[low:low + step]
        for name, scores in rescore(block).items():
            order = None
            if scores.ndim == 2:
                if name not in fixed:
                    fixed[name] = _ranking(np.where(np.isnan(scores), -np.inf, scores).ravel())
                order = fixed[name]
            for metric, values in _weighted_metrics(scores, mask, block, fprs, order).items():
                parts.setdefault(name, {}).setdefault(metric, []).append(values)
    return {name: {metric: np.concatenate(v) for metric, v in by_metric.items()}
            for name, by_metric in parts.items()}


@functools.lru_cache(maxsize=64)
def _t_quantile(probability: float, dof: int) -> float:
    return float(stats.t.ppf(probability, dof))  # scipy's call costs more than the interval


def _interval(estimate: float, replicates: np.ndarray | None, n_models: int, level: float,
              proportion: bool) -> tuple[float, float, float]:
    """(low, high, se) of ``estimate`` from its bootstrap ``replicates`` over
    ``n_models`` models: se = √(t/(t − 1)) × their standard deviation, and the interval
    estimate ± se × Student's t quantile with t − 1 degrees of freedom — for a
    ``proportion`` (AUC, TPR, balanced accuracy) on the arcsine-square-root scale, where a
    proportion's spread no longer depends on its value, and mapped back into [0, 1].

    Centred on the estimate, not the replicates' percentiles: a resampled population
    has duplicate shadows (about 63% of the models distinct), so its attacks are weaker
    and their replicates sit below the estimate (LiRA online's AUC by 1.6 standard errors
    with 32 models, and by more at large t, where the SE is small), which moves a
    percentile interval off the truth (70–85% coverage). t and √(t/(t − 1)): a bootstrap
    over t models is one over t clusters of trials, whose variance it underestimates by
    (t − 1)/t, with a standard error of its own. Arcsine: a TPR at 1% FPR near 0.01 is
    skewed like a binomial proportion: the truth lay above a symmetric interval 5.3% of
    the time instead of 2.5% (docs/audit.md, "Intervals that hold")."""
    finite = None if replicates is None else replicates[np.isfinite(replicates)]
    if finite is None or finite.size < 2 or n_models < 2 or not np.isfinite(estimate):
        return float("nan"), float("nan"), float("nan")
    inflate = np.sqrt(n_models / (n_models - 1))
    quantile = _t_quantile(0.5 + level / 2, n_models - 1)
    se = float(finite.std(ddof=1) * inflate)
    if not proportion:
        return estimate - quantile * se, estimate + quantile * se, se

    def angle(p: np.ndarray | float) -> np.ndarray:
        return np.arcsin(np.sqrt(np.clip(p, 0.0, 1.0)))

    half = quantile * float(angle(finite).std(ddof=1)) * inflate
    low, high = np.clip(angle(estimate) + np.array([-half, half]), 0.0, np.pi / 2)
    return float(np.sin(low) ** 2), float(np.sin(high) ** 2), se


def _summary(trials: Trials, fprs: Sequence[float], replicates: dict[str, np.ndarray] | None,
             level: float) -> dict:
    """Exact point metrics of ``trials`` with their intervals (``_ci_low``, ``_ci_high``)
    and standard errors (``_se``) from the bootstrap ``replicates`` (:func:`_interval`;
    NaN without), which stay under ``"_samples"`` for paired differences."""
    point = {k: float(v) for k, v in _metrics_from_counts(*trials.exact_counts(), fprs).items()}
    result: dict = dict(point)
    for name, value in point.items():
        low, high, se = _interval(value, None if replicates is None else replicates[name],
                                  trials.n_models, level, proportion=True)
        result[f"{name}_ci_low"], result[f"{name}_ci_high"], result[f"{name}_se"] = low, high, se
    result["n_undefined"] = int(np.isneginf(trials.scores).sum())
    result["n_trials"] = int(trials.member.size)
    result["n_models"] = int(trials.n_models)
    result["_samples"] = replicates or {}
    return result


def roc_metrics(scores: np.ndarray, mask: np.ndarray, n_bootstrap: int = 200,
                fprs: Sequence[float] = FPRS, seed: int = 0, level: float = 0.95,
                trials: Trials | None = None, return_samples: bool = False) -> dict:
    """AUC, balanced accuracy and TPR at each FPR in ``fprs`` of the pooled ROC of fixed
    ``scores`` (t, n) against ``mask`` (t, n) — one threshold for all trials — each with
    ``_ci_low`` / ``_ci_high`` at ``level`` and ``_se`` from ``n_bootstrap`` resamples of
    the models (:func:`bootstrap_weights`; the interval: :func:`_interval`). Point
    estimates and replicates are exact; NaN scores count as the lowest. With
    ``return_samples`` the replicates come back under ``"_samples"``.

    The scores are held fixed, so a resample only redraws the targets: right for scores
    that read no other model (the loss and confidence thresholds, a score from outside),
    too narrow for an attack on shadow models — use :func:`audit_metrics`, which scores
    every resample again from its own shadows."""
    trials = trials or Trials.of(scores, mask)
    replicates = None
    if n_bootstrap >= 2:
        fixed = np.asarray(scores, dtype=np.float64)
        replicates = _replicates(lambda _: {"score": fixed}, np.asarray(mask, bool),
                                 bootstrap_weights(trials.n_models, n_bootstrap, seed), fprs,
                                 fixed.shape[1])["score"]
    result = _summary(trials, fprs, replicates, level)
    if not return_samples:
        del result["_samples"]
    return result


def audit_metrics(inputs: AttackInputs, attacks: Sequence[str] = ATTACKS, *,
                  cap: int | None = None, seed: int = 0, n_bootstrap: int = 100,
                  fprs: Sequence[float] = FPRS, level: float = 0.95, rmia_a: float = 0.3,
                  rmia_gamma: float = 1.0) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The attacks' scores (name -> (t, n), as :func:`attack_scores`) and their metrics
    (name -> :func:`roc_metrics`' dict, replicates under ``"_samples"``) with intervals
    from the bootstrap over models as targets *and* shadows: in each resample of
    :func:`bootstrap_weights` the models drawn are the population — every attack is scored
    again from shadow statistics of the drawn models (weighted by how often each was drawn,
    the target's own copies left out; :func:`_side_stats`), and the metrics are those of
    the drawn targets' trials. Holding the shadows fixed instead (a bootstrap of targets
    only) leaves out their share of the variance: in null populations LiRA online's
    "95%" interval then covered AUC 0.5 in 87% of them, fixed variance 78%
    (docs/audit.md, "Intervals that hold"). Every attack uses the same resamples, so
    :func:`paired_difference` of any two is paired."""
    scores = attack_scores(inputs, attacks, cap, seed, rmia_a, rmia_gamma)
    names = tuple(scores)
    mask = inputs.mask
    replicates: dict[str, dict[str, np.ndarray]] = {}
    if n_bootstrap >= 2:
        per_model = int(np.prod(inputs.score.shape[1:]))
        if inputs.population is not None and any(x.startswith("rmia") for x in names):
            per_model = max(per_model, inputs.population.shape[1])
        replicates = _replicates(
            lambda w: attack_scores(inputs, names, cap, seed, rmia_a, rmia_gamma, weights=w),
            mask, bootstrap_weights(mask.shape[0], n_bootstrap, seed), fprs, per_model)
    metrics = {name: _summary(Trials.of(scores[name], mask), fprs, replicates.get(name),
                              level) for name in names}
    return scores, metrics


def roc_curve(scores: np.ndarray, mask: np.ndarray, n_points: int = 400,
              trials: Trials | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The pooled ROC thinned to about ``n_points`` points spaced evenly in log FPR (for
    log–log plots): fpr, tpr."""
    trials = trials or Trials.of(scores, mask)
    fpr, tpr = trials.roc()
    positive = fpr > 0
    if positive.sum() <= n_points:
        return fpr, tpr
    grid = np.geomspace(fpr[positive].min(), 1.0, n_points)
    index = np.unique(np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, len(fpr) - 1))
    return fpr[index], tpr[index]


def paired_difference(a: dict, b: dict, metric: str = "auc", level: float = 0.95
                      ) -> dict[str, float]:
    """a − b of ``metric`` with the paired bootstrap SE and interval at ``level``
    (:func:`_interval` of the replicates' differences; both metrics dicts from
    :func:`audit_metrics` of the same inputs and seed, or :func:`roc_metrics` with
    ``return_samples`` and the same seed and size: resample b of both drew the same
    models)."""
    difference = a[metric] - b[metric]
    low, high, se = _interval(difference, a["_samples"][metric] - b["_samples"][metric],
                              a["n_models"], level, proportion=False)
    return {"difference": difference, "se": se, "ci_low": low, "ci_high": high}


# ------------------------------------------------------------------ per example


def threshold_at_fpr(scores: np.ndarray, mask: np.ndarray, fpr: float) -> float:
    """The global threshold τ with at most a fraction ``fpr`` of non-member trials above it."""
    negatives = np.where(np.isnan(scores), -np.inf, scores)[~mask]
    if negatives.size == 0:
        raise ConfigError("no non-member trials: every model trained on every example")
    k = int(np.floor(fpr * negatives.size))  # at most k negatives strictly above τ
    if k == 0:
        return float(negatives.max())
    return float(np.partition(negatives, negatives.size - k - 1)[negatives.size - k - 1])


def example_vulnerability(scores: np.ndarray, mask: np.ndarray, fpr: float = 0.01
                          ) -> dict[str, np.ndarray]:
    """Per example (n,): ``vulnerability`` = the attack's TPR on that example's member
    trials at the global threshold of FPR ``fpr``; ``example_fpr`` its non-member trials
    above that threshold; ``example_auc`` the AUC of its own member vs non-member trials
    (ties count one half; NaN without both); ``score_gap`` mean member score − mean
    non-member score."""
    scores = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    mask = np.asarray(mask, dtype=bool)
    tau = threshold_at_fpr(scores, mask, fpr)
    above = scores > tau
    n_in = mask.sum(0)
    n_out = mask.shape[0] - n_in
    tpr, own_fpr = masked_means(mask, above)  # member / non-member trials above τ
    finite = np.where(np.isfinite(scores), scores, np.nan)
    gap_in, gap_out = masked_means(mask, finite, skip_nan=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = gap_in - gap_out
        ranks = stats.rankdata(scores, axis=0)
        auc = ((ranks * mask).sum(0) - n_in * (n_in + 1) / 2) / (n_in * n_out)
    return {"vulnerability": tpr, "example_fpr": own_fpr, "example_auc": auc,
            "score_gap": gap, "threshold": np.full(mask.shape[1], tau)}
