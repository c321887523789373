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

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from memlab.errors import ConfigError
from memlab.io import atomic_save_npy
from memlab.measures.inout import (  # noqa: F401
    Influence,
    InOut,
    OutMean,
    ProbitInOut,
    _row_blocks,
    binomial_se,
    estimate_influence,
    in_out,
    in_out_margin,
    in_out_pairs,
    in_out_pairs_margin,
    interval_se,
    out_mean,
    se_path_for,
)
from memlab.measures.stats import Z95, newcombe_interval, spearman, wilson_interval  # noqa: F401
from memlab.measures.thresholds import (  # noqa: E402
    HIGH_INFLUENCE,
    MEM_ESTIMATORS,
    MEMORIZED,
    NEAR_DUPLICATE,
)
from memlab.population.run import Run
from memlab.validate import free_memory

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
    """The rows of the run's mask and records to estimate from: ``models`` (default all)
    less the models that diverged in training (``Run.usable_models`` warns, counting
    them)."""
    if models is None:
        return run.usable_models()
    models = np.asarray(models, dtype=np.int64)
    if models.size == 0 or models.min() < 0 or models.max() >= run.n_models:
        raise ConfigError(f"model indices must lie in [0, {run.n_models}) and not be empty")
    return run.usable_models(models)


# Estimators of memorization, by name (docs/science.md §1, "fewer models"). Each reads the
# run's records and returns per-example statistics with .score, .se and .interval().
ESTIMATORS = MEM_ESTIMATORS
ESTIMATOR_CHOICES = ("auto", *ESTIMATORS)
# The probit model is trusted while the disagreement between it and the binary estimator is
# at most this multiple of what their noise alone explains (1 when the model is right).
CALIBRATION_MAX = 1.5


def estimate(mask: np.ndarray, records: dict[str, np.ndarray], estimator: str
             ) -> InOut | ProbitInOut:
    """Per-example memorization statistics of one estimator from the records (model
    axis first) of the models in ``mask``:

    - ``binary``: Feldman & Zhang's acc_in − acc_out of 0/1 correctness (``train_correct``),
      Newcombe intervals — the definition the others are calibrated to;
    - ``probit``: Φ(θ_in) − Φ(θ_out) from the margins (``train_margin``), each side a
      Gaussian with a moderated (empirical-Bayes) variance (:func:`in_out_margin`);
    - ``probit_pooled``: the same with one pooled variance per side (LiRA's fixed
      variance)."""
    if estimator == "binary":
        return in_out(mask, records["train_correct"], binary=True)
    if estimator in ("probit", "probit_pooled"):
        variance = "moderated" if estimator == "probit" else "pooled"
        return in_out_margin(mask, records["train_margin"], variance)
    raise ConfigError(f"estimator must be one of {', '.join(ESTIMATOR_CHOICES)}; got "
                      f"{estimator!r}")


@dataclass
class EstimatorChoice:
    """Which estimator ``auto`` chose, and why. ``calibration``: mean squared difference
    between the probit and binary estimates over what their standard errors explain
    (se_binary² − se_probit²: the efficient estimator's variance is its covariance with any
    unbiased one); about 1 (or below: Newcombe's intervals are conservative) when the
    margins follow the Gaussian model, above when it is biased. ``in_fit``: the IN models'
    accuracy on their own training examples. ``width_ratio``: median interval width,
    probit over binary."""

    estimator: str
    reason: str
    calibration: float | None = None
    in_fit: float | None = None
    width_ratio: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def choose_estimator(mask: np.ndarray, records: dict[str, np.ndarray]) -> EstimatorChoice:
    """The probit estimator where the margins are recorded and agree with its model
    (calibration ≤ :data:`CALIBRATION_MAX`), else the binary one; the reason is stated."""
    if "train_margin" not in records:
        return EstimatorChoice("binary", "the run records no margins")
    binary = estimate(mask, records, "binary")
    probit = estimate(mask, records, "probit")
    correct = np.asarray(records["train_correct"], bool)
    in_fit = float(correct[np.asarray(mask, bool)].mean())
    excess = binary.se**2 - probit.se**2
    gap = probit.score - binary.score
    ok = np.isfinite(gap) & np.isfinite(excess) & (excess > 0)
    if ok.sum() < 10:
        return EstimatorChoice("binary", "too few examples to check the probit model",
                               in_fit=in_fit)
    calibration = float(np.mean(gap[ok] ** 2) / np.mean(excess[ok]))
    width = float(np.nanmedian(probit.se) / np.nanmedian(binary.se))
    if calibration <= CALIBRATION_MAX:
        reason = (f"the margins fit the probit model (calibration {calibration:.2f} <= "
                  f"{CALIBRATION_MAX}); its intervals are {1 - width:.0%} narrower")
        return EstimatorChoice("probit", reason, calibration, in_fit, width)
    reason = (f"the probit model disagrees with the binary estimator beyond noise "
              f"(calibration {calibration:.2f} > {CALIBRATION_MAX}; IN models fit "
              f"{in_fit:.3f} of their examples)")
    return EstimatorChoice("binary", reason, calibration, in_fit, width)


