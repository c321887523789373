"""Figures and the report of the elasticity study, drawn from a Result's tables and summary
alone (so ``Result.load(out).figures()`` draws the same figures). The report opens with its
finding, sentences computed from the verdict tables (:func:`elasticity_finding`), each
saying "cannot decide" where the interval holds the reference.

The figures are named after the dataset (``<data>_ratio``, ``<data>_heatmaps``), so that
``--figures DIR`` writes ``DIR/elasticity_<data>_{ratio,heatmaps}.png`` and the studies of
two datasets share one directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.measures.stats import NO, UNDECIDED, YES  # noqa: E402
from memlab.report import COLORS, Report, style  # noqa: E402
from memlab.report.numbers import decimals_for, fmt, fmt_interval  # noqa: E402
from memlab.studies.base import Result, command_line  # noqa: E402
from memlab.studies.elasticity.config import ElasticityConfig  # noqa: E402
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


def _clustering_tally(versus: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(verdict counts, the most accurate method's row) of the clustering comparison with
    K-means on the raw inputs: what the caption and the finding both report."""
    return versus["verdict"].value_counts(), versus.loc[versus["accuracy"].idxmax()]


def clustering_caption(versus: pd.DataFrame) -> str:
    """How many similarity-based methods beat K-means on the raw inputs, from the intervals."""
    if versus.empty:
        return "No clustering experiment (no class pairs)."
    counts, best = _clustering_tally(versus)
    return (f"Against K-means on the raw inputs (paired over pairs and seeds): "
            f"{counts.get(YES, 0)} of {len(versus)} methods beat it, "
            f"{counts.get(NO, 0)} do not, and {counts.get(UNDECIDED, 0)} cannot be "
            f"told apart. Highest mean symmetric accuracy: {best['method']} on "
            f"{best['features']} features, {best['accuracy']:.3f} ({_interval(best)} vs "
            f"raw inputs).")


# ---------------------------------------------------------------- the finding


def ratio_sentence(verdicts: pd.DataFrame) -> str:
    """Does the ReLU network's intra/inter ratio exceed its linear twin's? The count of
    tasks per verdict (beside what 95% intervals give by chance), and the first task's
    numbers."""
    if verdicts.empty:
        return "No task was measured: cannot decide whether ReLU is more locally elastic."
    counts = verdicts["verdict"].value_counts()
    total = len(verdicts)
    first = verdicts.iloc[0]
    seeds = int(verdicts["n"].max())
    difference = fmt_interval(first["difference"], first["ci_low"], first["ci_high"])
    # the ratios with as many decimals as their difference's interval supports
    places = (decimals_for((first["ci_high"] - first["ci_low"]) / 2)
              if first["ci_low"] is not None and np.isfinite(first["ci_low"]) else 3)
    sentence = (f"The ReLU network's intra/inter S_rel ratio exceeds its linear twin's on "
                f"{counts.get(YES, 0)} of {total} tasks, not on {counts.get(NO, 0)}, and "
                f"cannot decide on {counts.get(UNDECIDED, 0)} (paired over {seeds} seeds, "
                f"Student-t 95%; by chance an interval misses 0 on about "
                f"{fmt(0.05 * total, 2)} task(s)). {first['task']}: ReLU "
                f"{first['ratio_relu']:.{places}f} vs linear "
                f"{first['ratio_linear']:.{places}f}, "
                f"difference {difference}: {first['verdict']}.")
    if seeds < 2:
        sentence += " One seed gives no interval: train more replicates (--models 3 or more)."
    return sentence


def clustering_sentence(versus: pd.DataFrame) -> str:
    """How many similarity-based clusterings beat K-means on the raw inputs, from their
    paired intervals, and the best one."""
    if versus.empty:
        return ""
    counts, best = _clustering_tally(versus)
    return (f"Clustering a label's two hidden classes: {counts.get(YES, 0)} of {len(versus)} "
            f"similarity-based methods beat K-means on the raw inputs, "
            f"{counts.get(NO, 0)} do not, and {counts.get(UNDECIDED, 0)} cannot decide (paired "
            f"over pairs and seeds); best: {best['method']} on {best['features']} features, "
            f"symmetric accuracy {fmt(best['accuracy'], 3)} (vs raw inputs "
            f"{fmt_interval(best['difference'], best['ci_low'], best['ci_high'])}).")


