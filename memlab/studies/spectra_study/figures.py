"""Spectra figures and reports: single models, populations, and the generalization study.

Every figure is drawn from tables (and, for ESDs, the eigenvalues of a
:class:`memlab.measures.spectra.SpectraResult`); every axis has a label and every title
is the full layer name (wrapped, never cut). Single model: α with its interval by depth in
the model's order, and one figure of ESDs per layer group (a transformer block, a conv
block). Population: one box of α across models per layer, α against each model's test
accuracy per layer, and one summary row per layer.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.measures.spectra import (  # noqa: E402
    ALPHA_HEAVY_TAILED,
    ALPHA_RANDOM_LIKE,
    ALPHA_VERY_HEAVY,
    TABLE_COLUMNS,
    SpectraResult,
    population_layers,
)
from memlab.report import Report  # noqa: E402

TITLE_WIDTH = 34  # characters per title line in a small panel


def wrap(text: str, width: int = TITLE_WIDTH) -> str:
    """Break a long dotted name into lines at dots (never drop characters)."""
    pieces = re.split(r"(?<=\.)", text)
    lines, line = [], ""
    for piece in pieces:
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "\n".join(textwrap.fill(part, width, break_on_hyphens=False) for part in lines)


def layer_group(name: str) -> str:
    """The block a layer belongs to: the name up to its last numeric component
    ('encoder.layer.3.attention.self.query' → 'encoder.layer.3'), else its first component
    ('embeddings.word_embeddings' → 'embeddings'), else 'top level'."""
    parts = name.split(".")
    numeric = [i for i, part in enumerate(parts) if part.isdigit()]
    if numeric:
        return ".".join(parts[: numeric[-1] + 1])
    return parts[0] if len(parts) > 1 else "top level"


def _bands(ax: plt.Axes) -> None:
    ax.axhspan(ALPHA_VERY_HEAVY, ALPHA_HEAVY_TAILED, color="tab:green", alpha=0.1,
               label="α 2–4 (well trained)")
    ax.axhline(ALPHA_RANDOM_LIKE, color="tab:red", ls=":", lw=0.8, label="α = 6 (random-like)")


def plot_alpha_by_depth(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """α of each layer (one model) in the model's order, with its interval: the bootstrap
    95% interval where computed, else α ± 1.96σ (x_min fixed); layers without a fit are
    marked along the bottom."""
    fig, ax = plt.subplots(figsize=(10, 3.8))
    x = table["layer_id"].to_numpy()
    alpha = table["alpha"].to_numpy(dtype=float) if "alpha" in table else np.full(len(x), np.nan)
    if "alpha_lo" in table and table["alpha_lo"].notna().any():
        low, high = table["alpha_lo"].to_numpy(float), table["alpha_hi"].to_numpy(float)
        how = "bootstrap 95% interval"
    else:
        sigma = table["sigma"].to_numpy(float) if "sigma" in table else np.zeros(len(x))
        low, high = alpha - 1.96 * sigma, alpha + 1.96 * sigma
        how = "α ± 1.96σ (x_min fixed)"
    fitted = np.isfinite(alpha)
    ax.errorbar(x[fitted], alpha[fitted], yerr=[alpha[fitted] - low[fitted],
                                                high[fitted] - alpha[fitted]],
                fmt="o", ms=4, lw=0.8, capsize=2, label=f"α with {how}")
    if (~fitted).any():
        ax.plot(x[~fitted], np.full((~fitted).sum(), 1.0), "x", color="grey",
                label="not fitted (see table)")
    _bands(ax)
    ax.set_xlabel("layer id (the model's order; names in the table)")
    ax.set_ylabel("power-law exponent α")
    ax.set_title(title or "α by depth")
    ax.legend(fontsize=7, loc="upper left", ncols=2)
    fig.tight_layout()
    return fig


def plot_esd_panel(ax: plt.Axes, row: pd.Series, values: np.ndarray,
                   shuffled: np.ndarray | None) -> None:
    """One layer's ESD: log-log density histogram, shuffled-W ESD (grey), fitted tail (red,
    from x_min), MP bulk edge (dashed)."""
    values = values[values > max(values[-1] * 1e-12, 1e-30)]
    bins = np.geomspace(values[0], values[-1] * 1.0001, 40)
    ax.hist(values, bins=bins, density=True, color="tab:blue", alpha=0.6, label="ESD")
    if shuffled is not None:
        shuffled = shuffled[shuffled > 0]
        ax.hist(shuffled, bins=np.geomspace(shuffled[0], shuffled[-1] * 1.0001, 40),
                density=True, histtype="step", color="grey", label="shuffled W")
    alpha, xmin = float(row.get("alpha", np.nan)), float(row.get("xmin", np.nan))
    if np.isfinite(alpha):
        share = row["n_tail"] / len(values)
        grid = np.geomspace(xmin, values[-1], 20)
        ax.plot(grid, share * (alpha - 1) / xmin * (grid / xmin) ** -alpha, "r-",
                label="power-law tail")
    if np.isfinite(row.get("mp_bulk_max", np.nan)):
        ax.axvline(row["mp_bulk_max"], color="k", ls="--", lw=0.8, label="MP edge")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue λ of WᵀW", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    interval = ""
    if np.isfinite(row.get("alpha_lo", np.nan)):
        interval = f" [{row['alpha_lo']:.2f}, {row['alpha_hi']:.2f}]"
    status = f"α = {alpha:.2f}{interval}" if np.isfinite(alpha) else "not fitted"
    ax.set_title(f"{wrap(str(row['name']))}\n{status}, {row['phase']}", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_layer_groups(result: SpectraResult) -> list[tuple[str, plt.Figure]]:
    """One figure per layer group, a panel per layer with eigenvalues, three per row."""
    table = result.table
    indices = [i for i in result.eigenvalues if len(result.eigenvalues[i]) >= 2]
    groups: dict[str, list[int]] = {}
    for index in indices:
        groups.setdefault(layer_group(str(table.loc[index, "name"])), []).append(index)
    figures = []
    for group, members in groups.items():
        columns = min(3, len(members))
        n_rows = math.ceil(len(members) / columns)
        fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.6 * n_rows),
                                 squeeze=False)
        for ax in axes.ravel()[len(members):]:
            ax.remove()
        for ax, index in zip(axes.ravel(), members, strict=False):
            plot_esd_panel(ax, table.loc[index], result.eigenvalues[index],
                           result.random_eigenvalues.get(index))
        axes.ravel()[0].legend(fontsize=6, loc="lower left")
        fig.suptitle(f"{group}: empirical spectral densities", fontsize=10)
        fig.tight_layout()
        figures.append((group, fig))
    return figures


def plot_population_alpha(layers: pd.DataFrame, table: pd.DataFrame) -> plt.Figure:
    """α across the models of a population: one box per layer (the model's order)."""
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(layers) + 2), 4))
    data, labels = [], []
    for _, row in layers.iterrows():
        values = table.loc[table["layer_id"] == row["layer_id"], "alpha"].dropna()
        data.append(values.to_numpy())
        labels.append(wrap(f"{row['layer_id']}: {row['name']}", 16))
    ax.boxplot([values if values.size else [np.nan] for values in data], showfliers=True)
    for position, values in enumerate(data, start=1):
        if values.size == 0:
            ax.text(position, ALPHA_VERY_HEAVY + 0.5, "not fitted", ha="center", fontsize=8,
                    color="grey")
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    _bands(ax)
    ax.set_xlabel("layer (the model's order)")
    ax.set_ylabel(f"α across {table['model'].nunique()} models")
    ax.set_title("Power-law exponent α by layer, across the population")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def plot_alpha_vs_accuracy(layers: pd.DataFrame, table: pd.DataFrame,
                           accuracy: np.ndarray) -> plt.Figure:
    """Per fitted layer, each model's α against its test accuracy, with Spearman ρ and its
    bootstrap interval over models in the title."""
    layers = layers[layers["models_fitted"] > 0]
    n = max(len(layers), 1)
    columns = min(3, n)
    n_rows = math.ceil(n / columns)
    fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.6 * n_rows),
                             squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.remove()
    for ax, (_, row) in zip(axes.ravel(), layers.iterrows(), strict=False):
        part = table[table["layer_id"] == row["layer_id"]]
        ax.scatter(accuracy[part["model"].to_numpy(int)], part["alpha"], s=8, alpha=0.6)
        ax.set_xlabel("model's test accuracy")
        ax.set_ylabel("α")
        rho = row.get("spearman_alpha_accuracy", np.nan)
        ax.set_title(f"{wrap(str(row['name']))}\nSpearman ρ = {rho:.2f} "
                     f"[{row.get('spearman_lo', np.nan):.2f}, "
                     f"{row.get('spearman_hi', np.nan):.2f}]", fontsize=9)
    fig.tight_layout()
    return fig


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in ["model", *TABLE_COLUMNS] if c in table]
    return table[columns]


