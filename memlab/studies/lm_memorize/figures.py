"""Figures and report of the LM study, drawn from a Result's tables and summary alone."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from memlab.measures.memorization import MEMORIZED  # noqa: E402
from memlab.measures.shape import MIN_BIN, N_BINS, PEAKS, UNDECIDED  # noqa: E402
from memlab.report import COLORS, Report, plot_reliability, style  # noqa: E402
from memlab.studies.base import Result  # noqa: E402
from memlab.studies.lm_memorize.config import CORPORA  # noqa: E402
from memlab.studies.lm_memorize.study import TOP_DOCUMENTS, TOP_PAIRS, token_view  # noqa: E402


def _num(value, fmt: str = ".3f") -> str:
    """A summary number as text; '–' where undefined (null in summary.json)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, fmt)


def distribution_figure(result: Result) -> plt.Figure:
    frame = result.tables["lm_memorization"]
    with style():
        fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
        ax.hist(frame.mem.dropna(), bins=40, color=COLORS["blue"])
        ax.axvline(MEMORIZED, color="k", ls="--", lw=1, label=f"mem = {MEMORIZED}")
        ax.set(xlabel="counterfactual memorization (IN − OUT per-token accuracy)",
               ylabel="training documents")
        ax.legend()
    return fig


def simplicity_figure(result: Result) -> plt.Figure:
    """Every document (by kind), the bin means with 95% intervals, and the two lines of
    the shape test."""
    frame = result.tables["lm_memorization"]
    bins = result.tables["lm_by_simplicity"]
    bins = bins[bins.n >= MIN_BIN]
    shape = result.summary["simplicity"]
    with style():
        fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
        for kind, part in frame.groupby("kind"):
            ax.scatter(part.simplicity, part.mem, s=6, alpha=0.5, lw=0, label=kind)
        ax.errorbar(bins.simplicity, bins.mem_mean, yerr=[bins.mem_mean - bins.mem_ci_low,
                    bins.mem_ci_high - bins.mem_mean], fmt="o", color="k", ms=3.5,
                    capsize=2, label=f"bin mean (95% CI), ≥ {MIN_BIN} documents")
        x = frame.simplicity.to_numpy()
        for side, color in (("left", COLORS["green"]), ("right", COLORS["purple"])):
            line = shape.get(side)
            if line and line.get("slope") is not None:
                part = x[x <= shape["breakpoint"]] if side == "left" else \
                    x[x >= shape["breakpoint"]]
                ends = np.array([part.min(), part.max()])
                ax.plot(ends, line["intercept"] + line["slope"] * ends, "-", color=color,
                        lw=1.5, label=f"{side} line: slope {_num(line['slope'], '.2f')}")
        ax.set(xlabel="simplicity (mean per-token accuracy over all models)",
               ylabel="counterfactual memorization")
        ax.legend(fontsize=6.5, markerscale=2)
    return fig


def duplicates_figure(result: Result) -> plt.Figure:
    by_copies = result.tables["lm_by_copies"]
    with style():
        fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
        for offset, (kind, part) in enumerate(by_copies.groupby("kind")):
            ax.errorbar(part.copies * (1 + 0.04 * offset), part.mem_mean,
                        # a group of one document has no interval: draw none
                        yerr=(part.mem_ci_high - part.mem_mean).fillna(0), fmt="o-",
                        capsize=3, label=kind)
        copies = sorted(by_copies.copies.unique())
        ax.set(xscale="log", xlabel="exact copies in the training set",
               ylabel="mean memorization (95% CI)")
        ax.set_xticks(copies, [str(c) for c in copies])
        ax.minorticks_off()
        ax.legend()
    return fig


def reliability_figure(result: Result) -> plt.Figure:
    return plot_reliability(result.tables["lm_reliability"], what="memorization scores")


def corpus(result: Result) -> str:
    """The corpus's short name: ``synthetic``, ``shakespeare``, ``bible``, else ``text``."""
    text = result.summary.get("text", result.config.get("text"))
    return text if text in CORPORA else "text"


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    """``<corpus>_<figure>``, so that with the study's prefix the PNG files of two corpora
    sit side by side: ``lm_synthetic_simplicity.png``, ``lm_shakespeare_simplicity.png``."""
    name = corpus(result)
    return {f"{name}_distribution": distribution_figure(result),
            f"{name}_simplicity": simplicity_figure(result),
            f"{name}_duplicates": duplicates_figure(result),
            f"{name}_reliability": reliability_figure(result)}


