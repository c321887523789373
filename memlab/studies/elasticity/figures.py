"""Figures and the report of the elasticity study, drawn from a Result's tables and summary
alone (so ``Result.load(out).figures()`` draws the same figures).

The figures are named after the dataset (``<data>_ratio``, ``<data>_heatmaps``), so that
``--figures DIR`` writes ``DIR/elasticity_<data>_{ratio,heatmaps}.png`` and the studies of
two datasets share one directory."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.report import COLORS, Report, style  # noqa: E402
from memlab.studies.base import Result  # noqa: E402
from memlab.studies.elasticity.tables import ACTIVATIONS, matrices_of  # noqa: E402

LINE = {"relu": (COLORS["blue"], "-"), "linear": (COLORS["orange"], "--")}


def heatmap_figure(result: Result) -> plt.Figure:
    """Symmetrized S_rel heat maps: one row per tabled task, one column per activation,
    rows and columns grouped by class (ticks at the class boundaries)."""
    table = result.tables["matrices"]
    tasks = list(dict.fromkeys(table["task"]))
    activations = list(dict.fromkeys(table["activation"]))
    with style():
        fig, axes = plt.subplots(len(tasks), len(activations),
                                 figsize=(3.2 * len(activations), 2.9 * len(tasks)),
                                 squeeze=False, constrained_layout=True)
        for row, task in enumerate(tasks):
            for col, activation in enumerate(activations):
                entry = matrices_of(table, task, activation)
                s, classes = entry["s_rel"], entry["classes"]
                off_diagonal = s[~np.eye(len(s), dtype=bool)]
                ax = axes[row, col]
                # 12 colour levels: the blocks read more easily (and the PNG stays small)
                image = ax.imshow(s, cmap=plt.get_cmap("viridis", 12), vmin=0,
                                  vmax=float(np.percentile(off_diagonal, 98)),
                                  interpolation="nearest")
                starts = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
                ax.set_xticks(starts, [str(classes[i]) for i in starts])
                ax.set_yticks(starts, [str(classes[i]) for i in starts])
                ax.set_xlabel("probe (grouped by class)")
                ax.set_ylabel("stepped example (grouped by class)")
                ax.set_title(f"{task}, {activation}")
                fig.colorbar(image, ax=ax, fraction=0.046, label="S_rel (symmetrized)")
    return fig


def ratio_figure(result: Result) -> plt.Figure:
    """The intra/inter S_rel ratio against the epoch, ReLU and its linear twin, one panel
    per task (line: mean over seeds; band: min–max)."""
    ratio = result.tables["ratio"]
    tasks = list(dict.fromkeys(ratio["task"]))
    with style():
        fig, axes = plt.subplots(1, len(tasks), figsize=(2.7 * len(tasks), 2.7),
                                 squeeze=False, constrained_layout=True)
        for ax, task in zip(axes[0], tasks):
            for activation in ACTIVATIONS:
                rows = ratio[(ratio["task"] == task) & (ratio["activation"] == activation)]
                by_epoch = rows.groupby("epoch")["ratio_rel"]
                epochs = by_epoch.mean().index
                color, dash = LINE[activation]
                ax.plot(epochs, by_epoch.mean(), dash, color=color, marker="o", ms=3,
                        label=activation)
                ax.fill_between(epochs, by_epoch.min(), by_epoch.max(), color=color,
                                alpha=0.2, lw=0)
            ax.axhline(1, color=COLORS["grey"], lw=0.5)
            ax.set_title(task)
            ax.set_xlabel("epoch")
            ax.set_ylabel("intra / inter S_rel")
        axes[0, 0].legend()
    return fig


def figure_name(result: Result) -> str:
    """The dataset part of the figures' names: ``mnist1d``, ``digits``, a file's stem."""
    return Path(str(result.summary.get("dataset", "member"))).stem


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    """``<data>_heatmaps`` and (for the study, not a member) ``<data>_ratio``."""
    name = figure_name(result)
    figures = {f"{name}_heatmaps": heatmap_figure(result)}
    if "ratio" in result.tables:
        figures[f"{name}_ratio"] = ratio_figure(result)
    return figures


# ---------------------------------------------------------------- captions from the data


def _interval(row: dict) -> str:
    if row.get("ci_low") is None or not np.isfinite(row.get("ci_low", np.nan)):
        return f"difference {row['difference']:+.3f}, {row['n']} seed(s): no interval"
    return (f"difference {row['difference']:+.3f}, 95% CI [{row['ci_low']:+.3f}, "
            f"{row['ci_high']:+.3f}] over {row['n']} seeds")


def ratio_caption(verdicts: pd.DataFrame) -> str:
    """One sentence per task: the final ratios and whether ReLU exceeds its linear twin."""
    parts = []
    for row in verdicts.to_dict(orient="records"):
        answer = row["verdict"] + (" (the interval contains 0)"
                                   if row["verdict"] == "cannot decide" else "")
        parts.append(f"{row['task']}: ReLU {row['ratio_relu']:.3f} vs linear "
                     f"{row['ratio_linear']:.3f} at epoch {row['epoch']}; the ReLU ratio "
                     f"exceeds its linear twin's: {answer} ({_interval(row)}).")
    counts = verdicts["verdict"].value_counts()
    parts.append(f"In all: yes on {counts.get('yes', 0)}, no on {counts.get('no', 0)}, "
                 f"cannot decide on {counts.get('cannot decide', 0)} of {len(verdicts)} tasks.")
    return " ".join(parts)


def clustering_caption(versus: pd.DataFrame) -> str:
    """How many similarity-based methods beat K-means on the raw inputs, from the intervals."""
    if versus.empty:
        return "No clustering experiment (no class pairs)."
    counts = versus["verdict"].value_counts()
    best = versus.loc[versus["accuracy"].idxmax()]
    return (f"Against K-means on the raw inputs (paired over pairs and seeds): "
            f"{counts.get('yes', 0)} of {len(versus)} methods beat it, "
            f"{counts.get('no', 0)} do not, and {counts.get('cannot decide', 0)} cannot be "
            f"told apart. Highest mean symmetric accuracy: {best['method']} on "
            f"{best['features']} features, {best['accuracy']:.3f} ({_interval(best)} vs "
            f"raw inputs).")


def build_report(result: Result) -> Report:
    s, c = result.summary, result.config
    p = c["population"]
    name = figure_name(result)
    figures = {key.removeprefix(f"{name}_"): fig for key, fig in draw_figures(result).items()}
    if s.get("mode") == "member":
        page = Report(f"Local elasticity of model {s['member']} of {s['run_dir']}")
        page.text(f"{s['model']} on {s['dataset']}, final weights, one SGD step (η = "
                  f"{p['lr']}) on each of {c['probe_per_class']} training examples per class: "
                  f"intra/inter S_rel ratio {s['ratio_rel']:.3f}, |S_ker| ratio "
                  f"{s['ratio_ker']:.3f} (above 1: a step moves its own class more).")
        page.figure(figures["heatmaps"], "Symmetrized S_rel, grouped by class; colour "
                    "clipped at the 98th percentile off the diagonal.", fmt="png")
        return page
    page = Report(f"Local elasticity on {s['dataset']}")
    page.text(
        f"One SGD step (η = {p['lr']}) from the same weights on each probe; S_rel and S_ker "
        f"symmetrized. MLP hidden={list(p['model_kwargs'].get('hidden', []))}, ReLU vs its "
        f"linear twin (identity activation, same initial weights); {p['n_models']} seeds "
        f"(replicates of populations trained by memlab's engine, seed {p['seed']}); "
        f"{s['seconds']:.0f} s. Scalar "
        "output: multi-class = logit of the stepped example's class; pair tasks = the single "
        "logit (positive = union of the two hidden classes).")
    verdicts = result.tables["verdicts"]
    page.heading("Does the ReLU network's ratio exceed its linear twin's?")
    page.text(ratio_caption(verdicts), note=True)
    page.table(verdicts, caption="Final-epoch S_rel ratio per task; difference = ReLU − "
               "linear, paired over seeds, Student-t 95% interval")
    page.heading("Intra-/inter-class ratio over training")
    page.figure(figures["ratio"], "Mean S_rel within classes / between classes (mean over "
                "seeds; band: min–max). Pair tasks: the two hidden positive classes.",
                fmt="png")
    page.table(result.tables["ratio_summary"], caption="Ratios and training accuracy by epoch "
               "(mean over seeds)")
    page.heading("Similarity matrices (ordered by class)")
    page.figure(figures["heatmaps"], "Symmetrized S_rel at the end of training (seed 0), rows "
                "and columns grouped by class; colour clipped at the 98th percentile off the "
                "diagonal.", fmt="png")
    if "clustering_summary" in result.tables:
        page.heading("Clustering the hidden classes of the positive label")
        page.text(clustering_caption(result.tables["clustering_vs_inputs"]), note=True)
        page.table(result.tables["clustering_summary"],
                   caption="Symmetric accuracy (0.5 = chance), mean over seeds")
        page.table(result.tables["clustering_vs_inputs"], caption="Each method − K-means on "
                   "raw inputs, paired over (pair, seed)")
    page.heading("Summary")
    page.code(json.dumps(s, indent=1))
    return page
