"""Figures and the report of the atlas, drawn from a Result's tables and summary alone:
the Spearman matrix, one figure per question (examples binned by memorization), the
proxies against the C-score, and α against test accuracy beyond the norm."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.report import Report, numbers  # noqa: E402
from memlab.studies.base import Result, reproduce_text  # noqa: E402

MEM_BINS = np.array([-1.0, 0.1, 0.3, 0.5, 0.7, 1.0001])
NAMES = {"mem": "memorization", "label_error": "label-error score", "cscore": "C-score est.",
         "final_loss": "final loss", "learning_speed": "learning speed",
         "knn_agreement": "k-NN label agreement", "first_learned": "epoch first learned",
         "forgetting_events": "forgetting events", "critical": "critical-sample share",
         "elasticity_within": "elasticity, own class",
         "elasticity_between": "elasticity, other classes", "nn_cosine": "nearest cosine",
         "n_duplicates": "near-duplicates", "vulnerability": "MIA vulnerability",
         "corrupted": "planted mislabeled", "alpha": "α (raw)",
         "alpha_corrected": "α (aspect-corrected)"}


def _name(column: str) -> str:
    return NAMES.get(column, column)


def _interval(answer: dict[str, Any]) -> str:
    if answer.get("rho") is None:
        return "not measured"
    return (f"ρ = {numbers.fmt(answer['rho'], 2)} [{numbers.fmt(answer['low'], 2)}, "
            f"{numbers.fmt(answer['high'], 2)}], n = {answer['n']:,}")


def matrix_figure(result: Result) -> plt.Figure:
    """The Spearman matrix; a cell's dot marks an interval that holds zero."""
    matrix = result.tables["matrix"]
    names = list(dict.fromkeys([*matrix["a"], *matrix["b"]]))
    index = {name: i for i, name in enumerate(names)}
    values = np.full((len(names), len(names)), np.nan)
    undecided = []
    for row in matrix.itertuples():
        i, j = index[row.a], index[row.b]
        values[i, j] = values[j, i] = row.rho
        if not (row.low > 0 or row.high < 0):
            undecided.append((i, j))
    np.fill_diagonal(values, 1.0)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1)
    for i, j in undecided:
        ax.plot([j, i], [i, j], "k.", markersize=3)
    ax.set_xticks(range(len(names)), [_name(n) for n in names], rotation=60, ha="right")
    ax.set_yticks(range(len(names)), [_name(n) for n in names])
    fig.colorbar(image, ax=ax, label="Spearman ρ (dot: 95% interval holds 0)")
    ax.set_title("Per-example measures of one population")
    return fig


def binned_figure(examples: pd.DataFrame, y: str, title: str) -> plt.Figure:
    """``y``'s mean (± 2 SE) per memorization bin."""
    frame = examples[["mem", y]].astype(float).dropna()
    bins = pd.cut(frame["mem"], MEM_BINS, right=False)
    grouped = frame.groupby(bins, observed=True)[y]
    means, se, counts = grouped.mean(), grouped.std() / np.sqrt(grouped.size()), grouped.size()
    centres = [interval.mid for interval in means.index]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(centres, means.to_numpy(), yerr=2 * se.fillna(0).to_numpy(), marker="o",
                capsize=3)
    for x, m, c in zip(centres, means.to_numpy(), counts.to_numpy()):
        ax.annotate(f"{c:,}", (x, m), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("memorization (bin centre)")
    ax.set_ylabel(_name(y))
    ax.set_title(title)
    return fig


def proxies_figure(result: Result) -> plt.Figure | None:
    answers = result.summary.get("proxies") or {}
    if not answers:
        return None
    names = list(answers)
    rho = np.array([answers[n]["rho"] for n in names])
    err = np.array([[answers[n]["rho"] - answers[n]["low"],
                     answers[n]["high"] - answers[n]["rho"]] for n in names]).T
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.5 * len(names)))
    ax.errorbar(rho, range(len(names)), xerr=err, fmt="o", capsize=3)
    ax.axvline(0, color="0.6", linewidth=0.8)
    ax.set_yticks(range(len(names)), [_name(n) for n in names])
    ax.set_xlabel("Spearman ρ with the population's C-score estimate (95%)")
    ax.set_title("Cheap proxies against the population")
    return fig


