"""Figures and the report of the audit, drawn from a Result's tables and summary alone.

The report leads with its finding (:func:`finding_sentences`): whether the strongest attack
beats chance, whether LiRA beats the loss threshold, whether memorized examples are the
exposed ones — each a function of the summary with its 95% interval and a verdict that
can be "cannot decide". :func:`pointer_sentences` says what would answer a question the
population cannot (too few models or shadows, a null-like population, no intervals).
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.links import docs_page  # noqa: E402
from memlab.measures import stats  # noqa: E402
from memlab.report import Report, numbers  # noqa: E402
from memlab.studies.audit.study import (  # noqa: E402
    NEGLIGIBLE,
    NEGLIGIBLE_RHO,
    mem_exposure,
    mem_exposure_verdict,
)
from memlab.studies.base import Result, reproduce_text  # noqa: E402

LABELS = {"lira_online": "LiRA online", "lira_online_fixed": "LiRA online, fixed var",
          "lira_offline": "LiRA offline", "lira_offline_fixed": "LiRA offline, fixed var",
          "rmia_online": "RMIA online", "rmia_offline": "RMIA offline",
          "loss": "loss threshold", "confidence": "confidence threshold"}
STYLE = {"lira_online": ("C0", "-"), "lira_online_fixed": ("C0", "--"),
         "lira_offline": ("C1", "-"), "lira_offline_fixed": ("C1", "--"),
         "rmia_online": ("C2", "-"), "rmia_offline": ("C2", "--"),
         "loss": ("C3", ":"), "confidence": ("C7", ":")}

CHANCE_AUC = 0.5
ABOVE_CHANCE, BELOW_CHANCE = "above chance", "below chance"
# A TPR at FPR α is read at α × (non-member trials) false positives; with fewer than this
# it rests on a handful of trials (docs/audit.md: the coverage check uses eight times 1/α).
MIN_FALSE_POSITIVES = 10
# Shadows per side below which per-example LiRA (online) estimates its variances from noise
# and the fixed-variance variants are the better choice (docs/audit.md, Limits).
FEW_SHADOWS = 16
# Split-half reliability of the per-example vulnerability below which a correlation with
# it is attenuated enough that "cannot decide" may hide a real relation.
LOW_RELIABILITY = 0.5
# The paired comparisons of the summary, in the order the report lists them.
COMPARISONS = (("lira_online_vs_loss", "lira_online", "loss"),
               ("lira_offline_fixed_vs_loss", "lira_offline_fixed", "loss"),
               ("lira_online_vs_offline_fixed", "lira_online", "lira_offline_fixed"))


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _rate(fraction: float) -> str:
    """An FPR as the papers write it: 0.001 -> "0.1%", 0.01 -> "1%"."""
    return f"{100 * fraction:g}%"


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def roc_figure(result: Result) -> plt.Figure:
    """Every attack's pooled ROC on log–log axes, the chance diagonal dotted."""
    roc = result.tables["roc"]
    fig, ax = plt.subplots(figsize=(6, 5.2))
    for name, curve in roc.groupby("attack", sort=False):
        s = result.summary.get(name, {})
        color, style = STYLE.get(name, ("k", "-"))
        ok = curve["fpr"] > 0
        ax.plot(curve["fpr"][ok], curve["tpr"][ok].clip(lower=1e-5), style, color=color,
                label=f"{_label(name)}: AUC {numbers.fmt(s.get('auc'), 3)}, "
                      f"TPR@0.1% {numbers.fmt_pct(s.get('tpr_at_fpr_0.001'))}")
    grid = np.geomspace(1e-5, 1, 50)
    ax.plot(grid, grid, ":", color="0.6", lw=1)
    ax.set(xscale="log", yscale="log", xlim=(1e-5, 1), ylim=(1e-5, 1),
           xlabel="false positive rate", ylabel="true positive rate",
           title="Membership inference, every model the target in turn")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def shadows_figure(result: Result) -> plt.Figure:
    """AUC and TPR at 0.1% FPR against the number of shadows per side (−1 = all)."""
    curve = result.tables["shadows"].copy()
    most = result.summary["population"]["n_models"] - 1
    curve["x"] = np.where(curve["cap"] < 0, most, curve["cap"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, part in curve.groupby("attack", sort=False):
        color, style = STYLE.get(name, ("k", "-"))
        for ax, metric in zip(axes, ("auc", "tpr_at_fpr_0.001")):
            low = (part[metric] - part[f"{metric}_ci_low"]).clip(lower=0)
            high = (part[f"{metric}_ci_high"] - part[metric]).clip(lower=0)
            ax.errorbar(part["x"], part[metric], yerr=[low, high], fmt=style + "o",
                        color=color, ms=3, capsize=2, label=LABELS.get(name, name))
    for ax, label in zip(axes, ("AUC", "TPR at 0.1% FPR")):
        ax.set(xscale="log", xlabel="shadow models per side (IN and OUT; last point: all)",
               ylabel=label)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Attack power against the number of shadows "
                 f"({result.summary['shadows']['examples']} examples, 95% bootstrap CIs)")
    fig.tight_layout()
    return fig


def vulnerability_figure(result: Result) -> plt.Figure:
    """Vulnerability against memorization, the planted canaries highlighted."""
    ex = result.tables["examples"]
    canary = ex["canary"].to_numpy(bool) if "canary" in ex else np.zeros(len(ex), bool)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    ax.scatter(ex["mem"][~canary], ex["vulnerability"][~canary], s=4, alpha=0.35, c="C0",
               label="clean", lw=0)
    if canary.any():
        ax.scatter(ex["mem"][canary], ex["vulnerability"][canary], s=12, alpha=0.9, c="C3",
                   label="planted mislabeled canary", lw=0)
    v = result.summary["vulnerability"]
    ax.set(xlabel="memorization score mem", ylabel=f"vulnerability (TPR of "
           f"{LABELS.get(v['attack'], v['attack'])} at {100 * v['fpr']:g}% global FPR)")
    ax.legend(fontsize=8, loc="upper left")
    by = result.tables["by_mem"]
    # A proportion's interval drawn inside [0, 1] (a bin of two examples has a wide one).
    half = (1.96 * by["vulnerability_se"]).fillna(0)
    mean = by["vulnerability_mean"]
    axes[1].errorbar(by["mem_mean"], mean, fmt="o-", capsize=3,
                     yerr=[np.minimum(half, mean), np.minimum(half, 1 - mean)])
    for _, row in by.iterrows():
        axes[1].annotate(f"n={row['n']}", (row["mem_mean"], row["vulnerability_mean"]),
                         fontsize=7, xytext=(3, -10), textcoords="offset points")
    axes[1].set(xlabel="mem (bin mean)", ylabel="mean vulnerability (95% CI)",
                title="mean vulnerability per mem bin")
    relation = mem_relation(result)
    rho = numbers.fmt_interval(relation["spearman_mem_vulnerability"],
                               relation["spearman_ci_low"], relation["spearman_ci_high"])
    axes[0].set_title(f"Spearman ρ(mem, vulnerability) = {rho}", fontsize=9)
    fig.tight_layout()
    return fig


def exposed_figure(result: Result) -> plt.Figure | None:
    """The most exposed training examples, drawn as their inputs."""
    table = result.tables.get("most_exposed")
    shape = result.summary["population"].get("input_shape") or []
    if table is None or "input" not in table or not len(table):
        return None
    k = len(table)
    cols = 8
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.55 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), table.iterrows()):
        x = np.asarray(row["input"], dtype=np.float32)
        if len(shape) >= 2 and int(np.prod(shape[-2:])) * (shape[0] if len(shape) == 3 else 1) \
                == x.size:
            image = x.reshape(shape)[0] if len(shape) == 3 else x.reshape(shape)
            ax.imshow(image, cmap="gray_r")
        else:
            ax.plot(x.reshape(-1), lw=0.8, color="C3" if row.get("canary") else "C0")
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
        title = f"#{row['index']} y={row['label']}"
        if row.get("canary"):
            title += f" (was {row['original_label']})"
        ax.set_title(f"{title}\nmem {row['mem']:.2f} TPR {row['vulnerability']:.2f}", fontsize=6,
                     color="C3" if row.get("canary") else "k")
    fig.suptitle("Most exposed training examples (red: planted mislabeled canaries)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def exposure_figure(result: Result) -> plt.Figure | None:
    """Exposure (LiRA online AUC, TPR at 0.1% FPR) and memorization against each knob."""
    table = result.tables.get("exposure")
    if table is None or not len(table):
        return None
    knobs = list(dict.fromkeys(table["knob"]))
    fig, axes = plt.subplots(2, len(knobs), figsize=(4 * len(knobs), 6.5), squeeze=False)
    for j, knob in enumerate(knobs):
        part = table[table["knob"] == knob].sort_values("value")
        x = np.arange(len(part))
        top, bottom = axes[0, j], axes[1, j]
        for name in ("lira_online", "loss"):
            if f"{name}_auc" not in part:
                continue
            color, style = STYLE[name]
            top.errorbar(x, part[f"{name}_auc"],
                         yerr=[part[f"{name}_auc"] - part[f"{name}_auc_ci_low"],
                               part[f"{name}_auc_ci_high"] - part[f"{name}_auc"]],
                         fmt=style + "o", color=color, capsize=2, label=f"{LABELS[name]} AUC")
        twin = top.twinx()
        twin.plot(x, 100 * part["lira_online_tpr_at_fpr_0.001"], "s--", color="C4", ms=4,
                  label="LiRA online TPR@0.1% (%)")
        twin.set_ylabel("TPR at 0.1% FPR (%)", color="C4", fontsize=8)
        bottom.plot(x, part["mem_mean"], "o-", color="C5", label="mean mem")
        bottom.plot(x, part["memorized_fraction"], "^-", color="C6",
                    label="fraction mem ≥ 0.25")
        bottom.plot(x, part["test_acc"], "x:", color="k", label="test accuracy")
        for ax in (top, bottom):
            ax.set_xticks(x, [f"{v:g}" for v in part["value"]])
        bottom.set_xlabel(knob.replace("_", " "))
        top.set_title(knob.replace("_", " "))
        if j == 0:
            top.legend(fontsize=7, loc="upper left")
            twin.legend(fontsize=7, loc="lower right")
            bottom.legend(fontsize=7)
    fig.suptitle("Exposure and memorization against training knobs (epochs: checkpoints "
                 "of one run; weight decay, width: one sweep run each)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ numbers in sentences


def pct_interval(value: Any, low: Any, high: Any) -> str:
    """A fraction and its interval as percentages, rounded to the interval: ``9.7% [9.5%,
    10.1%]`` (the value alone without an interval)."""
    if not _finite(value):
        return numbers.MISSING
    if not (_finite(low) and _finite(high)):
        return numbers.fmt_pct(value)
    places = numbers.decimals_for(50 * (float(high) - float(low)))
    return (f"{100 * float(value):.{places}f}% "
            f"[{100 * float(low):.{places}f}%, {100 * float(high):.{places}f}%]")


def signed_interval(value: Any, low: Any, high: Any, scale: float = 1.0) -> str:
    """A difference and its interval with signs, rounded to the interval: ``+0.156 [+0.155,
    +0.157]`` (``scale``: 100 for percentage points)."""
    if not _finite(value):
        return numbers.MISSING
    if not (_finite(low) and _finite(high)):
        return f"{scale * float(value):+.4g}"
    places = numbers.decimals_for(scale * (float(high) - float(low)) / 2)
    return (f"{scale * float(value):+.{places}f} "
            f"[{scale * float(low):+.{places}f}, {scale * float(high):+.{places}f}]")


# ------------------------------------------------------------------ the finding


def strongest_attack(summary: dict) -> str | None:
    """The attack with the highest AUC (None when no attack has one)."""
    defined = [name for name in summary["attacks"] if _finite(summary[name].get("auc"))]
    return max(defined, key=lambda name: summary[name]["auc"]) if defined else None


def chance_verdict(metrics: dict, metric: str = "auc", chance: float = CHANCE_AUC) -> str:
    """"above chance", "below chance" or "cannot decide" from the 95% interval of
    ``metric`` against ``chance`` (AUC: 0.5; TPR at FPR α: α)."""
    return stats.verdict_from_interval(
        metrics.get(f"{metric}_ci_low"), metrics.get(f"{metric}_ci_high"),
        above=ABOVE_CHANCE, below=BELOW_CHANCE, reference=chance)


def non_member_trials(metrics: dict) -> float:
    """About how many of an attack's trials are non-members (its trials times the OUT
    share of the shadows, which leave-one-model-out makes the OUT share of the models)."""
    out, inside = metrics.get("shadows_out_mean"), metrics.get("shadows_in_mean")
    if not (_finite(metrics.get("n_trials")) and _finite(out) and _finite(inside)) \
            or out + inside <= 0:
        return float("nan")
    return metrics["n_trials"] * out / (out + inside)


def low_fpr(metrics: dict) -> float:
    """The lowest FPR the summary has (0.1% or 1%) at which at least MIN_FALSE_POSITIVES
    non-member trials pass the threshold (1% otherwise)."""
    negatives = non_member_trials(metrics)
    if f"tpr_at_fpr_{0.001:g}" in metrics and _finite(negatives) \
            and 0.001 * negatives >= MIN_FALSE_POSITIVES:
        return 0.001
    return 0.01


def attack_sentence(summary: dict) -> str:
    """The strongest attack's AUC with its interval and whether it is above chance, and its
    TPR at a low FPR (0.1%, or 1% with too few non-member trials) against that FPR."""
    name = strongest_attack(summary)
    if name is None:
        return ("No attack has a defined AUC (every score tied or undefined): the data "
                f"{stats.UNDECIDED} whether membership is exposed.")
    m, k = summary[name], len(summary["attacks"])
    who = f"{_label(name)} (the strongest of {k} attacks)" if k > 1 else _label(name)
    auc = numbers.fmt_interval(m["auc"], m.get("auc_ci_low"), m.get("auc_ci_high"))
    verdict = chance_verdict(m)
    if verdict == ABOVE_CHANCE:
        first = f"{who} tells members from non-members above chance: AUC {auc} (chance 0.5)"
    elif verdict == BELOW_CHANCE:
        first = (f"{who} ranks members below non-members: AUC {auc}, below chance (0.5); "
                 "check the membership mask")
    elif _finite(m.get("auc_ci_low")):
        first = (f"The data {stats.UNDECIDED} whether any attack tells members from "
                 f"non-members better than chance: {who} has AUC {auc}, an interval that "
                 "holds 0.5")
    else:
        first = (f"{who} has AUC {m['auc']:.3f}; without bootstrap intervals (--bootstrap 0) "
                 f"the data {stats.UNDECIDED} whether that is above chance")
    first = first[0].upper() + first[1:]  # "loss threshold ..." opens the sentence
    alpha = low_fpr(m)
    key = f"tpr_at_fpr_{alpha:g}"
    if not _finite(m.get(key)):
        return first + "."
    tpr = pct_interval(m[key], m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high"))
    tpr_verdict = chance_verdict(m, key, chance=alpha)
    why = "" if alpha == 0.001 or f"tpr_at_fpr_{0.001:g}" not in m else \
        " (too few non-member trials for 0.1%)"
    return (f"{first}; at {_rate(alpha)} FPR{why} it finds {tpr} of member trials "
            f"({tpr_verdict}; chance {_rate(alpha)}).")


def comparison_sides(comparison: dict) -> dict[str, str]:
    """metric -> "higher", "lower" or "cannot decide" from each paired difference's 95%
    interval (the intervals the summary's verdicts were computed from)."""
    return {metric: stats.verdict_from_interval(d.get("ci_low"), d.get("ci_high"),
                                                above=stats.HIGHER, below=stats.LOWER)
            for metric, d in comparison.items()}


def _difference(metric: str, d: dict) -> str:
    if metric == "auc":
        return f"AUC {signed_interval(d['difference'], d.get('ci_low'), d.get('ci_high'))}"
    fpr = metric.removeprefix("tpr_at_fpr_")
    return (f"TPR at {_rate(float(fpr))} FPR "
            f"{signed_interval(d['difference'], d.get('ci_low'), d.get('ci_high'), 100)} "
            "percentage points")


def lira_sentence(summary: dict) -> str | None:
    """Whether LiRA beats the loss threshold (online, else offline with fixed variance):
    the paired differences in AUC and TPR at 0.1% FPR with their intervals and verdicts.
    None when LiRA and the loss threshold were not both run."""
    attacks = set(summary["attacks"])
    pair = next(((key, a) for key, a, b in COMPARISONS[:2] if {a, b} <= attacks), None)
    if pair is None:
        return None
    key, a = pair
    comparison = summary.get(key) or {}
    name = _label(a)
    if not comparison:
        return (f"Without bootstrap intervals (--bootstrap 0) the data {stats.UNDECIDED} "
                f"whether {name} beats the loss threshold.")
    sides = comparison_sides(comparison)
    said = ", ".join(_difference(metric, d) for metric, d in comparison.items())
    if all(v == stats.HIGHER for v in sides.values()):
        return f"{name} beats the loss threshold: {said}."
    if all(v == stats.LOWER for v in sides.values()):
        return f"{name} is weaker than the loss threshold: {said}."
    if all(v == stats.UNDECIDED for v in sides.values()):
        return (f"The data {stats.UNDECIDED} whether {name} beats the loss threshold: "
                f"{said} (every interval holds 0).")
    return f"{name} against the loss threshold: " + "; ".join(
        f"{_difference(metric, d)}: {sides[metric]}" for metric, d in comparison.items()) + "."


def mem_relation(result: Result) -> dict:
    """summary["memorization"] with ρ(mem, vulnerability)'s interval and verdict; a result
    saved before they were (no ``spearman_ci_low``) gets them from its examples table."""
    relation = dict(result.summary.get("memorization") or {})
    if "spearman_ci_low" not in relation and "examples" in result.tables:
        relation.update(mem_exposure(result.tables["examples"]))
    relation.setdefault("spearman_ci_low", None)
    relation.setdefault("spearman_ci_high", None)
    return relation


def memorization_sentence(relation: dict, reliability: float | None = None) -> str:
    """Whether memorized examples are the exposed ones, from Spearman ρ(mem, vulnerability)
    and its interval (:func:`memlab.studies.audit.study.mem_exposure_verdict`); flagged
    when the vulnerability's split-half ``reliability`` is low and the data cannot decide."""
    rho, low, high = (relation.get("spearman_mem_vulnerability"),
                      relation.get("spearman_ci_low"), relation.get("spearman_ci_high"))
    n = relation.get("n_examples")
    value = (f"Spearman ρ(mem, vulnerability) = {numbers.fmt_interval(rho, low, high)}"
             + (f" over {n:,} examples" if isinstance(n, int) else ""))
    verdict = mem_exposure_verdict(low, high)
    if verdict == stats.HIGHER:
        return f"Memorized examples are more exposed: {value}."
    if verdict == stats.LOWER:
        return f"Memorized examples are less exposed than the others: {value}."
    if verdict == NEGLIGIBLE:
        return (f"Memorization and exposure are related only negligibly: {value}, under "
                f"{NEGLIGIBLE_RHO:g} in size across its whole interval.")
    if not _finite(rho):
        why = " (undefined: mem or vulnerability is the same for every example)"
    elif not (_finite(low) and _finite(high)):
        why = " (too few examples for an interval)"
    else:
        why = ", an interval that holds 0"
    flag = ""
    if _finite(reliability) and reliability < LOW_RELIABILITY:
        flag = (f"; the per-example vulnerability is unreliable here (split-half reliability "
                f"{reliability:.2f}), so noise could hide a relation; more models "
                "(--models N) make it reliable")
    return (f"The data {stats.UNDECIDED} whether memorized examples are more exposed: "
            f"{value}{why}{flag}.")


def _reliability(summary: dict) -> float | None:
    return ((summary.get("vulnerability") or {}).get("split_half") or {}).get("reliability")


def finding_sentences(result: Result) -> list[str]:
    """The report's finding: the DP audit's verdict (with --dp), the strongest attack
    against chance, LiRA against the loss threshold, memorization against exposure — each
    with its interval and verdict."""
    s = result.summary
    sentences = [dp_sentence(s["dp"]) if s.get("dp") else None, attack_sentence(s),
                 lira_sentence(s), memorization_sentence(mem_relation(result), _reliability(s))]
    return [sentence for sentence in sentences if sentence]


# ------------------------------------------------------------------ pointers


def null_like(summary: dict) -> bool:
    """Every attack's AUC interval holds 0.5 (and there are intervals)."""
    bounds = [(summary[name].get("auc_ci_low"), summary[name].get("auc_ci_high"))
              for name in summary["attacks"]]
    bounds = [(lo, hi) for lo, hi in bounds if _finite(lo) and _finite(hi)]
    return bool(bounds) and all(lo <= CHANCE_AUC <= hi for lo, hi in bounds)


def shadows_per_side(summary: dict) -> tuple[float, float] | None:
    """Mean IN and OUT shadows per trial (the same for every uncapped attack)."""
    for name in summary["attacks"]:
        m = summary[name]
        if _finite(m.get("shadows_in_mean")) and _finite(m.get("shadows_out_mean")):
            return m["shadows_in_mean"], m["shadows_out_mean"]
    return None


def pointer_sentences(result: Result) -> list[str]:
    """What would answer what this population cannot: no intervals; a null-like population
    (every AUC interval holds 0.5); too few shadows per side for per-example LiRA; no
    all-vs-one-shadow comparison. Empty when none applies."""
    s, pointers = result.summary, []
    pop = s.get("population") or {}
    t = pop.get("n_models")
    more = f"more models (--models N; this population has {t})" if t else \
        "more models (--models N)"
    audited = result.config.get("run_dir")
    new_run = (" These options train a new population: run them without RUN." if audited
               else "")
    names = s["attacks"]
    if not any(_finite(s[name].get("auc_ci_low")) for name in names):
        pointers.append("No 95% intervals for the attacks (--bootstrap 0), so none of them "
                        "can be called above chance or better than another; --bootstrap "
                        "100 gives them.")
    elif null_like(s):
        fit = pop.get("train_acc_in_mean")
        fits = (f" (their training accuracy on their own subsets is {fit:.3f})"
                if _finite(fit) else "")
        # (mislabeled canaries need labels: none for a language model's documents)
        canaries = "" if s.get("canaries") or pop.get("task") == "language_model" else (
            "; planted mislabeled canaries (--label-noise 0.1) are examples known to be "
            "exposed, a check that the attacks can find what is there")
        pointers.append(
            "Every attack's AUC interval holds 0.5: this audit cannot tell a population that "
            "leaks nothing from one too small or too weakly trained to show it. What would "
            f"answer it: {more}, which narrow the intervals and give every example more "
            "shadows; models that fit their training data leak more, so train longer "
            f"(--epochs){fits}{canaries}.{new_run}")
    sides = shadows_per_side(s)
    if sides is not None and min(sides) < FEW_SHADOWS and "lira_online" in names:
        pointers.append(
            f"Each trial has about {sides[0]:.0f} IN and {sides[1]:.0f} OUT shadows; "
            f"per-example LiRA (online) estimates a variance from each side and needs about "
            f"{FEW_SHADOWS} per side, so read the fixed-variance variants (LiRA online / "
            f"offline, fixed var) or train {more}.{new_run}")
    shadows = s.get("shadows") or {}
    bootstrapped = any(_finite(s[name].get("auc_ci_low")) for name in names)
    if bootstrapped and not shadows.get("all_vs_one"):
        pointers.append(
            "The comparison of all shadows with one per side needs at least two shadows per "
            f"side for every example: {more}.{new_run}")
    return pointers


# ------------------------------------------------------------------ tables for the page


def attack_line(summary: dict, name: str) -> str:
    """One attack's AUC and TPR at 0.1% / 1% FPR with intervals, for the terminal."""
    m = summary[name]
    auc = numbers.fmt_interval(m["auc"], m.get("auc_ci_low"), m.get("auc_ci_high"))
    parts = [f"{name:<19} AUC {auc}"]
    for fpr in (0.001, 0.01):
        key = f"tpr_at_fpr_{fpr:g}"
        if key in m:
            parts.append(f"TPR@{_rate(fpr)} "
                         f"{pct_interval(m[key], m.get(f'{key}_ci_low'), m.get(f'{key}_ci_high'))}")
    return "  ".join(parts)


def attacks_frame(summary: dict) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:
    """One row per attack, strongest first: AUC and TPR at 0.1% / 1% FPR (in %) with their
    interval columns, and the AUC's verdict against chance; the ``intervals`` argument of
    :meth:`memlab.report.Report.table`."""
    rows, intervals = [], {}
    for name in summary["attacks"]:
        m = summary[name]
        row: dict[str, Any] = {"attack": _label(name), "AUC": m.get("auc"),
                               "AUC lo": m.get("auc_ci_low"), "AUC hi": m.get("auc_ci_high")}
        intervals["AUC"] = ("AUC lo", "AUC hi")
        for fpr in (0.001, 0.01):
            key, column = f"tpr_at_fpr_{fpr:g}", f"TPR at {_rate(fpr)} FPR, %"
            if key not in m:
                continue
            row.update({column: _scaled(m.get(key)), f"{column} lo":
                        _scaled(m.get(f"{key}_ci_low")),
                        f"{column} hi": _scaled(m.get(f"{key}_ci_high"))})
            intervals[column] = (f"{column} lo", f"{column} hi")
        row["AUC vs chance"] = chance_verdict(m)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame = frame.iloc[np.argsort(-frame["AUC"].astype(float).fillna(-1).to_numpy(),
                                  kind="stable")]
    return frame.reset_index(drop=True), intervals


def _scaled(value: Any, scale: float = 100.0) -> float:
    return scale * float(value) if _finite(value) else float("nan")


def comparisons_frame(summary: dict) -> pd.DataFrame:
    """The paired comparisons: each difference with its interval and verdict."""
    rows = []
    for key, a, b in COMPARISONS:
        comparison = summary.get(key) or {}
        if not comparison:
            continue
        sides = comparison_sides(comparison)
        row = {"comparison": f"{_label(a)} − {_label(b)}"}
        for metric, d in comparison.items():
            title = "AUC" if metric == "auc" else \
                f"TPR at {_rate(float(metric.removeprefix('tpr_at_fpr_')))} FPR, points"
            row[title] = signed_interval(d["difference"], d.get("ci_low"), d.get("ci_high"),
                                         1.0 if metric == "auc" else 100.0)
            row[f"{title.split(',')[0]}: verdict"] = sides[metric]
        rows.append(row)
    return pd.DataFrame(rows)


def canary_sentence(canaries: dict | None) -> str | None:
    """Planted mislabeled canaries against clean examples: mean vulnerability, the
    difference with its interval and verdict, the pooled TPR at 0.1% FPR and the chance
    that a canary ranks above a clean example (None without canaries)."""
    if not canaries or "vulnerability" not in canaries:
        return None
    v = canaries["vulnerability"]
    low, high = v.get("difference_ci") or (None, None)
    side = stats.verdict_from_interval(low, high, above=stats.HIGHER, below=stats.LOWER)
    n = canaries["n_canaries"]
    compared = (f"mean vulnerability {numbers.fmt(v['canary']['mean'], 3)} against "
                f"{numbers.fmt(v['clean']['mean'], 3)} for clean examples (difference "
                f"{signed_interval(v['difference'], low, high)})")
    if side == stats.HIGHER:
        head = f"The {n:,} planted mislabeled canaries are more exposed than clean examples"
    elif side == stats.LOWER:
        head = f"The {n:,} planted mislabeled canaries are less exposed than clean examples"
    else:
        head = (f"The data {stats.UNDECIDED} whether the {n:,} planted mislabeled canaries "
                "are more exposed than clean examples")
    pooled = canaries.get("pooled_tpr_vulnerability_fpr_0.001") or {}
    tail = ""
    if pooled:
        tail += (f"; at 0.1% global FPR the attack finds {numbers.fmt_pct(pooled['canary'], 2)}"
                 f" of canary member trials and {numbers.fmt_pct(pooled['clean'], 2)} of "
                 "clean ones")
    if _finite(canaries.get("canaries_rank_above_clean")):
        tail += (f"; a canary ranks above a clean example with probability "
                 f"{canaries['canaries_rank_above_clean']:.2f}")
    return f"{head}: {compared}{tail}."


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    figures = {"roc": roc_figure(result), "shadows": shadows_figure(result),
               "vulnerability": vulnerability_figure(result)}
    for name, draw in (("most_exposed", exposed_figure), ("exposure", exposure_figure)):
        fig = draw(result)
        if fig is not None:
            figures[name] = fig
    return figures


def _population_text(summary: dict) -> str:
    pop = summary["population"]
    config = pop.get("config") or {}
    t = pop["n_models"]
    sides = shadows_per_side(summary)
    shadows = (f" (about {sides[0]:.0f} IN and {sides[1]:.0f} OUT per trial)"
               if sides else "")
    return (f"{t:,} models ({config.get('model')}, "
            f"{100 * (config.get('subset_fraction') or 0):g}% subsets, "
            f"{config.get('epochs')} epochs) on {pop['n_train']:,} training examples; test "
            f"accuracy {numbers.fmt(pop['test_acc_mean'], 3)}, training accuracy on own subset "
            f"{numbers.fmt(pop['train_acc_in_mean'], 3)}. Every model is the target in turn and "
            f"the other {t - 1:,} its shadow models{shadows}; every (model, example) pair is a "
            "trial with a known answer. 95% intervals: bootstrap over models as targets and "
            "shadows. The full numbers are in summary.json and tables/*.parquet.")


def _by_mem_frame(by_mem: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame({"mem bin": by_mem["mem_bin"], "examples": by_mem["n"],
                          "mean mem": by_mem["mem_mean"],
                          "mean vulnerability": by_mem["vulnerability_mean"],
                          "se": by_mem["vulnerability_se"]})
    if "example_auc_mean" in by_mem:
        frame["mean example AUC"] = by_mem["example_auc_mean"]
    return frame


def _shadows_frame(comparison: dict) -> pd.DataFrame:
    rows = []
    for name, d in comparison.items():
        verdict = stats.verdict_from_interval(d.get("ci_low"), d.get("ci_high"),
                                              above=stats.HIGHER, below=stats.LOWER)
        rows.append({"attack": _label(name), "AUC, one per side": d["auc_one"],
                     "AUC, all": d["auc_all"],
                     "all − one": signed_interval(d["difference"], d.get("ci_low"),
                                                  d.get("ci_high")),
                     "all vs one": verdict})
    return pd.DataFrame(rows)


def _exposure_frame(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:
    frame = pd.DataFrame({"knob": table["knob"].str.replace("_", " "),
                          "value": table["value"], "test acc": table["test_acc"],
                          "mean mem": table["mem_mean"]})
    intervals = {}
    for name, metric, scale, title in (
            ("lira_online", "auc", 1.0, "LiRA online AUC"),
            ("lira_online", "tpr_at_fpr_0.001", 100.0, "LiRA TPR at 0.1% FPR, %"),
            ("loss", "auc", 1.0, "loss AUC")):
        key = f"{name}_{metric}"
        if key not in table:
            continue
        for suffix, column in (("", title), ("_ci_low", f"{title} lo"),
                               ("_ci_high", f"{title} hi")):
            frame[column] = scale * table[f"{key}{suffix}"].astype(float)
        intervals[title] = (f"{title} lo", f"{title} hi")
    return frame, intervals


def build_report(result: Result) -> Report:
    """The audit's page: the finding, pointers, the attacks, memorization and exposure,
    then (collapsed) the most exposed examples, the shadow curve, the exposure study and
    the command that reproduces it."""
    s = result.summary
    pop = s["population"]
    page = Report(f"memlab audit: membership inference on {pop['dataset']}")
    page.finding(*finding_sentences(result))
    for pointer in pointer_sentences(result):
        page.text(pointer, note=True)
    page.text(_population_text(s))
    figures = draw_figures(result)

    page.heading("Attacks")
    frame, intervals = attacks_frame(s)
    page.table(frame, intervals=intervals, caption=(
        "Pooled ROC metrics, strongest first, rounded to their 95% intervals; chance is AUC "
        "0.5 and TPR = FPR. Attacks whose intervals overlap are not resolved from each other "
        "unless a comparison below says so."))
    comparisons = comparisons_frame(s)
    if len(comparisons):
        page.table(comparisons, caption=(
            "Paired differences (the same bootstrap resamples for both attacks) with 95% "
            "intervals; a verdict is \"cannot decide\" when the interval holds 0."))
    page.figure(figures["roc"], caption=(
        "ROC on log–log axes, the dotted line chance. Look at the left end: at a low false "
        "positive rate the attacks that read shadow models should sit well above the loss "
        "and confidence thresholds."))

    if s.get("dp"):
        page.heading("Differential privacy")
        page.text(dp_sentence(s["dp"]))
        page.table(_dp_frame(s["dp"]), caption=(
            "ε lower bounds at 95% confidence from the run's canaries, each in a known random "
            "half of the models: black-box (privacy canaries: random inputs with random "
            "labels, scored by the final model's log-odds) and white-box (gradient canaries, "
            "scored by the released noisy gradients); population: one trial per model, "
            "Clopper–Pearson; one run: Steinke et al.'s bound on all (model, canary) pairs, "
            "and for comparison on each model alone (the median over the models). "
            f"{docs_page('dp')}"))

    page.heading("Memorization and exposure")
    page.figure(figures["vulnerability"], fmt="png", caption=(
        "Left: each dot a training example, its memorization against its vulnerability (the "
        f"TPR of {_label(s['vulnerability']['attack'])} on its member trials at "
        f"{100 * s['vulnerability']['fpr']:g}% global FPR). Right: mean vulnerability per "
        "mem bin with 95% intervals. If memorized examples are the exposed ones, the right "
        "panel rises from left to right."))
    reliability = _reliability(s)
    if _finite(reliability):
        page.text(f"Split-half reliability of the per-example vulnerability: "
                  f"{reliability:.2f} (two halves of the models audited apart, Spearman–Brown"
                  " corrected); correlations with it are attenuated by about that factor.")
    page.table(_by_mem_frame(result.tables["by_mem"]), se={"mean vulnerability": "se"},
               caption="Vulnerability by memorization bin (mean ± standard error)")
    canaries = canary_sentence(s.get("canaries"))
    if canaries:
        page.text(canaries, note=True)

    table = result.tables.get("most_exposed")
    if "most_exposed" in figures or (table is not None and "text" in table):
        page.heading("Most exposed training examples", collapsed=True)
        if "most_exposed" in figures:
            page.figure(figures["most_exposed"], fmt="png", caption=(
                "The most exposed examples with their label, mem and vulnerability; red: "
                "planted mislabeled canaries (with the label they had). Look for mislabeled "
                "or atypical inputs."))
        else:
            shown = table.drop(columns=[c for c in ("input",) if c in table]).copy()
            shown["text"] = shown["text"].str.slice(0, 160)
            page.table(shown, caption="The most exposed documents (first 160 characters)")

    page.heading("How power grows with shadow models", collapsed=True)
    page.figure(figures["shadows"], caption=(
        "S shadows per side = S IN and S OUT reference models per example (the last point: "
        "all of them). Look at whether the curves still rise at the right: if they do, more "
        "models would make the attacks stronger."))
    comparison = (s.get("shadows") or {}).get("all_vs_one") or {}
    if comparison:
        page.table(_shadows_frame(comparison), caption=(
            "AUC with all shadows against one per side (paired bootstrap over models, 95% "
            "intervals)"))

    if "exposure" in figures:
        page.heading("Exposure against epochs, weight decay and width", collapsed=True)
        page.figure(figures["exposure"], caption=(
            "LiRA online and the loss threshold, audited separately for the models of each "
            "value. Look for the knob along which exposure and memorization rise together."))
        frame, intervals = _exposure_frame(result.tables["exposure"])
        page.table(frame, intervals=intervals, caption=(
            "Exposure study (full numbers in tables/exposure.parquet)"))

    page.heading("Reproduce", collapsed=True)
    page.code(reproduce_text(result))
    return page


def dp_sentence(dp: dict) -> str:
    """The DP audit in one sentence: the accountant's ε, the best lower bound, the verdict."""
    claim = (f"The accountant's ε is {dp['epsilon']:.2f} at δ = {dp['delta']:g}"
             if dp.get("epsilon") is not None else "The run trained without DP")
    return (f"{claim}; the best audited lower bound is ε̂ = {dp['epsilon_lower_bound']:.2f} "
            f"({dp['confidence']:.0%} confidence, {dp['n_models']} models, "
            f"{dp['n_canaries']} canaries): {dp['verdict']}.")


def _dp_frame(dp: dict) -> pd.DataFrame:
    rows = []
    for kind in ("blackbox", "whitebox"):
        if f"epsilon_lower_bound_{kind}_one_run" in dp:
            rows.append({"canaries": kind.replace("box", "-box"),
                         "ε̂ population": dp[f"epsilon_lower_bound_{kind}_population"],
                         "ε̂ one run, all models": dp[f"epsilon_lower_bound_{kind}_one_run"],
                         "ε̂ one run, one model (median)":
                             dp[kind]["one_run"]["single_model_median"]})
    return pd.DataFrame(rows).round(2)


def headline_lines(result: Result) -> list[str]:
    """What ``memlab audit`` prints: the report's finding and pointers, each attack's AUC
    and TPR at 0.1% / 1% FPR rounded to their 95% intervals, the reliability of the
    per-example vulnerability, where the per-example table is."""
    s = result.summary
    lines = [*finding_sentences(result), *pointer_sentences(result), ""]
    lines += [attack_line(s, name) for name in s["attacks"]]
    half = (s.get("vulnerability") or {}).get("split_half")
    if half:
        lines.append(f"per-example vulnerability ({s['vulnerability']['attack']}): split-half "
                     f"reliability {numbers.fmt(half['reliability'], 3)} (Spearman–Brown; halves "
                     f"{numbers.fmt(half['spearman_halves'], 3)})")
    if result.out is not None:
        lines.append(f"examples: {result.out / 'tables' / 'examples.parquet'}")
    lines.append(f"run:      {s['population']['run_dir']}")
    return lines
