"""Figures and the report of the audit, drawn from a Result's tables and summary alone."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.report import Report  # noqa: E402
from memlab.studies.base import Result  # noqa: E402

LABELS = {"lira_online": "LiRA online", "lira_online_fixed": "LiRA online, fixed var",
          "lira_offline": "LiRA offline", "lira_offline_fixed": "LiRA offline, fixed var",
          "rmia_online": "RMIA online", "rmia_offline": "RMIA offline",
          "loss": "loss threshold", "confidence": "confidence threshold"}
STYLE = {"lira_online": ("C0", "-"), "lira_online_fixed": ("C0", "--"),
         "lira_offline": ("C1", "-"), "lira_offline_fixed": ("C1", "--"),
         "rmia_online": ("C2", "-"), "rmia_offline": ("C2", "--"),
         "loss": ("C3", ":"), "confidence": ("C7", ":")}


def roc_figure(result: Result) -> plt.Figure:
    """Every attack's pooled ROC on log–log axes, the chance diagonal dotted."""
    roc = result.tables["roc"]
    fig, ax = plt.subplots(figsize=(6, 5.2))
    for name, curve in roc.groupby("attack", sort=False):
        s = result.summary.get(name, {})
        color, style = STYLE.get(name, ("k", "-"))
        ok = curve["fpr"] > 0
        ax.plot(curve["fpr"][ok], curve["tpr"][ok].clip(lower=1e-5), style, color=color,
                label=f"{LABELS.get(name, name)}: AUC {s.get('auc', float('nan')):.3f}, "
                      f"TPR@0.1% {100 * s.get('tpr_at_fpr_0.001', float('nan')):.1f}%")
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
    axes[1].errorbar(by["mem_mean"], by["vulnerability_mean"], yerr=1.96 * by["vulnerability_se"],
                     fmt="o-", capsize=3)
    for _, row in by.iterrows():
        axes[1].annotate(f"n={row['n']}", (row["mem_mean"], row["vulnerability_mean"]),
                         fontsize=7, xytext=(3, -10), textcoords="offset points")
    axes[1].set(xlabel="mem (bin mean)", ylabel="mean vulnerability (95% CI)",
                title="memorized ⇒ exposed")
    rho = result.summary["memorization"]["spearman_mem_vulnerability"]
    axes[0].set_title(f"Spearman(mem, vulnerability) = {rho:.2f}")
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


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    figures = {"roc": roc_figure(result), "shadows": shadows_figure(result),
               "vulnerability": vulnerability_figure(result)}
    for name, draw in (("most_exposed", exposed_figure), ("exposure", exposure_figure)):
        fig = draw(result)
        if fig is not None:
            figures[name] = fig
    return figures


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def build_report(result: Result) -> Report:
    s = result.summary
    pop = s["population"]
    page = Report(f"memlab audit: membership inference on {pop['dataset']}")
    page.text(f"{pop['n_models']} models ({pop['config'].get('model')}, "
              f"{100 * pop['config'].get('subset_fraction', 0):g}% subsets, "
              f"{pop['config'].get('epochs')} epochs) on {pop['n_train']} training examples; "
              f"test accuracy {pop['test_acc_mean']:.3f}, training accuracy on own subset "
              f"{pop['train_acc_in_mean']:.3f}. Every model is the target in turn and the other "
              f"{pop['n_models'] - 1} its shadow models; every (model, example) pair is a trial "
              f"with a known answer. 95% intervals: bootstrap over models as targets and "
              "shadows.")
    cols = ["attack", "auc", "auc_ci_low", "auc_ci_high", "balanced_accuracy",
            "tpr_at_fpr_0.001", "tpr_at_fpr_0.001_ci_low", "tpr_at_fpr_0.001_ci_high",
            "tpr_at_fpr_0.01", "shadows_in_mean", "shadows_out_mean"]
    attacks = result.tables["attacks"]
    page.heading("Attacks")
    page.table(attacks[[c for c in cols if c in attacks]], caption="pooled ROC metrics")
    verdicts = []
    for key in ("lira_online_vs_loss", "lira_offline_fixed_vs_loss",
                "lira_online_vs_offline_fixed"):
        for metric, d in (s.get(key) or {}).items():
            verdicts.append(f"{metric}: {d['verdict']} (difference {d['difference']:+.4f}, "
                            f"95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}])")
    if verdicts:
        page.text(" · ".join(verdicts), note=True)
    figures = draw_figures(result)
    page.figure(figures["roc"], caption="ROC on log–log axes; the dotted line is chance")
    page.heading("How power grows with shadow models")
    page.figure(figures["shadows"], caption="S shadows per side = S IN and S OUT reference "
                "models per example (the last point: all of them)")
    comparison = s["shadows"].get("all_vs_one") or {}
    if comparison:
        rows = [{"attack": k, "auc_one": v["auc_one"], "auc_all": v["auc_all"],
                 "difference": v["difference"], "se": v["se"], "z": v["z"],
                 "all beat one by ≥ 2 se": v["all_beat_one_by_2se"]}
                for k, v in comparison.items()]
        page.table(pd.DataFrame(rows), caption="all shadows − one shadow per side, AUC "
                   "(paired bootstrap over models)")
    page.heading("Memorized ⇒ exposed")
    page.figure(figures["vulnerability"], caption="each dot a training example", fmt="png")
    page.table(result.tables["by_mem"], caption="vulnerability by memorization bin")
    c = s.get("canaries")
    if c:
        v = c["vulnerability"]
        page.text(f"{c['n_canaries']} planted mislabeled canaries: mean vulnerability "
                  f"{v['canary']['mean']:.3f} vs {v['clean']['mean']:.3f} for clean examples "
                  f"(difference {v['difference']:+.3f}, ratio {v['ratio']:.2f}); at 0.1% global "
                  f"FPR the attack finds {_pct(c['pooled_tpr_vulnerability_fpr_0.001']['canary'])}"
                  f" of canary member trials vs "
                  f"{_pct(c['pooled_tpr_vulnerability_fpr_0.001']['clean'])} of clean ones; a "
                  f"canary ranks above a clean example with probability "
                  f"{c['canaries_rank_above_clean']:.3f}.", note=True)
    if "most_exposed" in figures:
        page.figure(figures["most_exposed"], caption="the most exposed examples", fmt="png")
    elif "most_exposed" in result.tables and "text" in result.tables["most_exposed"]:
        page.table(result.tables["most_exposed"], caption="the most exposed documents")
    if "exposure" in figures:
        page.heading("Exposure against epochs, weight decay and width")
        page.figure(figures["exposure"], caption="LiRA online and the loss threshold, "
                    "audited separately for the models of each value")
        show = [c for c in ("knob", "value", "test_acc", "mem_mean", "memorized_fraction",
                            "lira_online_auc", "lira_online_tpr_at_fpr_0.001", "loss_auc",
                            "vulnerability_memorized", "vulnerability_not_memorized")
                if c in result.tables["exposure"]]
        page.table(result.tables["exposure"][show], caption="exposure study")
    page.heading("Summary")
    page.code(json.dumps({k: v for k, v in s.items() if k not in ("population",)}, indent=1,
                         default=str)[:20000])
    return page
