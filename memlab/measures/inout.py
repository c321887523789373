"""The IN/OUT estimator: masked differences of means over a population (docs/science.md §1).

A population is t models; model k trained on the subset I_k of the n training examples, and
the membership mask M (t × n bool) says which: M[k, i] = (i ∈ I_k). For any per-model
score matrix P (t × m: correctness, per-token accuracy, minus a loss, a model output), the
effect of training example i on column j is estimated by comparing the models that
trained on i (IN) with those that did not (OUT):

    est(i, j) = mean{P[k, j] : M[k, i]} − mean{P[k, j] : not M[k, i]}

- the diagonal, P the training examples' own scores (j = i): label memorization (Feldman
  2020), counterfactual memorization (Zhang et al. 2021) — :func:`in_out`;
- every pair (i, j), P scored on held-out examples: influence (Feldman & Zhang 2020),
  counterfactual influence, the loss differences of locally elastic stability
  (:func:`loss_influence`) and the difference-in-means attribution
  (:func:`difference_in_means`) — :func:`in_out_pairs`, :func:`estimate_influence`.

From the margin (true-class logit minus the best other; right iff positive) instead of
0/1 correctness: :func:`in_out_margin` (the probit estimator, Φ(θ_in) − Φ(θ_out) with θ =
mean/sd per side, the same quantity with less noise) and :func:`in_out_pairs_margin`
(influence). The OUT models alone: :func:`out_mean` (the label-error score's home).

Everything is computed for all examples at once, never in a loop over examples or pairs:
the diagonal from column sums of ``P ⊙ M`` (read in blocks of models, so records may be
memory-mapped); the pairs from one matrix product per block, ``Mᵀ P``, the OUT sums being
the column totals of P minus the IN sums. :func:`masked_means` is the direct form (IN and
OUT sums each taken over its own side, plain division) for callers whose scores hold NaN
or infinities.

Intervals and standard errors. For 0/1 scores every score comes with a 95% interval
[lo, hi]: Wilson score intervals for acc_in and acc_out, combined for their difference by
Newcombe's hybrid score method (Newcombe 1998, method 10;
:func:`memlab.measures.stats.newcombe_interval`):

    lo = mem − sqrt((acc_in − l_in)² + (u_out − acc_out)²)
    hi = mem + sqrt((u_in − acc_in)² + (acc_out − l_out)²)
    se = (hi − lo) / (2 · 1.96)                                   (:func:`interval_se`)

(l, u: the Wilson bounds of each side). Unlike the plug-in binomial error
sqrt(acc_in (1 − acc_in)/n_in + acc_out (1 − acc_out)/n_out) (:func:`binomial_se`), which
is 0 for an example every model gets right (acc_in = acc_out = 1), these never collapse:
se > 0 wherever it is defined (it is NaN for an example without IN or without OUT models).
Coverage of the 95% interval, by Monte Carlo on the grid stated in
tests/test_memorization_interval.py (30 to 700 models per side, acc_in 0.5 to 0.97, acc_out
0.1 to 0.9), lies in [93%, 97%]; where both accuracies exceed 0.97 with under 100 models
per side it errs wide (up to 99%), never narrow (the plug-in interval's coverage falls to
60% there). For real-valued scores the se is Welch's, sqrt(var_in/n_in + var_out/n_out),
from the unbiased sample variances of the two groups (sums of squares per column or pair),
and the interval score ± 1.96 se. Real-valued scores whose every value is 0 or 1 are
correctness and get Newcombe's interval (Welch's se of 0/1 values is 0 where every model
agrees). The probit estimator's interval: :meth:`ProbitInOut.interval`.

Each caller keeps its arithmetic exactly (the same operations in the same order as before
these functions were shared): the parameters of the block computation
(:func:`pair_blocks`: blocks, dtype of the product, division with or without the NaN
guard) are those of the caller, not one compromise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import special

from memlab.errors import ConfigError, DataError
from memlab.measures.stats import Z95, mover_interval, newcombe_interval
from memlab.validate import free_memory

_BLOCK_BYTES = 64 * 2**20  # working memory per block of a streamed computation
LOSS_BLOCK = 2048  # training examples per matrix product of loss_influence


# ------------------------------------------------------------------ statistics of one side


@dataclass
class InOut:
    """IN/OUT statistics of a set of columns (examples): counts, means and, for
    real-valued scores, unbiased sample variances. Arrays are (n,) — or (n, m) for
    :func:`in_out_pairs`, with counts (n, 1).

    For 0/1 scores (correctness) ``mean_in``/``mean_out`` are accuracies and the interval
    is Newcombe's (``var_*`` are None); for real-valued scores (per-token accuracy, minus
    a loss) it is the normal interval of a difference of means, se = sqrt(var_in/n_in +
    var_out/n_out) (Welch's standard error).
    """

    n_in: np.ndarray
    n_out: np.ndarray
    mean_in: np.ndarray
    mean_out: np.ndarray
    var_in: np.ndarray | None = None
    var_out: np.ndarray | None = None

    @property
    def binary(self) -> bool:
        return self.var_in is None

    @property
    def score(self) -> np.ndarray:
        """mean_in − mean_out (NaN where an example has no IN or no OUT model)."""
        return self.mean_in - self.mean_out

    @property
    def se(self) -> np.ndarray:
        """Standard error of the score: for 0/1 scores the 95% Newcombe interval's width /
        (2 · 1.96); for real-valued scores Welch's sqrt(var_in/n_in + var_out/n_out)."""
        if self.binary:
            return interval_se(self.mean_in, self.n_in, self.mean_out, self.n_out)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(self.var_in / self.n_in + self.var_out / self.n_out)

    def interval(self, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of the score: Newcombe's for 0/1 scores, score ± z·se otherwise (95%
        for the default ``z``)."""
        if self.binary:
            return newcombe_interval(self.mean_in, self.n_in, self.mean_out, self.n_out, z)
        return self.score - z * self.se, self.score + z * self.se


def interval_se(acc_in, n_in, acc_out, n_out) -> np.ndarray:
    """Standard error of acc_in − acc_out read off its 95% Newcombe interval:
    (hi − lo) / (2 · 1.96). Equals the plug-in binomial error for large samples away from
    0 and 1, and stays positive at acc = 0 or 1 (the plug-in one collapses to 0 there)."""
    lo, hi = newcombe_interval(acc_in, n_in, acc_out, n_out)
    return (hi - lo) / (2 * Z95)


def binomial_se(acc_in, n_in, acc_out, n_out) -> np.ndarray:
    """The plug-in binomial standard error of acc_in − acc_out, sqrt(Σ acc (1 − acc) / n).
    Kept for comparison only: it is 0 whenever both sides are all right or all wrong;
    memlab's ``se`` is :func:`interval_se`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(acc_in * (1 - acc_in) / n_in + acc_out * (1 - acc_out) / n_out)


def _ratio(total: np.ndarray, count: np.ndarray, guard: bool = True) -> np.ndarray:
    """total / count: NaN where count is 0 (``guard``), or the plain quotient (0/0 NaN,
    x/0 ±inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if not guard:
            return total / count
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _mean_var(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased sample variance from a sum, a sum of squares and a count."""
    mean = _ratio(total, count)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (total_sq - count * mean**2) / (count - 1)
        var = np.where(count > 1, np.maximum(var, 0.0), np.nan)
    return mean, var


def _row_blocks(n_rows: int, row_bytes: int, budget: int | None = None) -> list[slice]:
    """Slices of ``n_rows`` rows of ``row_bytes`` each, ``budget`` bytes (default
    ``_BLOCK_BYTES``) per slice."""
    budget = _BLOCK_BYTES if budget is None else budget
    size = max(1, budget // max(row_bytes, 1))
    return [slice(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]


def _check_scores(mask: np.ndarray, scores: np.ndarray, same_shape: bool = True) -> None:
    if mask.ndim != 2 or scores.ndim != 2 or mask.shape[0] != scores.shape[0] or (
            same_shape and mask.shape != scores.shape):
        raise ConfigError(f"mask {mask.shape} and scores {scores.shape} must be (models, "
                          "examples) arrays of the same shape")


# ------------------------------------------------------------------ the diagonal


def in_out(mask: np.ndarray, scores: np.ndarray, binary: bool | None = None) -> InOut:
    """IN/OUT statistics of every example (column) of ``scores`` (t, n) under the
    membership ``mask`` (t, n) bool: the diagonal of the masked-means formula, as column
    sums. ``scores`` is 0/1 correctness or any real-valued performance (per-token
    accuracy, minus a loss). Arrays may be memory-mapped; they are read in blocks of
    models.

    ``binary``: None (default) decides from the data: bool scores, and real-valued scores
    whose every value is 0 or 1, get the binomial (Newcombe) interval, because Welch's
    standard error of 0/1 values is 0 wherever every model agrees (its coverage falls to
    1% at acc_in = 0.999, acc_out = 0.001). True: the scores must be 0/1 (else an error);
    False: Welch's interval whatever the values."""
    _check_scores(mask, scores)
    t, n = mask.shape
    is_bool = scores.dtype == bool
    all_zero_one = True  # every value seen so far is 0 or 1
    n_in = np.zeros(n, np.int64)
    total_in, total = np.zeros(n), np.zeros(n)
    square_in, square = np.zeros(n), np.zeros(n)
    for rows in _row_blocks(t, 2 * n if is_bool else 9 * n):
        m = np.asarray(mask[rows], dtype=bool)
        c = np.asarray(scores[rows], dtype=bool if is_bool else np.float64)
        if not is_bool:
            if not np.isfinite(c).all():
                raise ConfigError("scores hold NaN or infinite values")
            all_zero_one = all_zero_one and bool(((c == 0) | (c == 1)).all())
            square_in += (c * c * m).sum(0)
            square += (c * c).sum(0)
        n_in += m.sum(0)
        total_in += (c * m).sum(0)
        total += c.sum(0)
    if binary and not all_zero_one:
        raise ConfigError("binary=True needs scores that are all 0 or 1 (correctness); pass "
                          "binary=False for real-valued scores")
    n_out = t - n_in
    if is_bool or (binary is not False and all_zero_one):
        return InOut(n_in, n_out, _ratio(total_in, n_in), _ratio(total - total_in, n_out))
    mean_in, var_in = _mean_var(total_in, square_in, n_in)
    mean_out, var_out = _mean_var(total - total_in, square - square_in, n_out)
    return InOut(n_in, n_out, mean_in, mean_out, var_in, var_out)


def masked_means(mask: np.ndarray, values: np.ndarray, skip_nan: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(mean_in, mean_out), each (n,): the mean of ``values`` (t, n) over the IN models of
    each column and over its OUT models, each side summed directly and divided by its
    count (NaN where a side is empty). ``values`` keep their dtype; a mask (t, 1) applies
    one example's membership to every column (per-token scores of one document).

    The non-members' entries never enter the IN sum (nor the members' the OUT sum), so an
    infinite or NaN value spoils only its own side. ``skip_nan``: NaN values are left out
    of the sums (still counted), as for attack scores whose undefined entries were set to
    NaN."""
    mask = np.asarray(mask, dtype=bool)
    n_in, n_out = mask.sum(0), (~mask).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if skip_nan:
            return np.nansum(values * mask, 0) / n_in, np.nansum(values * ~mask, 0) / n_out
        return (np.where(mask, values, 0).sum(0) / n_in,
                np.where(~mask, values, 0).sum(0) / n_out)


# ------------------------------------------------------------------ from the margin


MARGIN_VARIANCES = ("moderated", "pooled", "per-example")


@dataclass
class ProbitInOut:
    """IN/OUT statistics of the margin (true-class logit minus the best other logit; the
    model is right iff it is positive) under a Gaussian model per example and side: margin ~
    N(μ, σ²), so P(right) = Φ(θ) with θ = μ/σ. ``score`` = Φ(θ_in) − Φ(θ_out) is on the
    scale of the binary estimator (acc_in − acc_out), with less noise: the margin says *how*
    right each model is, not only whether (docs/science.md §1, "fewer models").

    Arrays (n,): counts, θ per side and its standard error (``theta_se_*``: sqrt(1/n +
    θ²/(2 df)), the second term the uncertainty of σ with ``df_*`` degrees of freedom).
    ``mean_in``/``mean_out`` are Φ(θ): the modelled accuracies.
    """

    n_in: np.ndarray
    n_out: np.ndarray
    theta_in: np.ndarray
    theta_out: np.ndarray
    theta_se_in: np.ndarray
    theta_se_out: np.ndarray
    df_in: np.ndarray
    df_out: np.ndarray
    acc_in: np.ndarray | None = None  # the fraction of positive margins per side, if known
    acc_out: np.ndarray | None = None

    binary = False

    @property
    def mean_in(self) -> np.ndarray:
        return _phi(self.theta_in)

    @property
    def mean_out(self) -> np.ndarray:
        return _phi(self.theta_out)

    @property
    def score(self) -> np.ndarray:
        return self.mean_in - self.mean_out

    def interval(self, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi): each side's interval θ ± z·se mapped through Φ (so it stays inside
        [0, 1] and is skewed near the ends), reaching 1 (0) where every model of the side
        is right (wrong), combined by MOVER as Newcombe's is. (Student's quantile in place
        of z over-covers: 0.98 from 8 models, tests/test_fewer_models.py.)"""
        side = {}
        for name in ("in", "out"):
            theta, se = getattr(self, f"theta_{name}"), getattr(self, f"theta_se_{name}")
            low, high = _phi(theta - z * se), _phi(theta + z * se)
            acc = getattr(self, f"acc_{name}")
            if acc is not None:  # every model right (wrong): P = 1 (0) fits the data, and
                # the Gaussian, whose Φ never reaches it, must not exclude it
                high, low = np.where(acc == 1, 1.0, high), np.where(acc == 0, 0.0, low)
            side[name] = low, high
        lo, hi = mover_interval(self.mean_in, side["in"], self.mean_out, side["out"])
        if self.acc_in is not None:  # both sides at their bounds: mem = ±1 fits the data,
            # which MOVER's root-sum-of-squares of two near-zero distances falls short of
            hi = np.where((self.acc_in == 1) & (self.acc_out == 0), 1.0, hi)
            lo = np.where((self.acc_in == 0) & (self.acc_out == 1), -1.0, lo)
        return lo, hi

    @property
    def se(self) -> np.ndarray:
        lo, hi = self.interval()
        return (hi - lo) / (2 * Z95)


def _phi(x: np.ndarray) -> np.ndarray:
    return special.ndtr(x)


def in_out_margin(mask: np.ndarray, margins: np.ndarray, variance: str = "moderated"
                  ) -> ProbitInOut:
    """The probit estimator of every example (column) of ``margins`` (t, n) under the
    membership ``mask`` (t, n): per example and side, the mean margin μ and a standard
    deviation σ, θ = μ/σ, score Φ(θ_in) − Φ(θ_out).

    ``variance`` says where σ² comes from, per side:
      - ``"moderated"`` (default): each example's sample variance shrunk towards the
        variances of all examples (empirical Bayes, Smyth 2004: prior degrees of freedom
        d0 and prior variance s0² fitted to the spread of the log variances), σ² = (d0 s0² +
        (n−1) s²)/(d0 + n − 1) with d0 + n − 1 degrees of freedom: per-example where the
        data say variances differ, pooled where a handful of models cannot tell;
      - ``"pooled"``: one variance for all examples (the mean of the per-example ones;
        LiRA's fixed variance, Carlini et al. 2022): stablest, biased where variances
        differ;
      - ``"per-example"``: each example's own sample variance (n − 1 df).
    """
    if variance not in MARGIN_VARIANCES:
        raise ConfigError(f"variance must be one of {', '.join(MARGIN_VARIANCES)}; got "
                          f"{variance!r}")
    stats_ = in_out(mask, margins, binary=False)  # read in blocks, as float64
    sides = {}
    for name in ("in", "out"):
        n = getattr(stats_, f"n_{name}").astype(np.float64)
        mean, var = getattr(stats_, f"mean_{name}"), getattr(stats_, f"var_{name}")
        var = np.maximum(var, _VAR_FLOOR)  # float16 records can tie every value
        df = n - 1
        if variance == "pooled":
            var = np.full_like(var, np.nanmean(var))
            df = np.full_like(df, np.inf)
        elif variance == "moderated":
            d0, s0 = moderated_prior(var, df)
            if np.isinf(d0):
                var = np.full_like(var, s0)
            else:
                var = np.where(df > 0, (d0 * s0 + df * var) / (d0 + df), s0)
            df = df + d0
        with np.errstate(divide="ignore", invalid="ignore"):
            theta = mean / np.sqrt(var)
            theta_se = np.sqrt(1 / n + theta**2 / (2 * df))
        sides[name] = n, theta, theta_se, df
    (n_in, theta_in, se_in, df_in), (n_out, theta_out, se_out, df_out) = sides.values()
    right = in_out(mask, _positive(margins))
    return ProbitInOut(n_in, n_out, theta_in, theta_out, se_in, se_out, df_in, df_out,
                       right.mean_in, right.mean_out)


def _positive(margins: np.ndarray) -> np.ndarray:
    """margins > 0 (the model is right), block by block for memory-mapped records."""
    rows = _row_blocks(margins.shape[0], 5 * margins.shape[1])
    return np.concatenate([np.asarray(margins[r]) > 0 for r in rows]) if rows else \
        np.zeros(margins.shape, bool)


_VAR_FLOOR = 1e-8


def moderated_prior(var: np.ndarray, df: np.ndarray) -> tuple[float, float]:
    """(d0, s0²): the scaled inverse-χ² prior of per-example variances ``var`` with ``df``
    degrees of freedom each, fitted by Smyth's (2004) moments of log s²: the spread of log
    s² beyond what df alone explains is trigamma(d0/2). d0 = inf when there is no such
    spread (every example shares one variance)."""
    ok = np.isfinite(var) & (df > 0) & (var > 0)
    if ok.sum() < 3:
        return np.inf, float(np.nanmean(var))
    var, df = var[ok], df[ok]
    e = np.log(var) - special.digamma(df / 2) + np.log(df / 2)
    excess = np.var(e, ddof=1) - np.mean(special.polygamma(1, df / 2))
    if excess <= 0:
        return np.inf, float(np.exp(e.mean()))
    d0 = 2 * _trigamma_inverse(excess)
    s0 = float(np.exp(e.mean() + special.digamma(d0 / 2) - np.log(d0 / 2)))
    return float(d0), s0


def _trigamma_inverse(y: float) -> float:
    """x with trigamma(x) = y (Newton's method from Smyth's starting point)."""
    x = 0.5 + 1 / y
    for _ in range(50):
        tri = special.polygamma(1, x)
        step = tri * (1 - tri / y) / special.polygamma(2, x)
        x += step
        if -step / x < 1e-8:
            break
    return float(x)


# ------------------------------------------------------------------ OUT models only


@dataclass
class OutMean:
    """The mean of a score over the models that did NOT train on each example, with its
    standard error (sd/√n_out) and 95% interval: what the rest of the population says
    about an example it never saw."""

    n_out: np.ndarray
    mean: np.ndarray
    se: np.ndarray

    def interval(self, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
        return self.mean - z * self.se, self.mean + z * self.se


def out_mean(mask: np.ndarray, scores: np.ndarray) -> OutMean:
    """Mean and standard error over each example's OUT models of real-valued ``scores``
    (t, n) (e.g. the log-odds of the given label: the label-error score)."""
    stats_ = in_out(mask, scores, binary=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(stats_.var_out / stats_.n_out)
    return OutMean(stats_.n_out, stats_.mean_out, se)


# ------------------------------------------------------------------ pairs


def pair_blocks(mask: np.ndarray, scores: np.ndarray, n_in: np.ndarray, n_out: np.ndarray, *,
                block_rows: int | None = None, block_cols: int | None = None,
                dtype: type = np.float64, binary: bool = False, variances: bool = True,
                guard: bool = True) -> Iterator[tuple[slice, slice, InOut]]:
    """The pairs estimator block by block: yields (rows, cols, stats) with ``stats`` the
    :class:`InOut` of training examples ``rows`` × score columns ``cols`` (counts
    (b, 1)).

    mask (t, n) bool; scores (t, m); ``n_in``/``n_out`` (n,) the models with/without each
    training example. Per block: one product (mask columns, as ``dtype``)ᵀ × scores for the
    IN sums, the column totals minus them for the OUT sums; with ``variances`` the same for
    the squares. Columns outer, rows inner; all at once by default. ``binary``: 0/1 scores
    (accuracies, Newcombe intervals; no squares). ``variances=False``: means only (var_*
    None). ``guard=False``: plain division (0/0 NaN, x/0 ±inf) instead of NaN where a side
    is empty."""
    n, m = mask.shape[1], scores.shape[1]
    block_rows, block_cols = block_rows or max(n, 1), block_cols or max(m, 1)
    squares = variances and not binary
    for c0 in range(0, max(m, 1), block_cols):  # one (empty) block where m or n is 0
        cols = slice(c0, min(c0 + block_cols, m))
        c = np.asarray(scores[:, cols], dtype=dtype)  # (t, mb)
        total = c.sum(0, dtype=np.float64)
        if squares:
            c2 = c**2
            total_sq = c2.sum(0, dtype=np.float64)
        for r0 in range(0, max(n, 1), block_rows):
            rows = slice(r0, min(r0 + block_rows, n))
            member = np.asarray(mask[:, rows], dtype=dtype).T  # (b, t)
            ni, no = n_in[rows, None], n_out[rows, None]
            sum_in = member @ c  # exact for 0/1 scores in float32 below 2**24 models
            sum_out = total[None, :] - sum_in
            if squares:
                square_in = member @ c2
                mean_in, var_in = _mean_var(sum_in, square_in, ni)
                mean_out, var_out = _mean_var(sum_out, total_sq[None, :] - square_in, no)
                yield rows, cols, InOut(ni, no, mean_in, mean_out, var_in, var_out)
            else:
                yield rows, cols, InOut(ni, no, _ratio(sum_in, ni, guard),
                                        _ratio(sum_out, no, guard))


def in_out_pairs(mask: np.ndarray, scores_test: np.ndarray) -> InOut:
    """IN/OUT statistics of every (training example i, test example j) pair: the influence
    estimate infl(i, j) = mean{P'[k, j] : M[k, i]} − mean{P'[k, j] : not M[k, i]} for
    real-valued test scores ``scores_test`` (t, m), in memory, from two matrix products
    (:func:`pair_blocks`: sums and sums of squares, one block). Fields are (n, m) (counts
    (n, 1)). Scores whose every value is 0 or 1 get Newcombe's interval (as in
    :func:`in_out`). For 0/1 correctness of large populations use
    :func:`estimate_influence`, which streams blocks to disk."""
    _check_scores(mask, scores_test, same_shape=False)
    performance = np.asarray(scores_test, np.float64)
    if not np.isfinite(performance).all():
        raise ConfigError("scores hold NaN or infinite values")
    mask = np.asarray(mask, bool)
    n_in = mask.sum(0).astype(np.float64)
    zero_one = bool(((performance == 0) | (performance == 1)).all())  # as in_out: Newcombe
    (_, _, result), = pair_blocks(mask, performance, n_in, mask.shape[0] - n_in,
                                  binary=zero_one)
    return result


def in_out_pairs_margin(mask: np.ndarray, margins_test: np.ndarray) -> ProbitInOut:
    """The probit estimator of influence for every (training example i, test example j)
    pair from the test margins ``margins_test`` (t, m): Φ(μ_in/σ) − Φ(μ_out/σ), μ the mean
    margin at j of the models with / without i, σ² the pair's within-group variance, IN and
    OUT pooled (one training example moves a test margin little, so both sides share σ;
    t − 2 degrees of freedom). Not pooled over training examples: another example that
    does move j would inflate every other pair's σ. In memory: fields (n, m), counts
    (n, 1)."""
    _check_scores(mask, margins_test, same_shape=False)
    margins = np.asarray(margins_test, np.float64)
    if not np.isfinite(margins).all():
        raise ConfigError("margins hold NaN or infinite values")
    mask = np.asarray(mask, bool)
    t = mask.shape[0]
    n_in = mask.sum(0).astype(np.float64)
    (_, _, pairs), = pair_blocks(mask, margins, n_in, t - n_in)
    (_, _, right), = pair_blocks(mask, margins > 0, n_in, t - n_in, binary=True)
    n_in, n_out = pairs.n_in, pairs.n_out
    with np.errstate(divide="ignore", invalid="ignore"):
        within = ((n_in - 1) * pairs.var_in + (n_out - 1) * pairs.var_out) / (t - 2)
        sigma = np.sqrt(np.maximum(within, _VAR_FLOOR))
        theta_in, theta_out = pairs.mean_in / sigma, pairs.mean_out / sigma
        df = np.full_like(n_in, t - 2.0)
        return ProbitInOut(n_in, n_out, theta_in, theta_out,
                           np.sqrt(1 / n_in + theta_in**2 / (2 * df)),
                           np.sqrt(1 / n_out + theta_out**2 / (2 * df)), df, df,
                           right.mean_in, right.mean_out)


def difference_in_means(mask: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """(n_train, n_targets) float32: mean output of the models that trained on i minus the
    mean of those that did not (the pairs estimator on a continuous output: Feldman &
    Zhang's influence, the ridge datamodel's limit for balanced random masks up to scale);
    NaN where no model trained on i (and NaN or ±inf where every model did)."""
    mask, outputs = np.asarray(mask, bool), np.asarray(outputs, np.float64)
    n_in = mask.sum(0).astype(np.float64)
    (_, _, result), = pair_blocks(mask, outputs, n_in, mask.shape[0] - n_in, variances=False,
                                  guard=False)
    return result.score.astype(np.float32)


@dataclass
class LossInfluence:
    """Δ̂(i, j) (n_train, n_eval) float64: mean loss at j over models with i in their
    subset minus over models without; ``se`` its standard error (√(s²_in/n_in +
    s²_out/n_out), sample variances per pair); ``n_in``/``n_out`` (n_train,) models."""

    delta: np.ndarray
    se: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray


def loss_influence(mask: np.ndarray, loss: np.ndarray) -> LossInfluence:
    """Δ̂ and its standard errors from a membership mask (t, n_train) bool and the models'
    losses (t, n_eval) at the evaluation points (docs/science.md §4, locally elastic
    stability): :func:`pair_blocks` over blocks of ``LOSS_BLOCK`` training examples."""
    mask = np.asarray(mask, dtype=bool)
    loss = np.asarray(loss, dtype=np.float64)
    if mask.ndim != 2 or loss.ndim != 2 or mask.shape[0] != loss.shape[0]:
        raise DataError(f"need mask (t, n_train) and loss (t, n_eval) over the same t models, "
                        f"got {mask.shape} and {loss.shape}")
    if not np.isfinite(loss).all():
        raise DataError("losses must be finite; clip the loss (e.g. at M nats) first")
    n_in = mask.sum(0).astype(np.float64)
    n_out = mask.shape[0] - n_in
    if (n_in < 2).any() or (n_out < 2).any():
        raise DataError("every training example needs at least 2 models with it and 2 without "
                        "it in their subset; train more models")
    delta = np.empty((mask.shape[1], loss.shape[1]))
    se = np.empty_like(delta)
    for rows, _, block in pair_blocks(mask, loss, n_in, n_out, block_rows=LOSS_BLOCK):
        delta[rows] = block.score
        se[rows] = block.se
    return LossInfluence(delta, se, n_in, n_out)


@dataclass
class Influence:
    """Train × test influence estimates. ``values`` and ``se`` are (n_train, n_test)
    float32, in memory or memory-mapped ``.npy`` files (``paths``)."""

    values: np.ndarray
    se: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    paths: tuple[Path, Path] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)

    @classmethod
    def load(cls, path: str | Path, mask: np.ndarray) -> Influence:
        """Re-open an influence matrix saved at ``path`` (and its ``*_se.npy`` sibling)."""
        path = Path(path)
        se_path = se_path_for(path)
        n_in = mask.sum(0)
        return cls(np.load(path, mmap_mode="r"), np.load(se_path, mmap_mode="r"), n_in,
                   mask.shape[0] - n_in, (path, se_path))


class _Float32Npy:
    """A float32 ``.npy`` file written block by block (``file[rows, cols] = block``) with
    plain writes (``os.pwrite``): on a full disk a write raises OSError (ENOSPC), where a
    store through a memory map was a SIGBUS that killed the process without a word."""

    def __init__(self, path: Path, shape: tuple[int, int]):
        import io

        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False, "shape": shape})
        self.path, self.shape, self.start = path, shape, len(header.getvalue())
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            self._write(header.getvalue(), 0)
        except BaseException:
            self.close()
            path.unlink(missing_ok=True)
            raise

    def _write(self, data, offset: int) -> None:
        view = memoryview(data).cast("B")
        try:
            while len(view):
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as error:
            error.filename = error.filename or str(self.path)  # say which file
            raise

    def __setitem__(self, index: tuple[slice, slice], block: np.ndarray) -> None:
        rows, cols = index
        block = np.ascontiguousarray(block, dtype=np.float32)
        width = self.shape[1]
        if cols.start == 0 and cols.stop == width:  # whole rows: one contiguous write
            self._write(block, self.start + rows.start * width * 4)
            return
        for i, row in enumerate(range(rows.start, rows.stop)):
            self._write(block[i], self.start + (row * width + cols.start) * 4)

    def flush(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as error:
            error.filename = error.filename or str(self.path)
            raise

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def se_path_for(path: Path) -> Path:
    return path.with_name(path.stem + "_se.npy")


def estimate_influence(mask: np.ndarray, correct_test: np.ndarray, out: str | Path | None = None,
                       block_rows: int | None = None, block_cols: int | None = None,
                       max_memory: int | None = None) -> Influence:
    """infl = (Mᵀ C)/(Mᵀ 1) − ((1−M)ᵀ C)/((1−M)ᵀ 1) with standard errors, block by block.

    mask (t, n_train) bool; correct_test (t, n_test) bool. The result is written to ``out``
    (``.npy``, plus ``*_se.npy``; atomically) when given; otherwise it is kept in memory if
    both matrices fit in ``max_memory`` bytes (default: half the free memory), and streamed
    to memory-mapped files in a temporary directory if not (with a warning). Blocks: rows
    of the result (training examples) × columns (test examples), each one matrix product
    (:func:`pair_blocks` in float32, exact for 0/1 sums).
    """
    t, n = mask.shape
    if correct_test.shape[0] != t:
        raise ConfigError(f"mask has {t} models but test correctness {correct_test.shape[0]}")
    m = correct_test.shape[1]
    max_memory = free_memory() // 2 if max_memory is None else max_memory
    need = 2 * 4 * n * m
    scratch = None
    if out is None and need > max_memory:
        scratch = Path(tempfile.mkdtemp(prefix="memlab-influence-"))
        out = scratch / "influence.npy"
        warnings.warn(f"the influence matrix ({n} x {m}, {need / 2**30:.1f} GiB with standard "
                      f"errors) exceeds {max_memory / 2**30:.1f} GiB of memory: streaming it "
                      f"to {out}", stacklevel=2)
    # Per block: C (4 t bytes per column), M (4 t per row) and ~16 float64 temporaries per
    # result entry (the two Wilson intervals and their combination).
    block_cols = block_cols or max(1, min(m, _BLOCK_BYTES // (4 * t)))
    block_rows = block_rows or max(1, min(n, _BLOCK_BYTES // (4 * t + 128 * block_cols)))

    if out is None:
        values = np.empty((n, m), np.float32)
        se = np.empty((n, m), np.float32)
        targets = None
    else:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        targets = (out, se_path_for(out))
        temps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in targets]
        writers = [_Float32Npy(temps[0], (n, m))]
        try:
            writers.append(_Float32Npy(temps[1], (n, m)))
        except BaseException:
            writers[0].close()
            temps[0].unlink(missing_ok=True)
            raise
        values, se = writers

    n_in = np.zeros(n, np.int64)
    for rows in _row_blocks(t, n):
        n_in += np.asarray(mask[rows], dtype=bool).sum(0)
    n_out = t - n_in
    try:
        for rows, cols, block in pair_blocks(mask, correct_test, n_in, n_out,
                                             block_rows=block_rows, block_cols=block_cols,
                                             dtype=np.float32, binary=True):
            values[rows, cols] = block.score
            se[rows, cols] = block.se
        if targets is not None:
            for array, temp, target in zip((values, se), temps, targets):
                array.flush()
                os.replace(temp, target)
            values, se = (np.load(p, mmap_mode="r") for p in targets)
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        if targets is not None:
            for temp in temps:
                temp.unlink(missing_ok=True)
            for writer in writers:
                writer.close()
    result = Influence(values, se, n_in, n_out, targets)
    if scratch is not None:  # our own scratch directory: removed with the result
        weakref.finalize(result, shutil.rmtree, str(scratch), True)
    return result
