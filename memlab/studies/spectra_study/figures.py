"""Spectra figures and reports: single models, populations, and the generalization study.

Every figure is drawn from tables (and, for ESDs, the eigenvalues of a
:class:`memlab.measures.spectra.SpectraResult`); every axis has a label and every title
is the full layer name (wrapped, never cut). Every report opens with its finding, sentences
computed from the tables by the ``*_finding`` functions below (counts of verdicts from
:func:`memlab.measures.spectra.verdict_counts`, the one count the summary uses too).

Single model: α with its interval by depth in the model's order, coloured by verdict (one
figure whatever the depth), the verdict counts, then collapsed: ESDs of at most
:data:`MAX_ESD_PANELS` layers chosen to show each verdict, the per-layer table and the
model summary. Population: one box of α across models per layer, Spearman ρ of α with test
accuracy per layer, α against accuracy for a few layers, and one summary row per layer.
Tick labels cannot overlap by construction: a long model's layers are labelled by id with
at most :data:`MAX_TICKS` labels (names in the table), and log axes of the small ESD panels
get at most four labels.
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
from matplotlib.ticker import (  # noqa: E402
    FixedFormatter,
    FixedLocator,
    MaxNLocator,
    NullLocator,
)

from memlab.measures.spectra import (  # noqa: E402
    ALPHA_HEAVY_TAILED,
    ALPHA_RANDOM_LIKE,
    ALPHA_VERY_HEAVY,
    KIND_WORDS,
    MIN_EIGENVALUES_TO_FIT,
    VERDICT_KINDS,
    SpectraResult,
    population_layers,
    verdict_counts,
    verdict_kinds,
)
from memlab.measures.stats import ABOVE, BELOW, UNDECIDED, interval_side  # noqa: E402
from memlab.report import COLORS, Report, style  # noqa: E402
from memlab.report.numbers import fmt, fmt_interval  # noqa: E402

TITLE_WIDTH = 34  # characters per title line in a small panel
MAX_ESD_PANELS = 12  # ESD panels in a report, whatever the model's depth
MAX_SCATTER_PANELS = 6  # α-against-accuracy panels in a population report
MAX_TICKS = 24  # layer labels along an axis (more would overlap at 10 inches)
NAMED_LAYERS = 8  # up to this many layers, axes name them; beyond, they show layer ids
BANDS = ("very-heavy-tailed", "heavy-tailed", "bulk-decay", "random-like")  # α bands
# One colour per verdict kind, in every figure of the reports.
KIND_COLORS = {"very-heavy-tailed": COLORS["purple"], "heavy-tailed": COLORS["green"],
               "bulk-decay": COLORS["orange"], "random-like": COLORS["red"],
               "undecided": COLORS["grey"], "no-power-law": COLORS["black"],
               "no-fit": COLORS["blue"], "rank-collapse": COLORS["blue"],
               "unfitted": COLORS["blue"]}
SHORT = {"very-heavy-tailed": "very heavy-tailed (α < 2)", "heavy-tailed": "heavy-tailed "
         "(α 2–4)", "bulk-decay": "bulk-decay (α 4–6)", "random-like": "random-like"}


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


# ------------------------------------------------------------------ findings (the sentences)


def _interval_of(row: pd.Series | dict) -> tuple[float, float, float]:
    """(α, low, high) of one layer: the bootstrap interval where computed, else
    α ± 1.96σ (x_min held fixed)."""
    alpha = float(row.get("alpha", np.nan))
    low, high = float(row.get("alpha_lo", np.nan)), float(row.get("alpha_hi", np.nan))
    if not (math.isfinite(low) and math.isfinite(high)):
        sigma = float(row.get("sigma", np.nan))
        low, high = alpha - 1.96 * sigma, alpha + 1.96 * sigma
    return alpha, low, high


def _alpha_text(row: pd.Series | dict) -> str:
    return fmt_interval(*_interval_of(row))


def _bootstrapped(table: pd.DataFrame) -> bool:
    return "alpha_lo" in table and bool(table["alpha_lo"].notna().any())


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def layer_finding(table: pd.DataFrame) -> list[str]:
    """The finding of one model's spectra, from its per-layer table: how many layers have
    a phase the data decide (α band, with the range of α and its intervals), how many cannot
    decide or have no power-law tail, and how the intervals were made."""
    counts, kinds, n = verdict_counts(table), verdict_kinds(table), len(table)
    alpha = table["alpha"] if "alpha" in table else pd.Series(np.nan, index=table.index)
    how = "bootstrap" if _bootstrapped(table) else "α ± 1.96σ, x_min fixed"
    parts = []
    for kind in BANDS:
        if not counts[kind]:
            continue
        text = f"{counts[kind]:,} {SHORT[kind]}"
        # (a random-like layer is mostly so by its MP fit: its α is not what decides it)
        rows = table[(kinds == kind) & alpha.notna()] if kind != "random-like" else []
        if len(rows) == 1:
            text += f", α = {_alpha_text(rows.iloc[0])}"
        elif len(rows) > 1:
            text += (f", α from {_alpha_text(rows.loc[rows['alpha'].idxmin()])} to "
                     f"{_alpha_text(rows.loc[rows['alpha'].idxmax()])}")
        parts.append(text)
    decided = sum(counts[kind] for kind in BANDS)
    if decided:
        first = (f"{decided:,} of {_plural(n, 'weight matrix', 'weight matrices')} "
                 f"{'has' if decided == 1 else 'have'} a "
                 f"phase the data decide (the whole 95% interval of α inside one band; "
                 f"intervals: {how}): "
                 + "; ".join(parts) + ".")
    else:
        first = (f"None of the {_plural(n, 'weight matrix', 'weight matrices')} has a phase "
                 "the data decide: cannot decide any layer's phase.")
    rest = []
    if counts["undecided"]:
        rest.append(f"for {counts['undecided']:,} the interval of α spans two bands: cannot "
                    "decide their phase")
    if counts["no-power-law"]:
        rest.append(f"{_plural(counts['no-power-law'], 'has', 'have')} no power-law tail (a "
                    "goodness-of-fit or likelihood-ratio test rejects it)")
    if counts["no-fit"]:
        rest.append(f"{counts['no-fit']:,} could not be fitted (reasons in the table)")
    if counts["unfitted"]:
        rest.append(f"{_plural(counts['unfitted'], 'has', 'have')} too few eigenvalues to fit "
                    f"(< {MIN_EIGENVALUES_TO_FIT})")
    if counts["rank-collapse"]:
        rest.append(f"{_plural(counts['rank-collapse'], 'is', 'are')} rank-collapsed")
    sentences = [first]
    if rest:
        sentences.append(rest[0][0].upper() + "; ".join(rest)[1:] + ".")
    if decided + counts["undecided"] and not _bootstrapped(table):
        sentences.append("These intervals hold x_min fixed and no goodness-of-fit test was "
                         "run, so a phase can still be an artefact of the choice of x_min: "
                         "memlab spectra … --uncertainty gives bootstrap intervals and "
                         "goodness-of-fit p-values.")
    return sentences


def correlation_finding(layers: pd.DataFrame) -> str:
    """Across a population: on how many layers Spearman ρ of α with test accuracy has an
    interval that excludes 0 (beside how many 5% of the layers would by chance), which
    sign, and the strongest."""
    if "spearman_lo" not in layers:
        return "No test accuracies: cannot relate α to generalization."
    tested = layers[np.isfinite(layers["spearman_lo"]) & np.isfinite(layers["spearman_hi"])]
    if tested.empty:
        return ("Spearman ρ of α with test accuracy has no interval on any layer (fewer than "
                "3 models with a fitted α): cannot decide whether α tracks accuracy.")
    sides = [interval_side(r["spearman_lo"], r["spearman_hi"]) for _, r in tested.iterrows()]
    below, above = sides.count(BELOW), sides.count(ABOVE)
    undecided = sides.count(UNDECIDED)
    chance = f"by chance alone about {fmt(0.05 * len(tested), 2)} would"
    if below + above == 0:
        return (f"On none of the {len(tested):,} fitted layers does α track test accuracy: "
                f"the 95% interval of Spearman ρ contains 0 on every one (cannot decide; "
                f"{chance}).")
    resolved = tested[[side != UNDECIDED for side in sides]]
    top = resolved.loc[resolved["spearman_alpha_accuracy"].abs().idxmax()]
    rho = fmt_interval(top["spearman_alpha_accuracy"], top["spearman_lo"], top["spearman_hi"])
    return (f"α tracks test accuracy across models on {below + above:,} of {len(tested):,} "
            f"fitted layers (95% interval of Spearman ρ excludes 0; {chance}): lower α in "
            f"more accurate models on {below:,}, higher on {above:,}; cannot decide on "
            f"{undecided:,}. Strongest: {top['name']}, ρ = {rho}.")


def population_finding(table: pd.DataFrame, layers: pd.DataFrame,
                       accuracy: np.ndarray | None) -> list[str]:
    """The finding of a population's spectra: the verdicts over every fit, and whether α
    tracks test accuracy (or the pointer to the run directory that gives accuracies)."""
    counts = verdict_counts(table)
    n_models, n_layers = table["model"].nunique(), len(layers)
    decided = [f"{counts[k]:,} {SHORT[k]}" for k in BANDS if counts[k]]
    others = [f"{counts[k]:,} {words}" for k, words in (
        ("undecided", "cannot decide (the interval of α spans two bands)"),
        ("no-power-law", "no power-law tail (rejected by the tail tests)"),
        ("no-fit", "not fitted"), ("unfitted", f"too few eigenvalues (< "
                                               f"{MIN_EIGENVALUES_TO_FIT})"),
        ("rank-collapse", "rank-collapsed")) if counts[k]]
    first = (f"Of {len(table):,} fits ({n_models:,} models × {n_layers:,} layers): "
             + "; ".join(decided + others) + ".")
    if accuracy is None:
        second = ("No test accuracies (the input is not a memlab run directory), so α cannot "
                  "be related to generalization here: memlab spectra RUN_DIR on a population "
                  "run gives Spearman ρ of α with test accuracy for every layer.")
    else:
        second = correlation_finding(layers)
    return [first, second]


def study_finding(summary: dict[str, Any], correlations: pd.DataFrame,
                  models: pd.DataFrame | None = None) -> list[str]:
    """The spectra study's finding: per knob, Spearman ρ of α with test accuracy and its
    verdict (too few models with a fitted α: "cannot decide", and why); and per metric, on
    how many knobs its correlation is resolved. ``models``: the study's models table (for
    how many models each knob trained)."""
    trained = models.groupby("knob").size() if models is not None else pd.Series(dtype=int)
    parts = []
    for knob, entry in summary.get("alpha_spearman", {}).items():
        low, high = entry.get("low"), entry.get("high")
        n = entry.get("n_models", 0)
        if n < 3:
            of = f" of {trained[knob]}" if knob in trained else ""
            parts.append(f"varying {knob}, only {n}{of} models have a layer with at least "
                         f"{MIN_EIGENVALUES_TO_FIT} eigenvalues (a fitted α): too few for a "
                         "correlation, cannot decide (wider MLPs, e.g. --hidden 64,64, have "
                         "one)")
            continue
        side = interval_side(low, high)
        words = {BELOW: "α is lower in the more accurate models",
                 ABOVE: "α is higher in the more accurate models",
                 UNDECIDED: UNDECIDED}[side]
        parts.append(f"varying {knob} ({n} models), ρ = "
                     f"{fmt_interval(entry.get('rho'), low, high)}: {words}")
    if parts:
        first = "Spearman ρ of α with test accuracy (95% bootstrap interval): " \
                + "; ".join(parts) + "."
    else:
        first = "No knob was varied: cannot relate α to test accuracy."
    sentences = [first]
    if len(correlations):
        knobs = correlations["knob"].nunique()
        resolved = {metric: sum(interval_side(r["spearman_lo"], r["spearman_hi"]) != UNDECIDED
                                for _, r in group.iterrows())
                    for metric, group in correlations.groupby("metric", sort=False)}
        every = [m for m, k in resolved.items() if k == knobs]
        some = [f"{m} ({k} of {knobs})" for m, k in resolved.items() if 0 < k < knobs]
        none = [m for m, k in resolved.items() if k == 0]
        groups = [f"on every knob: {', '.join(every)}" if every else "",
                  f"on some: {', '.join(some)}" if some else "",
                  f"on none (cannot decide): {', '.join(none)}" if none else ""]
        sentences.append("Metrics whose correlation with test accuracy is resolved (interval "
                         "excludes 0) " + "; ".join(g for g in groups if g) + ".")
    return sentences


# ------------------------------------------------------------------ figures


def _bands(ax: plt.Axes) -> None:
    ax.axhspan(ALPHA_VERY_HEAVY, ALPHA_HEAVY_TAILED, color=COLORS["green"], alpha=0.1,
               label="α 2–4 (well trained)")
    ax.axhline(ALPHA_RANDOM_LIKE, color=COLORS["red"], ls=":", lw=0.8,
               label="α = 6 (random-like)")


def _layer_ticks(axis, positions: np.ndarray, labels: list[str]) -> None:
    """At most :data:`MAX_TICKS` labels, evenly spaced, so that they cannot overlap."""
    step = max(1, math.ceil(len(positions) / MAX_TICKS))
    axis.set_major_locator(FixedLocator(list(positions[::step])))
    axis.set_major_formatter(FixedFormatter(labels[::step]))
    axis.set_minor_locator(NullLocator())


def _few_log_ticks(axis, low: float, high: float, n: int = 4) -> None:
    """At most ``n`` labelled ticks (two significant digits) on a log axis from low to
    high: a small panel's log axis otherwise labels its minor ticks, which overlap."""
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        return
    span = (high / low) ** 0.05  # keep the outer ticks inside the axis
    ticks = sorted({float(f"{t:.2g}") for t in np.geomspace(low * span, high / span, n)})
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FixedFormatter([fmt(t, 2) for t in ticks]))
    axis.set_minor_locator(NullLocator())