def label_errors(mask: np.ndarray, logodds: np.ndarray) -> OutMean:
    """The label-error score: minus the mean log-odds of the *given* label, log p_y/(1 − p_y),
    over the models that did not train on the example (high = the rest of the population
    says the label is wrong). Not memorization: it uses no IN model, so it does not ask
    whether training on the example changed anything; it asks whether the label is
    believable. ``mean`` is the score, ``se`` its standard error over the OUT models."""
    result = out_mean(mask, logodds)
    return OutMean(result.n_out, -result.mean, result.se)


def memorization(run: Run, models: Sequence[int] | None = None, estimator: str = "binary"
                 ) -> pd.DataFrame:
    """One row per training example: index, label (original_label and corrupted where the
    run's data had label noise), mem, se, mem_lo and mem_hi (95% interval) of the
    ``estimator`` (``auto``: :func:`choose_estimator`; the choice and its reason are in
    ``frame.attrs["estimator"]``), then every estimator's own columns (``mem_binary``,
    ``mem_binary_lo``, ``mem_binary_hi``, and the same for ``probit`` where the run records
    margins), n_in, n_out, acc_in, acc_out (binary), p_in, p_out (the probit's modelled
    accuracies), pred_out (the class the OUT models predict most often), label_error and
    label_error_se (:func:`label_errors`). ``models``: use only these models."""
    if estimator not in ESTIMATOR_CHOICES:
        raise ConfigError(f"estimator must be one of {', '.join(ESTIMATOR_CHOICES)}; got "
                          f"{estimator!r}")
    rows = _models(run, models)
    mask = np.asarray(run.membership_mask[rows], bool)
    names = ["train_correct", "train_margin", "train_logodds"]
    records = {name: np.asarray(run.records(name)[rows]) for name in names
               if name in run.record_names}
    if estimator == "auto":
        choice = choose_estimator(mask, records)
    elif estimator != "binary" and "train_margin" not in records:
        raise ConfigError(f"the {estimator} estimator needs the run's train_margin records; "
                          "use estimator='binary'")
    else:
        choice = EstimatorChoice(estimator, "chosen by the caller")
    dataset = run.dataset
    frame = pd.DataFrame({"index": np.arange(dataset.n_train), "label": dataset.y_train})
    noise = dataset.corruption.get("label_noise")
    if noise:
        original = dataset.y_train.copy()
        original[np.asarray(noise["indices"], dtype=np.int64)] = noise["original_labels"]
        frame["original_label"] = original
        frame["corrupted"] = original != dataset.y_train
    results = {name: estimate(mask, records, name) for name in ("binary", "probit")
               if name == "binary" or "train_margin" in records}
    if choice.estimator not in results:
        results[choice.estimator] = estimate(mask, records, choice.estimator)
    chosen = results[choice.estimator]
    frame["mem"] = chosen.score
    frame["se"] = chosen.se
    frame["mem_lo"], frame["mem_hi"] = chosen.interval()
    for name, result in results.items():
        frame[f"mem_{name}"] = result.score
        frame[f"mem_{name}_lo"], frame[f"mem_{name}_hi"] = result.interval()
    binary = results["binary"]
    frame["n_in"] = binary.n_in
    frame["n_out"] = binary.n_out
    frame["acc_in"] = binary.mean_in
    frame["acc_out"] = binary.mean_out
    if "probit" in results:
        frame["p_in"] = results["probit"].mean_in
        frame["p_out"] = results["probit"].mean_out
    frame["pred_out"] = out_predictions(mask, run.records("train_pred")[rows], dataset.n_classes)
    if "train_logodds" in records:
        errors = label_errors(mask, records["train_logodds"])
        frame["label_error"] = errors.mean
        frame["label_error_se"] = errors.se
    frame.attrs["estimator"] = choice.as_dict()
    missing = int(((binary.n_in == 0) | (binary.n_out == 0)).sum())
    if missing:
        warnings.warn(f"{missing} examples have no IN or no OUT model: their scores are NaN; "
                      "train more models", stacklevel=2)
    return frame


