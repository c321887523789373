"""Figures and the report of the attribution study, drawn from a Result's tables and summary."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.report import Report  # noqa: E402
from memlab.studies.base import Result  # noqa: E402

REFERENCE = ("datamodels", "diff_in_means")


def _methods(result: Result) -> pd.DataFrame:
    table = result.tables["methods"].copy()
    return table.sort_values("lds", ascending=False, na_position="last")


def pareto_figure(result: Result) -> plt.Figure:
    """LDS (± 1 se) against compute: FLOPs where counted, else seconds."""
    table = _methods(result)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, column, label in ((axes[0], "seconds", "seconds (2-core CPU)"),
                              (axes[1], "flops", "FLOPs (torch ops counted)")):
        part = table[np.isfinite(table[column].astype(float))
                     & (table[column].astype(float) > 0)]
        for _, row in part.iterrows():
            marker = "s" if row["method"] in REFERENCE else "o"
            ax.errorbar(row[column], row["lds"], yerr=row["lds_se"], fmt=marker, capsize=2)
            ax.annotate(row["method"], (row[column], row["lds"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set(xscale="log", xlabel=label, ylabel="LDS (held-out models)")
        ax.axhline(0, color="0.6", lw=0.8, ls=":")
        ceiling = result.summary.get("ceiling")
        if ceiling:  # the ceiling of the plotted LDS (against one model): ceiling_single
            ax.axhline(ceiling["ceiling_single"], color="C3", lw=0.8, ls="--")
            ax.annotate("training-noise ceiling (LDS against one model)",
                        (0.01, ceiling["ceiling_single"]), xycoords=("axes fraction", "data"),
                        fontsize=7, color="C3", xytext=(0, -9), textcoords="offset points")
    population = result.summary["population"]
    axes[1].set_title(f"ground truth (population) training: "
                      f"{population.get('train_flops', float('nan')):.2g} FLOPs", fontsize=8)
    axes[0].set_title(f"ground truth training: {population.get('train_seconds')} s", fontsize=8)
    fig.suptitle("LDS against compute (squares: fitted on the population itself)")
    fig.tight_layout()
    return fig


def curve_figure(result: Result) -> plt.Figure:
    """Held-out LDS of datamodels and difference in means against fitting models."""
    curve = result.tables["models_curve"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for column, label in (("datamodels", "datamodels (ridge)"),
                          ("diff_means", "difference in means")):
        ax.errorbar(curve["n_models"], curve[f"{column}_lds"], yerr=curve[f"{column}_lds_se"],
                    fmt="o-", capsize=2, label=label)
    ax.set(xscale="log", xlabel="models fitted on", ylabel="LDS (held-out models)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    figures = {"pareto": pareto_figure(result)}
    if "models_curve" in result.tables and len(result.tables["models_curve"]):
        figures["models_curve"] = curve_figure(result)
    return figures


def _top_table(result: Result) -> pd.DataFrame:
    """One row per (target, method): its top training examples as 'index(label)'."""
    top = result.tables["top_examples"]
    rows = []
    for (target, method), part in top.groupby(["target", "method"], sort=False):
        part = part.sort_values("rank")
        rows.append({"target": target, "label": int(part["target_label"].iloc[0]),
                     "method": method,
                     "top training examples (index:label)": ", ".join(
                         f"{i}:{y}" for i, y in zip(part["train_index"], part["train_label"])),
                     "overlap with datamodels": np.nan})
    frame = pd.DataFrame(rows)
    truth = {r["target"]: set(r["top training examples (index:label)"].split(", "))
             for _, r in frame[frame.method == "datamodels"].iterrows()}
    frame["overlap with datamodels"] = [
        len(set(r["top training examples (index:label)"].split(", ")) & truth.get(r["target"],
                                                                                 set()))
        for _, r in frame.iterrows()]
    return frame


def build_report(result: Result) -> Report:
    s = result.summary
    pop = s["population"]
    page = Report(f"memlab attribute: data attribution on {pop['dataset']}")
    page.text(
        f"{pop['n_models']} models ({pop['config'].get('model')} "
        f"{pop['config'].get('model_kwargs')}, {100 * pop['config'].get('subset_fraction', 0):g}% "
        f"subsets, {pop['config'].get('epochs')} epochs) on {pop['n_train']} training examples; "
        f"test accuracy {pop['test_acc_mean']:.3f}. Output: {s['output']} "
        "(log p/(1-p)); positive score = the training example raises the target's output. "
        f"LDS: Spearman over {s['n_heldout_models']} held-out models, mean over "
        f"{s['n_targets']} test targets, se from a bootstrap over targets and models. "
        f"Dampings chosen on {s['n_validation_models']} validation models; datamodels fitted "
        f"on {s['n_fit_models']} models.")
    columns = ["method", "lds", "lds_se", "lds_se_targets", "lds_replicates",
               "lds_replicates_se", "ceiling", "ceiling_ratio", "ceiling_ratio_se", "seconds",
               "flops", "n_models_used", "damping", "damping_edge"]
    table = _methods(result)
    page.heading("LDS of every method")
    page.table(table[[c for c in columns if c in table]], caption="held-out LDS ± se")
    ceiling = s.get("ceiling")
    if ceiling:
        page.text(
            f"Ceiling: the {ceiling['n_models']} held-out masks were trained a second time "
            "with independent seeds (initialization, order, augmentation, dropout). Per "
            "target, r is the Spearman correlation over masks of the two replicates' "
            "outputs; the ceiling is the mean over targets of sqrt(2r/(1+r)) (Spearman-"
            f"Brown), {ceiling['ceiling']:.3f} ± {ceiling['ceiling_se']:.3f}: the LDS "
            "the perfect attribution would reach against the mean of the two replicates, "
            "which training noise alone keeps below 1. lds_replicates is each method's "
            "LDS against that mean; ceiling_ratio = lds_replicates / ceiling, the fraction "
            "of what is reachable. The plain lds (against one model) has the ceiling "
            f"mean sqrt(r) = {ceiling['ceiling_single']:.3f} (mean r = "
            f"{ceiling['reliability']:.3f}).")
    for edge in s.get("damping_edges") or ():
        page.text(f"Warning: {edge['warning']}.")
    figures = draw_figures(result)
    page.figure(figures["pareto"], caption="LDS against compute (seconds and counted FLOPs)")
    if "models_curve" in figures:
        page.heading("How many models the ground truth needs")
        page.figure(figures["models_curve"], caption="held-out LDS against fitting models")
        page.table(result.tables["models_curve"], caption="models curve")
    page.heading("Top training examples for a few test examples")
    page.table(_top_table(result), caption="top 5 by each method beside datamodels")
    if s.get("self_influence"):
        page.heading("Self-influence against memorization")
        rows = [{"score": k, **v} for k, v in s["self_influence"].items()]
        page.table(pd.DataFrame(rows), caption="Spearman with memorization; AUROC of finding "
                   "planted mislabeled examples (low self-influence first) where planted")
    if s.get("removal"):
        page.heading("Top-k removal")
        rows = [{"method": k, **v} for k, v in s["removal"].items()]
        page.table(pd.DataFrame(rows), caption="change of the target's log-odds when the "
                   "method's top-k are removed, minus removing k random ones (paired seeds)")
    return page