def plot_alpha_by_depth(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """α of each layer (one model) in the model's order with its interval (the bootstrap
    95% interval where computed, else α ± 1.96σ with x_min fixed), coloured by verdict
    kind; layers without α are marked along the bottom. One figure whatever the depth."""
    kinds = verdict_kinds(table)
    x = table["layer_id"].to_numpy()
    how = "bootstrap 95% interval" if _bootstrapped(table) else "α ± 1.96σ (x_min fixed)"
    with style():
        fig, ax = plt.subplots(figsize=(10, 3.8))
        for kind in VERDICT_KINDS:
            part = table[kinds == kind]
            if part.empty:
                continue
            values = np.array([_interval_of(row) for _, row in part.iterrows()])
            alpha = values[:, 0]
            fitted = np.isfinite(alpha)
            ids = part["layer_id"].to_numpy()
            if fitted.any():
                ax.errorbar(ids[fitted], alpha[fitted],
                            yerr=[alpha[fitted] - values[fitted, 1],
                                  values[fitted, 2] - alpha[fitted]],
                            fmt="o", ms=4, lw=0.8, capsize=2, color=KIND_COLORS[kind],
                            label=kind)
            if (~fitted).any():
                ax.plot(ids[~fitted], np.full((~fitted).sum(), 1.0), "x",
                        color=KIND_COLORS[kind], label=f"{kind} (no α)")
        _bands(ax)
        _layer_ticks(ax.xaxis, x, [str(i) for i in x])
        ax.set_xlabel("layer id (the model's order; names in the table)")
        ax.set_ylabel(f"power-law exponent α ({how})")
        ax.set_title(title or "α by depth")
        # below the axes: a legend inside could hide a layer's interval
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=5)
        fig.tight_layout()
    return fig