# ------------------------------------------------------------------ influence


def influence(run: Run, out: str | Path | None = None, models: Sequence[int] | None = None,
              estimator: str = "binary", reuse: bool = False, **blocking) -> Influence:
    """The run's train × test influence matrix. ``binary`` (default): Feldman & Zhang's,
    from test correctness (see :func:`estimate_influence`: streamed to ``out`` or to disk
    when large). ``probit``: from the test margins (:func:`in_out_pairs_margin`), on the
    same scale with a smaller error; computed in memory (:func:`probit_influence_fits`
    says whether it fits), written atomically to ``out`` when given. ``reuse``: ``out``
    and its ``_se`` sibling, when both exist, were written by this same computation
    before (a study's output directory, which refuses other settings): load them."""
    rows = _models(run, models)
    if reuse and out is not None and Path(out).exists() and se_path_for(Path(out)).exists():
        return Influence.load(out, np.asarray(run.membership_mask[rows], bool))
    if estimator == "probit":
        mask = np.asarray(run.membership_mask[rows], bool)
        pairs = in_out_pairs_margin(mask, run.records("test_margin")[rows])
        n_in = mask.sum(0)
        values, se = pairs.score.astype(np.float32), pairs.se.astype(np.float32)
        del pairs
        if out is None:
            return Influence(values, se, n_in, mask.shape[0] - n_in)
        out = Path(out)
        atomic_save_npy(out, values)
        atomic_save_npy(se_path_for(out), se)
        return Influence.load(out, mask)
    if estimator != "binary":
        raise ConfigError(f"influence estimator must be binary or probit; got {estimator!r}")
    return estimate_influence(run.membership_mask[rows], run.records("test_correct")[rows],
                              out=out, **blocking)


def probit_influence_fits(n_train: int, n_test: int) -> bool:
    """Whether the in-memory probit influence (about a dozen float64 n_train × n_test
    arrays at its peak) fits in half the free memory."""
    return 12 * 8 * n_train * n_test <= free_memory() // 2


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


