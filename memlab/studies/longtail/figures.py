"""Figures and the report of the long-tail study, drawn from a Result's tables and summary
alone (so ``Result.load(out).figures()`` draws the same figures)."""

from __future__ import annotations

import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.data.longtail import TEST_BUCKETS, TRAIN_BUCKETS  # noqa: E402
from memlab.report import COLORS, Report, style  # noqa: E402
from memlab.studies.base import Result  # noqa: E402
from memlab.studies.longtail.config import BASELINE  # noqa: E402


def _knob_colors(knobs: list[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10" if len(knobs) <= 10 else "tab20")
    return {knob: ("black" if knob == BASELINE else palette(i % palette.N))
            for i, knob in enumerate(knobs)}


def plot_memorization(mem: pd.DataFrame):
    """Mean memorization score by training-frequency bucket, one panel per prior."""
    priors = list(dict.fromkeys(mem.prior))
    knobs = list(dict.fromkeys(mem.knob))
    colors = _knob_colors(knobs)
    fig, axes = plt.subplots(1, len(priors), figsize=(3.4 * len(priors), 3), sharey=True,
                             squeeze=False)
    width = 0.8 / len(knobs)
    for ax, prior in zip(axes[0], priors):
        for i, knob in enumerate(knobs):
            rows = mem[(mem.prior == prior) & (mem.knob == knob)]
            x = np.arange(len(rows)) + (i - (len(knobs) - 1) / 2) * width
            ax.bar(x, rows.mem, width, yerr=rows.mem_se, color=colors[knob], label=knob)
        ax.set_xticks(range(len(TRAIN_BUCKETS)), TRAIN_BUCKETS)
        ax.set_title(prior)
    fig.supxlabel("how often the subpopulation occurs in the whole training set", fontsize=9)
    axes[0][0].set_ylabel("mean memorization score")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def plot_accuracy(acc: pd.DataFrame):
    """Test accuracy by the test example's training frequency, one line per knob."""
    priors = list(dict.fromkeys(acc.prior))
    knobs = list(dict.fromkeys(acc.knob))
    colors = _knob_colors(knobs)
    fig, axes = plt.subplots(1, len(priors), figsize=(3.4 * len(priors), 3), sharey=True,
                             squeeze=False)
    for ax, prior in zip(axes[0], priors):
        for knob in knobs:
            rows = acc[(acc.prior == prior) & (acc.knob == knob)]
            # A bucket that few models have (e.g. "seen once" on the control) is noise.
            shown = rows.accuracy.where(rows.models_with_bucket >= 0.5)
            ax.errorbar(range(len(rows)), shown, yerr=rows.accuracy_se, marker="o",
                        color=colors[knob], label=knob, lw=2 if knob == BASELINE else 1)
        ax.set_xticks(range(len(TEST_BUCKETS)), TEST_BUCKETS)
        ax.set_title(prior)
    fig.supxlabel("how often the model saw the test example's subpopulation", fontsize=9)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def plot_cost(cost: pd.DataFrame):
    """Extra test error (share of all test draws) by bucket, per knob, one panel per prior."""
    priors = list(dict.fromkeys(cost.prior))
    knobs = list(dict.fromkeys(cost.knob))
    colors = _knob_colors([BASELINE, *knobs])
    fig, axes = plt.subplots(1, len(priors), figsize=(3.4 * len(priors), 3), sharey=True,
                             squeeze=False)
    width = 0.8 / len(knobs)
    for ax, prior in zip(axes[0], priors):
        for i, knob in enumerate(knobs):
            row = cost[(cost.prior == prior) & (cost.knob == knob)].iloc[0]
            x = np.arange(len(TEST_BUCKETS)) + (i - (len(knobs) - 1) / 2) * width
            ax.bar(x, [row[f"extra_error_{b}"] for b in TEST_BUCKETS], width,
                   yerr=[row[f"extra_error_{b}_se"] for b in TEST_BUCKETS],
                   color=colors[knob], label=knob)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xticks(range(len(TEST_BUCKETS)), TEST_BUCKETS)
        ax.set_title(prior)
    fig.supxlabel("how often the model saw the test example's subpopulation", fontsize=9)
    axes[0][0].set_ylabel("extra test error vs baseline\n(share of all test draws)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def plot_theory(cost: pd.DataFrame):
    """Measured extra error on singleton subpopulations against τ₁ × extra unfit singletons."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    markers = dict(zip(dict.fromkeys(cost.prior), "osD^vP*X"))
    colors = _knob_colors([BASELINE, *dict.fromkeys(cost.knob)])
    for _, row in cost.iterrows():
        ax.errorbar(row.theory, row.extra_error_1, yerr=row.extra_error_1_se,
                    marker=markers[row.prior], color=colors[row.knob], ls="none")
    top = max(cost.theory.max(), cost.extra_error_1.max(), 1e-3) * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=0.8, label="measured = theory")
    for prior, marker in markers.items():
        ax.plot([], [], marker=marker, color="grey", ls="none", label=prior)
    for knob, color in colors.items():
        if knob != BASELINE:
            ax.plot([], [], marker="s", color=color, ls="none", label=knob)
    ax.set_xlabel("theory: τ₁ × extra unfitted singletons")
    ax.set_ylabel("measured extra test error\non singleton subpopulations")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig




def plot_tail(subpopulations: pd.DataFrame):
    """The planted long tail: each subpopulation's training count against its frequency
    rank (log–log), beside the expected count n·p_j; one panel per prior."""
    priors = list(dict.fromkeys(subpopulations.prior))
    fig, axes = plt.subplots(1, len(priors), figsize=(3.0 * len(priors), 2.8), sharey=True,
                             squeeze=False)
    for ax, prior in zip(axes[0], priors):
        rows = subpopulations[subpopulations.prior == prior]
        seen = rows.train_count > 0
        ax.scatter(rows["rank"][seen], rows.train_count[seen], s=5, color=COLORS["blue"],
                   label="training count", lw=0)
        ax.plot(rows["rank"], rows.expected_train_count, color=COLORS["orange"], lw=1.2,
                label="planted: n · p_j")
        ax.axhline(1, color=COLORS["grey"], lw=0.5, ls=":")
        ax.set(xscale="log", yscale="log", title=prior, xlabel="frequency rank j")
        ax.set_ylabel("examples in the training set")
    axes[0][0].legend(loc="lower left")
    fig.tight_layout()
    return fig


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    t = result.tables
    with style():
        figures = {"tail": plot_tail(t["subpopulations"]),
                   "memorization": plot_memorization(t["memorization"]),
                   "accuracy": plot_accuracy(t["accuracy"])}
        if len(t["cost"]):
            figures["cost"] = plot_cost(t["cost"])
            figures["theory"] = plot_theory(t["cost"])
    return figures


# ---------------------------------------------------------------- captions from the data


def memorization_caption(mem: pd.DataFrame, n_classes: int) -> str:
    """The baseline's memorization of singletons against frequent examples, and against the
    1 − 1/C a model that fits every training example would have (known by construction)."""
    base = mem[mem.knob == BASELINE].set_index(["prior", "bucket"]).mem
    parts = []
    for prior in dict.fromkeys(mem.prior):
        if (prior, "1") in base.index and np.isfinite(base[prior, "1"]):
            parts.append(f"{prior}: {base[prior, '1']:.2f} on singletons vs "
                         f"{base.get((prior, '4+'), np.nan):.2f} on subpopulations with 4+")
    return (f"Baseline mean memorization by bucket — {'; '.join(parts) or 'no singletons'}. "
            f"A model that fits every training example and is at chance (1/{n_classes}) on "
            f"unseen subpopulations has memorization {1 - 1 / n_classes:.2f} on singletons.")


def accuracy_caption(acc: pd.DataFrame, n_classes: int) -> str:
    """Accuracy on never-seen subpopulations against chance, and the largest drops."""
    unseen = acc[acc.bucket == "0"]
    low, high = unseen.accuracy.min(), unseen.accuracy.max()
    drops = acc[(acc.knob != BASELINE) & (acc.bucket == "1")]
    text = (f"On subpopulations a model never saw, test accuracy is {low:.3f}–{high:.3f} "
            f"across priors and knobs, against 1/{n_classes} = {1 / n_classes:.3f} by "
            "construction (labels are independent of the clusters).")
    if len(drops):
        worst = drops.loc[drops["drop"].idxmax()]
        text += (f" The largest drop on subpopulations seen once: {worst.knob} on "
                 f"{worst.prior}, −{worst['drop']:.3f} ± {worst.drop_se:.3f}.")
    return text


def findings_caption(findings: pd.DataFrame) -> str:
    counts = findings["verdict"].value_counts()
    return (f"{counts.get('yes', 0)} of {len(findings)} claims hold by more than the noise, "
            f"{counts.get('no', 0)} do not, {counts.get('cannot decide', 0)} cannot be "
            "decided from these populations (95% intervals).")


def build_report(result: Result) -> Report:
    config, summary, tables = result.config, result.summary, result.tables
    recipe = config["population"]
    figures = draw_figures(result)
    page = Report("Why memorization pays: the long-tail laboratory (Feldman 2020)")
    page.text(
        f"Mixtures of {config['n_subpopulations']} subpopulations (Zipf exponents "
        f"{', '.join(f'{s:g}' for s in config['exponents'])}) and a uniform control of "
        f"{config['control_subpopulations']}; {config['n_train']} training / "
        f"{config['n_test']} test draws, {config['n_features']} features, "
        f"{config['n_classes']} classes, cluster spread {config['spread']}. Each population: "
        f"{recipe['n_models']} MLPs {list(recipe['model_kwargs']['hidden'])}, each on a "
        f"random {summary['subset_size']} training examples, {recipe['optimizer'].upper()} lr "
        f"{recipe['lr']}, batch {recipe['batch_size']}, {recipe['epochs']} epochs. "
        f"{summary['seconds']:.0f} s in all.")
    page.heading("Findings")
    page.text(findings_caption(tables["findings"]), note=True)
    page.table(tables["findings"], caption="The issue's claims, measured, with verdicts")
    page.heading("The planted tail")
    page.figure(figures["tail"], caption="Training count of each subpopulation against its "
                "frequency rank; the line is the planted frequency times n (subpopulations "
                "with no training example are not drawn).", fmt="png")
    page.heading("Memorization")
    page.text(memorization_caption(tables["memorization"], config["n_classes"]), note=True)
    page.figure(figures["memorization"], caption="Mean memorization score (± s.e.) by how "
                "often the example's subpopulation occurs in the training set.", fmt="png")
    page.table(tables["memorization"], caption="Memorization by bucket")
    page.heading("Accuracy")
    page.text(accuracy_caption(tables["accuracy"], config["n_classes"]), note=True)
    page.figure(figures["accuracy"], caption="Test accuracy by how many times the model saw "
                "the test example's subpopulation (buckets that fewer than half of the models "
                "have are not drawn).", fmt="png")
    page.table(tables["accuracy"], caption="Test accuracy by bucket; drop = baseline − knob "
               "(paired)")
    if "cost" in figures:
        page.heading("Cost")
        page.figure(figures["cost"], caption="Extra test error of each knob over the "
                    "baseline, by bucket (paired over models).", fmt="png")
        page.heading("Theory")
        page.figure(figures["theory"], caption="Measured extra error on subpopulations seen "
                    "once vs Feldman's τ₁ × the extra training singletons the knob leaves "
                    "unfitted.", fmt="png")
        page.table(tables["cost"], caption="Cost of each knob against the theory")
    page.table(tables["theory"], caption="τ₁ per prior, with its Monte-Carlo check and the "
               "singleton counts (expected from the planted frequencies vs observed)")
    page.heading("Populations")
    page.table(tables["populations"], caption="Every population trained")
    page.heading("Summary")
    page.code(json.dumps({k: v for k, v in summary.items() if k != "datasets"}, indent=1))
    return page