def alpha_figure(result: Result) -> plt.Figure | None:
    """Plain and partial (given the log Frobenius norm) ρ of α with test accuracy."""
    alpha = result.summary.get("alpha") or {}
    rows = [(kind, row) for kind, table in alpha.items() for row in table]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.45 * len(rows)))
    for i, (_kind, row) in enumerate(rows):
        for key, marker, shift in (("spearman", "s", -0.12), ("partial", "o", 0.12)):
            value = row[key]
            if value is None or not np.isfinite(value):
                continue
            ax.errorbar(value, i + shift, xerr=[[value - row[f"{key}_low"]],
                                                [row[f"{key}_high"] - value]],
                        fmt=marker, color="C0" if key == "spearman" else "C3", capsize=3,
                        label=("ρ(α, accuracy)" if key == "spearman"
                               else "partial ρ given log ‖W‖_F") if i == 0 else None)
    ax.axvline(0, color="0.6", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{_name(kind)}: {row['group']}" for kind, row in rows])
    ax.set_xlabel("Spearman ρ with test accuracy (95%)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Does α predict accuracy beyond the norm?")
    return fig


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    examples = result.tables["examples"]
    figures = {"matrix": matrix_figure(result)}
    for key, answer in result.summary["questions"].items():
        if answer.get("rho") is not None and answer["y"] in examples:
            figures[key] = binned_figure(examples, answer["y"], answer["question"])
    for name, draw in (("proxies", proxies_figure), ("alpha", alpha_figure)):
        fig = draw(result)
        if fig is not None:
            figures[name] = fig
    return figures


def finding_sentences(result: Result) -> list[str]:
    """One sentence per question: the verdict, the number and its interval."""
    lines = []
    for answer in result.summary["questions"].values():
        if answer.get("rho") is None:
            lines.append(f"{answer['question']} Not measured: {answer.get('reason', '')}.")
            continue
        lines.append(f"{answer['question']} {answer['verdict'].capitalize()}: "
                     f"{_interval(answer)} (ρ of {_name(answer['x'])} with "
                     f"{_name(answer['y'])}).")
    for kind, table in (result.summary.get("alpha") or {}).items():
        pooled = next((row for row in table if row["group"] == "pooled"), None)
        if pooled is not None:
            lines.append(f"Does {_name(kind)} predict test accuracy beyond log ‖W‖_F across "
                         f"{pooled['n']:,} models? {pooled['verdict'].capitalize()}: partial "
                         f"ρ = {numbers.fmt(pooled['partial'], 2)} "
                         f"[{numbers.fmt(pooled['partial_low'], 2)}, "
                         f"{numbers.fmt(pooled['partial_high'], 2)}] (plain ρ = "
                         f"{numbers.fmt(pooled['spearman'], 2)}).")
    return lines


def _answers_frame(result: Result) -> pd.DataFrame:
    rows = []
    for answer in result.summary["questions"].values():
        rows.append({"question": answer["question"], "x": _name(answer["x"]),
                     "y": _name(answer["y"]), "rho [95%]": _interval(answer),
                     "verdict": answer["verdict"]})
    for proxy, answer in (result.summary.get("proxies") or {}).items():
        rows.append({"question": f"Does {_name(proxy)} rank examples as the population does?",
                     "x": "C-score est.", "y": _name(proxy), "rho [95%]": _interval(answer),
                     "verdict": answer["verdict"]})
    return pd.DataFrame(rows)


def build_report(result: Result) -> Report:
    s = result.summary
    pop = s["population"]
    page = Report(f"memlab atlas: {pop['n_models']:,} models on {pop['dataset']}")
    page.finding(*finding_sentences(result))
    figures = draw_figures(result)
    page.heading("Answers")
    page.table(_answers_frame(result), caption=(
        "Each question is a Spearman ρ over the training examples, with a bootstrap 95% "
        "interval over examples; \"cannot decide\" when the interval holds 0, \"not "
        "measured\" when the run lacks what it needs (per-epoch records, planted noise)."))
    page.figure(figures["matrix"], caption="Every pair of per-example measures.")
    for key in s["questions"]:
        if key in figures:
            page.heading(s["questions"][key]["question"])
            page.text(_interval(s["questions"][key]) + ": "
                      + s["questions"][key]["verdict"] + ".")
            page.figure(figures[key], caption="Mean ± 2 SE per memorization bin; the "
                        "numbers are the examples in each bin.")
    if "proxies" in figures:
        page.heading("Cheap proxies")
        page.figure(figures["proxies"], caption=(
            "The C-score estimate is the accuracy of the models that held each example out; "
            "Jiang et al.'s proxies come from training alone."))
    if "alpha" in figures:
        page.heading("α and test accuracy")
        page.figure(figures["alpha"], caption=(
            "Per sweep value and pooled over the run's models: ρ of the mean α over layers "
            "with test accuracy, and the partial ρ given the mean log Frobenius norm "
            "(Fisher's 95% interval)."))
    page.heading("Reproduce", collapsed=True)
    page.code(reproduce_text(result))
    return page


def headline_lines(result: Result) -> list[str]:
    lines = finding_sentences(result)
    if result.out is not None:
        lines.append(f"examples: {result.out / 'tables' / 'examples.parquet'}")
        lines.append(f"models:   {result.out / 'tables' / 'models.parquet'}")
    return lines
