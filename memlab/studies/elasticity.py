"""The local-elasticity study (He & Su 2020; SCIENCE.md §4): ratio over training, clustering.

Two experiments on one dataset, each for the ReLU MLP and its *linear twin* (the same MLP with
the identity activation) trained from the same initial seed:

1. **Ratio over training.** A C-class MLP is trained with plain minibatch SGD; at chosen
   epochs (checkpoints) we compute S_rel and S_ker (one SGD step from the checkpoint on each
   of ``probe_per_class`` training examples per class, scalar = logit of the stepped
   example's class) and record the intra-/inter-class mean ratio of the symmetrized S_rel
   (and of |S_ker|: the signed kernel's inter-class mean can sit near zero).
2. **Clustering.** For each class pair (a, b), a one-logit MLP learns the binary task
   "a or b" (positive, 1) against the other classes (negative, 0; as many as positives,
   drawn at random). After training, S_rel and S_ker on the positives are clustered into two
   groups — K-means on the rows of S_rel, spectral clustering with S_rel as affinity, kernel
   K-means on S_ker — and scored by symmetric accuracy against the hidden split a/b. Baselines:
   K-means on the raw inputs and on their leading principal components. The same two-class
   ratio (within a, within b vs across) is tracked over training.

All rows are one step from the same weights (the paper instead steps along its SGD pass;
see docs/elasticity.md). Training is a plain loop here: one or two small models per task.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.decomposition import PCA
from torch import nn
from tqdm.auto import tqdm

from memlab.data import Dataset
from memlab.errors import ConfigError
from memlab.measures.elasticity import (
    intra_inter_ratio,
    one_step_similarities,
    symmetrize,
)
from memlab.models import build_model

ACTIVATIONS = ("relu", "linear")


@dataclass
class StudyConfig:
    """Settings of the study; the defaults run on a laptop CPU in a few minutes."""

    hidden: tuple[int, ...] = (100,)  # one hidden layer: the paper's two-layer networks
    checkpoints: tuple[int, ...] = (0, 1, 2, 5, 10, 20)  # epochs; training stops at the last
    lr: float = 0.05  # SGD learning rate for training, and η of the measured step
    batch_size: int = 32
    probe_per_class: int = 20  # ratio experiment: probes per class
    pairs: tuple[tuple[int, int], ...] = ((3, 5), (4, 9), (5, 8), (7, 9))
    cluster_per_class: int = 150  # clustering: positives per hidden class (at most)
    pca_components: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)

    def validate(self, dataset: Dataset) -> None:
        if not self.checkpoints or sorted(set(self.checkpoints)) != list(self.checkpoints) \
                or self.checkpoints[0] < 0:
            raise ConfigError(f"checkpoints must be increasing epochs ≥ 0, got {self.checkpoints}")
        if self.lr <= 0 or self.batch_size < 1:
            raise ConfigError(f"need lr > 0 and batch size ≥ 1, got {self.lr}, {self.batch_size}")
        if self.probe_per_class < 2 or self.cluster_per_class < 2:
            raise ConfigError("probe_per_class and cluster_per_class must be at least 2")
        if not self.seeds:
            raise ConfigError("give at least one seed")
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
    activation (seed 0), with the class of each row, for the heat maps."""

    ratio: pd.DataFrame
    clustering: pd.DataFrame
    matrices: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0


def run_study(dataset: Dataset, config: StudyConfig, progress: bool = True) -> StudyResult:
    """Both experiments on ``dataset`` (training split only)."""
    config.validate(dataset)
    start = time.perf_counter()
    jobs = [("multiclass", None, seed) for seed in config.seeds]
    jobs += [("pair", pair, seed) for pair in config.pairs for seed in config.seeds]
    ratio_rows, cluster_rows, matrices = [], [], {}
    bar = tqdm(total=len(jobs) * len(ACTIVATIONS), desc="elasticity", unit="model",
               disable=not progress)
    for kind, pair, seed in jobs:
        if kind == "multiclass":
            task = _multiclass_task(dataset, config.probe_per_class, seed)
        else:
            task = _pair_task(dataset, pair, config.cluster_per_class, seed)
        for activation in ACTIVATIONS:
            bar.set_postfix_str(f"{task.name} {activation} seed {seed}")
            model = _train_and_measure(task, activation, config, seed, ratio_rows)
            final = one_step_similarities(model, task.probe_x, task.probe_y, lr=config.lr)
            s_rel, s_ker = symmetrize(final.s_rel), symmetrize(final.s_ker)
            if seed == config.seeds[0]:
                matrices[f"{task.name}/{activation}"] = {
                    "s_rel": s_rel, "s_ker": s_ker, "classes": task.probe_hidden}
            if kind == "pair":
                for method, labels in _cluster_by_similarity(s_rel, s_ker, seed).items():
                    cluster_rows.append(_cluster_row(pair, seed, activation, method, labels,
                                                     task.probe_hidden))
            bar.update()
        if kind == "pair":
            for method, labels in _cluster_inputs(task.probe_x, config.pca_components,
                                                  seed).items():
                cluster_rows.append(_cluster_row(pair, seed, "inputs", method, labels,
                                                 task.probe_hidden))
    bar.close()
    return StudyResult(ratio=pd.DataFrame(ratio_rows), clustering=pd.DataFrame(cluster_rows),
                       matrices=matrices, config=asdict(config),
                       seconds=time.perf_counter() - start)


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
    task = _multiclass_task(run.dataset, per_class, seed)
    sim = one_step_similarities(run.model(k), task.probe_x, task.probe_y, lr=lr)
    s_rel, s_ker = symmetrize(sim.s_rel), symmetrize(sim.s_ker)
    return {"s_rel": s_rel, "s_ker": s_ker, "classes": task.probe_hidden,
            "ratio_rel": intra_inter_ratio(s_rel, task.probe_hidden),
            "ratio_ker": intra_inter_ratio(np.abs(s_ker), task.probe_hidden),
            "model": run.config.model, "dataset": run.dataset.name}


