"""Figures, the finding and the report of the attribution study, drawn from a Result's
tables and summary alone (a loaded result draws the same page).

The finding's sentences are functions of the summary (:func:`finding_sentences`): the
ranking with the differences the data resolves, the methods that do not beat the random
control, and the ceiling training noise sets. The statistics they read are computed at
analysis time (:func:`memlab.studies.attribute.scoring.ranking`) and saved in the summary's
``ranking`` and the ``ranking`` table.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.measures.stats import HIGHER, UNDECIDED, Z95  # noqa: E402
from memlab.report import Report  # noqa: E402
from memlab.report.figures import COLORS  # noqa: E402
from memlab.report.numbers import decimals_for, fmt, fmt_interval, fmt_se  # noqa: E402
from memlab.studies.attribute.config import METHODS  # noqa: E402
from memlab.studies.base import Result, reproduce_text  # noqa: E402

# The scores fitted on the population itself (scoring.REFERENCES, written out so that
# drawing a report imports no torch; tests/test_attribute_findings.py checks they agree).
REFERENCE = ("datamodels", "diff_in_means")
CONTROL = "random"

# One colour per method in every panel of every figure: fixed by name, not by the order a
# figure happens to draw them in. The control is grey, the datamodels black.
_PALETTE = (COLORS["blue"], COLORS["orange"], COLORS["red"], COLORS["green"],
            COLORS["purple"], "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#1f3f6e",
            "#00a087")
METHOD_COLORS: dict[str, str] = {
    **dict(zip([m for m in METHODS if m != CONTROL] + ["diff_in_means"], _PALETTE,
               strict=True)),
    "datamodels": COLORS["black"], CONTROL: COLORS["grey"]}
OTHER_COLOR = "#555555"  # a score memlab does not know by name


def method_color(name: str) -> str:
    """The colour of method ``name`` in every figure of the study."""
    return METHOD_COLORS.get(name, OTHER_COLOR)


# ------------------------------------------------------------------ the finding


def _rows(summary: dict) -> dict[str, dict]:
    return {row["method"]: row for row in (summary.get("ranking") or {}).get("rows", [])}


def _lds(row: dict) -> str:
    return fmt_interval(row.get("lds"), row.get("lds_low"), row.get("lds_high"))


def _diff(row: dict, key: str) -> str:
    """A paired difference ``key`` (vs_control, vs_best, vs_next) with its interval, signed."""
    text = fmt_interval(row.get(key), row.get(f"{key}_low"), row.get(f"{key}_high"))
    return text if text.startswith("-") or text == fmt(None) else f"+{text}"


def _listed(names: list[str], rows: dict[str, dict], key: str, limit: int = 4) -> str:
    """'a (+0.1 [..]), b (..) and 3 more': names with their difference ``key``."""
    parts = [f"{name} ({_diff(rows[name], key)})" for name in names[:limit]]
    if len(names) > limit:
        parts.append(f"{len(names) - limit} more")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def ranking_sentence(summary: dict) -> str:
    """Which method ranks first, with its interval, and whether the data resolves it from
    the next ones ("cannot decide between ..." when it does not)."""
    ranking = summary.get("ranking")
    if not ranking:
        return ("This result has no ranking with intervals (it predates them): run the "
                "study again to see which differences between methods the data resolves.")
    rows = _rows(summary)
    scale = (f"95% intervals over {ranking['n_models']} held-out models and "
             f"{ranking['n_targets']} test targets")
    best = ranking.get("best")
    if best is None:
        return ("No method has a finite LDS: the held-out models' outputs or the scores are "
                "constant on every target, so nothing can be ranked.")
    top = rows[best]
    control = ranking.get("control")
    if top.get("vs_control_verdict") != "better":
        if control:
            return (f"No method is resolved from the random control: the highest LDS, "
                    f"{best}'s {_lds(top)}, minus the control's is {_diff(top, 'vs_control')} "
                    f"({scale}); the data cannot rank these methods.")
        return (f"No method's LDS is resolved above 0: the highest, {best}'s, is {_lds(top)} "
                f"({scale}); the data cannot rank these methods.")
    tied = ranking.get("tied_with_best") or []
    if tied:
        named = [f"{name} (LDS {_lds(rows[name])})" for name in [best, *tied[:4]]]
        named += [f"{len(tied) - 4} more"] if len(tied) > 4 else []
        why = (f"the paired difference, {_diff(rows[tied[0]], 'vs_best')}, includes 0"
               if len(tied) == 1 else f"every paired difference from {best} includes 0")
        return (f"Cannot decide between {', '.join(named[:-1])} and {named[-1]}: {why} "
                f"({scale}).")
    runner = ranking.get("runner_up")
    if runner is None:
        return f"{best} is the only method scored besides the control: LDS {_lds(top)} ({scale})."
    return (f"{best} ranks first with LDS {_lds(top)}, resolved from the runner-up {runner} "
            f"(LDS {_lds(rows[runner])}) by {_diff(top, 'vs_next')} ({scale}).")


def control_sentence(summary: dict) -> str | None:
    """Which methods beat the random control (paired differences), and which do not or
    cannot be told apart from it; without a control, which LDS are above 0."""
    ranking = summary.get("ranking")
    if not ranking or ranking.get("best") is None:
        return None
    rows = _rows(summary)
    better = ranking.get("better_than_control") or []
    undecided = ranking.get("undecided_vs_control") or []
    worse = ranking.get("worse_than_control") or []
    n = len(better) + len(undecided) + len(worse)
    control = ranking.get("control")
    one = len(undecided) == 1
    if control:
        opening = f"Against the random control (LDS {_lds(rows[control])})"
        beat, below = ("beats it" if one else "beat it"), "worse than it"
    else:  # the LDS itself against 0, and the pointer to the control
        opening = "No random control was scored (add random to --methods); against LDS 0"
        beat, below = ("is above 0" if one else "are above 0"), "below 0"
    if not undecided and not worse:
        closest = min(better, key=lambda name: rows[name]["vs_control"])
        return (f"{opening}, every method is better: the closest, {closest}, by "
                f"{_diff(rows[closest], 'vs_control')}.")
    parts = [f"{len(better)} of {n} methods are better"]
    if undecided:
        parts.append(f"cannot decide whether {_listed(undecided, rows, 'vs_control')} {beat}")
    if worse:
        parts.append(f"{below}: {_listed(worse, rows, 'vs_control')}")
    return f"{opening}: " + "; ".join(parts) + "."


def ceiling_sentence(summary: dict) -> str | None:
    """For scale: the LDS ceiling training noise sets (when it was measured) and the best
    method's fraction of it; "cannot decide" when the ceiling is not above 0."""
    ceiling = summary.get("ceiling")
    if not ceiling or ceiling.get("ceiling") is None:
        return None
    value, se = ceiling["ceiling"], ceiling.get("ceiling_se")
    low, high = ((value - Z95 * se, value + Z95 * se) if se is not None
                 else (None, None))
    interval = fmt_interval(value, low, high)
    if low is None or low <= 0:
        return (f"The LDS ceiling (the perfect attribution's, against two replicates' mean) "
                f"is {interval}: cannot decide whether training noise leaves anything to "
                "attribute on these targets, so no LDS here measures a method's quality.")
    single = ceiling.get("ceiling_single")
    single_text = (f"{single:.{decimals_for(Z95 * se)}f}" if single is not None  # as the interval
                   else fmt(None))
    text = (f"For scale, training noise caps the LDS at {single_text} against one model "
            f"({interval} against two replicates' mean)")
    best = (summary.get("ranking") or {}).get("best")
    row = _rows(summary).get(best, {})
    if row.get("ceiling_ratio") is not None:
        ratio = fmt_interval(row["ceiling_ratio"], row.get("ceiling_ratio_low"),
                             row.get("ceiling_ratio_high"))
        text += f"; {best} reaches {ratio} of the reachable LDS"
    return text + "."