# ------------------------------------------------------------------ captions from the data


def simplicity_caption(shape: dict) -> str:
    """What the shape test found, in one sentence with its numbers."""
    verdict = shape["verdict"]
    if shape.get("left") is None:
        return (f"Memorization against simplicity: cannot decide the shape "
                f"({shape.get('reason', 'too few documents')}).")
    left, right, overall = shape["left"], shape["right"], shape["overall"]

    def slope(line):
        return (f"{_num(line['slope'], '+.2f')} [{_num(line['ci_low'], '+.2f')}, "
                f"{_num(line['ci_high'], '+.2f')}]")

    numbers = (f"two-lines test broken at simplicity {shape['breakpoint']:.2f} (the highest "
               f"bin): slope {slope(left)} below it, {slope(right)} above it, "
               f"{slope(overall)} over all {shape['n_documents']} documents (95% intervals)")
    if verdict == UNDECIDED:
        return (f"Memorization against simplicity: the data cannot decide between a peak and "
                f"a monotone trend ({numbers}).")
    if verdict == PEAKS:
        return (f"Memorization peaks at intermediate simplicity, as in the paper's inverted U "
                f"({numbers}).")
    return f"Memorization {verdict} with simplicity: no inverted U here ({numbers})."


def duplicates_caption(summary: dict) -> str:
    among = summary.get("spearman_mem_copies_random")
    overall = summary["spearman_mem_copies"]
    if among is None:
        if overall.get("rho") is None:
            return ("Memorization against duplicate count: no training document has an exact "
                    "copy, so there is no trend to measure.")
        among, who = overall, "all documents"
    else:
        who = "the random (unique and duplicated) documents"
    rho = (f"Spearman ρ = {_num(among['rho'], '+.2f')}, 95% CI [{_num(among['ci_low'], '+.2f')}"
           f", {_num(among['ci_high'], '+.2f')}] among {who}")
    if among["ci_high"] is not None and among["ci_high"] < 0:
        trend = "Documents with more exact copies are memorized less"
    elif among["ci_low"] is not None and among["ci_low"] > 0:
        trend = "Documents with more exact copies are memorized more"
    else:
        trend = "No detectable trend of memorization with the number of copies"
    return f"{trend} ({rho})."


def reliability_caption(curve) -> str:
    first, last = curve.iloc[0], curve.iloc[-1]
    if len(curve) < 2:
        return f"Split-half reliability with {int(last.n_models)} models: {last.spearman:.2f}."
    spread = 2 * math.hypot(first.spearman_sd, last.spearman_sd)
    change = last.spearman - first.spearman
    trend = ("rises" if change > spread else "falls" if change < -spread
             else "does not change detectably (within 2 sd)")
    return (f"Split-half reliability {trend} from {first.spearman:.2f} ± "
            f"{first.spearman_sd:.2f} with {int(first.n_models)} models to {last.spearman:.2f}"
            f" ± {last.spearman_sd:.2f} with {int(last.n_models)} (mean ± sd over random "
            "splits).")


def influence_caption(summary: dict, pairs) -> str:
    infl = summary.get("influence") or {}
    near, found = infl.get("planted_near_duplicates"), infl.get("planted_in_top")
    if not len(pairs):
        return "No influence pairs (no validation documents)."
    strongest = (f"The strongest pair has infl {pairs.infl.iloc[0]:.3f} ± "
                 f"{pairs.infl_se.iloc[0]:.3f} (similarity {pairs.similarity.iloc[0]:.2f}).")
    if not near:
        return strongest
    planted = pairs[pairs.planted]
    rest = pairs[~pairs.planted]
    text = (f"{found} of the {near} strongest pairs are the {near} planted near-duplicates "
            f"(validation document = a training document with its last characters changed)")
    if len(planted):
        text += (f"; planted pairs: infl {planted.infl.min():.2f}–{planted.infl.max():.2f}, "
                 f"similarity {planted.similarity.min():.2f}–{planted.similarity.max():.2f}")
    if len(rest):
        best = rest.iloc[0]
        text += (f"; the strongest other pair: infl {best.infl:.2f} ± {best.infl_se:.2f} "
                 f"(similarity {best.similarity:.2f})")
    return text + ". " + strongest