def single_model_report(result: SpectraResult) -> Report:
    """Summary, α by depth, one ESD figure per layer group, the full table."""
    table = result.table
    report = Report(f"Weight spectra: {result.label}")
    report.text(
        f"{len(table)} weight matrices analyzed in {result.seconds:.1f} s, in the model's "
        f"order (found from: {result.order}). Eigenvalues are those of WᵀW (squared singular "
        "values, unnormalized). α ≈ 2–4 is typical of well-trained layers; α ≥ 6 looks "
        "random-like; α < 2 hints at over-fitting (Martin & Mahoney). A phase is given only "
        "when the interval of α lies in one band and the tail tests do not rule the power "
        "law out; otherwise the verdict says what the data cannot decide.")
    unfitted = table[table["reason"] != ""]
    if len(unfitted):
        reasons = unfitted.groupby("reason")["name"].apply(list)
        report.text("Not fitted: " + "; ".join(
            f"{len(names)} layer(s) ({', '.join(names[:4])}{' …' if len(names) > 4 else ''})"
            f": {reason}" for reason, names in reasons.items()), note=True)
    report.heading("Model summary")
    summary = result.summary.T.reset_index()
    summary.columns = ["metric", "value"]
    report.table(summary)
    report.heading("α by depth")
    report.figure(plot_alpha_by_depth(table, f"{result.label}: α by layer"),
                  caption="Power-law exponent of each layer with its interval")
    if result.eigenvalues:
        report.heading("Empirical spectral densities, by layer group")
        for group, fig in plot_layer_groups(result):
            report.figure(fig, fmt="png", caption=group)
    report.heading("Layers")
    report.table(_shown(table))
    return report


