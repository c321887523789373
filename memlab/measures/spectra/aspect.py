"""The power-law exponent α of a weight matrix, corrected for its aspect ratio (FARMS).

What it estimates. Heavy-tailed self-regularization fits p(λ) ∝ λ^-α to the tail of the
ESD of W (n × m). For a random matrix the shape of the ESD depends on the aspect ratio
Q = n/m (the Marchenko–Pastur bulk is [(1 − 1/√Q)², (1 + 1/√Q)²] in units of n σ²), so
the same weight distribution gives a different α in a tall and in a square layer. FARMS
(Hu et al., "Eigenspectrum analysis of neural networks without aspect ratio bias",
ICML 2025) removes that: compute the ESDs of many submatrices of *one* fixed aspect ratio
drawn from W, pool (concatenate) their eigenvalues and fit α to the pool. Here the fit is
memlab's robust Clauset fit (:func:`~memlab.measures.spectra.powerlaw.fit_power_law`), the
same as for the whole matrix, which is also reported (``raw_alpha``).

Choices.

* Submatrix shape (a × k), a = ⌊k · ratio⌋ ≥ k (the longer side first, as in
  :mod:`.eigen`; ``ratio`` = 1 gives squares, FARMS's default). k defaults to the largest
  side that fits (min(m, ⌊n / ratio⌋)): the most eigenvalues per submatrix, so the least
  finite-size distortion of each ESD. Pass ``size`` to fix k across layers of different
  sizes: pooled ESDs of heavy-tailed matrices still depend on k (a k × k block of
  heavy-tailed entries shows more of their tail the smaller k is), so layers are only
  comparable at one k; FARMS's own code uses a fixed window too.
* Sampling: random disjoint blocks. A partition permutes the rows and the columns (seeded)
  and cuts them into ⌊n/a⌋ × ⌊m/k⌋ disjoint blocks; the pool takes the blocks of one or
  more partitions (by default about 384 eigenvalues' worth, at least 2 and at most 16
  blocks, whole partitions where they hold at most 16). Blocks of one partition are
  independent for a matrix of independent entries, which the interval needs; the random
  permutation keeps an ordering of the neurons (sorted, grouped, pruned in runs) from
  putting alike rows in one block; further partitions use the rows left over by ⌊n/a⌋
  and average out the arbitrary choice of one partition. FARMS's code slides contiguous
  windows instead, which overlap heavily and follow the stored order of the neurons.
  A square matrix at ratio 1 is its own only block: its corrected α is its raw α.
* Pooling: the eigenvalues of each block's Gram matrix (unnormalized, memlab's
  convention in :mod:`.eigen`; all blocks have one shape, so any normalization by the
  block's size is one common factor, and α is scale-free), concatenated.
* Interval (``alpha_lo``, ``alpha_hi``): a bootstrap over submatrices, not over single
  eigenvalues, because eigenvalues of one block are dependent. Each replicate draws as
  many blocks as the pool holds, with replacement, and refits them with the same robust
  fit (:func:`.bootstrap.batched_fit` on 32 evenly spaced x_min candidates, as
  :func:`.bootstrap.tail_uncertainty` does with 96). Two corrections make it honest:
  (1) blocks from different partitions overlap, so resampling them as if independent
  counts W's entries S·a·k/(n·m) times; the spread is widened by the square root of that
  design effect (1 for one partition). (2) Replicates of a Clauset fit are pulled one way
  by the ties that duplicated blocks create (their median sat 2–3 below α on Gaussian
  matrices, whose sampling distribution has no such shift), so percentile limits
  misplace the interval; Hall's symmetric interval α ± q, q the ``level`` quantile of
  |α* − α|, uses only their distance from α (lower end floored at 1). Measured on 30 to
  40 i.i.d. matrices per shape, the coverage of the median α was 0.87–0.97 at 95% (the
  percentile interval: 0.70–0.97), and the width matched 3.92 standard deviations of α
  between matrices (1.1–1.3 for Pareto entries at 724 × 90). Where W holds fewer than
  two disjoint blocks (a square W, or 784 × 512 at 512 × 512) the replicates resample
  the pooled eigenvalues instead, and ``interval`` says so. The raw interval is
  :func:`.bootstrap.tail_uncertainty`'s percentile bootstrap over the whole matrix's
  eigenvalues (``gof=False``).

Limits, measured on i.i.d. Gaussian and Pareto(μ = 3) matrices with n·m ≈ 2^16 and
Q ∈ {1, 2, 4, 8}, 30 seeds each (tests/test_spectra_aspect.py):

* The aspect-ratio bias FARMS reports is that of fits over a fixed share of the ESD
  (x_min at the median eigenvalue, as in FARMS's code): that α rises from 2.1 to 4.4
  (Gaussian) and 2.0 to 3.3 (Pareto) from Q = 1 to 8, and pooling squares flattens it
  to within 0.06 and 0.13. memlab's robust fit, whose x_min follows the upper edge of the
  spectrum, shows no such bias on the whole matrix (raw α 7.2–7.7 and 3.8–4.1 across Q,
  ± 2–2.7 and ± 0.7–1.0 per matrix), so here the correction has little to remove.
* The pooled α depends on the block size k: a small block of heavy-tailed entries shows
  more of their tail (Pareto, 256 × 256: 2.9 at k = 32, 3.3 at k = 256). With the
  default k = min(n, m), which varies with Q, the pooled α drifted with Q (Gaussian 7.2
  → 9.2, Pareto 3.8 → 3.2 from Q = 1 to 8); with one k for all (``size=90``) it was flat
  (8.0–9.2, 3.2–3.4). Compare layers at one ``size``.
* The interval assumes W's blocks are exchangeable (true for i.i.d. entries; a trained
  layer with a few dominant rows breaks it); with 2 disjoint blocks it undercovers
  (0.87), and the Clauset α of a random-like (Gaussian) spectrum is erratic, ± 2–3 with
  intervals 7–11 wide.
* A degenerate matrix (fewer than two nonzero singular values, NaN or infinite entries,
  too few eigenvalues for a tail) gives NaN and a ``reason``, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from memlab.measures.spectra.bootstrap import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    batched_fit,
    tail_uncertainty,
)
from memlab.measures.spectra.eigen import matrix_eigenvalues
from memlab.measures.spectra.powerlaw import REFERENCE_EIGENVALUE_FLOOR, fit_power_law

# Blocks pooled by default: enough for about POOL_EIGENVALUES eigenvalues, at least 2 (so
# that rows left over by one partition count too) and at most DEFAULT_SUBMATRICES, rounded
# up to whole partitions where these hold at most 16: 10 blocks of 40 × 40 from 100 × 40
# (5 partitions), 8 of 90 × 90 from 724 × 90 (one), 2 of 512 × 512 from 784 × 512. The
# bootstrap refits pools of that size, and its cost grows with the pool times the
# candidates scanned, hence the budget.
DEFAULT_SUBMATRICES = 16
POOL_EIGENVALUES = 384
# x_min candidates scanned per bootstrap refit (evenly spaced in rank, as in
# bootstrap.tail_uncertainty, whose default is 96): a third of the cost, for a spread.
BOOTSTRAP_CANDIDATES = 32
# Largest share of numerical zeros in a bootstrap replicate still fitted in one batch.
ZERO_SHARE_TO_BATCH = 0.02
# Fewest disjoint blocks for a bootstrap over blocks (with one, there is nothing to draw).
MIN_BLOCKS_TO_RESAMPLE = 2

INTERVAL_BLOCKS = "bootstrap over submatrices"
INTERVAL_EIGENVALUES = "bootstrap over eigenvalues (fewer than 2 disjoint submatrices)"


@dataclass(frozen=True)
class AspectCorrectedAlpha:
    """α of the pooled ESD of fixed-aspect-ratio submatrices, and of the whole matrix.

    alpha, alpha_lo, alpha_hi: the corrected α and its bootstrap interval at ``level``
    (over submatrices; see ``interval``). raw_alpha, raw_lo, raw_hi: the robust fit of the
    whole matrix's ESD and its bootstrap interval over eigenvalues. shape: the submatrix
    shape (rows, cols), longer side first. n_submatrices: blocks pooled. n_disjoint: blocks
    W holds without overlap (under 2: the interval resamples eigenvalues). level: the
    intervals' coverage. interval: how alpha_lo/alpha_hi were found. reason: why the
    corrected α was not fitted ("" if it was); raw_reason: the same for the raw α.
    """

    alpha: float
    alpha_lo: float
    alpha_hi: float
    raw_alpha: float
    raw_lo: float
    raw_hi: float
    shape: tuple[int, int]
    n_submatrices: int
    n_disjoint: int = 0
    level: float = DEFAULT_LEVEL
    interval: str = ""
    reason: str = ""
    raw_reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def submatrix_shape(n: int, m: int, ratio: float = 1.0, size: int | None = None
                    ) -> tuple[int, int]:
    """(a, k) with a = ⌊k · ratio⌋ rows and k columns for an n × m matrix with n ≥ m; k is
    ``size`` or the largest that fits. (0, 0) when none fits."""
    if ratio < 1:
        raise ValueError(f"ratio is rows/cols of the submatrix, longer side first: "
                         f"it must be ≥ 1, got {ratio}")
    largest = min(m, math.floor(n / ratio + 1e-9))
    k = largest if size is None else int(size)
    if size is not None and not 1 <= k <= largest:
        raise ValueError(f"size {size} does not fit a {n} × {m} matrix at ratio {ratio} "
                         f"(at most {largest})")
    if k < 1:
        return 0, 0
    return math.floor(k * ratio + 1e-9), k


def submatrix_eigenvalues(matrix: np.ndarray, *, ratio: float = 1.0, size: int | None = None,
                          n_submatrices: int | None = None, seed: int = 0) -> np.ndarray:
    """Eigenvalues of BᵀB for each sampled block B (see the module docstring): an array
    (n_submatrices, k), each row ascending, in the units of W². Seeded."""
    weights = np.asarray(matrix, dtype=np.float64)
    if weights.shape[0] < weights.shape[1]:
        weights = weights.T  # longer side first: the ESD is that of the smaller Gram matrix
    n, m = weights.shape
    rows, cols = submatrix_shape(n, m, ratio, size)
    if rows == 0:
        return np.zeros((0, 0))
    row_groups, col_groups = n // rows, m // cols
    per_partition = row_groups * col_groups
    whole = rows == n and cols == m  # one block, W itself: further partitions repeat it
    if n_submatrices is None:
        target = min(DEFAULT_SUBMATRICES, max(2, math.ceil(POOL_EIGENVALUES / cols)))
        if whole:
            count = 1
        elif per_partition > DEFAULT_SUBMATRICES:
            count = DEFAULT_SUBMATRICES  # part of one partition: still disjoint blocks
        else:
            count = per_partition * math.ceil(target / per_partition)
    else:
        count = int(n_submatrices)
        if count < 1:
            raise ValueError(f"n_submatrices must be ≥ 1, got {n_submatrices}")
    rng = np.random.default_rng(seed)
    partitions = math.ceil(count / per_partition)
    row_index = np.empty((partitions * per_partition, rows), dtype=np.int64)
    col_index = np.empty((partitions * per_partition, cols), dtype=np.int64)
    for p in range(partitions):
        row_blocks = rng.permutation(n)[: row_groups * rows].reshape(row_groups, rows)
        col_blocks = rng.permutation(m)[: col_groups * cols].reshape(col_groups, cols)
        # Blocks in random order, so that part of a partition (more blocks than are
        # pooled) is a random set of them, not a strip of the first rows.
        order = rng.permutation(per_partition)
        span = slice(p * per_partition, (p + 1) * per_partition)
        row_index[span] = np.repeat(row_blocks, col_groups, axis=0)[order]
        col_index[span] = np.tile(col_blocks, (row_groups, 1))[order]
    blocks = weights[row_index[:count, :, None], col_index[:count, None, :]]  # (S, a, k)
    # Batched Gram matrices (BLAS) and one batched values-only eigensolver call: a few
    # ms for 16 blocks of 90 × 90, against a Python loop of SVDs.
    gram = np.matmul(blocks.transpose(0, 2, 1), blocks)
    return np.clip(np.linalg.eigvalsh(gram), 0.0, None)


def _floor(values: np.ndarray) -> float:
    # The robust fit's own floor (powerlaw.fit_power_law): eigenvalues at or below it are
    # numerical zeros and are dropped before fitting.
    top = float(values.max()) if values.size else 0.0
    return max(REFERENCE_EIGENVALUE_FLOOR, 1e-12 * top)


def _refit(samples: np.ndarray) -> np.ndarray:
    """The robust α of each row of ``samples`` (B, n): the replicates of the bootstrap."""
    floor = _floor(samples)
    zeros = samples <= floor
    if zeros.mean(axis=1).max() <= ZERO_SHARE_TO_BATCH:
        # A few numerical zeros (a near-singular Gaussian block has one now and then) are
        # raised to the floor rather than dropped, so every row keeps one size and all are
        # fitted in one batch; at the floor they lie far below any tail the fit picks.
        return batched_fit(np.maximum(samples, floor), max_candidates=BOOTSTRAP_CANDIDATES)[0]
    # Rank-deficient blocks: drop the zeros, as the fit of the estimate does, one row at a
    # time (the rows now differ in size).
    return np.array([fit_power_law(row).alpha for row in samples])


def _half_width(alphas: np.ndarray, alpha: float, level: float) -> float:
    """Half-width of Hall's symmetric bootstrap interval: the ``level`` quantile of
    |α* − α| over the replicates α*. Not the percentile interval: replicates of the
    Clauset fit are pulled one way by the ties that duplicated blocks create (their median
    sat 2–3 below α on Gaussian matrices, whose sampling distribution has no such shift),
    so their quantiles misplace the interval, while their distance from α measures its
    width (coverage of 0.87–0.97 at 95% in 30 matrices per shape, against 0.70–0.97)."""
    finite = alphas[np.isfinite(alphas)]
    # Replicates with no admissible tail are left out, as in bootstrap.tail_uncertainty;
    # if most fail, no interval is claimed.
    if finite.size < max(2, alphas.size // 2):
        return math.nan
    return float(np.quantile(np.abs(finite - alpha), level))


def aspect_corrected_alpha(matrix: np.ndarray, *, ratio: float = 1.0, size: int | None = None,
                           n_submatrices: int | None = None, level: float = DEFAULT_LEVEL,
                           n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0
                           ) -> AspectCorrectedAlpha:
    """α of ``matrix`` (n × m) corrected for its aspect ratio by FARMS's pooling (Hu et al.,
    ICML 2025), with a bootstrap interval over submatrices, and the raw α for comparison.

    ratio: rows/cols of the submatrices (≥ 1, longer side first; 1 = squares). size: their
    shorter side k (default: the largest that fits); fix it to compare layers of different
    sizes. n_submatrices: blocks pooled (default: about 384 eigenvalues' worth, 2 to 16
    blocks, whole random partitions where possible; 1 when the only block is W itself).
    level: interval coverage. n_bootstrap: replicates of each interval (0: point estimates,
    the intervals NaN). seed: sampling
    and bootstrap; the same inputs give the same numbers.
    A matrix with no fittable spectrum gives NaN and a ``reason``, never an exception.
    """
    weights = np.asarray(matrix, dtype=np.float64)
    if weights.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {weights.shape}")
    if weights.shape[0] < weights.shape[1]:
        weights = weights.T
    n, m = weights.shape
    rows, cols = submatrix_shape(n, m, ratio, size)
    nan = math.nan

    def failed(reason: str) -> AspectCorrectedAlpha:  # neither α can be fitted
        return AspectCorrectedAlpha(nan, nan, nan, nan, nan, nan, shape=(rows, cols),
                                    n_submatrices=0, level=level, reason=reason,
                                    raw_reason=reason)

    if weights.size == 0 or rows == 0:
        return failed(f"a {n} × {m} matrix has no {ratio:g}:1 submatrix")
    if not np.isfinite(weights).all():
        return failed("the matrix has NaN or infinite entries")

    raw_values = matrix_eigenvalues(torch.from_numpy(weights)[None], torch.device("cpu"))
    rank = int((raw_values > _floor(raw_values)).sum())
    if rank < 2:
        # A pool of rank-≤1 blocks is a list of scalars (one per block), not a spectrum.
        return failed(f"the matrix has {rank} nonzero singular value(s): no spectrum to fit")
    raw_fit = fit_power_law(raw_values)
    raw_lo = raw_hi = nan
    if raw_fit.ok and n_bootstrap:
        spread = tail_uncertainty(raw_values, raw_fit, n_bootstrap=n_bootstrap, level=level,
                                  gof=False, seed=seed)
        raw_lo, raw_hi = spread.alpha_lo, spread.alpha_hi
    raw = (raw_fit.alpha, raw_lo, raw_hi)

    disjoint = (n // rows) * (m // cols)
    if rows == n and cols == m:
        # The only block is W itself: pool its own eigenvalues, so that α is the raw α.
        blocks = raw_values[None]
    else:
        blocks = submatrix_eigenvalues(weights, ratio=ratio, size=cols,
                                       n_submatrices=n_submatrices, seed=seed)
    count = blocks.shape[0]
    fit = fit_power_law(blocks.ravel())
    if not fit.ok:
        return AspectCorrectedAlpha(nan, nan, nan, *raw, shape=(rows, cols),
                                    n_submatrices=count, n_disjoint=disjoint, level=level,
                                    reason=f"pooled ESD of {count} block(s) {rows} × {cols}: "
                                           f"{fit.reason}", raw_reason=raw_fit.reason)
    # The bootstrap's own stream: the same seed as the sampling, but spawned, so changing
    # n_bootstrap does not change which blocks are pooled.
    rng = np.random.default_rng([seed, 1])
    # Each replicate refits a pool of the same size as the estimate (the robust fit's
    # minimum tail is a share of the pool, so a smaller pool would be another estimator).
    # Pooled blocks overlap across partitions: resampling them as if independent counts
    # W's entries count·a·k/(n·m) times, shrinking the spread by the square root of that
    # (the design effect; within one partition the blocks are independent and the factor
    # is 1), so the spread around α is widened by it.
    inflation = math.sqrt(max(1.0, count * rows * cols / (n * m)))
    if not n_bootstrap:  # point estimates only (a question across many models)
        return AspectCorrectedAlpha(fit.alpha, nan, nan, *raw, shape=(rows, cols),
                                    n_submatrices=count, n_disjoint=disjoint, level=level,
                                    interval="", reason="", raw_reason=raw_fit.reason)
    if disjoint >= MIN_BLOCKS_TO_RESAMPLE:
        picks = rng.integers(0, count, size=(n_bootstrap, count))
        alphas = _refit(blocks[picks].reshape(n_bootstrap, -1))
        method = INTERVAL_BLOCKS
    else:
        pooled = blocks.ravel()
        alphas = _refit(pooled[rng.integers(0, pooled.size, size=(n_bootstrap, pooled.size))])
        method = INTERVAL_EIGENVALUES
    half_width = inflation * _half_width(alphas, fit.alpha, level)
    low = high = nan
    if math.isfinite(half_width):
        # α > 1 for any normalizable power law: a lower end below 1 means "≈ 1".
        low, high = max(1.0, fit.alpha - half_width), fit.alpha + half_width
    return AspectCorrectedAlpha(fit.alpha, low, high, *raw, shape=(rows, cols),
                                n_submatrices=count, n_disjoint=disjoint, level=level,
                                interval=method, reason="", raw_reason=raw_fit.reason)
