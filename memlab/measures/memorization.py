"""Label memorization and influence estimates (Feldman 2020; Feldman & Zhang 2020).

From one population of t models, model k trained on subset I_k (membership mask M, t × n):

    mem(i)     = mean_k{ correct_k(x_i)  : i ∈ I_k } − mean_k{ correct_k(x_i)  : i ∉ I_k }
    infl(i, j) = mean_k{ correct_k(x'_j) : i ∈ I_k } − mean_k{ correct_k(x'_j) : i ∉ I_k }

Every estimate is a difference of two masked means, computed for all examples at once:
memorization from column sums of ``correct & M``, influence from one matrix product per
block, ``Mᵀ C`` (the OUT sums are the column totals of C minus the IN sums). Never a loop
over examples or pairs.

Every score comes with a 95% interval [lo, hi] and a standard error: Wilson score
intervals for acc_in and acc_out, combined for their difference by Newcombe's hybrid score
method (Newcombe 1998, method 10):

    lo = mem − sqrt((acc_in − l_in)² + (u_out − acc_out)²)
    hi = mem + sqrt((u_in − acc_in)² + (acc_out − l_out)²)
    se = (hi − lo) / (2 · 1.96)

(l, u: the Wilson bounds of each side). Unlike the plug-in binomial error
sqrt(acc_in (1 − acc_in)/n_in + acc_out (1 − acc_out)/n_out), which is 0 for an example
every model gets right (acc_in = acc_out = 1), these never collapse: se > 0 wherever it
is defined (it is NaN for an example without IN or without OUT models). Coverage of the
95% interval, by Monte Carlo on the grid stated in tests/test_memorization_interval.py
(30 to 700 models per side, acc_in 0.5 to 0.97, acc_out 0.1 to 0.9), lies in [93%, 97%];
where both accuracies exceed 0.97 with under 100 models per side it errs wide (up to 99%),
never narrow (the plug-in interval's coverage falls to 60% there).

The a-priori bound of docs/science.md §1 (:func:`error_bound`) turns a requested precision
into a number of models (:func:`models_needed`, :func:`precision_advice`).

    from memlab.population import open_run
    from memlab.measures.memorization import memorization, influence, high_influence_pairs
    run = open_run("runs/memorize/population")   # the population of `memlab memorize`
    scores = memorization(run)            # one row per training example
    infl = influence(run)                 # (n_train, n_test) float32 + standard errors
    pairs = high_influence_pairs(run, scores=scores, infl=infl)
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from memlab.errors import ConfigError
from memlab.population.run import Run

MEMORIZED = 0.25  # mem >= this: "memorized" (Feldman & Zhang)
HIGH_INFLUENCE = 0.15  # infl >= this (with mem >= MEMORIZED, same label): high-influence pair
NEAR_DUPLICATE = 0.95  # cosine similarity (inputs centred on the training mean)

_BLOCK_BYTES = 64 * 2**20  # working memory per block of a streamed computation
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: 95% intervals


# ------------------------------------------------------------------ the estimator


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


def wilson_interval(acc, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (lo, hi) of a binomial proportion observed as ``acc`` out of
    ``n`` trials (arrays broadcast; NaN where n = 0). Inside [0, 1], and of positive width
    even at acc = 0 or 1."""
    acc = np.asarray(acc, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.asarray(n, np.float64)
        z2n = z * z / n
        centre = (acc + z2n / 2) / (1 + z2n)
        half = z * np.sqrt(np.maximum(acc * (1 - acc), 0) / n + z2n / (4 * n)) / (1 + z2n)
    return centre - half, centre + half


def newcombe_interval(acc_in, n_in, acc_out, n_out, z: float = Z95
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Interval (lo, hi) of acc_in − acc_out: Newcombe's hybrid score method, combining the
    Wilson interval of each side (Newcombe 1998, method 10; e.g. 56/70 − 48/80 gives
    [0.0524, 0.3339])."""
    acc_in, acc_out = np.asarray(acc_in, np.float64), np.asarray(acc_out, np.float64)
    l_in, u_in = wilson_interval(acc_in, n_in, z)
    l_out, u_out = wilson_interval(acc_out, n_out, z)
    diff = acc_in - acc_out
    return (diff - np.sqrt((acc_in - l_in) ** 2 + (u_out - acc_out) ** 2),
            diff + np.sqrt((u_in - acc_in) ** 2 + (acc_out - l_out) ** 2))


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


def _ratio(hits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def _row_blocks(n_rows: int, row_bytes: int, budget: int = _BLOCK_BYTES) -> list[slice]:
    size = max(1, budget // max(row_bytes, 1))
    return [slice(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]


def _mean_var(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased sample variance from a sum, a sum of squares and a count."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        var = (total_sq - count * mean**2) / (count - 1)
        var = np.where(count > 1, np.maximum(var, 0.0), np.nan)
    return mean, var


def _check_scores(mask: np.ndarray, scores: np.ndarray, same_shape: bool = True) -> None:
    if mask.ndim != 2 or scores.ndim != 2 or mask.shape[0] != scores.shape[0] or (
            same_shape and mask.shape != scores.shape):
        raise ConfigError(f"mask {mask.shape} and scores {scores.shape} must be (models, "
                          "examples) arrays of the same shape")


def in_out(mask: np.ndarray, scores: np.ndarray) -> InOut:
    """IN/OUT statistics of every example (column) of ``scores`` (t, n) under the
    membership ``mask`` (t, n) bool: the diagonal of the masked-means formula, as column
    sums. ``scores`` is 0/1 correctness (bool) or any real-valued performance (per-token
    accuracy, minus a loss). Arrays may be memory-mapped; they are read in blocks of
    models."""
    _check_scores(mask, scores)
    t, n = mask.shape
    binary = scores.dtype == bool
    n_in = np.zeros(n, np.int64)
    total_in, total = np.zeros(n), np.zeros(n)
    square_in, square = np.zeros(n), np.zeros(n)
    for rows in _row_blocks(t, 2 * n if binary else 9 * n):
        m = np.asarray(mask[rows], dtype=bool)
        c = np.asarray(scores[rows], dtype=bool if binary else np.float64)
        if not binary and not np.isfinite(c).all():
            raise ConfigError("scores hold NaN or infinite values")
        n_in += m.sum(0)
        total_in += (c * m).sum(0)
        total += c.sum(0)
        if not binary:
            square_in += (c * c * m).sum(0)
            square += (c * c).sum(0)
    n_out = t - n_in
    if binary:
        return InOut(n_in, n_out, _ratio(total_in, n_in), _ratio(total - total_in, n_out))
    mean_in, var_in = _mean_var(total_in, square_in, n_in)
    mean_out, var_out = _mean_var(total - total_in, square - square_in, n_out)
    return InOut(n_in, n_out, mean_in, mean_out, var_in, var_out)


def in_out_pairs(mask: np.ndarray, scores_test: np.ndarray) -> InOut:
    """IN/OUT statistics of every (training example i, test example j) pair: the influence
    estimate infl(i, j) = mean{P'[k, j] : M[k, i]} − mean{P'[k, j] : not M[k, i]} for
    real-valued test scores ``scores_test`` (t, m), in memory, from four matrix products.
    Fields are (n, m) (counts (n, 1)). For 0/1 correctness of large populations use
    :func:`estimate_influence`, which streams blocks to disk."""
    _check_scores(mask, scores_test, same_shape=False)
    performance = np.asarray(scores_test, np.float64)
    if not np.isfinite(performance).all():
        raise ConfigError("scores hold NaN or infinite values")
    member = np.asarray(mask, bool).astype(np.float64)  # (t, n)
    n_in = member.sum(0)[:, None]  # (n, 1)
    n_out = mask.shape[0] - n_in
    sum_in = member.T @ performance  # (n, m)
    square_in = member.T @ performance**2
    mean_in, var_in = _mean_var(sum_in, square_in, n_in)
    mean_out, var_out = _mean_var(performance.sum(0)[None, :] - sum_in,
                                  (performance**2).sum(0)[None, :] - square_in, n_out)
    return InOut(n_in, n_out, mean_in, mean_out, var_in, var_out)


def out_predictions(mask: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n,) the class most often predicted for each example by the models that did *not*
    train on it (−1 where no model held it out): what the learner says without it."""
    t, n = mask.shape
    votes = np.zeros((n_classes, n), np.int64)
    for rows in _row_blocks(t, 3 * n):
        out = ~np.asarray(mask[rows], dtype=bool)
        p = np.asarray(pred[rows])
        for c in range(n_classes):
            votes[c] += ((p == c) & out).sum(0)
    return np.where(votes.sum(0) > 0, votes.argmax(0), -1)


def _models(run: Run, models: Sequence[int] | None) -> np.ndarray | slice:
    if models is None:
        return slice(None)
    models = np.asarray(models, dtype=np.int64)
    if models.size == 0 or models.min() < 0 or models.max() >= run.n_models:
        raise ConfigError(f"model indices must lie in [0, {run.n_models}) and not be empty")
    return models


def memorization(run: Run, models: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per training example: index, label (original_label and corrupted where the
    run's data had label noise), mem, se, mem_lo and mem_hi (the 95% Newcombe interval),
    n_in, n_out, acc_in, acc_out, pred_out (the class the OUT models predict most often).
    ``models``: use only these models."""
    rows = _models(run, models)
    mask = run.membership_mask[rows]
    stats_ = in_out(mask, run.records("train_correct")[rows])
    dataset = run.dataset
    frame = pd.DataFrame({"index": np.arange(dataset.n_train), "label": dataset.y_train})
    noise = dataset.corruption.get("label_noise")
    if noise:
        original = dataset.y_train.copy()
        original[np.asarray(noise["indices"], dtype=np.int64)] = noise["original_labels"]
        frame["original_label"] = original
        frame["corrupted"] = original != dataset.y_train
    frame["mem"] = stats_.score
    frame["se"] = stats_.se
    frame["mem_lo"], frame["mem_hi"] = stats_.interval()
    frame["n_in"] = stats_.n_in
    frame["n_out"] = stats_.n_out
    frame["acc_in"] = stats_.mean_in
    frame["acc_out"] = stats_.mean_out
    frame["pred_out"] = out_predictions(mask, run.records("train_pred")[rows], dataset.n_classes)
    missing = int(((stats_.n_in == 0) | (stats_.n_out == 0)).sum())
    if missing:
        warnings.warn(f"{missing} examples have no IN or no OUT model: their scores are NaN; "
                      "train more models", stacklevel=2)
    return frame


# ------------------------------------------------------------------ influence


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


def se_path_for(path: Path) -> Path:
    return path.with_name(path.stem + "_se.npy")


def available_memory() -> int:
    """Bytes of physical memory currently free (a conservative guess where unknown)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


def estimate_influence(mask: np.ndarray, correct_test: np.ndarray, out: str | Path | None = None,
                       block_rows: int | None = None, block_cols: int | None = None,
                       max_memory: int | None = None) -> Influence:
    """infl = (Mᵀ C)/(Mᵀ 1) − ((1−M)ᵀ C)/((1−M)ᵀ 1) with standard errors, block by block.

    mask (t, n_train) bool; correct_test (t, n_test) bool. The result is written to ``out``
    (``.npy``, plus ``*_se.npy``; atomically) when given; otherwise it is kept in memory if
    both matrices fit in ``max_memory`` bytes (default: half the free memory), and streamed
    to memory-mapped files in a temporary directory if not (with a warning). Blocks: rows
    of the result (training examples) × columns (test examples), each one matrix product.
    """
    t, n = mask.shape
    if correct_test.shape[0] != t:
        raise ConfigError(f"mask has {t} models but test correctness {correct_test.shape[0]}")
    m = correct_test.shape[1]
    max_memory = available_memory() // 2 if max_memory is None else max_memory
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
        values, se = (np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, m))
                      for p in temps)

    n_in = np.zeros(n, np.int64)
    for rows in _row_blocks(t, n):
        n_in += np.asarray(mask[rows], dtype=bool).sum(0)
    n_out = t - n_in
    try:
        for c0 in range(0, m, block_cols):
            cols = slice(c0, min(c0 + block_cols, m))
            c = np.asarray(correct_test[:, cols], dtype=np.float32)  # (t, mb)
            total = c.sum(0, dtype=np.float64)
            for r0 in range(0, n, block_rows):
                rows = slice(r0, min(r0 + block_rows, n))
                member = np.asarray(mask[:, rows], dtype=np.float32)  # (t, nb)
                hits_in = member.T @ c  # exact: sums of 0/1 below 2**24 in float32
                hits_out = total[None, :] - hits_in
                acc_in = _ratio(hits_in, n_in[rows, None])
                acc_out = _ratio(hits_out, n_out[rows, None])
                values[rows, cols] = acc_in - acc_out
                se[rows, cols] = interval_se(acc_in, n_in[rows, None], acc_out,
                                             n_out[rows, None])
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
    result = Influence(values, se, n_in, n_out, targets)
    if scratch is not None:  # our own scratch directory: removed with the result
        weakref.finalize(result, shutil.rmtree, str(scratch), True)
    return result


def influence(run: Run, out: str | Path | None = None, models: Sequence[int] | None = None,
              **blocking) -> Influence:
    """The run's train × test influence matrix (see :func:`estimate_influence`)."""
    rows = _models(run, models)
    return estimate_influence(run.membership_mask[rows], run.records("test_correct")[rows],
                              out=out, **blocking)


# ------------------------------------------------------------------ pairs, near-duplicates


def _unit_rows(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float32) - mean
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norm, 1e-12)


@dataclass
class Similarity:
    """Cosine similarity between inputs, centred on the training mean."""

    train: np.ndarray  # (n_train, d) unit rows
    test: np.ndarray  # (n_test, d) unit rows

    @classmethod
    def of(cls, dataset) -> Similarity:
        mean = dataset.x_train.reshape(dataset.n_train, -1).mean(0, dtype=np.float64)
        mean = mean.astype(np.float32)
        return cls(_unit_rows(dataset.x_train, mean), _unit_rows(dataset.x_test, mean))

    def pairs(self, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.train[train], self.test[test])

    def rank(self, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        """1 + the number of training examples more similar to test[j] than train[i]."""
        ranks = np.empty(len(train), np.int64)
        for j in np.unique(test):
            sims = self.train @ self.test[j]
            here = test == j
            ranks[here] = 1 + (sims[None, :] > sims[train[here], None]).sum(1)
        return ranks

    def nearest_train(self, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """For every test example: index of, and similarity to, its nearest training input."""
        index = np.empty(len(self.test), np.int64)
        best = np.empty(len(self.test), np.float32)
        for start in range(0, len(self.test), block):
            sims = self.test[start:start + block] @ self.train.T
            index[start:start + block] = sims.argmax(1)
            best[start:start + block] = sims.max(1)
        return index, best


def near_duplicates(dataset, threshold: float = NEAR_DUPLICATE) -> pd.DataFrame:
    """Test examples whose nearest training input has cosine similarity ≥ ``threshold``
    (inputs centred on the training mean): the train/test near-duplicates that inflate
    influence (docs/science.md §1). Columns: test, train, cosine, same_label."""
    index, best = Similarity.of(dataset).nearest_train()
    found = np.flatnonzero(best >= threshold)
    return pd.DataFrame({
        "test": found, "train": index[found], "cosine": best[found].astype(np.float64),
        "same_label": dataset.y_test[found] == dataset.y_train[index[found]],
    })


def high_influence_pairs(run: Run, mem_min: float = MEMORIZED, infl_min: float = HIGH_INFLUENCE,
                         same_label: bool = True, *, scores: pd.DataFrame | None = None,
                         infl: Influence | None = None,
                         duplicate_threshold: float = NEAR_DUPLICATE) -> pd.DataFrame:
    """Pairs (train i, test j) with mem(i) ≥ mem_min and infl(i, j) ≥ infl_min (and the same
    label when ``same_label``), strongest first. Each pair carries the input cosine
    similarity, the rank of i among test j's nearest training inputs, and a
    ``near_duplicate`` flag (cosine ≥ ``duplicate_threshold``): the known confounder.
    Pass ``scores``/``infl`` already computed to avoid recomputing them."""
    scores = memorization(run) if scores is None else scores
    infl = influence(run) if infl is None else infl
    dataset = run.dataset
    mem = scores["mem"].to_numpy()
    candidates = np.flatnonzero(mem >= mem_min)
    found_train, found_test = [], []
    for start in range(0, len(candidates), 256):
        rows = candidates[start:start + 256]
        block = np.asarray(infl.values[rows])
        r, c = np.nonzero(block >= infl_min)
        found_train.append(rows[r])
        found_test.append(c)
    train = np.concatenate(found_train) if found_train else np.zeros(0, np.int64)
    test = np.concatenate(found_test) if found_test else np.zeros(0, np.int64)
    if same_label:
        keep = dataset.y_train[train] == dataset.y_test[test]
        train, test = train[keep], test[keep]
    similarity = Similarity.of(dataset)
    cosine = similarity.pairs(train, test).astype(np.float64)
    frame = pd.DataFrame({
        "train": train, "test": test,
        "train_label": dataset.y_train[train], "test_label": dataset.y_test[test],
        "mem": mem[train], "mem_se": scores["se"].to_numpy()[train],
        "infl": np.asarray(infl.values[train, test], np.float64),
        "infl_se": np.asarray(infl.se[train, test], np.float64),
        "cosine": cosine, "nn_rank": similarity.rank(train, test),
        "near_duplicate": cosine >= duplicate_threshold,
    })
    return frame.sort_values(["infl", "mem"], ascending=False, ignore_index=True)


# ------------------------------------------------------------------ precision, reliability


def error_bound(n_models: int, subset_fraction: float) -> float:
    """Root of the MSE bound of docs/science.md §1 for every mem/infl estimate from ``n_models``
    models: sqrt(1/(p t) + 1/((1 − p) t) + exp(−p t / 16) / 2), p = min(r, 1 − r)."""
    if n_models < 1 or not 0 < subset_fraction < 1:
        raise ConfigError("error_bound needs n_models >= 1 and 0 < subset_fraction < 1")
    p = min(subset_fraction, 1 - subset_fraction)
    t = float(n_models)
    return math.sqrt(1 / (p * t) + 1 / ((1 - p) * t) + math.exp(-p * t / 16) / 2)


def models_needed(precision: float, subset_fraction: float) -> int:
    """The fewest models for which :func:`error_bound` is at most ``precision``."""
    if not precision > 0:
        raise ConfigError(f"precision must be positive, got {precision}")
    low, high = 1, 2
    while error_bound(high, subset_fraction) > precision:
        low, high = high, high * 2
        if high > 2**40:
            raise ConfigError(f"precision {precision} is out of reach")
    while low < high:  # smallest t in [low, high] meeting the bound (it falls with t)
        mid = (low + high) // 2
        if error_bound(mid, subset_fraction) <= precision:
            high = mid
        else:
            low = mid + 1
    return high


def precision_advice(n_models: int, subset_fraction: float, precision: float) -> str | None:
    """A warning when ``n_models`` cannot guarantee root-mean-squared error ≤ ``precision``
    for every score, saying how many models would; None when they can."""
    bound = error_bound(n_models, subset_fraction)
    if bound <= precision:
        return None
    needed = models_needed(precision, subset_fraction)
    return (f"{n_models} models at subset fraction {subset_fraction} bound the RMS error of "
            f"each score by {bound:.3f}, above the requested precision {precision}; "
            f"{needed} models would reach it (--models {needed})")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation over the entries finite in both (NaN if fewer than 3, or if
    either side is constant there)."""
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3 or np.ptp(a[both]) == 0 or np.ptp(b[both]) == 0:
        return float("nan")
    return float(stats.spearmanr(a[both], b[both]).statistic)


@dataclass
class Reliability:
    """Split-half reliability: Spearman correlation between the scores of two disjoint
    halves of ``n_models`` models, mean and sd over ``n_splits`` random splits."""

    n_models: int
    spearman: float
    spearman_sd: float
    n_splits: int

    def __str__(self) -> str:
        return (f"split-half Spearman {self.spearman:.3f} ± {self.spearman_sd:.3f} "
                f"({self.n_models // 2} vs {self.n_models // 2} models, "
                f"{self.n_splits} splits)")


def split_half_reliability(mask: np.ndarray, scores: np.ndarray, n_models: int | None = None,
                           n_splits: int = 5, seed: int = 0) -> Reliability:
    """Draw ``n_models`` of the population's models (all by default) ``n_splits`` times,
    split them into two disjoint halves, estimate scores from each half, and correlate.

    ``scores`` (t, n): 0/1 correctness (memorization) or a real-valued performance such
    as per-token accuracy (counterfactual memorization); the score is :func:`in_out`'s.
    """
    t = mask.shape[0]
    n_models = t if n_models is None else n_models
    if not 2 <= n_models <= t:
        raise ConfigError(f"split-half reliability needs 2 <= n_models <= {t}, got {n_models}")
    mask, scores = np.asarray(mask, bool), np.asarray(scores)
    values = []
    for split in range(n_splits):
        order = np.random.default_rng([seed, split, n_models]).permutation(t)[:n_models]
        half = n_models // 2
        a, b = order[:half], order[half:2 * half]
        values.append(spearman(in_out(mask[a], scores[a]).score,
                               in_out(mask[b], scores[b]).score))
    finite = [v for v in values if np.isfinite(v)]
    mean = float(np.mean(finite)) if finite else float("nan")
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return Reliability(n_models, mean, sd, n_splits)


def reliability_curve(mask: np.ndarray, scores: np.ndarray, sizes: Sequence[int] | None = None,
                      n_splits: int = 5, seed: int = 0) -> pd.DataFrame:
    """Split-half reliability for several population sizes (default: 8, 16, 32, … and all
    models). Columns: n_models, spearman, spearman_sd; the last row is the reliability of
    the whole population when ``sizes`` ends with it."""
    t = mask.shape[0]
    if sizes is None:
        sizes = sorted({*(2**k for k in range(3, 20) if 2**k < t), t})
    rows = [split_half_reliability(mask, scores, s, n_splits, seed)
            for s in sizes if 2 <= s <= t]
    return pd.DataFrame({"n_models": [r.n_models for r in rows],
                         "spearman": [r.spearman for r in rows],
                         "spearman_sd": [r.spearman_sd for r in rows]})


def run_reliability(run: Run, n_models: int | None = None, n_splits: int = 5) -> Reliability:
    """Split-half reliability of the run's memorization scores."""
    return split_half_reliability(run.membership_mask, run.records("train_correct"), n_models,
                                  n_splits, seed=run.config.seed)


def detection_auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """AUROC of ranking examples by ``scores`` (high first) to find ``positives`` (bool);
    ties count one half (Mann–Whitney). NaN scores rank lowest."""
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    positives = np.asarray(positives, bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