def population_report(result: SpectraResult, accuracy: np.ndarray | None = None) -> Report:
    """One summary row per layer across the models, box plots of α per layer and, given
    each model's test accuracy, α against accuracy per layer."""
    table = result.table
    layers = population_layers(table, accuracy)
    n_models = table["model"].nunique()
    report = Report(f"Weight spectra of a population: {result.label}")
    report.text(f"{n_models} models × {len(layers)} layers analyzed in {result.seconds:.1f} s. "
                "Each row below summarizes one layer across the models: median α and "
                "quartiles, the mean with a bootstrap 95% interval over models, the share of "
                "models in each phase and, with accuracies, Spearman ρ of α with test "
                "accuracy and its bootstrap interval over models.")
    reasons = table.loc[table["reason"] != "", "reason"].value_counts()
    for reason, count in reasons.items():
        report.text(f"{count} of {len(table)} layer fits not made: {reason}", note=True)
    report.heading("Per layer, across models")
    report.table(layers)
    report.heading("α by layer across models")
    report.figure(plot_population_alpha(layers, table), caption="One box per layer")
    if accuracy is not None:
        report.heading("α against test accuracy")
        report.figure(plot_alpha_vs_accuracy(layers, table, np.asarray(accuracy)),
                      fmt="png", caption="One point per model")
    return report