def _one_line(text: str) -> str:
    return text.replace("\n", " ↵ ")


def build_report(result: Result) -> Report:
    s, config = result.summary, result.config
    population = config["population"]
    frame = result.tables["lm_memorization"]
    page = Report(f"Counterfactual memorization: {s['text']}")
    page.text(
        f"{s['n_models']} {s['model']} language models, each trained on a random "
        f"{s['subset_fraction']:.0%} of {s['n_train']} documents (context {s['context']} "
        f"tokens, {s['epochs']} epochs, {population['optimizer']} lr {population['lr']:g}). "
        f"Performance = per-token next-token accuracy under teacher forcing. Mean per-token "
        f"accuracy: {s['train_acc_in']:.3f} on a model's own documents, "
        f"{s['train_acc_out']:.3f} on held-out training documents, {s['validation_acc']:.3f} "
        f"on validation documents.")
    page.text(
        f"Mean counterfactual memorization {_num(s['mem_mean'])} (median standard error "
        f"{_num(s['se_median'])}); {s['fraction_memorized']:.1%} of documents have "
        f"mem ≥ {s['memorized_threshold']}. Split-half reliability (Spearman) with all "
        f"models: {_num(s['reliability_all_models'])}. "
        + (f"{s['documents_without_in_or_out']} documents have no IN or no OUT model "
           "(no score). " if s["documents_without_in_or_out"] else "")
        + simplicity_caption(s["simplicity"]), note=True)
    figures = {key.removeprefix(f"{corpus(result)}_"): fig
               for key, fig in draw_figures(result).items()}
    page.figure(figures["distribution"], caption="Distribution of counterfactual memorization "
                f"(dashed: the {s['memorized_threshold']} threshold)")
    page.figure(figures["simplicity"], caption=simplicity_caption(s["simplicity"]))
    page.figure(figures["duplicates"], caption=duplicates_caption(s))
    page.figure(figures["reliability"], caption=reliability_caption(
        result.tables["lm_reliability"]))

    page.heading("Memorization by document kind")
    page.table(result.tables["lm_by_kind"], caption="mem_sem: standard error of the group "
               "mean; mem_ci_*: its 95% interval")
    page.heading("Memorization by document kind and duplicate count")
    page.table(result.tables["lm_by_copies"])
    page.heading("Memorization by simplicity")
    page.table(result.tables["lm_by_simplicity"], caption=f"{N_BINS} bins of simplicity; "
               f"bins of fewer than {MIN_BIN} documents are left out of the test and the curve")
    page.heading("Reliability")
    page.table(result.tables["lm_reliability"])
    page.heading(f"The {TOP_DOCUMENTS} most memorized documents")
    page.text("Under each line of text, per token: IN-model accuracy minus OUT-model "
              "accuracy ('#' ≥ 0.5, '+' ≥ 0.25, '.' ≥ 0.1, '-' ≤ −0.1; ↵ = newline).")
    page.code("\n\n".join(token_view(row) for row in
                          result.tables["lm_top_documents"].itertuples()))
    page.heading("Strongest influence pairs (training → validation)")
    page.text(influence_caption(s, result.tables["lm_influence_pairs"]), note=True)
    page.code("\n\n".join(
        f"infl {p.infl:.3f} ± {p.infl_se:.3f}  similarity {p.similarity:.2f}  "
        f"(mem {p.mem:.3f})\n  train {p.train_id}: {_one_line(p.train_text)}\n"
        f"  val   {p.validation_id}: {_one_line(p.validation_text)}"
        for p in result.tables["lm_influence_pairs"].head(TOP_PAIRS).itertuples()))
    page.table(frame.drop(columns="text").sort_values("mem", ascending=False).head(30),
               caption="Top 30 documents by memorization")
    page.heading("Settings")
    page.code(json.dumps(config, indent=1))
    return page
