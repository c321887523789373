"""Label memorization and influence estimates (Feldman 2020; Feldman & Zhang 2020).

From one population of t models, model k trained on subset I_k (membership mask M, t × n):

    mem(i)     = mean_k{ correct_k(x_i)  : i ∈ I_k } − mean_k{ correct_k(x_i)  : i ∉ I_k }
    infl(i, j) = mean_k{ correct_k(x'_j) : i ∈ I_k } − mean_k{ correct_k(x'_j) : i ∉ I_k }

Every estimate is a difference of two masked means (the IN models' mean minus the OUT
models'). The estimator, its 95% Newcombe intervals and its standard errors are
:mod:`memlab.measures.inout` (their names stay importable from here); this module applies
them to a run: :func:`memorization` (one row per training example, with what the OUT models
predict), :func:`influence` (the train × test matrix, streamed to disk when large),
high-influence pairs with their near-duplicate confounder, and split-half reliability.

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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from memlab.errors import ConfigError
from memlab.measures.inout import (  # noqa: F401
    Influence,
    InOut,
    _row_blocks,
    binomial_se,
    estimate_influence,
    in_out,
    in_out_pairs,
    interval_se,
    se_path_for,
)
from memlab.measures.stats import Z95, newcombe_interval, spearman, wilson_interval  # noqa: F401
from memlab.measures.thresholds import HIGH_INFLUENCE, MEMORIZED, NEAR_DUPLICATE  # noqa: E402
from memlab.population.run import Run

# The estimator and its intervals live in memlab.measures.inout and memlab.measures.stats;
# their names (imported above) stay importable from here.

# ------------------------------------------------------------------ memorization


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