def write_report(result: SpectraResult, path: str | Path,
                 accuracy: np.ndarray | None = None) -> Path:
    """The single-model or (a table with a model column) the population report."""
    if "model" in result.table and result.table["model"].nunique() > 1:
        return population_report(result, accuracy).save(path)
    return single_model_report(result).save(path)


# --------------------------------------------------------------- the generalization study
def plot_study(models: pd.DataFrame, metrics: tuple[str, ...] = ("alpha", "alpha_weighted",
                                                                 "log_norm")) -> plt.Figure:
    """Per knob (columns) and metric (rows): each model's metric against its test
    accuracy, coloured by the knob's value."""
    knobs = list(dict.fromkeys(models["knob"]))
    fig, axes = plt.subplots(len(metrics), len(knobs), figsize=(3.4 * len(knobs), 8),
                             squeeze=False)
    for column, knob in enumerate(knobs):
        group = models[models["knob"] == knob]
        values = sorted(group["value"].unique())
        colours = plt.cm.viridis(np.linspace(0, 1, len(values)))
        for row, metric in enumerate(metrics):
            ax = axes[row, column]
            for value, colour in zip(values, colours, strict=True):
                part = group[group["value"] == value]
                ax.scatter(part["test_accuracy"], part[metric], s=12, color=colour,
                           label=f"{value:g}")
            ax.set_title(f"{knob}: {metric}", fontsize=9)
            ax.set_xlabel("test accuracy")
            ax.set_ylabel(metric)
            if row == 0:
                ax.legend(fontsize=6, title=knob, title_fontsize=6)
    fig.tight_layout()
    return fig


def plot_correlations(correlations: pd.DataFrame) -> plt.Figure:
    """Spearman ρ of each metric with test accuracy, per knob, with bootstrap intervals."""
    knobs = list(dict.fromkeys(correlations["knob"]))
    metrics = list(dict.fromkeys(correlations["metric"]))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        part = correlations[correlations["metric"] == metric].set_index("knob").loc[knobs]
        x = np.arange(len(knobs)) + (i - (len(metrics) - 1) / 2) * width
        ax.errorbar(x, part["spearman"], yerr=[part["spearman"] - part["spearman_lo"],
                                               part["spearman_hi"] - part["spearman"]],
                    fmt="o", capsize=2, label=metric)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(range(len(knobs)), knobs)
    ax.set_xlabel("knob varied")
    ax.set_ylabel("Spearman ρ with test accuracy")
    ax.set_title("Rank correlation with test accuracy, 95% bootstrap intervals over models")
    ax.legend(fontsize=7, ncols=3)
    fig.tight_layout()
    return fig


def draw_figures(result: Any) -> dict[str, plt.Figure]:
    """The study's figures, from its saved tables."""
    return {"metrics_vs_accuracy": plot_study(result.tables["models"]),
            "correlations": plot_correlations(result.tables["correlations"])}


def build_report(result: Any) -> Report:
    summary = result.summary
    report = Report("Spectral metrics vs generalization (MNIST-1D MLPs)")
    report.text(
        f"{summary['n_models']} models, {summary['models_per_config']} per configuration, "
        f"one knob varied at a time around {summary['base']}; "
        f"{summary['seconds'] / 60:.1f} min. Intervals: 95% percentile bootstrap over the "
        f"models of each knob ({summary['n_bootstrap']} resamples).")
    figures = draw_figures(result)
    report.heading("Rank correlations with test accuracy")
    report.table(result.tables["correlations"])
    report.figure(figures["correlations"], caption="Spearman ρ with bootstrap intervals")
    report.heading("Mean per configuration")
    report.table(result.tables["configurations"])
    report.figure(figures["metrics_vs_accuracy"], fmt="png",
                  caption="Each model's metric against its test accuracy")
    return report
