"""Figures and the report of the noise study, drawn from a Result's tables and summary
alone (so ``Result.load(out).figures()`` draws the same figures)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from memlab.report import COLORS, Report, style  # noqa: E402
from memlab.studies.base import Result  # noqa: E402
from memlab.studies.noise.parts import sweep_means  # noqa: E402
from memlab.studies.noise.verdicts import REPRODUCED  # noqa: E402

CONDITION_COLORS = {"real": COLORS["blue"], "randY": COLORS["red"], "randX": COLORS["green"]}
NOISE_SHADES = [COLORS["orange"], COLORS["purple"], COLORS["grey"], COLORS["black"]]


def _colors(names) -> dict[str, str]:
    """A colour per condition: real/randY/randX fixed, partial-noise levels in turn."""
    noise = [n for n in names if n.startswith("noise")]
    return {n: CONDITION_COLORS.get(n) or NOISE_SHADES[noise.index(n) % len(NOISE_SHADES)]
            for n in names}


def curves_figure(result: Result) -> plt.Figure:
    """Training (solid) and validation (dashed) accuracy by epoch, one line per condition."""
    curves = result.tables["curves"]
    colors = _colors(list(curves.condition.unique()))
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for name, frame in curves.groupby("condition", sort=False):
        ax.plot(frame.epoch, frame.train_acc, color=colors[name], label=f"{name} train")
        ax.plot(frame.epoch, frame.val_acc, color=colors[name], ls="--", alpha=0.8)
    ax.set(xlabel="epoch", ylabel="accuracy (mean over seeds)",
           title="training (solid) and validation (dashed) accuracy")
    ax.legend(ncol=2)
    return fig


def partial_figure(result: Result) -> plt.Figure | None:
    """Per partial-noise condition: accuracy on clean and on corrupted training examples
    (against their possibly noisy labels) and validation accuracy, by epoch."""
    curves = result.tables["curves"]
    names = [c for c in curves.condition.unique() if c.startswith("noise")]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.3), sharey=True,
                             squeeze=False, constrained_layout=True)
    for ax, name in zip(axes[0], names):
        frame = curves[curves.condition == name]
        ax.plot(frame.epoch, frame.train_acc_clean, color=COLORS["blue"], label="train, clean")
        ax.plot(frame.epoch, frame.train_acc_corrupted, color=COLORS["red"],
                label="train, corrupted")
        ax.plot(frame.epoch, frame.val_acc, color=COLORS["black"], ls="--", label="validation")
        peak = frame.epoch.iloc[int(frame.val_acc.values.argmax())]
        ax.axvline(peak, color=COLORS["grey"], lw=0.8, ls=":")
        ax.set(title=name, xlabel="epoch")
    axes[0, 0].set_ylabel("accuracy (mean over seeds)")
    axes[0, 0].legend()
    return fig


def difficulty_figure(result: Result) -> plt.Figure:
    """Histogram of one-epoch misclassification rates vs the Binomial reference."""
    difficulty, dispersion = result.tables["difficulty"], result.tables["dispersion"]
    names = list(difficulty.condition.unique())
    colors = _colors(names)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.3), squeeze=False,
                             constrained_layout=True)
    bins = np.linspace(0, 1, 26)
    for ax, name in zip(axes[0], names):
        frame = difficulty[difficulty.condition == name]
        ax.hist(frame.misclassification_rate, bins=bins, color=colors[name], alpha=0.7,
                label="observed")
        ax.hist(frame.binomial_reference, bins=bins, histtype="step", color=COLORS["black"],
                label="Binomial reference")
        index = dispersion.set_index("condition").loc[name, "dispersion_index"]
        ax.set_title(f"{name}: dispersion index {index:.2f}")
        ax.set(xlabel="misclassification rate after 1 epoch", ylabel="examples")
    axes[0, 0].legend()
    return fig


def first_learned_figure(result: Result) -> plt.Figure:
    """Distribution of the (seed-averaged) epoch each example is first learned."""
    examples = result.tables["examples"]
    fig, ax = plt.subplots(figsize=(6, 3.4), constrained_layout=True)
    for name in ("real", "randY", "randX"):
        values = examples.loc[examples.condition == name, "first_learned"].dropna()
        ax.hist(values, bins=40, histtype="step", color=CONDITION_COLORS[name], label=name,
                lw=1.5)
    ax.set(xlabel="epoch first learned (mean over seeds)", ylabel="examples")
    ax.legend()
    return fig


def capacity_figure(result: Result) -> plt.Figure:
    """Median epochs to 100% training accuracy vs dataset size and vs width; runs that never
    got there are drawn at the cap (hollow markers)."""
    capacity = result.tables["capacity"]
    cap = result.config["capacity_epochs"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for ax, axis, label in zip(axes, ("size", "width"), ("training examples", "hidden units")):
        part = capacity[capacity.axis == axis]
        for name, frame in part.groupby("condition"):
            color = CONDITION_COLORS.get(name, COLORS["grey"])
            filled = frame.assign(epochs=frame.epochs_to_100.fillna(cap))
            median = filled.groupby("value").epochs.median()
            never = frame.groupby("value").epochs_to_100.apply(lambda e: e.isna().mean() > 0.5)
            ax.plot(median.index, median.values, "-", color=color, label=name)
            for value, epochs in median.items():
                ax.plot(value, epochs, "o", color=color, mfc="none" if never[value] else color)
        ax.axhline(cap, color=COLORS["grey"], lw=0.8, ls=":")
        ax.set(xlabel=label, ylabel="epochs to 100% train acc (median)")
        values = sorted(part.value.unique())
        if values:
            ax.set_xscale("log")
            ax.set_xticks(values, [str(v) for v in values])
            ax.minorticks_off()
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend()
    return fig


def csr_figure(result: Result) -> plt.Figure:
    """CSR on validation inputs and loss-sensitivity Gini on training examples, by epoch."""
    csr = result.tables["csr"]
    colors = _colors(list(csr.condition.unique()))
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4), constrained_layout=True)
    mean = csr.groupby(["condition", "epoch"], sort=False)[["csr", "sensitivity_gini"]].mean()
    for name in csr.condition.unique():
        frame = mean.loc[name]
        axes[0].plot(frame.index, frame.csr, color=colors[name], label=name)
        axes[1].plot(frame.index, frame.sensitivity_gini, color=colors[name], label=name)
    axes[0].set(xlabel="epoch", ylabel="critical sample ratio (validation)")
    axes[1].set(xlabel="epoch", ylabel="Gini of ||dL/dx||_1 (training)")
    axes[0].legend()
    return fig


def sweep_figure(result: Result) -> plt.Figure:
    """The paper's trade-off: training accuracy on randY (x) vs best validation accuracy on
    real data (y), one line per regularizer through its strengths."""
    sweep = sweep_means(result.tables["sweep"])
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    base = sweep[sweep.regularizer == "none"].iloc[0]
    for name, frame in sweep[sweep.regularizer != "none"].groupby("regularizer", sort=False):
        frame = frame.sort_values("strength")
        xs = [base.randY_train_acc, *frame.randY_train_acc]
        ys = [base.real_best_val_acc, *frame.real_best_val_acc]
        ax.plot(xs, ys, "o-", label=name, ms=4)
        ax.annotate(f"{frame.strength.iloc[-1]:g}", (xs[-1], ys[-1]), fontsize=7)
    ax.plot(base.randY_train_acc, base.real_best_val_acc, "*", color=COLORS["black"], ms=12,
            label="no regularizer")
    ax.set(xlabel="training accuracy on randY", ylabel="best validation accuracy on real data",
           title="regularizers: noise fitting vs real generalization")
    ax.legend()
    return fig


FIGURES = {"curves": curves_figure, "partial": partial_figure,
           "difficulty": difficulty_figure, "first_learned": first_learned_figure,
           "capacity": capacity_figure, "csr": csr_figure, "sweep": sweep_figure}


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    """name -> Figure for every figure the tables allow."""
    figures = {}
    with style():
        for name, draw in FIGURES.items():
            fig = draw(result)
            if fig is not None:
                figures[name] = fig
    return figures


# ---------------------------------------------------------------- captions from the data


def _verdict(result: Result, contains: str) -> str:
    """'reproduced (...)' style text for the first direction whose finding contains it."""
    table = result.tables["directions"]
    rows = table[table.finding.str.contains(contains, regex=False)]
    if not len(rows):
        return ""
    row = rows.iloc[0]
    return f"Verdict: {row.verdict} ({row.measured})."


def captions(result: Result) -> dict[str, str]:
    """One caption per figure, stating what its numbers show."""
    dyn = result.tables["dynamics"].set_index("condition")
    config, s = result.config, result.summary
    lass = s["lass"]

    def reach(name: str) -> str:
        value = dyn.loc[name, "epochs_to_0.99"]
        return (f"epoch {value:g}" if np.isfinite(value)
                else f"not within {config['population']['epochs']}")

    partial = [c for c in dyn.index if c.startswith("noise")]
    peaks = "; ".join(f"{n}: validation peak {dyn.loc[n, 'best_val_acc']:.3f} at epoch "
                      f"{int(dyn.loc[n, 'best_val_epoch'])} (train acc "
                      f"{dyn.loc[n, 'train_acc_at_best_val']:.2f}), final "
                      f"{dyn.loc[n, 'final_val_acc']:.3f}" for n in partial)
    disp = result.tables["dispersion"].set_index("condition")
    sweep = sweep_means(result.tables["sweep"])
    base = sweep[sweep.regularizer == "none"].iloc[0]
    return {
        "curves": f"Learning curves (mean over {config['seeds']} seeds). 99% training "
                  f"accuracy: real {reach('real')}, randY {reach('randY')}, randX "
                  f"{reach('randX')}. " + _verdict(result, "99% training accuracy"),
        "partial": f"Partial label noise: clean (blue) and corrupted (red) training examples; "
                   f"the dotted line marks the validation peak. {peaks}.",
        "difficulty": f"One-epoch misclassification rates over {config['difficulty_seeds']} "
                      "seeds against one Binomial draw of equally hard examples (black). "
                      "Dispersion index (1 = Binomial): "
                      + ", ".join(f"{n} {disp.loc[n, 'dispersion_index']:.2f} (within class "
                                  f"{disp.loc[n, 'dispersion_index_within_class']:.2f})"
                                  for n in disp.index) + ".",
        "first_learned": "When each example is first learned (mean over seeds). Order "
                         "consistency across seeds (mean pairwise Spearman): "
                         + ", ".join(f"{n} {dyn.loc[n, 'order_consistency']:.2f}"
                                     for n in ("real", "randY", "randX")) + ".",
        "capacity": f"Epochs to 100% training accuracy (median of {config['capacity_seeds']} "
                    f"seeds); hollow markers: not reached within {config['capacity_epochs']} "
                    "epochs (dotted line). " + _verdict(result, "largest size"),
        "csr": f"Critical sample ratio (LASS α={lass['alpha']:.3g}, β={lass['beta']:.3g}, "
               f"r={lass['radius']:.3g}, {lass['max_iter']} iterations; a lower bound) and "
               f"loss-sensitivity Gini (mean over {config['csr_seeds']} seeds). "
               + _verdict(result, "CSR is higher"),
        "sweep": f"Regularizer trade-off: each line goes from no regularization (star: randY "
                 f"train {base.randY_train_acc:.3f}, real val {base.real_best_val_acc:.3f}) "
                 "through increasing strengths (the last one labeled). "
                 + _verdict(result, "dropout"),
    }


def build_report(result: Result) -> Report:
    """The study's report: the verdict table first, then each part's figure and table."""
    s, recipe = result.summary, result.config["population"]
    data = s["dataset"]
    page = Report(f"Real data vs noise on {data['name']} (Arpit et al. 2017)")
    page.text(f"{data['n_train']} training / {data['n_test']} validation examples; MLP hidden "
              f"{recipe['model_kwargs']['hidden']}, {recipe['optimizer'].upper()} lr "
              f"{recipe['lr']} momentum {recipe['momentum']}, batch {recipe['batch_size']}; "
              f"{s['seconds']:.0f} s in all.")
    for note in s.get("notes", []):
        page.text(note, note=True)
    counts = s["verdicts"]
    directions = result.tables["directions"]
    page.heading("Findings")
    page.text(f"Of the paper's {len(directions)} directions measured here, "
              f"{counts[REPRODUCED]} reproduced, {counts['not reproduced']} did not and the "
              f"data cannot decide {counts['cannot decide']} (95% intervals; what each "
              "interval is, in the last column).")
    page.table(directions[["finding", "verdict", "measured", "interval"]],
               caption="The paper's directions, with verdicts computed from the intervals")
    texts = captions(result)
    sections = {"curves": "Learning curves", "difficulty": "One-epoch difficulty",
                "capacity": "Capacity and time", "csr": "Critical samples",
                "sweep": "Regularizers"}
    for name, fig in draw_figures(result).items():
        if name in sections:
            page.heading(sections[name])
        page.figure(fig, caption=texts.get(name, ""), fmt="png")
        if name == "curves":
            page.table(result.tables["dynamics"], caption="Per-condition learning dynamics")
        if name == "difficulty":
            page.table(result.tables["dispersion"], caption="Over-dispersion test")
        if name == "sweep":
            page.table(sweep_means(result.tables["sweep"]),
                       caption="Regularizer sweep (mean over seeds)")
    return page


__all__ = ["build_report", "captions", "draw_figures"]