def plot_esd_panel(ax: plt.Axes, row: pd.Series, values: np.ndarray,
                   shuffled: np.ndarray | None) -> None:
    """One layer's ESD: log-log density histogram, shuffled-W ESD (grey), fitted tail (red,
    from x_min), MP bulk edge (dashed); at most four labelled ticks per axis."""
    values = values[values > max(values[-1] * 1e-12, 1e-30)]
    bins = np.geomspace(values[0], values[-1] * 1.0001, 40)
    ax.hist(values, bins=bins, density=True, color=COLORS["blue"], alpha=0.6, label="ESD")
    if shuffled is not None:
        shuffled = shuffled[shuffled > 0]
        ax.hist(shuffled, bins=np.geomspace(shuffled[0], shuffled[-1] * 1.0001, 40),
                density=True, histtype="step", color=COLORS["grey"], label="shuffled W")
    alpha, xmin = float(row.get("alpha", np.nan)), float(row.get("xmin", np.nan))
    if np.isfinite(alpha):
        share = row["n_tail"] / len(values)
        grid = np.geomspace(xmin, values[-1], 20)
        ax.plot(grid, share * (alpha - 1) / xmin * (grid / xmin) ** -alpha, "-",
                color=COLORS["red"], label="power-law tail")
    if np.isfinite(row.get("mp_bulk_max", np.nan)):
        ax.axvline(row["mp_bulk_max"], color="k", ls="--", lw=0.8, label="MP edge")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _few_log_ticks(ax.xaxis, *ax.get_xlim())
    _few_log_ticks(ax.yaxis, *ax.get_ylim())
    ax.set_xlabel("eigenvalue λ of WᵀW", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    status = f"α = {_alpha_text(row)}" if np.isfinite(alpha) else "no α"
    kind = verdict_kinds(pd.DataFrame([row])).iloc[0]
    ax.set_title(f"{wrap(str(row['name']))}\n{status}, {kind}", fontsize=8)
    ax.tick_params(labelsize=7)


def _esd_figure(result: SpectraResult, indices: list[int], title: str) -> plt.Figure:
    table = result.table
    columns = min(3, len(indices))
    n_rows = math.ceil(len(indices) / columns)
    with style():
        fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.6 * n_rows),
                                 squeeze=False)
        for ax in axes.ravel()[len(indices):]:
            ax.remove()
        for ax, index in zip(axes.ravel(), indices, strict=False):
            plot_esd_panel(ax, table.loc[index], result.eigenvalues[index],
                           result.random_eigenvalues.get(index))
        axes.ravel()[0].legend(fontsize=6, loc="lower left")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for it
    return fig