def member_sentence(summary: dict[str, Any]) -> str:
    """One model's intra/inter S_rel ratio with its bootstrap interval over probes, and
    whether it lies above 1."""
    low, high = summary.get("ratio_rel_low"), summary.get("ratio_rel_high")
    verdict = summary.get("ratio_rel_verdict", UNDECIDED)
    words = {YES: "above 1: a step moves examples of its own class more (locally elastic)",
             NO: "below 1: a step moves other classes more",
             UNDECIDED: "cannot decide whether it is above 1"}
    return (f"Model {summary['member']}'s intra/inter S_rel ratio is "
            f"{fmt_interval(summary['ratio_rel'], low, high)} (95% bootstrap over probes): "
            f"{words.get(verdict, verdict)}.")


def elasticity_finding(result: Result) -> list[str]:
    """The report's finding, from the summary and the verdict tables."""
    if result.summary.get("mode") == "member":
        return [member_sentence(result.summary)]
    sentences = [ratio_sentence(result.tables["verdicts"])]
    if "clustering_vs_inputs" in result.tables:
        sentences.append(clustering_sentence(result.tables["clustering_vs_inputs"]))
    return [s for s in sentences if s]


def _reproduce(result: Result) -> str | None:
    return command_line("elasticity", ElasticityConfig.from_dict(result.config), result.out)


def build_report(result: Result) -> Report:
    """The finding, the verdicts, the ratio over training, the heat maps; tables rounded
    to their intervals, secondary tables collapsed, Reproduce last."""
    s, c = result.summary, result.config
    p = c["population"]
    name = figure_name(result)
    figures = {key.removeprefix(f"{name}_"): fig for key, fig in draw_figures(result).items()}
    command = _reproduce(result)
    if s.get("mode") == "member":
        page = Report(f"Local elasticity of model {s['member']} of {s['run_dir']}")
        page.finding(*elasticity_finding(result))
        page.text(f"{s['model']} on {s['dataset']}, final weights, one SGD step (η = "
                  f"{p['lr']}) on each of {c['probe_per_class']} training examples per class: "
                  f"intra/inter S_rel ratio {fmt(s['ratio_rel'], 3)}, |S_ker| ratio "
                  f"{fmt(s['ratio_ker'], 3)} (above 1: a step moves its own class more).")
        page.heading("Similarity matrix")
        page.figure(figures["heatmaps"], "Symmetrized S_rel, grouped by class; colour "
                    "clipped at the 98th percentile off the diagonal. Look for bright blocks "
                    "on the diagonal: steps that move their own class.", fmt="png")
        if command is not None:
            page.heading("Reproduce", collapsed=True)
            page.code(command)
        return page
    page = Report(f"Local elasticity on {s['dataset']}")
    page.finding(*elasticity_finding(result))
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
    page.table(verdicts.drop(columns=["epoch"], errors="ignore"),
               intervals={"difference": ("ci_low", "ci_high")},
               caption="Final-epoch S_rel ratio per task (mean, sd over seeds); difference = "
                       "ReLU − linear [paired Student-t 95% interval]")
    page.heading("Intra-/inter-class ratio over training")
    page.figure(figures["ratio"], "Mean S_rel within classes / between classes (mean over "
                "seeds; band: min–max). Pair tasks: the two hidden positive classes. Look for "
                "the solid ReLU line rising above the dashed linear twin as training goes on.",
                fmt="png")
    page.heading("Ratios by epoch", collapsed=True)
    page.table(result.tables["ratio_summary"], caption="Ratios and training accuracy by epoch "
               "(mean over seeds)")
    page.heading("Similarity matrices (ordered by class)")
    page.figure(figures["heatmaps"], "Symmetrized S_rel at the end of training (seed 0), rows "
                "and columns grouped by class; colour clipped at the 98th percentile off the "
                "diagonal. Look for bright diagonal blocks: steps that move their own class.",
                fmt="png")
    if "clustering_summary" in result.tables:
        page.heading("Clustering the hidden classes of the positive label")
        page.text(clustering_caption(result.tables["clustering_vs_inputs"]), note=True)
        page.table(result.tables["clustering_vs_inputs"],
                   intervals={"difference": ("ci_low", "ci_high")},
                   caption="Each method − K-means on raw inputs [paired 95% interval over "
                           "(pair, seed)]")
        page.heading("Symmetric accuracy per pair", collapsed=True)
        page.table(result.tables["clustering_summary"],
                   caption="Symmetric accuracy (0.5 = chance), mean over seeds")
    if command is not None:
        page.heading("Reproduce", collapsed=True)
        page.code(command)
    return page
