"""Figures and report of the LM study, drawn from a Result's tables and summary alone.

The report leads with its finding, each sentence computed from the summary with its 95%
interval and a verdict that can be "cannot decide": :func:`copies_sentence` (does
memorization grow with a document's exact copies), :func:`memorized_sentence` (how many
documents are memorized, beside the count estimation noise alone gives, flagged when the
models do not fit their documents or the scores are unreliable, with the flag that fixes
it) and :func:`simplicity_caption` (the inverted U against simplicity)."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.measures.memorization import MEMORIZED  # noqa: E402
from memlab.measures.shape import MIN_BIN, N_BINS, PEAKS, UNDECIDED  # noqa: E402
from memlab.measures.stats import Z95, verdict_from_interval  # noqa: E402
from memlab.report import COLORS, Report, plot_reliability, style  # noqa: E402
from memlab.report.numbers import fmt, fmt_interval, fmt_pct, fmt_se  # noqa: E402
from memlab.studies.base import Result, reproduce_text  # noqa: E402
from memlab.studies.lm_memorize.config import CORPORA  # noqa: E402
from memlab.studies.lm_memorize.study import TOP_DOCUMENTS, TOP_PAIRS, token_view  # noqa: E402

GROWS, SHRINKS = "grows", "shrinks"  # memorization against the number of copies


def _finite(value: Any) -> bool:
    """A number (not None, NaN or inf): summary.json stores an undefined number as null."""
    return value is not None and math.isfinite(float(value))


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


# ------------------------------------------------------------------ the finding

LOW_RELIABILITY = 0.5  # split-half reliability below this: which documents score high is noise
LOW_FIT = 0.5  # mean per-token accuracy on a model's own documents below this: not fit
FLOOR_ABOVE, FLOOR_BELOW = "above the noise floor", "below the noise floor"


def copies_sentence(summary: dict[str, Any]) -> str:
    """"Memorization grows with copies": Spearman's ρ of memorization and the number of
    exact copies (among the synthetic corpus's random documents when there are, else all)
    with its 95% interval, "grows" / "shrinks" / "cannot decide"."""
    among, who = summary.get("spearman_mem_copies_random"), "random documents"
    if among is None:
        among, who = summary["spearman_mem_copies"], "documents"
    if not _finite(among.get("rho")):
        return (f"Whether memorization grows with the number of exact copies: {UNDECIDED} — "
                "no training document has an exact copy, so there is no trend to measure.")
    rho = (f"Spearman ρ {fmt_interval(among['rho'], among['ci_low'], among['ci_high'])} "
           f"over {among['n']:,} {who}, 95% interval")
    trend = verdict_from_interval(among["ci_low"], among["ci_high"], above=GROWS,
                                  below=SHRINKS)
    if trend == UNDECIDED:
        return (f"Whether memorization grows with the number of exact copies: {UNDECIDED} "
                f"({rho}, which holds 0).")
    return f"Memorization {trend} with the number of exact copies of a document ({rho})."


def memorized_verdict(summary: dict[str, Any]) -> str:
    """Is the count of documents at or above the memorization threshold more than
    estimation noise gives? Above / below the noise floor when the excess over the null
    count lies beyond 1.96 of its null standard deviations, else "cannot decide"."""
    floor = summary.get("memorized_noise_floor")
    if not floor or not _finite(floor.get("expected")):
        return UNDECIDED
    excess, half = summary["n_memorized"] - floor["expected"], Z95 * floor["sd"]
    return verdict_from_interval(excess - half, excess + half, above=FLOOR_ABOVE,
                                 below=FLOOR_BELOW)


def memorized_sentence(summary: dict[str, Any]) -> str:
    """How many documents are memorized, beside the count estimation noise alone would
    give (its noise floor), with the flags that say when the count cannot answer: models
    that do not fit their documents (train longer), unreliable scores or documents with
    no IN / OUT model (more models)."""
    s = summary
    threshold, total = s["memorized_threshold"], s["n_train"]
    floor = s.get("memorized_noise_floor") or {}
    n = s.get("n_memorized", round(s["fraction_memorized"] * total))
    verdict = memorized_verdict(s)
    count = (f"{n:,} of {total:,} documents ({fmt_pct(n / max(total, 1))}) have "
             f"counterfactual memorization ≥ {threshold:g}")
    if _finite(floor.get("expected")):
        count += (f", against {fmt_se(floor['expected'], floor['sd'])} expected from "
                  "estimation noise alone")
    text = (f"{count}: {verdict}." if verdict != UNDECIDED else
            f"Whether any document is memorized: {UNDECIDED} — {count[0].lower()}{count[1:]}.")
    flags = []
    if _finite(s.get("train_acc_in")) and s["train_acc_in"] < LOW_FIT:
        flags.append(f"the models reach only {fmt(s['train_acc_in'], 2)} per-token accuracy on "
                     f"their own documents: they have not fit them, so memorization stays "
                     f"small whatever the documents; train longer (--epochs, now {s['epochs']})")
    reliability = s.get("reliability_all_models")
    if _finite(reliability) and reliability < LOW_RELIABILITY:
        flags.append(f"the scores' split-half reliability is "
                     f"{fmt_se(reliability, s.get('reliability_all_models_sd'))} (below "
                     f"{LOW_RELIABILITY:g}), so which documents score high is mostly noise; "
                     f"more models make the scores reliable (--models, now {s['n_models']})")
    if s.get("documents_without_in_or_out"):
        flags.append(f"{s['documents_without_in_or_out']} documents have no IN or no OUT model "
                     "and no score (more --models)")
    if flags:
        text += " Flag: " + "; ".join(flags) + "."
    return text


def simplicity_caption(shape: dict) -> str:
    """What the shape test found, in one sentence with its numbers."""
    verdict = shape["verdict"]
    if shape.get("left") is None:
        return (f"Memorization against simplicity: {UNDECIDED} the shape "
                f"({shape.get('reason', 'too few documents')}).")
    left, right, overall = shape["left"], shape["right"], shape["overall"]

    def slope(line):
        return fmt_interval(line["slope"], line["ci_low"], line["ci_high"])

    numbers = (f"two-lines test broken at simplicity {fmt(shape['breakpoint'], 2)} (the "
               f"highest bin): slope {slope(left)} below it, {slope(right)} above it, "
               f"{slope(overall)} over all {shape['n_documents']} documents (95% intervals)")
    if verdict == UNDECIDED:
        return (f"Memorization against simplicity: the data {UNDECIDED} between a peak and "
                f"a monotone trend ({numbers}).")
    if verdict == PEAKS:
        return (f"Memorization {PEAKS}, as in the paper's inverted U ({numbers}).")
    return f"Memorization {verdict} with simplicity: no inverted U here ({numbers})."


def finding(result: Result) -> list[str]:
    """The report's finding: memorization against copies, the memorized count beside its
    noise floor (with its flags), and the shape against simplicity."""
    s = result.summary
    return [copies_sentence(s), memorized_sentence(s), simplicity_caption(s["simplicity"])]


# ------------------------------------------------------------------ captions from the data


def reliability_caption(curve) -> str:
    first, last = curve.iloc[0], curve.iloc[-1]
    if len(curve) < 2:
        return (f"Split-half reliability with {int(last.n_models)} models: "
                f"{fmt_se(last.spearman, last.spearman_sd)}.")
    spread = 2 * math.hypot(first.spearman_sd, last.spearman_sd)
    change = last.spearman - first.spearman
    trend = ("rises" if change > spread else "falls" if change < -spread
             else "does not change detectably (within 2 sd)")
    return (f"Look at where the curve ends and whether it is still rising: more models would "
            f"raise it further. Split-half reliability {trend} from "
            f"{fmt_se(first.spearman, first.spearman_sd)} with {int(first.n_models)} models to "
            f"{fmt_se(last.spearman, last.spearman_sd)} with {int(last.n_models)} (mean ± sd "
            "over random splits).")


def influence_caption(summary: dict, pairs) -> str:
    infl = summary.get("influence") or {}
    near, found = infl.get("planted_near_duplicates"), infl.get("planted_in_top")
    if not len(pairs):
        return "No influence pairs (no validation documents)."
    strongest = (f"The strongest pair has infl {fmt_se(pairs.infl.iloc[0], pairs.infl_se.iloc[0])}"
                 f" (similarity {pairs.similarity.iloc[0]:.2f}).")
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
        text += (f"; the strongest other pair: infl {fmt_se(best.infl, best.infl_se)} "
                 f"(similarity {best.similarity:.2f})")
    return text + ". " + strongest


def _one_line(text: str) -> str:
    return text.replace("\n", " ↵ ")


def _group_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A group summary for the page: the mean with its interval, no sd / s.e. columns."""
    return frame.drop(columns=["mem_sd", "mem_sem"]).rename(
        columns={"mem_mean": "mean mem [95% CI]", "acc_in": "IN acc", "acc_out": "OUT acc"})


GROUP_INTERVAL = {"mean mem [95% CI]": ("mem_ci_low", "mem_ci_high")}


def build_report(result: Result) -> Report:
    """The finding, then memorization, duplicates, simplicity and reliability with their
    figures and tables (rounded to their intervals), the documents and pairs behind them
    collapsed, the Reproduce line last."""
    s, config = result.summary, result.config
    population = config["population"]
    frame = result.tables["lm_memorization"]
    page = Report(f"Counterfactual memorization: {s['text']}")
    page.finding(*finding(result))
    page.text(
        f"{s['n_models']} {s['model']} language models, each trained on a random "
        f"{s['subset_fraction']:.0%} of {s['n_train']} documents (context {s['context']} "
        f"tokens, {s['epochs']} epochs, {population['optimizer']} lr {population['lr']:g}). "
        f"Performance = per-token next-token accuracy under teacher forcing. Mean per-token "
        f"accuracy: {fmt(s['train_acc_in'], 3)} on a model's own documents, "
        f"{fmt(s['train_acc_out'], 3)} on held-out training documents, "
        f"{fmt(s['validation_acc'], 3)} on validation documents. Mean counterfactual "
        f"memorization {fmt(s['mem_mean'], 3)} (median standard error "
        f"{fmt(s['se_median'], 2)}).")
    figures = {key.removeprefix(f"{corpus(result)}_"): fig
               for key, fig in draw_figures(result).items()}
    page.heading("Memorization")
    page.figure(figures["distribution"], caption="Look at the mass right of the dashed line: "
                f"documents with mem ≥ {s['memorized_threshold']} (memorized). "
                f"Distribution of counterfactual memorization over the {s['n_train']} "
                "training documents.")
    page.table(_group_table(result.tables["lm_by_kind"]), intervals=GROUP_INTERVAL,
               caption="Memorization by document kind (95% interval of the group mean)")
    page.heading("Duplicates")
    page.figure(figures["duplicates"], caption="Look at the slope of each line across the "
                "number of copies. " + copies_sentence(s))
    page.table(_group_table(result.tables["lm_by_copies"]), intervals=GROUP_INTERVAL,
               caption="Memorization by document kind and number of exact copies")
    page.heading("Simplicity")
    page.figure(figures["simplicity"], caption="Look at whether the black bin means rise "
                "then fall (an inverted U) or go one way. "
                + simplicity_caption(s["simplicity"]))
    page.heading("Reliability")
    page.figure(figures["reliability"], caption=reliability_caption(
        result.tables["lm_reliability"]))
    page.heading("Tables: simplicity bins and reliability", collapsed=True)
    page.table(_group_table(result.tables["lm_by_simplicity"]), intervals=GROUP_INTERVAL,
               caption=f"{N_BINS} bins of simplicity; bins of fewer than {MIN_BIN} documents "
                       "are left out of the test and the curve")
    page.table(result.tables["lm_reliability"], se={"spearman": "spearman_sd"},
               caption="Split-half reliability (Spearman) by number of models, ± sd over "
                       "random splits")
    page.heading(f"The {TOP_DOCUMENTS} most memorized documents", collapsed=True)
    page.text("Under each line of text, per token: IN-model accuracy minus OUT-model "
              "accuracy ('#' ≥ 0.5, '+' ≥ 0.25, '.' ≥ 0.1, '-' ≤ −0.1; ↵ = newline).")
    page.code("\n\n".join(token_view(row) for row in
                          result.tables["lm_top_documents"].itertuples()))
    page.table(frame.drop(columns=["text", "index"]).sort_values("mem", ascending=False)
               .head(30), se={"mem": "se", "mem_loss": "mem_loss_se"},
               caption="Top 30 documents by memorization (± s.e.; mem_loss: OUT − IN loss, "
                       "nats per token)")
    page.heading("Strongest influence pairs (training → validation)", collapsed=True)
    page.text(influence_caption(s, result.tables["lm_influence_pairs"]), note=True)
    page.code("\n\n".join(
        f"infl {fmt_se(p.infl, p.infl_se)}  similarity {p.similarity:.2f}  "
        f"(mem {p.mem:.3f})\n  train {p.train_id}: {_one_line(p.train_text)}\n"
        f"  val   {p.validation_id}: {_one_line(p.validation_text)}"
        for p in result.tables["lm_influence_pairs"].head(TOP_PAIRS).itertuples()))
    page.heading("Reproduce", collapsed=True)
    page.code(reproduce_text(result))
    return page