def esd_layers(result: SpectraResult, limit: int = MAX_ESD_PANELS) -> list[int]:
    """Up to ``limit`` rows with eigenvalues, chosen to show every verdict kind present:
    the first layer of each kind, then the second of each, ... (in the model's order)."""
    table = result.table
    indices = [i for i in result.eigenvalues if len(result.eigenvalues[i]) >= 2]
    kinds = verdict_kinds(table.loc[indices]) if indices else pd.Series(dtype=object)
    queues = [list(kinds.index[kinds == kind]) for kind in VERDICT_KINDS]
    queues += [list(kinds.index[kinds == kind]) for kind in set(kinds) - set(VERDICT_KINDS)]
    chosen: list[int] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda i: table.loc[i, "layer_id"])


def plot_esd_overview(result: SpectraResult, limit: int = MAX_ESD_PANELS) -> plt.Figure:
    """One figure of at most ``limit`` ESD panels (:func:`esd_layers`; at least one layer
    must have eigenvalues)."""
    chosen = esd_layers(result, limit)
    if not chosen:
        raise ValueError("no layer has eigenvalues to draw (analyze with keep_eigenvalues)")
    return _esd_figure(result, chosen, f"Empirical spectral densities of {len(chosen)} of "
                                       f"{len(result.table)} layers, one of each verdict first")


