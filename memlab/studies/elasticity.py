"""The local-elasticity study (He & Su 2020; SCIENCE.md §4): ratio over training, clustering.

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
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from memlab.data import Dataset
from memlab.errors import ConfigError
from memlab.measures.elasticity import (
    intra_inter_ratio,
    one_step_similarities,
    symmetrize,
)

ACTIVATIONS = ("relu", "linear")


@dataclass(frozen=True)
class StudyConfig:
    """Settings of the study; the defaults run on a laptop CPU in a few minutes.

    n_seeds: replicates 0..n_seeds-1 of every population (model r's initial weights,
    shuffling, probes and negatives come from the streams of ``seed`` and r)."""

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "checkpoints", tuple(int(e) for e in self.checkpoints))
        object.__setattr__(self, "pairs", tuple((int(a), int(b)) for a, b in self.pairs))

    @classmethod
    def quick(cls) -> StudyConfig:
        """A smoke-test preset (seconds on 2 cores): small network, 2 seeds, one pair."""
        return cls(hidden=(32,), checkpoints=(0, 1, 3), probe_per_class=6, pairs=((3, 5),),
                   cluster_per_class=20, n_seeds=2)

    def validate(self, dataset: Dataset) -> None:
        if not self.checkpoints or sorted(set(self.checkpoints)) != list(self.checkpoints) \
                or self.checkpoints[0] < 0:
            raise ConfigError(f"checkpoints must be increasing epochs ≥ 0, got {self.checkpoints}")
        if self.checkpoints[-1] < 1:
            raise ConfigError(f"the last checkpoint is the number of training epochs and must "
                              f"be ≥ 1, got {self.checkpoints}; e.g. --checkpoints 0,1,5")
        if not self.lr > 0 or self.batch_size < 1:
            raise ConfigError(f"need lr > 0 and batch size ≥ 1, got {self.lr}, {self.batch_size}")
        if self.probe_per_class < 2 or self.cluster_per_class < 2:
            raise ConfigError("probe_per_class and cluster_per_class must be at least 2")
        if self.n_seeds < 1:
            raise ConfigError(f"give at least one seed (n_seeds ≥ 1), got {self.n_seeds}")
        for a, b in self.pairs:
            if a == b or not (0 <= a < dataset.n_classes and 0 <= b < dataset.n_classes):
                raise ConfigError(
                    f"class pair ({a}, {b}) is invalid for {dataset.name} with "
                    f"{dataset.n_classes} classes: give two different classes in "
                    f"[0, {dataset.n_classes - 1}], e.g. --pairs 5-8"
                )
        if self.pairs and dataset.n_classes < 3:
            raise ConfigError("the clustering experiment needs at least 3 classes (two "
                              "hidden positive classes and negatives); pass --pairs none")


@dataclass
class StudyResult:
    """ratio: one row per (task, activation, seed, epoch); clustering: one row per
    (pair, seed, features, method); matrices: final symmetrized S_rel/S_ker per task and
    activation (seed 0), with the class of each row, for the heat maps. ``runs``: the
    population run directory of each task."""

    ratio: pd.DataFrame
    clustering: pd.DataFrame
    matrices: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0
    runs: dict[str, str] = field(default_factory=dict)


def run_study(dataset: Dataset, config: StudyConfig, out: str | Path | None = None,
              progress: bool = True, n_workers: int = 1) -> StudyResult:
    """Both experiments on ``dataset`` (training split only).

    out: the study directory; its populations live in ``out/populations/<task>/`` and a
    second call resumes them (finished chunks are kept; the result is bit-identical to an
    uninterrupted call). None: a temporary directory, removed afterwards.
    n_workers: worker processes of the engine (changes no result).
    """
    config.validate(dataset)
    if out is None:
        with tempfile.TemporaryDirectory(prefix="memlab-elasticity-") as scratch:
            return run_study(dataset, config, scratch, progress, n_workers)
    out = Path(out)
    start = time.perf_counter()
    tasks = [multiclass_task(dataset, config)]
    tasks += [pair_task(dataset, pair, config) for pair in config.pairs]
    ratio_rows, cluster_rows, matrices, runs = [], [], {}, {}
    bar = tqdm(tasks, desc="elasticity", unit="population", disable=not progress)
    for task in bar:
        bar.set_postfix_str(task.name)
        run = train_task(task, config, out / "populations" / task.key, n_workers)
        runs[task.name] = str(run.path)
        ratio_rows += _ratio_rows(run, task, config)
        s_rel_all = np.asarray(run.records("final_s_rel"))[:, -1]  # (n_total, n, n)
        s_ker_all = np.asarray(run.records("final_s_ker"))[:, -1]
        for v, activation in enumerate(ACTIVATIONS):
            for r in range(config.n_seeds):
                k = v * config.n_seeds + r
                hidden = task.hidden[r]
                if r == 0:
                    matrices[f"{task.name}/{activation}"] = {
                        "s_rel": s_rel_all[k], "s_ker": s_ker_all[k], "classes": hidden}
                if task.pair is not None:
                    labels = _cluster_by_similarity(s_rel_all[k], s_ker_all[k], r)
                    for method, found in labels.items():
                        cluster_rows.append(_cluster_row(task.pair, r, activation, method,
                                                         found, hidden))
        if task.pair is not None:
            for r in range(config.n_seeds):
                probe_x = dataset.x_train[task.probes[r]]
                for method, found in _cluster_inputs(probe_x, config.pca_components,
                                                     r).items():
                    cluster_rows.append(_cluster_row(task.pair, r, "inputs", method, found,
                                                     task.hidden[r]))
    bar.close()
    return StudyResult(ratio=pd.DataFrame(ratio_rows), clustering=pd.DataFrame(cluster_rows),
                       matrices=matrices, config=asdict(config),
                       seconds=time.perf_counter() - start, runs=runs)


def population_member(run_dir: str | Path, k: int, per_class: int = 20, lr: float = 0.05,
                      seed: int = 0) -> dict:
    """Similarities at the final weights of model ``k`` of a population run (its multi-class
    logits; scalar = logit of the stepped example's class) on ``per_class`` training
    examples per class of the run's dataset. Returns the symmetrized matrices, the probes'
    classes and the two ratios."""
    from memlab.population.run import open_run

    run = open_run(run_dir)
    if not 0 <= k < run.n_models:
        raise ConfigError(f"--model {k} is out of range: {run_dir} has models "
                          f"0..{run.n_models - 1}")
    y = run.dataset.y_train
    probes = _per_class_sample(y, np.arange(run.dataset.n_classes), per_class,
                               np.random.default_rng([seed, 61]))
    sim = one_step_similarities(run.model(k), run.dataset.x_train[probes], y[probes], lr=lr)
    s_rel, s_ker = symmetrize(sim.s_rel), symmetrize(sim.s_ker)
    return {"s_rel": s_rel, "s_ker": s_ker, "classes": y[probes],
            "ratio_rel": intra_inter_ratio(s_rel, y[probes]),
            "ratio_ker": intra_inter_ratio(np.abs(s_ker), y[probes]),
            "model": run.config.model, "dataset": run.dataset.name}


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


def multiclass_task(dataset: Dataset, config: StudyConfig) -> ElasticityTask:
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


def pair_task(dataset: Dataset, pair: tuple[int, int], config: StudyConfig) -> ElasticityTask:
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
                                        lr=self.lr)
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


def train_task(task: ElasticityTask, config: StudyConfig, run_dir: Path, n_workers: int = 1):
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
        n_workers=n_workers, progress=False)


def _ratio_rows(run, task: ElasticityTask, config: StudyConfig) -> list[dict]:
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


# ---------------------------------------------------------------- clustering


def _cluster_by_similarity(s_rel: np.ndarray, s_ker: np.ndarray,
                           seed: int) -> dict[str, np.ndarray]:
    """Two clusters from a network's similarities (symmetrized, (n, n))."""
    spectral = SpectralClustering(2, affinity="precomputed", random_state=seed)
    return {
        "K-means on S_rel rows": KMeans(2, n_init=10, random_state=seed).fit_predict(s_rel),
        "spectral on S_rel": spectral.fit_predict(np.maximum(s_rel, 0)),
        "kernel K-means on S_ker": kernel_kmeans(s_ker, 2, seed=seed),
    }


def _cluster_inputs(x: np.ndarray, pca_components: int, seed: int) -> dict[str, np.ndarray]:
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


def symmetric_accuracy(clusters: np.ndarray, classes: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of cluster ids to classes (clusters are
    unlabeled). For two clusters: max(acc, 1 − acc), the paper's symmetric accuracy."""
    cluster_ids, cluster_index = np.unique(clusters, return_inverse=True)
    class_ids, class_index = np.unique(classes, return_inverse=True)
    counts = np.zeros((len(cluster_ids), len(class_ids)))
    np.add.at(counts, (cluster_index, class_index), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(clusters))


def kernel_kmeans(kernel: np.ndarray, n_clusters: int, n_init: int = 10, max_iter: int = 100,
                  seed: int = 0) -> np.ndarray:
    """K-means in the feature space of a (symmetric) kernel matrix (n, n) → labels (n,).

    Squared distance of point i to the mean of cluster c:
    K_ii − 2·mean_{j∈c} K_ij + mean_{j,l∈c} K_jl. Best of ``n_init`` random starts.
    """
    n = len(kernel)
    rng = np.random.default_rng(seed)
    best_labels, best_objective = None, np.inf
    for _ in range(n_init):
        labels = rng.integers(0, n_clusters, n)
        for _ in range(max_iter):
            one_hot = np.eye(n_clusters)[labels]  # (n, k)
            sizes = np.maximum(one_hot.sum(0), 1)
            to_mean = kernel @ one_hot / sizes  # (n, k) mean similarity to each cluster
            within = np.einsum("jc,jl,lc->c", one_hot, kernel, one_hot) / sizes**2
            distance = np.diag(kernel)[:, None] - 2 * to_mean + within[None]
            distance[:, one_hot.sum(0) == 0] = np.inf  # an emptied cluster stays empty
            new_labels = distance.argmin(1)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
        objective = distance[np.arange(n), labels].sum()
        if objective < best_objective:
            best_labels, best_objective = labels, objective
    return best_labels


# ---------------------------------------------------------------- summaries


def ratio_summary(ratio: pd.DataFrame) -> pd.DataFrame:
    """Mean ratio (over seeds) per task, activation and epoch, ReLU and linear side by side."""
    mean = ratio.groupby(["task", "epoch", "activation"])[["ratio_rel", "ratio_ker",
                                                          "train_acc"]].mean()
    wide = mean.unstack("activation")
    wide.columns = [f"{metric}_{activation}" for metric, activation in wide.columns]
    return wide.reset_index()


def clustering_summary(clustering: pd.DataFrame) -> pd.DataFrame:
    """Symmetric accuracy (mean over seeds) with one column per pair and a mean column."""
    table = clustering.groupby(["features", "method", "pair"])["symmetric_accuracy"].mean()
    wide = table.unstack("pair")
    wide["mean"] = wide.mean(axis=1)
    order = {"relu": 0, "linear": 1, "inputs": 2}
    wide = wide.reset_index()
    wide["_order"] = wide["features"].map(order)
    return wide.sort_values(["_order", "method"]).drop(columns="_order").reset_index(drop=True)


def headline(result: StudyResult) -> pd.DataFrame:
    """The issue's two questions, per task: final S_rel ratio (ReLU vs linear twin, mean ± sd
    over seeds) and, per pair, the best similarity-based clustering vs K-means on inputs."""
    final = result.ratio[result.ratio["epoch"] == result.ratio["epoch"].max()]
    stats = final.groupby(["task", "activation"])["ratio_rel"].agg(["mean", "std"]).unstack()
    rows = []
    for task in stats.index:
        rows.append({"task": task,
                     "ratio_relu": stats.loc[task, ("mean", "relu")],
                     "sd_relu": stats.loc[task, ("std", "relu")],
                     "ratio_linear": stats.loc[task, ("mean", "linear")],
                     "sd_linear": stats.loc[task, ("std", "linear")]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- report


def write_report(result: StudyResult, dataset_name: str, out_dir: str | Path,
                 command: str = "") -> list[str]:
    """report.html plus the figures as PNGs under ``out_dir/figures``; returns PNG paths."""
    from memlab.report import Report

    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    report = Report(f"Local elasticity on {dataset_name}")
    config = result.config
    report.text(
        f"One SGD step (η = {config['lr']}) from the same weights on each probe; S_rel and "
        f"S_ker symmetrized. MLP hidden={list(config['hidden'])}, ReLU vs its linear twin "
        f"(identity activation, same initial weights); {config['n_seeds']} seeds (replicates "
        f"of populations trained by memlab's engine, seed {config['seed']}); "
        f"{result.seconds:.0f} s. Scalar output: multi-class = logit of the stepped example's "
        "class; pair tasks = the single logit (positive = union of the two hidden classes)."
    )
    if command:
        report.code(command)
    pngs = []

    report.heading("Similarity matrices (ordered by class)")
    fig = heatmap_figure(result.matrices)
    pngs.append(_save_png(fig, out_dir / "figures" / f"elasticity_{dataset_name}_heatmaps.png"))
    report.figure(fig, "Symmetrized S_rel at the end of training, rows and columns grouped by "
                       "class (ticks mark class boundaries); colour clipped at the 98th "
                       "percentile off the diagonal.", fmt="png")

    report.heading("Intra-/inter-class ratio over training")
    fig = ratio_figure(result.ratio)
    pngs.append(_save_png(fig, out_dir / "figures" / f"elasticity_{dataset_name}_ratio.png"))
    report.figure(fig, "Mean S_rel within classes / between classes (mean over seeds; band: "
                       "min–max). Pair tasks: the two hidden positive classes.", fmt="png")
    report.table(headline(result), caption="Final-epoch S_rel ratio, mean and sd over seeds")
    report.table(ratio_summary(result.ratio), caption="Ratios and training accuracy by epoch")

    if len(result.clustering):
        report.heading("Clustering the hidden classes of the positive label")
        report.table(clustering_summary(result.clustering),
                     caption="Symmetric accuracy (0.5 = chance), mean over seeds")
    report.save(out_dir / "report.html")
    return pngs


def heatmap_figure(matrices: dict[str, dict[str, np.ndarray]],
                   activations: tuple[str, ...] = ACTIVATIONS):
    """S_rel heat maps: one row per task (the first two), one column per activation;
    ``matrices`` maps "task/activation" to {"s_rel": (n, n), "classes": (n,)}."""
    from memlab.report import plt

    tasks = list(dict.fromkeys(key.split("/")[0] for key in matrices))[:2]
    fig, axes = plt.subplots(len(tasks), len(activations),
                             figsize=(3.5 * len(activations), 3.4 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        for col, activation in enumerate(activations):
            entry = matrices[f"{task}/{activation}"]
            s, classes = entry["s_rel"], entry["classes"]
            off_diagonal = s[~np.eye(len(s), dtype=bool)]
            ax = axes[row, col]
            # 12 colour levels: easier to read, and the PNG stays small
            image = ax.imshow(s, cmap=plt.get_cmap("viridis", 12), vmin=0,
                              vmax=np.percentile(off_diagonal, 98), interpolation="nearest")
            starts = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
            ax.set_xticks(starts, [str(classes[i]) for i in starts], fontsize=7)
            ax.set_yticks(starts, [str(classes[i]) for i in starts], fontsize=7)
            ax.set_title(f"{task}, {activation}", fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def ratio_figure(ratio: pd.DataFrame):
    from memlab.report import plt

    tasks = list(dict.fromkeys(ratio["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.6 * len(tasks), 2.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for activation, style in zip(ACTIVATIONS, ("-", "--")):
            rows = ratio[(ratio["task"] == task) & (ratio["activation"] == activation)]
            by_epoch = rows.groupby("epoch")["ratio_rel"]
            epochs = by_epoch.mean().index
            ax.plot(epochs, by_epoch.mean(), style, marker="o", ms=3, label=activation)
            ax.fill_between(epochs, by_epoch.min(), by_epoch.max(), alpha=0.2)
        ax.axhline(1, color="grey", lw=0.5)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0, 0].set_ylabel("intra / inter S_rel")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _save_png(fig, path: Path) -> str:
    """A small PNG for the README: 80 dpi, reduced to a 64-colour palette."""
    from PIL import Image

    fig.savefig(path, format="png", dpi=80, bbox_inches="tight")
    Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)
    return str(path)