# ---------------------------------------------------------------- tasks


@dataclass
class _Task:
    """Training data (x, y) and the probes whose similarities are measured.

    probe_y: the labels the step uses; probe_hidden: the classes the ratio and clustering
    are scored against (the original classes; for a pair task, a or b)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    n_outputs: int
    probe_x: np.ndarray
    probe_y: np.ndarray
    probe_hidden: np.ndarray


def _multiclass_task(dataset: Dataset, per_class: int, seed: int) -> _Task:
    rng = np.random.default_rng([seed, 61])
    probes = _per_class_sample(dataset.y_train, np.arange(dataset.n_classes), per_class, rng)
    return _Task(name=f"{dataset.n_classes}-class", x=dataset.x_train, y=dataset.y_train,
                 n_outputs=dataset.n_classes, probe_x=dataset.x_train[probes],
                 probe_y=dataset.y_train[probes], probe_hidden=dataset.y_train[probes])


def _pair_task(dataset: Dataset, pair: tuple[int, int], per_class: int, seed: int) -> _Task:
    rng = np.random.default_rng([seed, 62, *pair])
    y = dataset.y_train
    positive = np.flatnonzero(np.isin(y, pair))
    negative_pool = np.flatnonzero(~np.isin(y, pair))
    negative = rng.choice(negative_pool, min(len(positive), len(negative_pool)), replace=False)
    train = np.concatenate([positive, negative])
    probes = _per_class_sample(y, np.array(pair), per_class, rng)
    return _Task(name=f"{pair[0]}+{pair[1]} vs rest", x=dataset.x_train[train],
                 y=np.isin(y[train], pair).astype(np.int64), n_outputs=1,
                 probe_x=dataset.x_train[probes], probe_y=np.ones(len(probes), np.int64),
                 probe_hidden=y[probes])


def _per_class_sample(y: np.ndarray, classes: np.ndarray, per_class: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``per_class`` random examples of each class, grouped by class."""
    chosen = []
    for cls in classes:
        members = np.flatnonzero(y == cls)
        chosen.append(np.sort(rng.choice(members, min(per_class, len(members)), replace=False)))
    return np.concatenate(chosen)


# ---------------------------------------------------------------- training


def _train_and_measure(task: _Task, activation: str, config: StudyConfig, seed: int,
                       ratio_rows: list[dict]) -> nn.Module:
    """Plain minibatch SGD; at every checkpoint epoch, append the intra/inter ratios."""
    torch.manual_seed(seed)  # same seed → the ReLU net and its linear twin start alike
    model = build_model("mlp", task.x.shape[1:], task.n_outputs, hidden=config.hidden,
                        activation=activation)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    x, y = torch.as_tensor(task.x), torch.as_tensor(task.y)
    order_rng = torch.Generator().manual_seed(seed)
    for epoch in range(config.checkpoints[-1] + 1):
        if epoch > 0:
            model.train()
            for batch in torch.randperm(len(x), generator=order_rng).split(config.batch_size):
                optimizer.zero_grad()
                _task_loss(model(x[batch]), y[batch], task.n_outputs).backward()
                optimizer.step()
        if epoch in config.checkpoints:
            sim = one_step_similarities(model, task.probe_x, task.probe_y, lr=config.lr)
            ratio_rows.append({
                "task": task.name, "activation": activation, "seed": seed, "epoch": epoch,
                "ratio_rel": intra_inter_ratio(symmetrize(sim.s_rel), task.probe_hidden),
                # |S_ker|: signed kernel means can sit near 0 and make a ratio meaningless.
                "ratio_ker": intra_inter_ratio(np.abs(symmetrize(sim.s_ker)), task.probe_hidden),
                "train_acc": _accuracy(model, x, y, task.n_outputs),
            })
    return model


def _task_loss(logits: torch.Tensor, y: torch.Tensor, n_outputs: int) -> torch.Tensor:
    if n_outputs == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return F.cross_entropy(logits, y)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_outputs: int) -> float:
    model.eval()
    logits = model(x)
    predicted = (logits[:, 0] > 0).long() if n_outputs == 1 else logits.argmax(1)
    return float((predicted == y).float().mean())


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
        f"(identity activation, same initial seed); seeds {list(config['seeds'])}; "
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