def plot_layer_groups(result: SpectraResult) -> list[tuple[str, plt.Figure]]:
    """One figure per layer group, a panel per layer with eigenvalues, three per row
    (every layer: for a short model; reports use :func:`plot_esd_overview`)."""
    table = result.table
    indices = [i for i in result.eigenvalues if len(result.eigenvalues[i]) >= 2]
    groups: dict[str, list[int]] = {}
    for index in indices:
        groups.setdefault(layer_group(str(table.loc[index, "name"])), []).append(index)
    return [(group, _esd_figure(result, members, f"{group}: empirical spectral densities"))
            for group, members in groups.items()]


def plot_population_alpha(layers: pd.DataFrame, table: pd.DataFrame) -> plt.Figure:
    """α across the models of a population: one box per layer (the model's order); names
    under the boxes for a few layers, layer ids (at most :data:`MAX_TICKS`) for many."""
    many = len(layers) > NAMED_LAYERS
    with style():
        fig, ax = plt.subplots(figsize=(10 if many else max(6, 1.2 * len(layers) + 2), 4))
        data, labels = [], []
        for _, row in layers.iterrows():
            values = table.loc[table["layer_id"] == row["layer_id"], "alpha"].dropna()
            data.append(values.to_numpy())
            labels.append(str(row["layer_id"]) if many
                          else wrap(f"{row['layer_id']}: {row['name']}", 16))
        ax.boxplot([values if values.size else [np.nan] for values in data], showfliers=True)
        for position, values in enumerate(data, start=1):
            if values.size == 0:
                ax.text(position, ALPHA_VERY_HEAVY + 0.5, "no α", ha="center", fontsize=7,
                        color=COLORS["grey"], rotation=90 if many else 0)
        _layer_ticks(ax.xaxis, np.arange(1, len(labels) + 1), labels)
        _bands(ax)
        ax.set_xlabel("layer id (the model's order; names in the table)" if many
                      else "layer (the model's order)")
        ax.set_ylabel(f"α across {table['model'].nunique()} models")
        ax.set_title("Power-law exponent α by layer, across the population")
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
    return fig


def plot_correlation_by_layer(layers: pd.DataFrame) -> plt.Figure:
    """Spearman ρ of α with test accuracy per layer, with its bootstrap interval over
    models; resolved layers (interval excludes 0) filled, the others hollow."""
    tested = layers[np.isfinite(layers["spearman_alpha_accuracy"])]
    with style():
        fig, ax = plt.subplots(figsize=(10, 3.4))
        for resolved in (True, False):
            part = tested[[(interval_side(r["spearman_lo"], r["spearman_hi"]) != UNDECIDED)
                           == resolved for _, r in tested.iterrows()]]
            if part.empty:
                continue
            rho = part["spearman_alpha_accuracy"].to_numpy(float)
            ax.errorbar(part["layer_id"], rho, yerr=[rho - part["spearman_lo"],
                                                     part["spearman_hi"] - rho],
                        fmt="o", ms=4, capsize=2, color=COLORS["blue"],
                        mfc=COLORS["blue"] if resolved else "white",
                        label="interval excludes 0" if resolved else UNDECIDED)
        ax.axhline(0, color="k", lw=0.6)
        _layer_ticks(ax.xaxis, layers["layer_id"].to_numpy(),
                     [str(i) for i in layers["layer_id"]])
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("layer id (the model's order; names in the table)")
        ax.set_ylabel("Spearman ρ(α, test accuracy)")
        ax.set_title("Does α track test accuracy across models? 95% bootstrap intervals")
        ax.legend(fontsize=7)
        fig.tight_layout()
    return fig