def input_neighbours(dataset, k: int, threshold: float, block: int = 1024) -> pd.DataFrame:
    """Input space (cosine of inputs centred on the training mean): each training example's
    nearest other training input (``nn_cosine``), how many others are near-duplicates
    (cosine ≥ ``threshold``: ``n_duplicates``) and the share of its ``k`` nearest
    neighbours with its label (``knn_agreement``, a cheap proxy of the C-score)."""
    unit = Similarity.of(dataset).train
    labels = np.asarray(dataset.y_train)
    n = len(unit)
    k = min(k, n - 1)
    nearest = np.empty(n, np.float64)
    duplicates = np.empty(n, np.int64)
    agreement = np.empty(n, np.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = unit[start:stop] @ unit.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not itself
        nearest[start:stop] = sims.max(1)
        duplicates[start:stop] = (sims >= threshold).sum(1)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        agreement[start:stop] = (labels[top] == labels[start:stop, None]).mean(1)
    return pd.DataFrame({"nn_cosine": nearest, "n_duplicates": duplicates,
                         "knn_agreement": agreement})


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


def _score(mask: np.ndarray, scores: np.ndarray | dict, estimator: str) -> np.ndarray:
    if isinstance(scores, dict):
        return estimate(mask, scores, estimator).score
    return in_out(mask, scores).score


def split_half_reliability(mask: np.ndarray, scores: np.ndarray | dict,
                           n_models: int | None = None, n_splits: int = 5, seed: int = 0,
                           estimator: str = "binary") -> Reliability:
    """Draw ``n_models`` of the population's models (all by default) ``n_splits`` times,
    split them into two disjoint halves, estimate scores from each half, and correlate.

    ``scores`` (t, n): 0/1 correctness (memorization) or a real-valued performance such
    as per-token accuracy (counterfactual memorization); the score is :func:`in_out`'s.
    Or a dict of records (``train_correct``, ``train_margin``): the score is
    ``estimator``'s (:func:`estimate`).
    """
    t = mask.shape[0]
    n_models = t if n_models is None else n_models
    if not 2 <= n_models <= t:
        raise ConfigError(f"split-half reliability needs 2 <= n_models <= {t}, got {n_models}")
    mask = np.asarray(mask, bool)
    scores = ({k: np.asarray(v) for k, v in scores.items()} if isinstance(scores, dict)
              else np.asarray(scores))

    def rows(index: np.ndarray) -> np.ndarray | dict:
        if isinstance(scores, dict):
            return {k: v[index] for k, v in scores.items()}
        return scores[index]

    values = []
    for split in range(n_splits):
        order = np.random.default_rng([seed, split, n_models]).permutation(t)[:n_models]
        half = n_models // 2
        a, b = order[:half], order[half:2 * half]
        values.append(spearman(_score(mask[a], rows(a), estimator),
                               _score(mask[b], rows(b), estimator)))
    finite = [v for v in values if np.isfinite(v)]
    mean = float(np.mean(finite)) if finite else float("nan")
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return Reliability(n_models, mean, sd, n_splits)


def reliability_curve(mask: np.ndarray, scores: np.ndarray | dict,
                      sizes: Sequence[int] | None = None, n_splits: int = 5, seed: int = 0,
                      estimator: str = "binary") -> pd.DataFrame:
    """Split-half reliability for several population sizes (default: 8, 16, 32, … and all
    models). Columns: n_models, spearman, spearman_sd; the last row is the reliability of
    the whole population when ``sizes`` ends with it. ``scores``, ``estimator``: as for
    :func:`split_half_reliability`."""
    t = mask.shape[0]
    if sizes is None:
        sizes = sorted({*(2**k for k in range(3, 20) if 2**k < t), t})
    rows = [split_half_reliability(mask, scores, s, n_splits, seed, estimator)
            for s in sizes if 2 <= s <= t]
    return pd.DataFrame({"n_models": [r.n_models for r in rows],
                         "spearman": [r.spearman for r in rows],
                         "spearman_sd": [r.spearman_sd for r in rows]})


def run_reliability(run: Run, n_models: int | None = None, n_splits: int = 5) -> Reliability:
    """Split-half reliability of the run's (binary) memorization scores."""
    rows = _models(run, None)
    return split_half_reliability(run.membership_mask[rows], run.records("train_correct")[rows],
                                  n_models, n_splits, seed=run.config.seed)


def models_needed_for_se(se: np.ndarray, n_models: int, target_se: float,
                         quantile: float = 0.9) -> int:
    """Models for which the ``quantile`` of the per-example standard errors ``se`` (from
    ``n_models`` models: a pilot) reaches ``target_se`` (default: 90% of the examples at
    or under it; the median would be met by the easy examples alone, whose probit se is
    near 0): every estimator's se falls as 1/sqrt(models), so n = n_models · (se_q /
    target)², rounded up."""
    if not target_se > 0:
        raise ConfigError(f"target_se must be positive, got {target_se}")
    current = float(np.nanquantile(se, quantile))
    return max(2, math.ceil(n_models * (current / target_se) ** 2))


def memorized_fraction_interval(mask: np.ndarray, records: dict, estimator: str,
                                threshold: float = MEMORIZED, n_bootstrap: int = 100,
                                seed: int = 0) -> tuple[float, float, float]:
    """The fraction of examples with mem ≥ ``threshold`` and its 95% interval: estimate ±
    1.96 bootstrap sd over models (models resampled with replacement, every estimate
    recomputed). Not the percentile interval: a resample's repeated models make every
    estimate noisier, which shifts the resampled fractions (at 256 models the percentile
    interval missed the estimate itself)."""
    mask = np.asarray(mask, bool)
    records = {k: np.asarray(v) for k, v in records.items()}
    fraction = float(np.nanmean(estimate(mask, records, estimator).score >= threshold))
    rng = np.random.default_rng([seed, 25])
    values = []
    for _ in range(n_bootstrap):
        rows = rng.integers(0, mask.shape[0], mask.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            score = estimate(mask[rows], {k: v[rows] for k, v in records.items()},
                             estimator).score
        values.append(np.nanmean(score >= threshold))
    sd = float(np.std(values, ddof=1))
    return fraction, fraction - Z95 * sd, fraction + Z95 * sd


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
