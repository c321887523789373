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

Metrics (``roc_metrics``): the pooled ROC over all trials (one threshold for all targets
and examples), AUC, balanced accuracy (the best threshold's), TPR at FPR 0.1% and 1%
(the largest TPR whose FPR does not exceed it), each with a percentile bootstrap interval
over target models (resampling whole models keeps each model's trials together).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """Shadow statistics of one side (IN or OUT) for every trial: counts (t, n) and sums."""

    count: np.ndarray
    sums: list[np.ndarray]

    def mean(self, j: int = 0) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums[j] / self.count

    def centered_ss(self) -> np.ndarray:
        """Σ (v − mean)² of sums[0] (values) and sums[1] (squares), per trial."""
        with np.errstate(invalid="ignore", divide="ignore"):
            ss = self.sums[1] - self.sums[0] ** 2 / self.count
        return np.where(self.count > 0, np.maximum(ss, 0.0), 0.0)


def _side_stats(values: Sequence[np.ndarray], side: np.ndarray, cap: int | None,
                order: np.ndarray | None) -> _Side:
    """Counts and sums of ``values`` (each (t, n)) over the shadows on ``side`` ((t, n) bool:
    the models on this side of each example), leaving out the target's own row.

    cap None: all shadows on the side. cap S: the S side-models that follow the target in
    the cyclic order ``order`` (a permutation of the models), per example."""
    t, n = side.shape
    on = side.astype(np.float64)
    if cap is None or cap >= t:
        count = side.sum(0)[None, :] - side
        sums = [(v * on).sum(0)[None, :] - v * on for v in values]
        return _Side(count.astype(np.int64), sums)
    # Per example, list the side's models in the permuted order (a stable sort puts them
    # first); the target at permuted position p has r = (side models before p) of them
    # ahead of it, so its shadows are list items r+1.. (target on the side) or r..
    # (target off it), wrapping around cyclically.
    s = side[order]
    listed = np.argsort(~s, axis=0, kind="stable")
    length = s.sum(0)  # (n,)
    safe = np.maximum(length, 1)[None, :]
    ahead = np.cumsum(s, axis=0) - s  # exclusive prefix count, (t, n)
    start = ahead + s  # skip the target itself when it is on this side
    width = np.minimum(cap, length[None, :] - s)  # (t, n)

    def cyclic_prefix(prefix: np.ndarray, j: np.ndarray) -> np.ndarray:
        # Σ of the first j items of the infinitely repeated list = full turns + remainder.
        full = prefix[length, np.arange(n)][None, :]
        return (j // safe) * full + np.take_along_axis(prefix, j % safe, axis=0)

    sums = []
    for v in values:
        listed_v = np.take_along_axis(v[order], listed, axis=0)
        prefix = np.concatenate([np.zeros((1, n)), np.cumsum(listed_v, axis=0)])
        window = cyclic_prefix(prefix, start + width) - cyclic_prefix(prefix, start)
        sums.append(np.where(width > 0, window, 0.0))
    inverse = np.argsort(order)
    return _Side(width[inverse].astype(np.int64), [w[inverse] for w in sums])


# ------------------------------------------------------------------ the attacks


def _flatten(score: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(t, n, A) scores as (t, n·A) with the mask repeated along A."""
    if score.ndim == 2:
        return score, mask, 1
    t, n, a = score.shape
    return score.reshape(t, n * a), np.repeat(mask, a, axis=1), a


def _pooled_variance(*sides: _Side) -> np.ndarray:
    """(t, 1) one variance per target, pooled over its examples and the given sides:
    Σ centred squares / Σ (count − 1). 1.0 where no side has two shadows."""
    ss = sum(side.centered_ss().sum(1) for side in sides)
    dof = sum(np.maximum(side.count - 1, 0).sum(1) for side in sides)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(dof > 0, ss / np.maximum(dof, 1), 1.0)
    return np.maximum(var, _VAR_FLOOR)[:, None]


def _variance(side: _Side, pooled: np.ndarray) -> np.ndarray:
    """Per-trial sample variance; the pooled one where fewer than two shadows."""
    with np.errstate(invalid="ignore", divide="ignore"):
        var = side.centered_ss() / (side.count - 1)
    return np.maximum(np.where(side.count >= 2, var, pooled), _VAR_FLOOR)


def _gaussian_loglik(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) ** 2 / var + np.log(var))


def lira(inputs: AttackInputs, cap: int | None = None, seed: int = 0,
         variants: Sequence[str] = ("lira_online", "lira_online_fixed", "lira_offline",
                                    "lira_offline_fixed")) -> dict[str, np.ndarray]:
    """LiRA scores (t, n) of every trial, name -> array; see the module docstring.
    Augmented queries (A > 1) contribute the sum of their per-query statistics."""
    mask = inputs.mask
    phi, side_mask, a = _flatten(inputs.score, mask)
    order = _cyclic_order(mask.shape[0], cap, seed)
    want_in = any(v.startswith("lira_online") for v in variants)
    sides = {"out": _side_stats([phi, phi ** 2], ~side_mask, cap, order)}
    if want_in:
        sides["in"] = _side_stats([phi, phi ** 2], side_mask, cap, order)
    out_side = sides["out"]
    mu_out = out_side.mean()
    results = {}
    t, n = mask.shape

    def fold(x: np.ndarray) -> np.ndarray:  # sum over augmentations
        return x.reshape(t, n, a).sum(2) if a > 1 else x

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
         gamma: float = 1.0, variants: Sequence[str] = ("rmia_online", "rmia_offline")
         ) -> dict[str, np.ndarray]:
    """RMIA scores (t, n): the fraction of population points z that x dominates,
    Pr(x|θ)/Pr(x) ≥ γ · Pr(z|θ)/Pr(z). Within one target this is a monotone function of
    its likelihood ratio; ties (the same count) are broken by the ratio itself, which is
    the limit with more population points. ``a``: the offline IN-from-OUT correction."""
    if inputs.log_prob is None or inputs.population is None:
        raise ConfigError("RMIA needs log_prob and population (non-member) log-probabilities")
    if not 0 <= a <= 1 or gamma <= 0:
        raise ConfigError(f"RMIA needs 0 <= a <= 1 and gamma > 0, got a={a}, gamma={gamma}")
    mask = inputs.mask
    t, n = mask.shape
    order = _cyclic_order(t, cap, seed)
    prob = np.exp(inputs.log_prob)
    pop_prob = np.exp(inputs.population)
    out_side = _side_stats([prob], ~mask, cap, order)
    # Population points are non-members of every model: their references are simply the
    # other models (the 2·cap following the target for online, cap for offline).
    all_out = np.ones((t, pop_prob.shape[1]), bool)
    results = {}
    for variant in variants:
        if variant == "rmia_online":
            in_side = _side_stats([prob], mask, cap, order)
            with np.errstate(invalid="ignore"):
                ref = 0.5 * (in_side.mean() + out_side.mean())
            undefined = (in_side.count == 0) | (out_side.count == 0)
            pop_ref = _side_stats([pop_prob], all_out, None if cap is None else 2 * cap,
                                  order).mean()
        elif variant == "rmia_offline":
            ref = 0.5 * (1 + a) * out_side.mean() + 0.5 * (1 - a)
            undefined = out_side.count == 0
            pop_ref = 0.5 * (1 + a) * _side_stats([pop_prob], all_out, cap, order).mean() \
                + 0.5 * (1 - a)
        else:
            raise ConfigError(f"unknown RMIA variant {variant!r}")
        with np.errstate(divide="ignore", invalid="ignore"):
            log_lr = inputs.log_prob - np.log(ref)
            pop_log_lr = inputs.population - np.log(pop_ref)
        results[variant] = np.where(undefined, np.nan,
                                    _dominated_fraction(log_lr - np.log(gamma), pop_log_lr))
    return results


def _dominated_fraction(values: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Per row: the fraction of ``population`` (t, m) at or below each of ``values`` (t, n),
    plus a tie-breaker below one step (1/m) that orders equal counts by the value."""
    m = population.shape[1]
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
                  rmia_gamma: float = 1.0) -> dict[str, np.ndarray]:
    """name -> (t, n) scores of the requested attacks (those whose inputs exist)."""
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        raise ConfigError(f"unknown attacks {unknown}; choose from {', '.join(ATTACKS)}")
    results: dict[str, np.ndarray] = {}
    lira_wanted = [x for x in attacks if x.startswith("lira")]
    if lira_wanted:
        results.update(lira(inputs, cap, seed, lira_wanted))
    rmia_wanted = [x for x in attacks if x.startswith("rmia")]
    if rmia_wanted and inputs.population is not None and inputs.log_prob is not None:
        results.update(rmia(inputs, cap, seed, rmia_a, rmia_gamma, rmia_wanted))
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
        order = np.argsort(-self.scores, kind="stable")
        d_pos = self.member[order].astype(np.float64)
        d_neg = 1.0 - d_pos
        pos, neg = np.cumsum(d_pos), np.cumsum(d_neg)
        ordered = self.scores[order]
        last = np.r_[ordered[1:] != ordered[:-1], True]
        if not last.all():
            pos, neg = pos[last], neg[last]
            d_pos, d_neg = np.diff(pos, prepend=0.0), np.diff(neg, prepend=0.0)
        return pos, neg, d_pos, d_neg

    def histograms(self, n_uniform: int = 4096, n_tail: int = 4096
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Per-model member and non-member counts in score bins, (n_models, B) float32,
        bins high scores first. Bin edges are quantiles of the pooled non-member scores:
        ``n_uniform`` evenly spaced and ``n_tail`` log-spaced in the top 5% (FPR from 5%
        down to 1e-7), so an FPR of 0.1% falls on a bin edge to within ~1e-5."""
        negatives = self.scores[self.member == 0]
        levels = np.unique(np.r_[np.linspace(0, 1, n_uniform + 1),
                                 1 - np.geomspace(0.05, 1e-7, n_tail)])
        edges = np.unique(np.quantile(negatives[np.isfinite(negatives)], levels)) \
            if np.isfinite(negatives).any() else np.array([0.0])
        n_bins = len(edges) + 1
        # Bin b holds scores in [edges[b-1], edges[b]); reversed below: high first.
        bins = n_bins - 1 - np.searchsorted(edges, self.scores, side="right")
        flat = self.model.astype(np.int64) * n_bins + bins
        size = self.n_models * n_bins
        members = np.bincount(flat, weights=self.member, minlength=size)
        everyone = np.bincount(flat, minlength=size)
        shape = (self.n_models, n_bins)
        return (members.reshape(shape).astype(np.float32),
                (everyone - members).reshape(shape).astype(np.float32))

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """FPR and TPR at every distinct threshold, starting from (0, 0)."""
        pos, neg, _, _ = self.exact_counts()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.r_[0.0, neg / neg[-1]], np.r_[0.0, pos / pos[-1]]


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


def roc_metrics(scores: np.ndarray, mask: np.ndarray, n_bootstrap: int = 200,
                fprs: Sequence[float] = FPRS, seed: int = 0, level: float = 0.95,
                trials: Trials | None = None, return_samples: bool = False) -> dict:
    """AUC, balanced accuracy and TPR at each FPR in ``fprs`` of the pooled ROC of
    ``scores`` (t, n) against ``mask`` (t, n) — one threshold for all trials — each with
    ``_ci_low`` / ``_ci_high`` (percentile bootstrap over target models, ``n_bootstrap``
    resamples, at ``level``) and ``_se`` (the bootstrap standard deviation).

    The point estimates are exact. The resamples are computed from per-model histograms
    (``Trials.histograms``: one matrix product for all resamples), and the interval is
    shifted by the binning's offset from the exact value (for TPR at 0.1% FPR on 1,000 ×
    4,000 trials the offset is ~1e-4). NaN scores count as the lowest. With
    ``return_samples`` the (shifted) replicates come back under ``"_samples"``."""
    trials = trials or Trials.of(scores, mask)
    point = {k: float(v) for k, v in _metrics_from_counts(*trials.exact_counts(), fprs).items()}
    result: dict = dict(point)
    samples = {}
    if n_bootstrap >= 2:
        members, others = trials.histograms()
        binned = _metrics_from_counts(*_cumulative(members.sum(0), others.sum(0)), fprs)
        t = trials.n_models
        rng = np.random.default_rng([seed, streams.MIA_BOOTSTRAP])
        weights = np.stack([np.bincount(rng.integers(0, t, t), minlength=t)
                            for _ in range(n_bootstrap)]).astype(np.float32)
        replicates = _metrics_from_counts(
            *_cumulative(weights @ members, weights @ others), fprs)
        tail = (1 - level) / 2
        for name, values in replicates.items():
            values = values.astype(np.float64) + (point[name] - float(binned[name]))
            low, high = np.nanquantile(values, [tail, 1 - tail])
            result[f"{name}_ci_low"], result[f"{name}_ci_high"] = float(low), float(high)
            result[f"{name}_se"] = float(np.nanstd(values, ddof=1))
            samples[name] = values
    else:
        for name in point:
            result[f"{name}_ci_low"] = result[f"{name}_ci_high"] = float("nan")
            result[f"{name}_se"] = float("nan")
    result["n_undefined"] = int(np.isneginf(trials.scores).sum())
    result["n_trials"] = int(trials.member.size)
    result["n_models"] = int(trials.n_models)
    if return_samples:
        result["_samples"] = samples
    return result


def _cumulative(d_pos: np.ndarray, d_neg: np.ndarray) -> tuple[np.ndarray, ...]:
    d_pos, d_neg = d_pos.astype(np.float64), d_neg.astype(np.float64)
    return np.cumsum(d_pos, -1), np.cumsum(d_neg, -1), d_pos, d_neg


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


def paired_difference(a: dict, b: dict, metric: str = "auc") -> dict[str, float]:
    """a − b of ``metric`` with the paired bootstrap SE and interval (both from
    ``roc_metrics(..., return_samples=True)`` with the same seed and size, so resample b of
    both used the same target models)."""
    diff = a["_samples"][metric] - b["_samples"][metric]
    low, high = np.quantile(diff, [0.025, 0.975])
    return {"difference": a[metric] - b[metric], "se": float(diff.std(ddof=1)),
            "ci_low": float(low), "ci_high": float(high)}


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