def plot_alpha_vs_accuracy(layers: pd.DataFrame, table: pd.DataFrame,
                           accuracy: np.ndarray, limit: int | None = None) -> plt.Figure:
    """Per fitted layer, each model's α against its test accuracy, with Spearman ρ and its
    bootstrap interval over models in the title; with ``limit``, only that many layers,
    those with the largest |ρ|, in the model's order."""
    layers = layers[layers["models_fitted"] > 0]
    if limit is not None and len(layers) > limit:
        strength = layers["spearman_alpha_accuracy"].abs().fillna(-1)
        layers = layers.loc[strength.sort_values(ascending=False).index[:limit]].sort_index()
    n = max(len(layers), 1)
    columns = min(3, n)
    n_rows = math.ceil(n / columns)
    with style():
        fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.6 * n_rows),
                                 squeeze=False)
        for ax in axes.ravel()[n:]:
            ax.remove()
        for ax, (_, row) in zip(axes.ravel(), layers.iterrows(), strict=False):
            part = table[table["layer_id"] == row["layer_id"]]
            ax.scatter(accuracy[part["model"].to_numpy(int)], part["alpha"], s=8, alpha=0.6,
                       color=COLORS["blue"])
            ax.set_xlabel("model's test accuracy")
            ax.set_ylabel("α")
            ax.xaxis.set_major_locator(MaxNLocator(4))
            rho = fmt_interval(row.get("spearman_alpha_accuracy", np.nan),
                               row.get("spearman_lo", np.nan), row.get("spearman_hi", np.nan))
            ax.set_title(f"{wrap(str(row['name']))}\nSpearman ρ = {rho}", fontsize=9)
        fig.tight_layout()
    return fig


# ------------------------------------------------------------------ the memlab spectra reports


