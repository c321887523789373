"""The elasticity study's tables and their summaries: the ratio over training, the
similarity matrices, the clustering, and the verdicts from paired intervals over seeds
(:func:`memlab.measures.stats.paired_interval`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from memlab.measures.elasticity import symmetric_accuracy
from memlab.measures.stats import paired_interval

ACTIVATIONS = ("relu", "linear")
BASELINE_METHOD = "K-means on raw inputs"


def ratio_rows(run, name: str, epochs: tuple[int, ...], n_seeds: int) -> list[dict]:
    """One row per activation, seed and measured epoch of a population's probe records."""
    rows = []
    records = {key: np.asarray(run.records(f"elasticity_{key}"))
               for key in ("ratio_rel", "ratio_ker", "train_acc")}
    for v, activation in enumerate(ACTIVATIONS):
        for r in range(n_seeds):
            k = v * n_seeds + r
            for c, epoch in enumerate(epochs):
                rows.append({"task": name, "activation": activation, "seed": r,
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


def cluster_row(pair, seed, features, method, labels, hidden) -> dict:
    return {"pair": f"{pair[0]}/{pair[1]}", "seed": seed, "features": features,
            "method": method, "symmetric_accuracy": symmetric_accuracy(labels, hidden)}


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
