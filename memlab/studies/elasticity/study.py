"""The local-elasticity study (He & Su 2020; docs/science.md §4): ratio over training, clustering.

    from memlab.studies.elasticity import ElasticityConfig, run
    result = run(ElasticityConfig(data="mnist1d"), out="runs/elasticity")
    result.tables["verdicts"]        # per task: final ReLU vs linear S_rel ratio, and a verdict

Two experiments on one dataset, each for the ReLU MLP and its *linear twin* (the same MLP with
the identity activation), trained as populations by memlab's engine:

1. **Ratio over training.** A C-class MLP is trained with plain minibatch SGD on the whole
   training set; at chosen epochs (checkpoints) a callback computes S_rel and S_ker (one SGD
   step from the checkpoint on each of ``probe_per_class`` training examples per class,
   scalar = logit of the stepped example's class) and records the intra-/inter-class mean
   ratio of the symmetrized S_rel (and of |S_ker|: the signed kernel's inter-class mean can
   sit near zero).
2. **Clustering.** For each class pair (a, b), a one-logit MLP (``task="binary"``) learns
   "a or b" (positive, 1) against the other classes (negative, 0; as many as positives,
   drawn at random per replicate). After training, S_rel and S_ker on the positives are
   clustered into two groups — K-means on the rows of S_rel, spectral clustering with S_rel
   as affinity, kernel K-means on S_ker — and scored by symmetric accuracy against the
   hidden split a/b. Baselines: K-means on the raw inputs and on their leading principal
   components. The same two-class ratio (within a, within b vs across) is tracked too.

Every task is one population (``train_population``) in its own resumable run directory
under ``out/populations/``: replicate r of the sweep ``activation: [relu, linear]`` gives the
ReLU network and its linear twin with the same initial weights, subset and shuffling (the
engine's per-model streams; torch's global RNG is never seeded). The multi-class models
train on an explicit all-ones mask; pair model r on its positives and its negatives. All
similarity rows are one step from the same weights (the paper instead steps along its SGD
pass; see docs/elasticity.md).

With ``run_dir`` set, the study instead measures one model (``member``) of an existing
population run at its final weights, and writes into ``RUN/elasticity`` by default.

The verdicts are computed from the seeds: the ReLU network and its twin share replicate r's
weights and data, so their final ratios are compared as paired differences, with a
Student-t 95% interval over seeds; an interval that straddles 0 cannot decide.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from memlab import validate
from memlab.data import Dataset
from memlab.errors import ConfigError
from memlab.measures.elasticity import (
    intra_inter_ratio,
    kernel_kmeans,
    one_step_similarities,
    symmetric_accuracy,
    symmetrize,
)
from memlab.measures.intervals import t_interval
from memlab.studies.base import Result, StudyConfig, saved_result

STUDY = "elasticity"
ACTIVATIONS = ("relu", "linear")
HEATMAP_TASKS = 2  # the multi-class task and the first pair: their matrices are tabled
STEPPED_COPIES = 64  # one_step_similarities' chunk_size: stepped weight copies held at once


@dataclass(frozen=True)
class ElasticityConfig(StudyConfig):
    """Settings of the study; the defaults (the paper's two-layer networks on digits) run in
    about 2.5 minutes on 2 CPU cores.

    data: a built-in dataset name or an .npz path (training split used).
    n_seeds: replicates 0..n_seeds-1 of every population (model r's initial weights,
    shuffling, probes and negatives come from the streams of ``seed`` and r).
    n_workers: engine worker processes (changes no result).
    run_dir / member: measure model ``member`` of this population run instead (its final
    weights, ``probe_per_class`` probes per class, step size ``lr``).
    """

    data: str = "digits"
    hidden: tuple[int, ...] = (100,)  # one hidden layer: the paper's two-layer networks
    checkpoints: tuple[int, ...] = (0, 1, 2, 5, 10, 20)  # epochs; training stops at the last
    lr: float = 0.05  # SGD learning rate for training, and η of the measured step
    batch_size: int = 32
    probe_per_class: int = 20  # ratio experiment: probes per class
    pairs: tuple[tuple[int, int], ...] = ((3, 5), (4, 9), (5, 8), (7, 9))
    cluster_per_class: int = 150  # clustering: positives per hidden class (at most)
    pca_components: int = 10
    n_seeds: int = 3
    seed: int = 0
    n_workers: int | None = 1
    run_dir: str | None = None
    member: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "checkpoints", tuple(int(e) for e in self.checkpoints))
        object.__setattr__(self, "pairs", tuple((int(a), int(b)) for a, b in self.pairs))

    @classmethod
    def quick(cls, **changes: Any) -> ElasticityConfig:
        """A smoke-test preset (about 15 s on 2 cores): small network, 2 seeds, one pair."""
        return cls(**{**dict(hidden=(32,), checkpoints=(0, 1, 3), probe_per_class=6,
                             pairs=((3, 5),), cluster_per_class=20, n_seeds=2), **changes})

    @classmethod
    def full(cls, **changes: Any) -> ElasticityConfig:
        """The README's settings (the defaults; ``data="mnist1d"`` for its second column)."""
        return cls(**changes)

    def validate(self, dataset: Dataset | None = None) -> None:
        """Every setting in range (and, given the dataset, the pairs and the memory)."""
        if not self.checkpoints or sorted(set(self.checkpoints)) != list(self.checkpoints) \
                or self.checkpoints[0] < 0:
            raise ConfigError(f"checkpoints must be increasing epochs ≥ 0, got {self.checkpoints}")
        if self.checkpoints[-1] < 1:
            raise ConfigError(f"the last checkpoint is the number of training epochs and must "
                              f"be ≥ 1, got {self.checkpoints}; e.g. --checkpoints 0,1,5")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.batch_size < 1:
            raise ConfigError(f"need a finite lr > 0 and batch size ≥ 1, got {self.lr}, "
                              f"{self.batch_size}")
        if self.probe_per_class < 2 or self.cluster_per_class < 2:
            raise ConfigError("probe_per_class and cluster_per_class must be at least 2")
        if self.n_seeds < 1:
            raise ConfigError(f"give at least one seed (n_seeds ≥ 1), got {self.n_seeds}")
        if dataset is None:
            return
        for a, b in self.pairs:
            if a == b or not (0 <= a < dataset.n_classes and 0 <= b < dataset.n_classes):
                raise ConfigError(
                    f"class pair ({a}, {b}) is invalid for {dataset.name} with "
                    f"{dataset.n_classes} classes: give two different classes in "
                    f"[0, {dataset.n_classes - 1}], e.g. --pairs 5-8")
        if self.pairs and dataset.n_classes < 3:
            raise ConfigError("the clustering experiment needs at least 3 classes (two "
                              "hidden positive classes and negatives); pass --pairs none")
        widths = [math.prod(dataset.input_shape), *self.hidden, dataset.n_classes]
        n_params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
        # The one-step measurement holds STEPPED_COPIES stepped copies of the weights in
        # float64, beside the network and its gradient.
        validate.fits_in_memory(8.0 * n_params * (STEPPED_COPIES + 3),
                                f"--hidden {','.join(map(str, self.hidden))}",
                                "give smaller hidden widths (the paper's: 100)")


# ---------------------------------------------------------------- tasks


@dataclass
class ElasticityTask:
    """One population: its data, membership and the probes of every replicate.

    data: the training data with the task's labels (0/1 for a pair task); mask:
    (n_seeds, n_train) bool training subsets; probes: (n_seeds, n) training indices whose
    similarities are measured (the step uses ``data``'s labels); hidden: (n_seeds, n) the
    classes the ratio and clustering are scored against (for a pair task, a or b)."""

    name: str
    key: str
    data: Dataset
    task: str
    mask: np.ndarray
    probes: np.ndarray
    hidden: np.ndarray
    pair: tuple[int, int] | None = None


def multiclass_task(dataset: Dataset, config: ElasticityConfig) -> ElasticityTask:
    """The C-class task: every model trains on the whole training set."""
    y = dataset.y_train
    probes = np.stack([
        _per_class_sample(y, np.arange(dataset.n_classes), config.probe_per_class,
                          np.random.default_rng([config.seed, r, 61]))
        for r in range(config.n_seeds)])
    return ElasticityTask(name=f"{dataset.n_classes}-class", key="multiclass", data=dataset,
                          task="classification",
                          mask=np.ones((config.n_seeds, dataset.n_train), bool),
                          probes=probes, hidden=y[probes])


def pair_task(dataset: Dataset, pair: tuple[int, int],
              config: ElasticityConfig) -> ElasticityTask:
    """"a or b" (label 1) against as many random examples of the other classes (label 0)."""
    y = dataset.y_train
    positive = np.isin(y, pair)
    negative_pool = np.flatnonzero(~positive)
    masks, probes = [], []
    for r in range(config.n_seeds):
        rng = np.random.default_rng([config.seed, r, 62, *pair])
        row = positive.copy()
        row[rng.choice(negative_pool, min(positive.sum(), len(negative_pool)),
                       replace=False)] = True
        masks.append(row)
        probes.append(_per_class_sample(y, np.array(pair), config.cluster_per_class, rng))
    binary = dataclasses.replace(
        dataset, name=f"{dataset.name}-{pair[0]}or{pair[1]}", y_train=positive.astype(np.int64),
        y_test=np.isin(dataset.y_test, pair).astype(np.int64),
        class_names=["rest", f"{dataset.class_names[pair[0]]}|{dataset.class_names[pair[1]]}"],
        corruption={})
    probes = np.stack(probes)
    return ElasticityTask(name=f"{pair[0]}+{pair[1]} vs rest", key=f"pair-{pair[0]}-{pair[1]}",
                          data=binary, task="binary", mask=np.stack(masks), probes=probes,
                          hidden=y[probes], pair=pair)


def _per_class_sample(y: np.ndarray, classes: np.ndarray, per_class: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``per_class`` random examples of each class, grouped by class."""
    chosen = []
    for cls in classes:
        members = np.flatnonzero(y == cls)
        chosen.append(np.sort(rng.choice(members, min(per_class, len(members)), replace=False)))
    return np.concatenate(chosen)


# ---------------------------------------------------------------- training and probes


class ElasticityProbe:
    """Engine callback: one-step similarities of every model on its replicate's probes.

    Records (K, ...) per call: ``ratio_rel``, ``ratio_ker`` (intra/inter ratio of the
    symmetrized S_rel and |S_ker| against the probes' hidden classes) and ``train_acc``
    (accuracy on the model's own training subset); with ``matrices=True`` instead the
    symmetrized ``s_rel`` and ``s_ker`` (K, n, n) float64."""

    def __init__(self, name: str, epochs: tuple[int, ...], task: ElasticityTask, lr: float,
                 matrices: bool = False):
        self.name, self.epochs, self.lr, self.matrices = name, tuple(epochs), lr, matrices
        self.probes, self.hidden, self.mask = task.probes, task.hidden, task.mask

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for array in (self.probes, self.hidden, self.mask):
            digest.update(np.ascontiguousarray(array).tobytes())
        return {"epochs": list(self.epochs), "lr": self.lr, "matrices": self.matrices,
                "probes_sha256": digest.hexdigest()}

    def __call__(self, state) -> dict[str, np.ndarray]:
        x, y = (t.cpu().numpy() for t in state.tensors["train"])
        out: dict[str, list] = {}
        correct = None if self.matrices else state.evaluate("train")["correct"].cpu().numpy()
        for i, r in enumerate(state.replicates):
            probes = self.probes[r]
            sim = one_step_similarities(member_module(state, i), x[probes], y[probes],
                                        lr=self.lr, chunk_size=STEPPED_COPIES)
            s_rel, s_ker = symmetrize(sim.s_rel), symmetrize(sim.s_ker)
            if self.matrices:
                out.setdefault("s_rel", []).append(s_rel)
                out.setdefault("s_ker", []).append(s_ker)
                continue
            out.setdefault("ratio_rel", []).append(intra_inter_ratio(s_rel, self.hidden[r]))
            # |S_ker|: signed kernel means can sit near 0 and make a ratio meaningless.
            out.setdefault("ratio_ker", []).append(
                intra_inter_ratio(np.abs(s_ker), self.hidden[r]))
            out.setdefault("train_acc", []).append(correct[i][self.mask[r]].mean())
        return {key: np.asarray(values, np.float64) for key, values in out.items()}


def member_module(state, i: int) -> torch.nn.Module:
    """Model i of a callback's chunk as an ordinary nn.Module (a copy of its weights)."""
    module = copy.deepcopy(state.template)
    own = {name: tensor[i].detach().clone() for name, tensor in state.params.items()}
    missing = set(dict(module.named_parameters())) - set(own)
    if missing:
        raise ConfigError(f"the elasticity probe got no weights for {sorted(missing)[:3]}")
    module.load_state_dict(own, strict=False)
    return module.eval()


def train_task(task: ElasticityTask, config: ElasticityConfig, run_dir: Path):
    """Train (or resume) the task's population: replicate r of ``activation`` relu and
    linear (model v * n_seeds + r), recording the probes at every checkpoint."""
    from memlab.population import train_population

    last = config.checkpoints[-1]
    callbacks = [ElasticityProbe("elasticity", config.checkpoints, task, config.lr),
                 ElasticityProbe("final", (last,), task, config.lr, matrices=True)]
    return train_population(
        task.data, model="mlp", task=task.task, callbacks=callbacks,
        membership=np.tile(task.mask, (len(ACTIVATIONS), 1)),  # one block per activation
        model_kwargs={"hidden": list(config.hidden)},
        sweep={"activation": list(ACTIVATIONS)}, epochs=last, batch_size=config.batch_size,
        optimizer="sgd", lr=config.lr, momentum=0.0, seed=config.seed, out=run_dir,
        n_workers=config.n_workers, progress=False)


def _ratio_rows(run, task: ElasticityTask, config: ElasticityConfig) -> list[dict]:
    rows = []
    records = {key: np.asarray(run.records(f"elasticity_{key}"))
               for key in ("ratio_rel", "ratio_ker", "train_acc")}
    for v, activation in enumerate(ACTIVATIONS):
        for r in range(config.n_seeds):
            k = v * config.n_seeds + r
            for c, epoch in enumerate(config.checkpoints):
                rows.append({"task": task.name, "activation": activation, "seed": r,
                             "epoch": epoch,
                             **{key: float(values[k, c]) for key, values in records.items()}})
    return rows


def matrix_rows(task: str, activation: str, s_rel: np.ndarray, s_ker: np.ndarray,
                classes: np.ndarray) -> pd.DataFrame:
    """One table row per matrix row: task, activation, row, class, s_rel and s_ker (lists)."""
    return pd.DataFrame({"task": task, "activation": activation, "row": np.arange(len(s_rel)),
                         "class": np.asarray(classes, np.int64),
                         "s_rel": list(np.asarray(s_rel, np.float64)),
                         "s_ker": list(np.asarray(s_ker, np.float64))})


def matrices_of(table: pd.DataFrame, task: str, activation: str) -> dict[str, np.ndarray]:
    """{"s_rel": (n, n), "s_ker": (n, n), "classes": (n,)} of one task and activation, back
    from the ``matrices`` table."""
    rows = table[(table["task"] == task) & (table["activation"] == activation)]
    rows = rows.sort_values("row")
    return {"s_rel": np.stack(rows["s_rel"].to_numpy()),
            "s_ker": np.stack(rows["s_ker"].to_numpy()),
            "classes": rows["class"].to_numpy()}


# ---------------------------------------------------------------- clustering


def cluster_by_similarity(s_rel: np.ndarray, s_ker: np.ndarray,
                          seed: int) -> dict[str, np.ndarray]:
    """Two clusters from a network's similarities (symmetrized, (n, n))."""
    from sklearn.cluster import KMeans, SpectralClustering

    spectral = SpectralClustering(2, affinity="precomputed", random_state=seed)
    return {
        "K-means on S_rel rows": KMeans(2, n_init=10, random_state=seed).fit_predict(s_rel),
        "spectral on S_rel": spectral.fit_predict(np.maximum(s_rel, 0)),
        "kernel K-means on S_ker": kernel_kmeans(s_ker, 2, seed=seed),
    }


def cluster_inputs(x: np.ndarray, pca_components: int, seed: int) -> dict[str, np.ndarray]:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    flat = x.reshape(len(x), -1)
    n_components = min(pca_components, *flat.shape)
    pca = PCA(n_components, random_state=seed).fit_transform(flat)
    return {
        "K-means on raw inputs": KMeans(2, n_init=10, random_state=seed).fit_predict(flat),
        f"K-means on PCA-{n_components}": KMeans(2, n_init=10,
                                                 random_state=seed).fit_predict(pca),
    }


def _cluster_row(pair, seed, features, method, labels, hidden) -> dict:
    return {"pair": f"{pair[0]}/{pair[1]}", "seed": seed, "features": features,
            "method": method, "symmetric_accuracy": symmetric_accuracy(labels, hidden)}


# ---------------------------------------------------------------- summaries and verdicts


def paired_interval(differences: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences (n,) with a Student-t interval, and whether it is above 0.

    verdict: "yes" (interval above 0), "no" (interval at or below 0: the first is not
    larger), or "cannot decide" (the interval straddles 0, or one pair gives no interval).
    """
    n = int(np.isfinite(np.asarray(differences, np.float64)).sum())
    mean, low, high = t_interval(differences, level)
    if n < 2:
        return {"difference": mean, "ci_low": None, "ci_high": None, "n": n,
                "verdict": "cannot decide"}
    verdict = "yes" if low > 0 else "no" if high <= 0 else "cannot decide"
    return {"difference": mean, "ci_low": low, "ci_high": high, "n": n, "verdict": verdict}


def ratio_summary(ratio: pd.DataFrame) -> pd.DataFrame:
    """Mean ratio (over seeds) per task, activation and epoch, ReLU and linear side by side."""
    mean = ratio.groupby(["task", "epoch", "activation"], sort=False)[
        ["ratio_rel", "ratio_ker", "train_acc"]].mean()
    wide = mean.unstack("activation")
    wide.columns = [f"{metric}_{activation}" for metric, activation in wide.columns]
    return wide.reset_index()


def ratio_verdicts(ratio: pd.DataFrame) -> pd.DataFrame:
    """Per task, at the final epoch: the S_rel ratio of the ReLU network and of its linear
    twin (mean, sd over seeds) and their paired difference with its 95% interval and verdict
    ("does the ReLU ratio exceed its linear twin's?")."""
    final = ratio[ratio["epoch"] == ratio["epoch"].max()]
    rows = []
    for task, group in final.groupby("task", sort=False):
        by = group.pivot_table("ratio_rel", "seed", "activation")
        diff = paired_interval((by["relu"] - by["linear"]).to_numpy())
        rows.append({"task": task, "epoch": int(group["epoch"].iloc[0]),
                     "ratio_relu": float(by["relu"].mean()),
                     "sd_relu": float(by["relu"].std(ddof=1)) if len(by) > 1 else np.nan,
                     "ratio_linear": float(by["linear"].mean()),
                     "sd_linear": float(by["linear"].std(ddof=1)) if len(by) > 1 else np.nan,
                     **diff})
    return pd.DataFrame(rows)


def clustering_summary(clustering: pd.DataFrame) -> pd.DataFrame:
    """Symmetric accuracy (mean over seeds) with one column per pair and a mean column."""
    table = clustering.groupby(["features", "method", "pair"])["symmetric_accuracy"].mean()
    wide = table.unstack("pair")
    wide["mean"] = wide.mean(axis=1)
    order = {"relu": 0, "linear": 1, "inputs": 2}
    wide = wide.reset_index()
    wide["_order"] = wide["features"].map(order)
    return wide.sort_values(["_order", "method"]).drop(columns="_order").reset_index(drop=True)


BASELINE_METHOD = "K-means on raw inputs"


def clustering_verdicts(clustering: pd.DataFrame) -> pd.DataFrame:
    """Each similarity-based method against K-means on the raw inputs, paired over the
    (pair, seed) units that cluster the same positives: mean difference in symmetric
    accuracy, 95% interval, and "does it beat the raw-input baseline?"."""
    if clustering.empty:
        return pd.DataFrame(columns=["features", "method", "difference", "ci_low", "ci_high",
                                     "n", "verdict"])
    base = clustering[clustering["method"] == BASELINE_METHOD].set_index(["pair", "seed"])
    rows = []
    for (features, method), group in clustering.groupby(["features", "method"], sort=False):
        if method == BASELINE_METHOD:
            continue
        own = group.set_index(["pair", "seed"])["symmetric_accuracy"]
        diff = own - base["symmetric_accuracy"].reindex(own.index)
        rows.append({"features": features, "method": method,
                     "accuracy": float(own.mean()), **paired_interval(diff.to_numpy())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- run


def run(config: ElasticityConfig, out: str | Path | None = None,
        progress: bool = True) -> Result:
    """Both experiments (or, with ``run_dir``, one population member) and write tables/,
    summary.json and report.html into ``out``; the populations live in
    ``out/populations/<task>/``. Resumable: a second call with the same ``out`` and config
    returns the saved result; an interrupted call resumes its populations (finished chunks
    are kept; the result is bit-identical to an uninterrupted call)."""
    config.validate()
    if out is None:
        if config.run_dir is None:
            raise ConfigError("give an output directory (out=...) for the study's populations")
        out = Path(config.run_dir) / STUDY
    out = Path(out)
    saved = saved_result(out, STUDY, config)
    if saved is not None:
        return saved

    if config.run_dir is not None:
        result = _member_result(config)
    else:
        result = _study_result(config, out, progress)
    result.save(out)
    return result


def _study_result(config: ElasticityConfig, out: Path, progress: bool) -> Result:
    from memlab.data import load

    dataset = load(config.data)
    config.validate(dataset)
    start = time.perf_counter()
    tasks = [multiclass_task(dataset, config)]
    tasks += [pair_task(dataset, pair, config) for pair in config.pairs]
    ratio_rows, cluster_rows, matrices, runs = [], [], [], {}
    bar = tqdm(tasks, desc="elasticity", unit="population", disable=not progress)
    for t, task in enumerate(bar):
        bar.set_postfix_str(task.name)
        population = train_task(task, config, out / "populations" / task.key)
        runs[task.name] = str(population.path)
        ratio_rows += _ratio_rows(population, task, config)
        s_rel_all = np.asarray(population.records("final_s_rel"))[:, -1]  # (n_total, n, n)
        s_ker_all = np.asarray(population.records("final_s_ker"))[:, -1]
        for v, activation in enumerate(ACTIVATIONS):
            for r in range(config.n_seeds):
                k = v * config.n_seeds + r
                if r == 0 and t < HEATMAP_TASKS:
                    matrices.append(matrix_rows(task.name, activation, s_rel_all[k],
                                                s_ker_all[k], task.hidden[r]))
                if task.pair is not None:
                    found = cluster_by_similarity(s_rel_all[k], s_ker_all[k], r)
                    for method, labels in found.items():
                        cluster_rows.append(_cluster_row(task.pair, r, activation, method,
                                                         labels, task.hidden[r]))
        if task.pair is not None:
            for r in range(config.n_seeds):
                probe_x = dataset.x_train[task.probes[r]]
                for method, labels in cluster_inputs(probe_x, config.pca_components,
                                                     r).items():
                    cluster_rows.append(_cluster_row(task.pair, r, "inputs", method, labels,
                                                     task.hidden[r]))
    bar.close()
    ratio = pd.DataFrame(ratio_rows)
    clustering = pd.DataFrame(cluster_rows, columns=["pair", "seed", "features", "method",
                                                     "symmetric_accuracy"])
    verdicts = ratio_verdicts(ratio)
    versus_inputs = clustering_verdicts(clustering)
    tables = {"ratio": ratio, "ratio_summary": ratio_summary(ratio), "verdicts": verdicts,
              "clustering": clustering, "matrices": pd.concat(matrices, ignore_index=True)}
    if len(clustering):
        tables["clustering_summary"] = clustering_summary(clustering)
        tables["clustering_vs_inputs"] = versus_inputs
    summary = {
        "mode": "study", "dataset": dataset.name, "n_train": int(dataset.n_train),
        "n_classes": int(dataset.n_classes),
        "ratio": {row["task"]: {k: row[k] for k in ("ratio_relu", "ratio_linear",
                                                     "difference", "ci_low", "ci_high", "n",
                                                     "verdict")}
                  for row in verdicts.to_dict(orient="records")},
        "clustering_vs_inputs": {
            f"{row['features']}: {row['method']}": {k: row[k] for k in (
                "accuracy", "difference", "ci_low", "ci_high", "verdict")}
            for row in versus_inputs.to_dict(orient="records")},
        "runs": runs, "seconds": round(time.perf_counter() - start, 1),
    }
    return Result(STUDY, config.to_dict(), tables, summary)


def population_member(run_dir: str | Path, k: int, per_class: int = 20, lr: float = 0.05,
                      seed: int = 0) -> dict:
    """Similarities at the final weights of model ``k`` of a population run (its multi-class
    logits; scalar = logit of the stepped example's class) on ``per_class`` training
    examples per class of the run's dataset. Returns the symmetrized matrices, the probes'
    classes and the two ratios."""
    from memlab.population.run import open_run

    population = open_run(run_dir)
    if not 0 <= k < population.n_models:
        raise ConfigError(f"--model {k} is out of range: {run_dir} has models "
                          f"0..{population.n_models - 1}")
    y = population.dataset.y_train
    probes = _per_class_sample(y, np.arange(population.dataset.n_classes), per_class,
                               np.random.default_rng([seed, 61]))
    sim = one_step_similarities(population.model(k), population.dataset.x_train[probes],
                                y[probes], lr=lr, chunk_size=STEPPED_COPIES)
    s_rel, s_ker = symmetrize(sim.s_rel), symmetrize(sim.s_ker)
    return {"s_rel": s_rel, "s_ker": s_ker, "classes": y[probes],
            "ratio_rel": intra_inter_ratio(s_rel, y[probes]),
            "ratio_ker": intra_inter_ratio(np.abs(s_ker), y[probes]),
            "model": population.config.model, "dataset": population.dataset.name}


def _member_result(config: ElasticityConfig) -> Result:
    member = population_member(config.run_dir, config.member, config.probe_per_class,
                               config.lr, config.seed)
    task = f"model {config.member}"
    tables = {"matrices": matrix_rows(task, str(member["model"]), member["s_rel"],
                                      member["s_ker"], member["classes"])}
    summary = {"mode": "member", "run_dir": str(config.run_dir), "member": config.member,
               "model": str(member["model"]), "dataset": member["dataset"],
               "ratio_rel": member["ratio_rel"], "ratio_ker": member["ratio_ker"]}
    return Result(STUDY, config.to_dict(), tables, summary)