def verdict_table(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict counts (:func:`verdict_counts`, the summary's ``n_<kind>``) with what
    each kind means; kinds no layer has are left out."""
    counts = verdict_counts(table)
    return pd.DataFrame([{"verdict": kind, "layers": count, "meaning": KIND_WORDS.get(kind, "")}
                         for kind, count in counts.items() if count])


def _layer_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, dict, dict]:
    """The per-layer table as a page shows it: the columns that fit 1280 px, α with its
    interval, the verdict kind beside the verdict's words."""
    shown = table.copy()
    shown["kind"] = verdict_kinds(table)
    columns = [c for c in ["model", "layer_id", "name", "shape", "num_evals", "alpha",
                           "alpha_lo", "alpha_hi", "sigma", "n_tail", "gof_p", "kind",
                           "verdict"] if c in shown]
    shown = shown[columns]
    if _bootstrapped(table):
        shown = shown.drop(columns=["sigma"], errors="ignore")
        return shown, {}, {"alpha": ("alpha_lo", "alpha_hi")}
    shown = shown.drop(columns=["alpha_lo", "alpha_hi"], errors="ignore")
    return shown, ({"alpha": "sigma"} if "sigma" in shown else {}), {}


def _model_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The model summary as rows (metric, value), verdict counts left to the verdict table."""
    row = summary.iloc[0]
    return pd.DataFrame([{"metric": name, "value": fmt(value)} for name, value in row.items()
                         if not str(name).startswith("n_") and name != "model"])


def single_model_report(result: SpectraResult) -> Report:
    """The finding, α by depth, the verdict counts; collapsed: ESDs of a few layers, the
    per-layer table, the model summary. Compact whatever the model's depth."""
    table = result.table
    report = Report(f"Weight spectra: {result.label}")
    report.finding(*layer_finding(table))
    report.text(
        f"{len(table)} weight matrices analyzed in {result.seconds:.1f} s, in the model's "
        f"order (found from: {result.order}). Eigenvalues are those of WᵀW (squared singular "
        "values, unnormalized). α ≈ 2–4 is typical of well-trained layers; α ≥ 6 looks "
        "random-like; α < 2 hints at over-fitting (Martin & Mahoney). A phase is given only "
        "when the interval of α lies in one band and the tail tests do not rule the power "
        "law out; otherwise the verdict says what the data cannot decide.")
    report.heading("α by depth")
    report.figure(plot_alpha_by_depth(table, f"{result.label}: α by layer"), caption=(
        "Each layer's α with its interval, coloured by verdict. Look for layers whose whole "
        "interval sits in the green band (α 2–4: well trained) and for grey ones, whose "
        "interval crosses a band edge (cannot decide); crosses mark layers without α."))
    report.heading("Verdicts")
    report.table(verdict_table(table), caption="Layers per verdict (the summary's n_<kind> "
                 "counts, from the same per-layer table)")
    chosen = esd_layers(result)
    if chosen:
        report.heading(f"Empirical spectral densities ({len(chosen)} of {len(table)} layers)",
                       collapsed=len(table) > MAX_ESD_PANELS)
        report.figure(plot_esd_overview(result), fmt="png", caption=(
            "Log-log ESD of each layer (blue), the shuffled matrix's ESD (grey), the fitted "
            "tail from x_min (red), the MP bulk edge (dashed). Look for a straight red line "
            "along the right end of the histogram: a power-law tail. Layers chosen to show "
            "each verdict; every layer is in spectra.parquet."))
    report.heading("Per-layer table", collapsed=len(table) > MAX_ESD_PANELS)
    shown, se, intervals = _layer_rows(table)
    shown = shown.rename(columns={"layer_id": "id", "num_evals": "eigenvalues",
                                  "n_tail": "tail", "gof_p": "GOF p"})
    report.table(shown, se=se, intervals=intervals, caption=(
        "α with its " + ("bootstrap 95% interval" if intervals else "standard error σ (x_min "
                         "fixed)") + "; every column in spectra.parquet"))
    report.heading("Model summary", collapsed=True)
    report.table(_model_summary(result.summary), caption="Means over the fitted layers")
    return report


def population_report(result: SpectraResult, accuracy: np.ndarray | None = None) -> Report:
    """The finding, α per layer across models, Spearman ρ of α with test accuracy per layer
    (given each model's accuracy), one summary row per layer; a few scatter plots
    collapsed."""
    table = result.table
    layers = population_layers(table, accuracy)
    n_models = table["model"].nunique()
    report = Report(f"Weight spectra of a population: {result.label}")
    report.finding(*population_finding(table, layers, accuracy))
    report.text(f"{n_models} models × {len(layers)} layers analyzed in {result.seconds:.1f} s. "
                "Each row of the per-layer table summarizes one layer across the models: "
                "median α and quartiles, the mean with a bootstrap 95% interval over models, "
                "the share of models with each verdict and, with accuracies, Spearman ρ of α "
                "with test accuracy and its bootstrap interval over models.")
    reasons = table.loc[table["reason"] != "", "reason"].value_counts()
    for reason, count in reasons.items():
        report.text(f"{count} of {len(table)} layer fits not made: {reason}", note=True)
    many = len(layers) > MAX_ESD_PANELS
    report.heading("α by layer across models")
    report.figure(plot_population_alpha(layers, table), caption=(
        "One box of α across the models per layer. Look for boxes inside the green band "
        "(α 2–4) and for layers whose spread across models is wide."))
    if accuracy is not None:
        accuracy = np.asarray(accuracy)
        report.heading("α against test accuracy")
        report.figure(plot_correlation_by_layer(layers), caption=(
            "Spearman ρ of α with each model's test accuracy, per layer. Filled: the 95% "
            "interval excludes 0; hollow: cannot decide."))
        report.heading("α against test accuracy, layer by layer", collapsed=many)
        report.figure(plot_alpha_vs_accuracy(layers, table, accuracy,
                                             limit=MAX_SCATTER_PANELS), fmt="png",
                      caption="One point per model; the layers with the largest |ρ|")
    report.heading("Per layer, across models", collapsed=many)
    shown = layers.drop(columns=["alpha_q1", "alpha_q3", "num_evals"], errors="ignore")
    intervals = {"alpha_mean": ("alpha_mean_lo", "alpha_mean_hi")}
    if "spearman_lo" in shown:
        intervals["spearman_alpha_accuracy"] = ("spearman_lo", "spearman_hi")
    intervals = {k: v for k, v in intervals.items() if k in shown}
    report.table(shown.rename(columns={"models_fitted": "fitted"}), intervals=intervals,
                 caption="α across models per layer; intervals: bootstrap 95% over models")
    report.heading("Verdicts", collapsed=True)
    report.table(verdict_table(table), caption="Fits per verdict, over every model and layer")
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
            ax.xaxis.set_major_locator(MaxNLocator(4))
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
    ax.set_ylim(-1.1, 1.1)
    # below the axes: a legend inside would hide the points at ρ = ±1
    ax.legend(fontsize=7, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    return fig


def plot_beyond_norm(table: pd.DataFrame) -> plt.Figure:
    """Per knob and pooled: ρ(α, test accuracy) and the partial ρ given log ‖W‖_F, for the
    raw and the aspect-corrected α, with their 95% intervals."""
    groups = list(dict.fromkeys(table["group"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.8 + 0.5 * len(groups)), sharey=True)
    for ax, (alpha, part) in zip(axes, table.groupby("alpha", sort=False)):
        for i, group in enumerate(groups):
            row = part[part["group"] == group].iloc[0]
            for key, colour, shift, label in (
                    ("spearman", "C0", -0.12, "ρ(α, accuracy)"),
                    ("partial", "C3", 0.12, "partial ρ given log ‖W‖_F")):
                value = row[key]
                if not np.isfinite(value):
                    continue
                ax.errorbar(value, i + shift, fmt="o", color=colour, capsize=3,
                            xerr=[[value - row[f"{key}_low"]], [row[f"{key}_high"] - value]],
                            label=label if i == 0 else None)
        ax.axvline(0, color="0.6", linewidth=0.8)
        ax.set_title("α raw" if alpha == "alpha" else "α aspect-corrected")
        ax.set_xlabel("Spearman ρ with test accuracy (95%)")
    counts = {g: int(table[table["group"] == g]["n"].iloc[0]) for g in groups}
    axes[0].set_yticks(range(len(groups)), [f"{g} ({counts[g]} models)" for g in groups])
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Does α predict test accuracy beyond the norm? (HT-SR: lower α, higher "
                 "accuracy)")
    return fig


def draw_figures(result: Any) -> dict[str, plt.Figure]:
    """The study's figures, from its saved tables."""
    figures = {"metrics_vs_accuracy": plot_study(result.tables["models"]),
               "correlations": plot_correlations(result.tables["correlations"])}
    if "beyond_norm" in result.tables:
        figures["beyond_norm"] = plot_beyond_norm(result.tables["beyond_norm"])
    return figures


def _reproduce(result: Any) -> str | None:
    from memlab.studies.base import command_line
    from memlab.studies.spectra_study.config import SpectraStudyConfig

    config = SpectraStudyConfig.from_dict(result.config)
    return command_line("spectra_study", config, result.out)


def build_report(result: Any) -> Report:
    """The study's page: the finding, the correlations (figure, then the table rounded to
    its intervals), each model's metrics; the means per configuration and the Reproduce
    line collapsed."""
    summary, tables = result.summary, result.tables
    report = Report("Spectral metrics vs generalization (MNIST-1D MLPs)")
    report.finding(*study_finding(summary, tables["correlations"], tables["models"]))
    base = ", ".join(f"{knob} {fmt(value)}" for knob, value in summary["base"].items())
    report.text(
        f"{summary['n_models']} models, {summary['models_per_config']} per configuration, "
        f"one knob varied at a time around the base ({base}); "
        f"{summary['seconds'] / 60:.1f} min. Intervals: 95% percentile bootstrap over the "
        f"models of each knob ({summary['n_bootstrap']} resamples).")
    figures = draw_figures(result)
    report.heading("Rank correlations with test accuracy")
    report.figure(figures["correlations"], caption=(
        "Spearman ρ of each metric with test accuracy, per knob, with its 95% bootstrap "
        "interval. Look for intervals that exclude 0 (the line): only there does the metric "
        "track accuracy; the others cannot decide."))
    report.table(tables["correlations"].rename(columns={"kendall_tau": "kendall τ"}),
                 intervals={"spearman": ("spearman_lo", "spearman_hi")},
                 caption="Per knob and metric: Spearman ρ [95% interval], Kendall τ")
    if "beyond_norm" in figures:
        report.heading("α beyond the norm")
        report.figure(figures["beyond_norm"], caption=(
            "Per knob and pooled over every model: the rank correlation of the mean α over "
            "layers with test accuracy, and the partial one given the mean log Frobenius "
            "norm (Fisher's 95% interval). HT-SR predicts both below 0."))
        report.table(tables["beyond_norm"], caption="α beyond the norm, per knob and pooled")
    report.heading("Each model's metrics")
    report.figure(figures["metrics_vs_accuracy"], fmt="png", caption=(
        "Each model's metric against its test accuracy, coloured by the knob's value. Look "
        "for a monotone trend across the colours."))
    report.heading("Mean per configuration", collapsed=True)
    report.table(tables["configurations"], caption="Means over each configuration's models")
    command = _reproduce(result)
    if command is not None:
        report.heading("Reproduce", collapsed=True)
        report.code(command)
    return report
