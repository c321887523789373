"""Figures and the report of the noise study, drawn from a Result's tables and summary
alone (so ``Result.load(out).figures()`` draws the same figures).

The report leads with its finding, each sentence computed from the saved numbers with its
95% interval and verdict ("reproduced", "not reproduced" or "cannot decide"):
:func:`real_first_sentence` (real data is fit before random labels),
:func:`learned_last_sentence` (noisy labels are learned last, under partial label noise),
:func:`phase_sentence` (validation accuracy peaks, then falls as the noise is fit) and,
without partial noise, :func:`tally_sentence` (how many of the paper's directions held,
and which flag gives the undecided ones more models)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.report import COLORS, Report, style  # noqa: E402
from memlab.report.numbers import fmt, fmt_interval  # noqa: E402
from memlab.studies.base import Result, reproduce_text  # noqa: E402
from memlab.studies.noise.parts import sweep_means  # noqa: E402
from memlab.studies.noise.verdicts import (  # noqa: E402
    FLAT_MARGIN,
    NOT_REPRODUCED,
    REPRODUCED,
    UNDECIDED,
    all_verdicts,
    learned_last,
)

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


# ---------------------------------------------------------------- the finding


def _finite(value: Any) -> bool:
    """A number (not None, NaN or inf): summary.json stores an undefined number as null."""
    return value is not None and np.isfinite(float(value))


def _direction(directions: pd.DataFrame, starts: str) -> pd.Series | None:
    """The first direction whose finding starts with ``starts`` (None: not measured)."""
    rows = directions[directions.finding.str.startswith(starts)]
    return rows.iloc[0] if len(rows) else None


def _at(value: Any, epochs: int) -> str:
    return f"at epoch {float(value):g}" if _finite(value) else f"not within {epochs} epochs"


def real_first_sentence(directions: pd.DataFrame, dynamics: dict[str, dict[str, Any]],
                        epochs: int, seeds: int) -> str:
    """"Real data is learned first": the direction "real reaches 99% training accuracy in
    fewer epochs than randY" (90% when real data does not reach 99%) as a sentence with its
    per-seed interval and verdict; when real data reaches neither within ``epochs``, the
    comparison cannot answer and the sentence says to train longer."""
    real, randy = dynamics.get("real", {}), dynamics.get("randY", {})
    reached = [t for t in (0.99, 0.9) if _finite(real.get(f"epochs_to_{t:g}"))]
    row = (_direction(directions, f"real data reaches {reached[0]:.0%} training accuracy")
           if reached else None)
    if row is None:
        final = real.get("final_train_acc")
        return (f"Whether real data is learned before random labels (randY): {UNDECIDED} — "
                f"real data does not reach 90% training accuracy within {epochs} epochs "
                f"(final {fmt(final) if _finite(final) else '–'}), so epochs-to-accuracy "
                "cannot answer; train longer (--epochs; the --quick preset trains 60).")
    threshold = reached[0]
    key = f"epochs_to_{threshold:g}"
    interval = fmt_interval(row.estimate, row.ci_low, row.ci_high)
    per_seed = f"(95% interval over {seeds} paired seeds)"
    if row.verdict == REPRODUCED:
        return (f"Real data is learned first: it reaches {threshold:.0%} training accuracy "
                f"{_at(real[key], epochs)}, randY {_at(randy.get(key), epochs)} (mean "
                f"curves); per seed randY needs {interval} more epochs {per_seed}: "
                f"{REPRODUCED}.")
    if row.verdict == NOT_REPRODUCED:
        return (f"Real data is not learned first: per seed randY − real is {interval} epochs "
                f"to {threshold:.0%} training accuracy {per_seed}: {NOT_REPRODUCED}.")
    return (f"Whether real data is learned before random labels: {UNDECIDED} — per seed "
            f"randY − real is {interval} epochs to {threshold:.0%} training accuracy "
            f"{per_seed}, an interval that holds 0; more seeds narrow it (--seeds, now "
            f"{seeds}).")


def learned_last_sentence(rows: list[dict[str, Any]], epochs: int) -> str | None:
    """"Noisy labels are learned last", from the summary's ``learned_last`` rows (one per
    partial-noise condition, :func:`memlab.studies.noise.verdicts.learned_last`); None
    without partial label noise."""
    if not rows:
        return None
    verdict = all_verdicts([row["verdict"] for row in rows])
    lead = {REPRODUCED: "Noisy labels are learned last",
            NOT_REPRODUCED: "Noisy labels are not learned last"}.get(
        verdict, f"Whether noisy labels are learned last: {UNDECIDED}")
    parts = [f"{row['condition']}: corrupted examples at epoch {fmt(row['corrupted'], 3)} vs "
             f"clean at {fmt(row['clean'], 3)}, "
             f"{fmt_interval(row['difference'], row['ci_low'], row['ci_high'])} epochs later "
             f"({row['verdict']})" for row in rows]
    return (f"{lead} — mean epoch first learned, " + "; ".join(parts)
            + f" (never learned counts as epoch {epochs + 1}; 95% intervals over examples).")


PHASE = "validation accuracy peaks before training accuracy reaches 100%, then falls"


def phase_sentence(directions: pd.DataFrame, dynamics: dict[str, dict[str, Any]],
                   seeds: int) -> str | None:
    """The memorization phase under partial label noise: per noise condition, where
    validation accuracy peaks and whether it then falls (the direction's interval and
    verdict); None without partial label noise."""
    rows = directions[directions.finding.str.endswith(PHASE)]
    if not len(rows):
        return None
    parts = []
    for row in rows.itertuples():
        name = row.finding.split(":")[0]
        d = dynamics.get(name, {})
        peak = int(d["best_val_epoch"]) if _finite(d.get("best_val_epoch")) else None
        fall = fmt_interval(row.estimate, row.ci_low, row.ci_high)
        late = (_finite(d.get("epochs_to_1")) and peak is not None
                and peak >= float(d["epochs_to_1"]))
        if row.verdict == REPRODUCED:
            parts.append(f"on {name} validation accuracy peaks at epoch {peak} "
                         f"({fmt(d.get('best_val_acc'), 3)}, training accuracy "
                         f"{fmt(d.get('train_acc_at_best_val'), 2)}) and then falls by {fall} "
                         f"({REPRODUCED})")
        elif row.verdict == NOT_REPRODUCED and late:
            parts.append(f"on {name} it peaks only at epoch {peak}, after training accuracy "
                         f"reaches 100% ({NOT_REPRODUCED})")
        elif row.verdict == NOT_REPRODUCED:
            parts.append(f"on {name} it stays flat after its peak at epoch {peak} (fall "
                         f"{fall}, under {FLAT_MARGIN:g}: {NOT_REPRODUCED})")
        else:
            parts.append(f"on {name} the fall after the peak at epoch {peak} is {fall}: "
                         f"{UNDECIDED} (more seeds: --seeds, now {seeds})")
    return ("A memorization phase (validation accuracy peaks while the noisy labels are "
            "still unfit, then falls as they are fit): " + "; ".join(parts) + ".")


# What decides each direction's interval: the flag that gives it more models.
FLAGS = (("training accuracy in fewer epochs", "--seeds"),
         ("over-dispersed", "--difficulty-seeds"), ("matches the Binomial", "--difficulty-seeds"),
         ("largest size", "--capacity-seeds"), ("CSR", "--csr-seeds"),
         ("Gini", "--csr-seeds"), (PHASE, "--seeds"), ("lowers randY", "--sweep-seeds"))


def tally_sentence(directions: pd.DataFrame, config: dict[str, Any]) -> str:
    """How many of the paper's directions reproduced, did not, or cannot be decided, and
    for the undecided ones which flag gives their intervals more models."""
    counts = directions.verdict.value_counts()
    text = (f"Of the paper's {len(directions)} directions measured here, "
            f"{counts.get(REPRODUCED, 0)} reproduced, {counts.get(NOT_REPRODUCED, 0)} did not "
            f"and {counts.get(UNDECIDED, 0)} {UNDECIDED} (95% intervals).")
    flags = {}
    for finding in directions.finding[directions.verdict == UNDECIDED]:
        for words, flag in FLAGS:
            if words in finding:
                field = flag.removeprefix("--").replace("-", "_")
                flags[flag] = config.get(field)
                break
    if flags:
        text += (" The undecided ones need more models: " + ", ".join(
            f"{flag} (now {value})" for flag, value in flags.items()) + ".")
    return text


def finding(result: Result) -> list[str]:
    """The report's finding: real data first, noisy labels last and the memorization phase
    (partial label noise), or, without partial noise, the tally of the directions."""
    s, config = result.summary, result.config
    directions = result.tables["directions"]
    epochs, seeds = config["population"]["epochs"], config["seeds"]
    rows = s.get("learned_last")
    if rows is None:  # a result saved before the summary kept it
        rows = learned_last(result.tables["examples"], epochs)
    sentences = [real_first_sentence(directions, s["dynamics"], epochs, seeds),
                 learned_last_sentence(rows, epochs), phase_sentence(directions, s["dynamics"],
                                                                     seeds)]
    if sentences[1] is None and sentences[2] is None:
        sentences.append(tally_sentence(directions, config))
    return [sentence for sentence in sentences if sentence]


# ---------------------------------------------------------------- captions from the data


def _verdict(result: Result, contains: str) -> str:
    """'Verdict: reproduced (...)' for the first direction whose finding contains it."""
    table = result.tables["directions"]
    rows = table[table.finding.str.contains(contains, regex=False)]
    if not len(rows):
        return ""
    row = rows.iloc[0]
    return f"Verdict: {row.verdict} ({row.measured})."


def captions(result: Result) -> dict[str, str]:
    """One caption per figure: what to look at, and the numbers it shows."""
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
        "curves": f"Look at how far randY's solid line (red) trails real's (blue): the gap is "
                  f"how much later noise is fit. Mean over {config['seeds']} seeds; 99% "
                  f"training accuracy: real {reach('real')}, randY {reach('randY')}, randX "
                  f"{reach('randX')}. " + _verdict(result, "99% training accuracy"),
        "partial": "Look for the red line (corrupted examples, against their noisy labels) "
                   "rising only after the blue one (clean) has flattened, and for the dashed "
                   f"validation line falling after its peak (dotted). {peaks}.",
        "difficulty": f"Look at whether the coloured histogram is wider than the black one: "
                      f"wider means examples differ in difficulty. One-epoch misclassification "
                      f"rates over {config['difficulty_seeds']} seeds against one Binomial "
                      "draw of equally hard examples (black). Dispersion index (1 = Binomial): "
                      + ", ".join(f"{n} {disp.loc[n, 'dispersion_index']:.2f} (within class "
                                  f"{disp.loc[n, 'dispersion_index_within_class']:.2f})"
                                  for n in disp.index) + ".",
        "first_learned": "Look at whether real data's mass sits earlier than randY's and "
                         "randX's. Epoch each example is "
                         "first learned (mean over seeds). Order consistency across seeds "
                         "(mean pairwise Spearman): "
                         + ", ".join(f"{n} {dyn.loc[n, 'order_consistency']:.2f}"
                                     for n in ("real", "randY", "randX")) + ".",
        "capacity": f"Look at the gap between the randY and real lines as the data or the "
                    f"width grows. Epochs to 100% training accuracy (median of "
                    f"{config['capacity_seeds']} seeds); hollow markers: not reached within "
                    f"{config['capacity_epochs']} epochs (dotted line). "
                    + _verdict(result, "largest size"),
        "csr": f"Look at whether the noise conditions' lines sit above real's (left) and "
               f"below it (right). Critical sample ratio (LASS α={lass['alpha']:.3g}, "
               f"β={lass['beta']:.3g}, r={lass['radius']:.3g}, {lass['max_iter']} iterations; "
               f"a lower bound) and loss-sensitivity Gini (mean over {config['csr_seeds']} "
               "seeds). " + _verdict(result, "CSR is higher"),
        "sweep": f"Look for lines that move left (less noise fitted) without moving down (real "
                 f"generalization kept). Each line goes from no regularization (star: randY "
                 f"train {base.randY_train_acc:.3f}, real val {base.real_best_val_acc:.3f}) "
                 "through increasing strengths (the last one labeled). "
                 + _verdict(result, "dropout"),
    }


# ---------------------------------------------------------------- the report

DYNAMICS_COLUMNS = {"condition": "condition", "final_train_acc": "final train acc",
                    "best_val_acc": "best val acc", "best_val_epoch": "at epoch",
                    "final_val_acc": "final val acc", "epochs_to_0.9": "epochs to 90%",
                    "epochs_to_0.99": "to 99%", "epochs_to_1": "to 100%",
                    "order_consistency": "order consistency",
                    "mean_forgetting_events": "forgetting events"}
DISPERSION_COLUMNS = {"condition": "condition", "mean_rate": "mean error rate",
                      "dispersion_index": "dispersion index", "p_value": "p",
                      "dispersion_index_within_class": "index within class",
                      "p_value_within_class": "p within class", "n_examples": "examples"}


def build_report(result: Result) -> Report:
    """The study's report: the finding, the directions with their verdicts, then each
    part's figure and table (secondary parts collapsed), the Reproduce line last."""
    s, recipe = result.summary, result.config["population"]
    data = s["dataset"]
    page = Report(f"Real data vs noise on {data['name']} (Arpit et al. 2017)")
    sentences = finding(result)
    page.finding(*sentences)
    page.text(f"{data['n_train']} training / {data['n_test']} validation examples; MLP hidden "
              f"{recipe['model_kwargs']['hidden']}, {recipe['optimizer'].upper()} lr "
              f"{recipe['lr']}, momentum {recipe['momentum']}, batch {recipe['batch_size']}, "
              f"{recipe['epochs']} epochs; {s['seconds']:.0f} s in all.")
    for note in s.get("notes", []):
        page.text(note, note=True)
    directions = result.tables["directions"]
    page.heading("The paper's directions")
    tally = tally_sentence(directions, result.config)
    if tally not in sentences:  # (without partial noise the finding says it already)
        page.text(tally, note=True)
    page.table(directions[["finding", "estimate", "ci_low", "ci_high", "verdict", "measured"]]
               .rename(columns={"estimate": "estimate [95% interval]"}),
               intervals={"estimate [95% interval]": ("ci_low", "ci_high")},
               caption="Each direction of the paper with the interval its verdict is computed "
                       "from (what the interval is: tables/directions.parquet, column "
                       "interval)")
    texts = captions(result)
    figures = draw_figures(result)
    sections = {"curves": ("Learning curves", False),
                "difficulty": ("One-epoch difficulty", False),
                "capacity": ("Capacity and time", True), "csr": ("Critical samples", True),
                "sweep": ("Regularizers", True)}
    for name, fig in figures.items():
        if name in sections:
            page.heading(*sections[name])
        page.figure(fig, caption=texts.get(name, ""), fmt="png")
        if name == "difficulty":
            page.table(result.tables["dispersion"][list(DISPERSION_COLUMNS)]
                       .rename(columns=DISPERSION_COLUMNS), caption="Over-dispersion test "
                       "against one Binomial and against one rate per class")
        if name == "sweep":
            page.table(sweep_means(result.tables["sweep"]).rename(columns={
                "randY_train_acc": "randY train acc", "real_best_val_acc": "real best val acc",
                "real_train_acc": "real train acc"}),
                caption=f"Regularizer sweep (mean over {result.config['sweep_seeds']} "
                        "seed(s) per strength)")
    page.heading("Learning dynamics per condition", collapsed=True)
    page.table(result.tables["dynamics"][list(DYNAMICS_COLUMNS)].rename(
        columns=DYNAMICS_COLUMNS), caption="Per condition, from the mean curves over seeds "
        "(epochs to a training accuracy: – where not reached)")
    page.heading("Reproduce", collapsed=True)
    page.code(reproduce_text(result))
    return page


__all__ = ["build_report", "captions", "draw_figures", "finding", "learned_last_sentence",
           "phase_sentence", "real_first_sentence", "tally_sentence"]