def finding_sentences(summary: dict) -> list[str]:
    """The report's finding: the ranking, the control, the ceiling (when measured)."""
    sentences = (ranking_sentence(summary), control_sentence(summary),
                 ceiling_sentence(summary))
    return [s for s in sentences if s]


# ------------------------------------------------------------------ figures


def _methods(result: Result) -> pd.DataFrame:
    table = result.tables["methods"].copy()
    return table.sort_values("lds", ascending=False, na_position="last")


def _ranking(result: Result) -> pd.DataFrame | None:
    table = result.tables.get("ranking")
    return None if table is None or not len(table) else table.sort_values("rank")


def ranking_figure(result: Result) -> plt.Figure:
    """Every method's held-out LDS with its 95% interval, best on top; the random
    control's interval as a grey band; hollow markers: not better than the control."""
    table = _ranking(result)
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.32 * len(table)))
    y = np.arange(len(table))[::-1]
    control = table[table["kind"] == "control"]
    if len(control):
        row = control.iloc[0]
        ax.axvspan(row["lds_low"], row["lds_high"], color=method_color(CONTROL), alpha=0.2,
                   lw=0, label="random control's 95% interval")
    for yi, row in zip(y, table.itertuples()):
        color = method_color(row.method)
        marker = "s" if row.kind == "reference" else "D" if row.kind == "control" else "o"
        resolved = getattr(row, "vs_control_verdict", None) == "better"
        ax.errorbar(row.lds, yi, xerr=[[row.lds - row.lds_low], [row.lds_high - row.lds]],
                    fmt=marker, color=color, capsize=2, ms=5,
                    mfc=color if resolved or row.kind == "control" else "white")
    ax.set_yticks(y)
    ax.set_yticklabels(table["method"])
    for label, name in zip(ax.get_yticklabels(), table["method"]):
        label.set_color(method_color(name))
    ax.axvline(0, color="0.6", lw=0.8, ls=":")
    ceiling = result.summary.get("ceiling")
    if ceiling and ceiling.get("ceiling_single") is not None:
        ax.axvline(ceiling["ceiling_single"], color=COLORS["red"], lw=0.8, ls="--",
                   label="training-noise ceiling (against one model)")
    ax.set_xlabel("LDS on the held-out models (95% interval)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def pareto_figure(result: Result) -> plt.Figure:
    """LDS (± 1 se) against compute: seconds, and FLOPs where counted."""
    table = _methods(result)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, column, label in ((axes[0], "seconds", "seconds (CPU)"),
                              (axes[1], "flops", "FLOPs (torch ops counted)")):
        values = (pd.to_numeric(table[column], errors="coerce") if column in table
                  else pd.Series(np.nan, index=table.index))
        part = table[np.isfinite(values) & (values > 0)]  # (a log axis: positive costs only)
        for _, row in part.iterrows():
            marker = "s" if row["method"] in REFERENCE else "o"
            ax.errorbar(row[column], row["lds"], yerr=row["lds_se"], fmt=marker, capsize=2,
                        color=method_color(row["method"]))
            ax.annotate(row["method"], (row[column], row["lds"]), fontsize=7,
                        color=method_color(row["method"]), xytext=(3, 3),
                        textcoords="offset points")
        ax.set(xscale="log", xlabel=label, ylabel="LDS (held-out models)")
        ax.axhline(0, color="0.6", lw=0.8, ls=":")
        ceiling = result.summary.get("ceiling")
        if ceiling:  # the ceiling of the plotted LDS (against one model): ceiling_single
            ax.axhline(ceiling["ceiling_single"], color=COLORS["red"], lw=0.8, ls="--")
            ax.annotate("training-noise ceiling (LDS against one model)",
                        (0.01, ceiling["ceiling_single"]), xycoords=("axes fraction", "data"),
                        fontsize=7, color=COLORS["red"], xytext=(0, -9),
                        textcoords="offset points")
    population = result.summary["population"]
    seconds = population.get("train_seconds")
    axes[0].set_title("ground truth training: "
                      + (f"{fmt(seconds)} s" if seconds is not None else "time not recorded"),
                      fontsize=8)
    axes[1].set_title(f"ground truth (population) training: "
                      f"{fmt(population.get('train_flops'))} FLOPs", fontsize=8)
    fig.suptitle("LDS against compute (squares: fitted on the population itself)")
    fig.tight_layout()
    return fig


def curve_figure(result: Result) -> plt.Figure:
    """Held-out LDS of datamodels and difference in means against fitting models."""
    curve = result.tables["models_curve"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for column, name, label in (("datamodels", "datamodels", "datamodels (ridge)"),
                                ("diff_means", "diff_in_means", "difference in means")):
        ax.errorbar(curve["n_models"], curve[f"{column}_lds"], yerr=curve[f"{column}_lds_se"],
                    fmt="o-", capsize=2, label=label, color=method_color(name))
    ax.set(xscale="log", xlabel="models fitted on", ylabel="LDS (held-out models)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    figures = {}
    if _ranking(result) is not None:
        figures["ranking"] = ranking_figure(result)
    figures["pareto"] = pareto_figure(result)
    if "models_curve" in result.tables and len(result.tables["models_curve"]):
        figures["models_curve"] = curve_figure(result)
    return figures


# ------------------------------------------------------------------ tables


def ranking_table(result: Result) -> pd.DataFrame:
    """The ranking as the page shows it: short headers, verdicts in words; the interval
    columns stay for :meth:`Report.table` to round the values to."""
    table = _ranking(result)
    control = (result.summary.get("ranking") or {}).get("control")
    against = "vs random" if control else "vs LDS 0"
    frame = pd.DataFrame({
        "#": table["rank"], "method": table["method"], "kind": table["kind"],
        "LDS": table["lds"], "lds_low": table["lds_low"], "lds_high": table["lds_high"]})
    if "vs_control" in table:
        frame[f"{against} (difference)"] = table["vs_control"]
        frame["c_low"], frame["c_high"] = table["vs_control_low"], table["vs_control_high"]
        frame[against] = table["vs_control_verdict"].fillna("")
    if "vs_next_verdict" in table:
        frame["vs next"] = [
            "" if not isinstance(nxt, str) else
            f"above {nxt}" if verdict == HIGHER else f"{UNDECIDED} vs {nxt}"
            for nxt, verdict in zip(table["next_method"], table["vs_next_verdict"])]
    if "ceiling_ratio" in table and table["ceiling_ratio"].notna().any():
        frame["of ceiling"] = table["ceiling_ratio"]
        frame["r_low"] = table["ceiling_ratio_low"]
        frame["r_high"] = table["ceiling_ratio_high"]
    return frame


def _top_table(result: Result) -> pd.DataFrame:
    """One row per (target, method): its top training examples as 'index:label'."""
    top = result.tables["top_examples"]
    rows = []
    for (target, method), part in top.groupby(["target", "method"], sort=False):
        part = part.sort_values("rank")
        rows.append({"target": target, "label": int(part["target_label"].iloc[0]),
                     "method": method,
                     "top examples (index:label)": ", ".join(
                         f"{i}:{y}" for i, y in zip(part["train_index"], part["train_label"]))})
    frame = pd.DataFrame(rows)
    key = "top examples (index:label)"
    truth = {r["target"]: set(r[key].split(", "))
             for _, r in frame[frame.method == "datamodels"].iterrows()}
    frame["shared with datamodels"] = [len(set(r[key].split(", ")) & truth.get(r["target"], set()))
                                       for _, r in frame.iterrows()]
    return frame


def _removal_table(removal: dict[str, dict]) -> pd.DataFrame:
    """Top-k removal: effect ± se per method and whether it lowers the output more than
    removing k random examples (a 95% interval below 0)."""
    from memlab.measures.stats import LOWER, verdict_from_interval

    rows = []
    for name, entry in removal.items():
        effect, se = entry.get("effect_vs_random"), entry.get("se")
        low, high = ((effect - Z95 * se, effect + Z95 * se) if se is not None
                     else (None, None))
        rows.append({"method": name, "effect vs random": effect, "se": se,
                     "verdict": verdict_from_interval(low, high, above=HIGHER, below=LOWER),
                     "k": entry.get("k"), "targets": entry.get("n_targets"),
                     "seeds": entry.get("seeds")})
    return pd.DataFrame(rows)


def _population_text(s: dict[str, Any]) -> str:
    pop = s["population"]
    config = pop["config"]
    return (
        f"{pop['n_models']:,} models ({config.get('model')}, "
        f"{100 * config.get('subset_fraction', 0):g}% subsets, {config.get('epochs')} epochs) "
        f"on {pop['n_train']:,} training examples; mean test accuracy "
        f"{fmt(pop['test_acc_mean'])}. Output attributed: {s['output']} (log p/(1-p)); a "
        "positive score means the training example raises the target's output. LDS: "
        f"Spearman over {s['n_heldout_models']} held-out models, mean over "
        f"{s['n_targets']} test targets. Dampings chosen on {s['n_validation_models']} "
        f"validation models; datamodels fitted on {s['n_fit_models']} models.")


def build_report(result: Result) -> Report:
    s = result.summary
    page = Report(f"memlab attribute: data attribution on {s['population']['dataset']}")
    page.finding(*finding_sentences(s))
    page.text(_population_text(s))
    for edge in s.get("damping_edges") or ():
        page.text(f"Warning: {edge['warning']}.", note=True)
    if not s.get("ceiling"):
        page.text("The LDS ceiling was not measured (--no-ceiling): run without it to see "
                  "how much of the LDS training noise leaves reachable.", note=True)
    figures = draw_figures(result)

    if "ranking" in figures:
        control = (s.get("ranking") or {}).get("control")
        page.heading("Ranking: which differences the data resolves")
        page.figure(figures["ranking"], caption=(
            "Held-out LDS of every method with its 95% interval (bootstrap over targets and "
            "held-out models). Look at where each bar ends: a method whose interval reaches "
            "into the grey band (the random control's interval) is not resolved from "
            "random; hollow markers are not better than the control by a paired "
            "difference; squares are fitted on the population itself."))
        table = ranking_table(result)
        against = "vs random" if control else "vs LDS 0"
        intervals = {"LDS": ("lds_low", "lds_high")}
        if f"{against} (difference)" in table:
            intervals[f"{against} (difference)"] = ("c_low", "c_high")
        if "of ceiling" in table:
            intervals["of ceiling"] = ("r_low", "r_high")
        page.table(table, intervals=intervals, caption=(
            "LDS [95% interval]; its paired difference from the "
            + ("random control's" if control else "value 0")
            + " and the verdict; whether the next method down is resolved; the fraction of "
            "the ceiling reached (LDS against two replicates' mean over the ceiling)"))

    page.heading("LDS against compute")
    page.figure(figures["pareto"], caption=(
        "Each method's LDS (± 1 se) against its cost, in seconds and counted FLOPs, one "
        "colour per method as in the ranking. Look up and to the left: more LDS for less "
        "compute; the squares' cost is their fit, the population's training is above."))

    page.heading("Cost and dampings", collapsed=True)
    methods = _methods(result)
    columns = {"method": "method", "seconds": "seconds", "flops": "FLOPs",
               "n_models_used": "models read", "damping": "damping",
               "damping_edge": "damping on edge"}
    page.table(methods[[c for c in columns if c in methods]].rename(columns=columns),
               caption="what each method cost and the damping chosen on the validation models")

    ceiling = s.get("ceiling")
    if ceiling:
        page.heading("The ceiling", collapsed=True)
        page.text(
            f"The {ceiling['n_models']} held-out masks were trained a second time with "
            "independent seeds (initialization, order, augmentation, dropout). Per target, r "
            "is the Spearman correlation over masks of the two replicates' outputs; the "
            "ceiling is the mean over targets of sqrt(2r/(1+r)) (Spearman-Brown), "
            f"{fmt_se(ceiling['ceiling'], ceiling['ceiling_se'])}: the LDS the perfect "
            "attribution would reach against the mean of the two replicates. The ranking's "
            "'of ceiling' is each method's LDS against that mean over the ceiling. The plain "
            "LDS (against one model) has the ceiling mean sqrt(r) = "
            f"{fmt(ceiling['ceiling_single'])} (mean r = {fmt(ceiling['reliability'])}).")

    if "models_curve" in figures:
        page.heading("How many models the ground truth needs", collapsed=True)
        page.figure(figures["models_curve"], caption=(
            "Held-out LDS of datamodels and difference in means against the models they are "
            "fitted on. Look at the slope at the right end: still rising means the "
            "reference is not converged and cheap methods can beat it."))
        curve = result.tables["models_curve"].rename(columns={
            "n_models": "models", "datamodels_lds": "datamodels",
            "diff_means_lds": "diff in means"})
        page.table(curve, caption="held-out LDS ± se against fitting models",
                   se={"datamodels": "datamodels_lds_se", "diff in means": "diff_means_lds_se"})

    page.heading("Top training examples for a few test examples", collapsed=True)
    page.table(_top_table(result), caption="top 5 by each method, and how many of them the "
               "datamodels' top 5 share")

    if s.get("self_influence"):
        page.heading("Self-influence against memorization", collapsed=True)
        rows = [{"score": k, **v} for k, v in s["self_influence"].items()]
        page.table(pd.DataFrame(rows), caption="Spearman with memorization; AUROC of finding "
                   "planted mislabeled examples (low self-influence first) where planted")

    if s.get("removal"):
        page.heading("Top-k removal", collapsed=True)
        page.table(_removal_table(s["removal"]), se={"effect vs random": "se"}, caption=(
            "change of the target's log-odds when the method's top-k are removed, minus "
            "removing k random ones (paired seeds), mean ± se over targets; 'lower': the "
            "method found examples that hold the output up"))

    page.heading("Reproduce", collapsed=True)
    page.code(reproduce_text(result))
    return page
