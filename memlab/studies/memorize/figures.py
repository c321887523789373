"""Figures and the report of the memorization study, drawn from a Result's tables and
summary alone (the inputs shown are stored in the ``examples`` and ``top_pairs`` tables)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402

from memlab.links import docs_page  # noqa: E402
from memlab.measures.stats import ABOVE, BELOW, UNDECIDED, interval_side  # noqa: E402
from memlab.report import COLORS, Report, draw_input, numbers, plot_reliability, style  # noqa: E402
from memlab.studies.base import Result, reproduce_text  # noqa: E402
from memlab.studies.memorize import removal as rm  # noqa: E402
from memlab.studies.memorize.floors import (  # noqa: E402
    ABOVE_NOISE,
    RELIABILITY_MIN,
    RELIABLE,
    UNRELIABLE,
    reliability_verdict,
)
from memlab.studies.memorize.study import FIT_MIN  # noqa: E402

BLUE, ORANGE, RED, GREY = COLORS["blue"], COLORS["orange"], COLORS["red"], COLORS["grey"]


def _label(summary: dict, y: int) -> str:
    names = summary.get("class_names") or []
    return str(names[y]) if 0 <= y < len(names) else "?"


def _input(row, column: str, summary: dict) -> np.ndarray:
    return np.asarray(getattr(row, column), np.float32).reshape(summary["input_shape"])


def plot_overview(result: Result) -> plt.Figure:
    """(a) histogram of mem, (b) memorization by class, (c) the reliability curve."""
    scores, s = result.tables["scores"], result.summary
    mem_min = s["mem_min"]
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.1), constrained_layout=True)
        ax = axes[0]
        low = min(-0.2, float(np.floor(np.nanmin(scores["mem"]) * 20) / 20))
        bins = np.arange(low, 1.0001, 0.05)
        if "corrupted" in scores:
            clean = scores.loc[~scores.corrupted, "mem"].dropna()
            flipped = scores.loc[scores.corrupted, "mem"].dropna()
            ax.hist([clean, flipped], bins=bins, stacked=True, color=[BLUE, ORANGE],
                    label=["original label", "flipped label"])
            ax.legend(loc="upper left")
        else:
            ax.hist(scores["mem"].dropna(), bins=bins, color=BLUE)
        ax.axvline(mem_min, color=RED, ls="--", lw=1)
        ax.text(mem_min + 0.03, 0.97, f"mem ≥ {mem_min:g}: {s['memorized_fraction']:.1%}",
                transform=ax.get_xaxis_transform(), va="top", color=RED, fontsize=7.5)
        ax.set_xlabel("memorization score  mem(i)")
        ax.set_ylabel("training examples")
        ax.set_title("(a) Memorization scores", loc="left")

        ax = axes[1]
        classes = result.tables["classes"]
        ax.bar(classes["label"], classes["memorized_fraction"], color=BLUE, width=0.7,
               label=f"fraction with mem ≥ {mem_min:g}")
        ax.plot(classes["label"], classes["mem_mean"], "o", color="black", ms=4,
                label="mean mem")
        ax.set_xticks(classes["label"])
        ax.set_xticklabels([_label(s, int(c)) for c in classes["label"]])
        ax.set_ylim(min(0, float(np.nanmin(classes["mem_mean"])) - 0.05), 1.19)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_xlabel("given label")
        ax.set_ylabel("fraction / mean score")
        ax.set_title("(b) Memorization by class", loc="left")
        ax.legend(loc="upper center", ncols=2)

        plot_reliability(result.tables["reliability"], ax=axes[2], what="scores")
        axes[2].set_title("(c) Split-half reliability", loc="left")
    return fig


def plot_examples(result: Result, per_row: int = 8) -> plt.Figure:
    """The most memorized training examples, drawn as the data is, with their given label
    and the label the models that held them out predict."""
    s, top = result.summary, result.tables["examples"]
    kind, vertical = s["input_kind"], s["vertical"]
    rows = max(1, math.ceil(len(top) / per_row))
    height = 1.9 if vertical or kind == "image" else 1.4
    with style():
        fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 1.3, rows * height),
                                 squeeze=False, constrained_layout=True)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, row in zip(axes.flat, top.itertuples()):
            ax.set_axis_on()
            draw_input(ax, _input(row, "input", s), kind, vertical)
            ax.set_title(f"#{row.index}  mem {row.mem:.2f}", fontsize=7, fontweight="normal")
            given = _label(s, int(row.label))
            if "original_label" in top and row.corrupted:
                given += f" (was {_label(s, int(row.original_label))})"
            ax.set_xlabel(f"given {given}\npredicted {_label(s, int(row.pred_out))}",
                          fontsize=7, color=RED if int(row.pred_out) != int(row.label)
                          else "black")
    return fig


def plot_pairs(result: Result, per_row: int = 4) -> plt.Figure:
    """The strongest high-influence pairs: the training example (left) beside the test
    example it helps (right); near-duplicates in red."""
    s, pairs = result.summary, result.tables["top_pairs"]
    kind, vertical = s["input_kind"], s["vertical"]
    rows = max(1, math.ceil(len(pairs) / per_row))
    height = 2.1 if vertical or kind == "image" else 1.6
    with style():
        fig = plt.figure(figsize=(per_row * 2.6, rows * height), constrained_layout=True)
        ratios: list[float] = []
        for p in range(per_row):
            ratios += [1, 1] + ([0.35] if p < per_row - 1 else [])
        grid = GridSpec(rows, len(ratios), figure=fig, width_ratios=ratios)
        for n, pair in enumerate(pairs.itertuples()):
            r, p = divmod(n, per_row)
            left = fig.add_subplot(grid[r, 3 * p])
            right = fig.add_subplot(grid[r, 3 * p + 1])
            draw_input(left, _input(pair, "train_input", s), kind, vertical)
            draw_input(right, _input(pair, "test_input", s), kind, vertical,
                       color=RED if pair.near_duplicate else "k")
            left.set_title(f"train #{pair.train}", fontsize=7, fontweight="normal")
            right.set_title(f"test #{pair.test}", fontsize=7, fontweight="normal")
            left.set_xlabel(f"label {_label(s, int(pair.train_label))}\nmem {pair.mem:.2f}",
                            fontsize=7)
            flag = "near-duplicate" if pair.near_duplicate else f"cos {pair.cosine:.2f}"
            right.set_xlabel(f"infl {pair.infl:.2f}±{pair.infl_se:.2f}\n{flag}", fontsize=7,
                             color=RED if pair.near_duplicate else "black")
    return fig


def plot_removal(result: Result) -> plt.Figure:
    """Test accuracy (and on the high-influence test examples) of models trained on the
    full set, without the memorized examples, and without as many random ones."""
    table, n_removed = result.tables["removal"], result.summary["removal"]["n_removed"]
    names = ["full training set", f"without {n_removed:,}\nmemorized",
             f"without {n_removed:,}\nrandom"]
    metrics = [("test_acc", "(a) Test accuracy"),
               ("high_influence_acc", "(b) Accuracy on high-influence test examples")]
    rng = np.random.default_rng(0)  # jitter only
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.0), constrained_layout=True)
        for ax, (metric, title) in zip(axes, metrics):
            for position, (arm, color) in enumerate(zip(rm.ARMS, [GREY, ORANGE, BLUE])):
                values = table.loc[table.arm == arm, metric].to_numpy()
                if not np.isfinite(values).any():
                    continue
                jitter = rng.uniform(-0.12, 0.12, len(values))
                ax.scatter(position + jitter, values, s=10, color=color, alpha=0.6, lw=0)
                mean, low, high = rm.t_interval(values)
                if np.isfinite(low):
                    ax.errorbar(position + 0.28, mean, yerr=[[mean - low], [high - mean]],
                                fmt="o", color=color, ms=5, capsize=3, lw=1.4)
                ax.annotate(f"{mean:.3f}", (position + 0.36, mean), va="center", fontsize=7)
            ax.set_xticks(range(3))
            ax.set_xticklabels(names)
            ax.set_xlim(-0.5, 2.8)
            ax.set_xlabel("training set of the arm")
            ax.set_ylabel("accuracy (95% CI over seeds)")
            ax.set_title(title, loc="left")
            ax.grid(axis="y", color="#eeeeee", lw=0.6)
    return fig


def plot_cscores(result: Result) -> plt.Figure:
    """(a) histogram of C-scores, (b) memorization against C-score."""
    frame = result.tables["cscores"].merge(result.tables["scores"], on="index",
                                           suffixes=("", "_mem"))
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.0), constrained_layout=True)
        axes[0].hist(frame["cscore"].dropna(), bins=np.linspace(0, 1, 41), color=BLUE)
        axes[0].set_xlabel("C-score (held-out accuracy, mean over subset ratios)")
        axes[0].set_ylabel("training examples")
        axes[0].set_title("(a) C-scores", loc="left")
        ax = axes[1]
        ax.scatter(frame["cscore"], frame["mem"], s=3, alpha=0.35, color=BLUE, lw=0,
                   rasterized=True)
        if "corrupted" in frame:
            c = frame["corrupted"].to_numpy(bool)
            ax.scatter(frame["cscore"][c], frame["mem"][c], s=9, marker="x", color=RED,
                       lw=0.6, label="flipped label", rasterized=True)
            ax.legend(loc="upper right")
        ax.set_xlabel("C-score")
        ax.set_ylabel("memorization score")
        rho = result.summary.get("spearman_mem_cscore")
        ax.set_title("(b) Memorization vs C-score" + (f" (Spearman {rho:.2f})"
                                                      if rho is not None else ""), loc="left")
    return fig


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    """name -> figure: overview, examples, reliability, and pairs / removal / cscores when
    the result has them."""
    figures = {"overview": plot_overview(result), "examples": plot_examples(result),
               "reliability": plot_reliability(result.tables["reliability"], what="scores")}
    if len(result.tables["top_pairs"]):
        figures["pairs"] = plot_pairs(result)
    if "removal" in result.tables:
        figures["removal"] = plot_removal(result)
    if "cscores" in result.tables:
        figures["cscores"] = plot_cscores(result)
    return figures


# ------------------------------------------------------------------ the finding
#
# Every sentence the report leads with is a function of the summary alone (so a loaded
# result says the same), with its interval and a verdict that can be "cannot decide"; the
# noise floors, intervals and verdicts it reads were computed at analysis time (study.py).


def _given(value: object) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _pct(value: float, low: float | None = None, high: float | None = None) -> str:
    """A fraction as a percentage, with its interval when given, rounded to the
    interval's half-width (:func:`numbers.decimals_for`)."""
    if not (_given(low) and _given(high)):
        return numbers.fmt_pct(value)
    places = numbers.decimals_for(50 * (high - low))  # the half-width in points
    return (f"{100 * value:.{places}f}% [{100 * low:.{places}f}%, "
            f"{100 * high:.{places}f}%]")


def _floor(s: dict, name: str) -> str:
    """A noise floor as mean ± sd over the permutations."""
    return numbers.fmt_se(s[name], s.get(f"{name}_sd"))


def _auroc(s: dict, name: str) -> str:
    return numbers.fmt_interval(s[f"{name}_auroc"], s.get(f"{name}_auroc_lo"),
                                s.get(f"{name}_auroc_hi"))


def _reliability_verdict(s: dict) -> str:
    return s.get("reliability_verdict") or reliability_verdict(s.get("reliability"),
                                                               s.get("reliability_sd"))


def _more_models(s: dict) -> str:
    """How to get more reliable scores: the models the summary measured as needed."""
    needed = s.get("models_needed") or {}
    chosen = (s.get("estimator") or {}).get("estimator")
    n = needed.get(chosen, min(needed.values()) if needed else None)
    if n is None or n <= s["n_models"]:
        return "train more models (--models, or --grow)"
    return (f"train more models (--models {n:,} brings 90% of the standard errors to "
            f"≤ {s['target_se']:g}; or --grow)")


def memorized_sentence(s: dict) -> str:
    """How many examples are memorized (count, fraction with its bootstrap interval, beside
    the count a permuted mask gives) and whether the scores are reliable."""
    threshold = s["mem_min"]
    text = (f"{s['n_memorized']:,} of {s['n_train']:,} training examples have mem ≥ "
            f"{threshold:g}: " + _pct(s["memorized_fraction"], s.get("memorized_fraction_lo"),
                                      s.get("memorized_fraction_hi"))
            + " (95% interval: bootstrap over models)")
    if _given(s.get("n_memorized_null")):
        floor = _floor(s, "n_memorized_null")
        if s.get("memorized_verdict") == ABOVE_NOISE:
            text += f", against {floor} from the same population with its membership mask "
            text += "permuted"
        else:
            text += (f", but the same population with its membership mask permuted gives "
                     f"{floor}: {UNDECIDED} whether they are memorized or noise")
    r = numbers.fmt_se(s["reliability"], s.get("reliability_sd"))
    verdict = _reliability_verdict(s)
    if verdict == RELIABLE:
        return text + (f". The scores are reproducible: split-half reliability {r} "
                       f"(above {RELIABILITY_MIN:g}).")
    if verdict == UNRELIABLE:
        return text + (f". The scores are not reliable: split-half reliability {r}, below "
                       f"{RELIABILITY_MIN:g}, so which examples score high (the rankings "
                       f"and pairs below) is mostly noise; {_more_models(s)}.")
    return text + (f". Split-half reliability {r} cannot be told from {RELIABILITY_MIN:g} "
                   f"({UNDECIDED}): the rankings and pairs below are not reliable; "
                   f"{_more_models(s)}.")


def pairs_sentence(s: dict) -> str:
    """The high-influence pairs beside their noise floor; not a finding when the scores
    are unreliable or the count is within the floor."""
    n = s["n_pairs"]
    rule = (f"mem ≥ {s['mem_min']:g}, infl ≥ {s['infl_min']:g}"
            + (", same label" if s.get("same_label", True) else ""))
    if not _given(s.get("n_pairs_null")):
        return f"{n:,} high-influence pairs ({rule}); this result has no noise floor for them."
    noise = ("the memorized examples with their membership permuted give "
             + _floor(s, "n_pairs_null"))
    if _reliability_verdict(s) != RELIABLE:
        return (f"The {n:,} high-influence pairs ({rule}; {noise}) are not a finding: the "
                "scores are too unreliable to say which pairs pass the thresholds.")
    if n == 0:
        return f"No pair passes {rule} ({noise})."
    if s.get("pairs_verdict") == ABOVE_NOISE:
        return (f"{n:,} high-influence pairs ({rule}) on {s['n_pair_tests']:,} test examples, "
                f"where {noise}: about {n - s['n_pairs_null']:,.0f} more than chance; "
                f"{s['n_pairs_near_duplicate']:,} of the pairs are near-duplicates (cosine ≥ "
                f"{s['duplicate_threshold']:g}).")
    return (f"{n:,} high-influence pairs ({rule}), but {noise}: the count cannot be told "
            f"from noise ({UNDECIDED} whether any pair is real).")


def fits(s: dict) -> bool:
    """Whether the subset models fit their own training examples."""
    return s["train_acc_in_mean"] >= s.get("fit_min", FIT_MIN)


def label_noise_sentence(s: dict) -> str | None:
    """What mem says about the planted label noise (AUROC with its interval and verdict),
    beside the label-error score; None without planted noise."""
    if "noise_auroc" not in s:
        return None
    if not _given(s["noise_auroc"]):
        return "The planted label noise cannot be scored (no flipped or no clean example)."
    flipped = (f"the {s['n_flipped']:,} flipped labels" if "n_flipped" in s
               else "the flipped labels")
    side = interval_side(s.get("noise_auroc_lo"), s.get("noise_auroc_hi"), 0.5)
    auroc = _auroc(s, "noise")
    if side == ABOVE:
        text = f"Planted label noise: mem ranks {flipped} above the clean ones, AUROC {auroc}"
    elif side == BELOW:
        text = f"Planted label noise: mem ranks {flipped} below the clean ones, AUROC {auroc}"
    else:
        text = (f"Planted label noise: AUROC {auroc} — {UNDECIDED} whether mem ranks "
                f"{flipped} above the clean ones")
    if _given(s.get("label_error_auroc")):
        text += (f"; the label-error score (does the rest of the population believe the "
                 f"label?) gives AUROC {_auroc(s, 'label_error')}")
    return text + " (95% DeLong intervals)."


def pointer_sentence(s: dict) -> str | None:
    """Where the subset models do not fit their own training examples: memorization
    cannot find mislabeled examples; which scores can, and how to get memorization.
    None where they fit."""
    if fits(s):
        return None
    text = (f"The subset models fit only {numbers.fmt_pct(s['train_acc_in_mean'])} of their "
            f"own training examples (below {s.get('fit_min', FIT_MIN):.0%}), so memorization "
            "cannot find mislabeled examples in this population: a label the models never "
            "fit is not memorized")
    if _given(s.get("noise_auroc")):
        text += f" (AUROC of mem for the planted flips: {_auroc(s, 'noise')})"
    label_error = ("the label-error score (the label_error column of the scores table: "
                   "minus the log-odds of the given label under the models that held the "
                   "example out" + (f"; AUROC {_auroc(s, 'label_error')}"
                                    if _given(s.get("label_error_auroc")) else "") + ")")
    final_loss = (f"the final-loss proxy of memlab attribute {s['run_dir']}"
                  + (f" (here the final_loss column of the proxies table: AUROC "
                     f"{_auroc(s, 'final_loss')})" if _given(s.get("final_loss_auroc"))
                     else ""))
    scores = [label_error, final_loss] if s.get("has_label_error", True) else [final_loss]
    return (text + ". The scores that look for them without memorization: " + " and ".join(scores)
            + ". For memorization scores, train until the models fit their subsets (more "
            f"epochs: --epochs, now {s['epochs']}).")


def finding(s: dict) -> list[str]:
    """The report's finding, computed from the summary: the memorized examples and the
    scores' reliability; the high-influence pairs beside their noise floor; the planted
    label noise, or, where the models do not fit, the pointer to the scores that find
    mislabeled examples."""
    third = pointer_sentence(s) or label_noise_sentence(s)
    return [memorized_sentence(s), pairs_sentence(s), *([third] if third else [])]


# ------------------------------------------------------------------ the report


def _architecture(s: dict) -> str:
    if s["model"] != "mlp":
        return s["model"]
    hidden = (s.get("model_kwargs") or {}).get("hidden", [100, 100])
    return "MLP " + "-".join(map(str, [math.prod(s["input_shape"]), *hidden, s["n_classes"]]))


def removal_caption(s: dict, summary: pd.DataFrame) -> str:
    """The removal study's verdict, computed from the paired intervals."""
    r = s["removal"]

    def said(metric: str, what: str) -> str:
        row = summary[(summary.comparison == "memorized - random") & (summary.metric == metric)]
        verdict = rm.verdict(summary, metric)
        value = (numbers.fmt_interval(*row[["mean", "ci_low", "ci_high"]].iloc[0])
                 if len(row) else numbers.MISSING)
        if verdict == rm.UNDECIDED:
            return (f"on {what} the data cannot tell removing the memorized examples from "
                    f"removing random ones (memorized − random {value}, the interval holds 0)")
        return (f"on {what} models without the memorized examples score {verdict} than "
                f"without random ones (memorized − random {value})")

    return (f"Removing the {r['n_removed']:,} examples with mem ≥ {r['threshold']:g}: "
            + said("test_acc", "the whole test set") + "; "
            + said("high_influence_acc", f"the {r['n_high_influence_tests']:,} "
                   "high-influence test examples") + ". (The high-influence test examples "
            "were selected with the same population's estimates.)")


def summary_table(s: dict) -> pd.DataFrame:
    """The numbers a reader needs, rounded to their uncertainty (the full ones are in
    summary.json)."""
    def floor(name: str) -> str:
        return f"; permuted mask: {_floor(s, name)}" if _given(s.get(name)) else ""

    rows = [
        ("models × subset fraction", f"{s['n_models']:,} × {s['subset_fraction']:g}"),
        ("test accuracy (mean ± sd over models)",
         numbers.fmt_se(s["test_acc_mean"], s["test_acc_sd"])),
        ("accuracy on their own training examples (mean; worst model)",
         f"{numbers.fmt_pct(s['train_acc_in_mean'])}; "
         f"{numbers.fmt_pct(s['train_acc_in_min'])}"),
        (f"examples with mem ≥ {s['mem_min']:g} (95% bootstrap interval)",
         f"{s['n_memorized']:,}: " + _pct(s["memorized_fraction"],
                                          s.get("memorized_fraction_lo"),
                                          s.get("memorized_fraction_hi"))
         + floor("n_memorized_null")),
        ("median standard error of mem", numbers.fmt(s["se_median"], 2)),
        ("split-half reliability (mean ± sd over splits)",
         f"{numbers.fmt_se(s['reliability'], s.get('reliability_sd'))} "
         f"({_reliability_verdict(s)})"),
        ("high-influence pairs (test examples; near-duplicates)",
         f"{s['n_pairs']:,} ({s['n_pair_tests']:,}; {s['n_pairs_near_duplicate']:,})"
         + floor("n_pairs_null")),
    ]
    for name, what in (("noise", "mem"), ("label_error", "the label-error score"),
                       ("final_loss", "the final training loss")):
        if _given(s.get(f"{name}_auroc")):
            rows.append((f"AUROC of {what} for the flipped labels (95% interval)",
                         _auroc(s, name)))
    if s.get("models_needed"):
        rows.append((f"models for se ≤ {s['target_se']:g} at 90% of the examples",
                     ", ".join(f"{k}: {v:,}" for k, v in s["models_needed"].items())))
    if _given(s.get("spearman_mem_cscore")):
        rows.append(("Spearman(mem, C-score)", numbers.fmt(s["spearman_mem_cscore"], 2)))
    return pd.DataFrame(rows, columns=["quantity", "value"])


def _unreliable_note(report: Report, s: dict, what: str) -> None:
    if _reliability_verdict(s) != RELIABLE:
        report.text(f"Not a finding: split-half reliability "
                    f"{numbers.fmt_se(s['reliability'], s.get('reliability_sd'))} is not "
                    f"above {RELIABILITY_MIN:g}, so {what} is mostly noise; "
                    f"{_more_models(s)}.", note=True)


def build_report(result: Result) -> Report:
    """The study's self-contained HTML page: the finding (computed from the summary), the
    figures with captions saying what to look at, tables rounded to their uncertainty,
    secondary sections collapsed, Reproduce last."""
    s, tables = result.summary, result.tables
    report = Report(f"Memorization and influence: {s['dataset']}")
    report.finding(*finding(s))
    report.text(
        f"{s['n_models']:,} models ({_architecture(s)}), each trained on a random "
        f"{s['subset_fraction']:.0%} of the {s['n_train']:,} training examples for "
        f"{s['epochs']} epochs ({s['optimizer']}, lr {s['lr']:g}, batch {s['batch_size']}). "
        "For every training example i, mem(i) is the accuracy on it of the models that "
        "trained on it minus that of the models that held it out; influence infl(i, j) is "
        f"the same difference on test example j (Feldman & Zhang 2020; {docs_page('science')} §1). "
        "Reliability is the Spearman correlation between the scores of two disjoint halves "
        "of the models; a noise floor is the same count from the population with each "
        "example's membership shuffled across the models (mean ± sd over "
        f"{s.get('null_permutations', 0)} shuffles).")
    choice = s.get("estimator")
    if choice:
        report.text(f"Estimator: {choice['estimator']} ({choice['reason']}); "
                    f"{docs_page('memorization', 'ground-truth-from-fewer-models')}.")
    if s.get("advice"):
        report.text("Standard error: " + s["advice"], note=True)
    if not fits(s):
        report.text(f"The subset models reach only {numbers.fmt_pct(s['train_acc_in_mean'])} "
                    "accuracy on their own training examples: under-trained models inflate "
                    "memorization and marginal-utility estimates. Train more epochs "
                    f"(--epochs, now {s['epochs']}).", note=True)
    report.table(summary_table(s), caption="Summary (the full numbers: summary.json)")

    report.heading("Memorization scores")
    look = (" Orange: the planted flipped labels, which a population that fits its data "
            "memorizes (right of the line)." if "noise_auroc" in s else "")
    report.figure(plot_overview(result), fmt="png", caption=(
        "(a) Memorization scores; right of the dashed line: examples the models get right "
        "mostly when they trained on them (memorized)." + look + " (b) Per class (given "
        "label): fraction memorized (bars) and mean score (dots); look for the classes "
        "memorized most. (c) Split-half reliability as the population grows (mean ± sd over "
        "random splits): a curve still rising at the right means more models would change "
        "the ranking."))

    report.heading("Most memorized examples")
    _unreliable_note(report, s, "which examples head this list")
    report.figure(plot_examples(result), fmt="png", caption=(
        "The most memorized training examples with their given label and the label the "
        "models that held them out predict most often. Look at the red ones: without the "
        "example, the population predicts another class — atypical or mislabeled."))
    top = tables["examples"]
    columns = {"index": "example", "label": "given",
               **({"original_label": "was"} if "original_label" in top else {}),
               "pred_out": "predicted (OUT)", "mem": "mem ± se", "se": "se",
               "acc_in": "acc IN", "acc_out": "acc OUT", "n_in": "IN", "n_out": "OUT"}
    report.table(top[list(columns)].head(20).rename(columns=columns),
                 caption="Top 20 memorized examples (acc: accuracy of the models that "
                         "trained on it, IN, and of those that held it out, OUT)",
                 float_format="{:.2f}", se={"mem ± se": "se"})

    report.heading("High-influence pairs")
    _unreliable_note(report, s, "which pairs pass the thresholds")
    if _reliability_verdict(s) == RELIABLE and s["n_pairs"] and _given(s.get("n_pairs_null")) \
            and s.get("pairs_verdict") != ABOVE_NOISE:
        report.text(f"Not a finding: the memorized examples with their membership permuted "
                    f"give {_floor(s, 'n_pairs_null')} pairs against these {s['n_pairs']:,} "
                    f"({UNDECIDED} whether any pair is real); the strongest are shown for "
                    "inspection.", note=True)
    if len(tables["pairs"]):
        report.figure(plot_pairs(result), fmt="png", caption=(
            "Training example (left) and the test example whose accuracy depends on it "
            "(right), strongest first. Look for pairs that look alike: red marks "
            f"near-duplicate inputs (cosine of the centred inputs ≥ "
            f"{s['duplicate_threshold']:g}), the known confounder."))
        pairs = tables["pairs"].head(20)
        same = bool((pairs["train_label"] == pairs["test_label"]).all())
        labels = ({"train_label": "label"} if same else
                  {"train_label": "train label", "test_label": "test label"})
        columns = {"train": "train", "test": "test", **labels, "mem": "mem ± se",
                   "mem_se": "mem_se", "infl": "infl ± se", "infl_se": "infl_se",
                   "cosine": "cosine", "nn_rank": "NN rank", "near_duplicate": "near-dup."}
        report.table(pairs[list(columns)].rename(columns=columns), float_format="{:.2f}",
                     se={"mem ± se": "mem_se", "infl ± se": "infl_se"}, caption=(
                         "Top 20 high-influence pairs (NN rank: rank of the training input "
                         "among the test input's nearest training inputs)"))
    else:
        report.text("No pair passes the thresholds.")

    if "removal" in tables:
        r = s["removal"]
        report.heading("Marginal utility: removing memorized examples")
        report.text(
            f"{r['seeds']} seeds per arm, each trained on the whole training set, on the set "
            f"without the {r['n_removed']:,} examples with mem ≥ {r['threshold']:g}, and "
            f"without {r['n_removed']:,} random examples (a new random set per seed); same "
            "recipe as the population, and seed s starts every arm from the same weights. "
            "Intervals: 95% Student-t over seeds; differences are paired by seed. "
            + removal_caption(s, tables["removal_summary"])
            + ("" if s.get("pairs_verdict", ABOVE_NOISE) == ABOVE_NOISE
               and _reliability_verdict(s) == RELIABLE else
               " The pairs that chose those test examples are not a finding here (above)."))
        report.figure(plot_removal(result), fmt="svg", caption=(
            "Points: seeds; bars: mean with 95% confidence interval. Compare the orange "
            "arm (without the memorized examples) with the blue one (without as many random "
            "ones): panel (b) shows what the memorized examples do for the test examples "
            "they influence."))
        summary = tables["removal_summary"].rename(columns={"mean": "mean [95% CI]"})
        report.table(summary[["comparison", "metric", "mean [95% CI]", "ci_low", "ci_high",
                              "seeds"]],
                     intervals={"mean [95% CI]": ("ci_low", "ci_high")},
                     caption="Removal study (train_acc: each arm's models on their own "
                             "training set)")

    report.heading("Reliability", collapsed=True)
    curve = tables["reliability"].rename(columns={"n_models": "models",
                                                  "spearman": "Spearman ± sd"})
    report.table(curve, se={"Spearman ± sd": "spearman_sd"}, caption=(
        "Split-half reliability: Spearman correlation of memorization scores from two "
        "disjoint halves of the models (mean ± sd over random splits)"))

    report.heading("Difficulty proxies", collapsed=True)
    if "cscores" in tables:
        ratios = ", ".join(f"{r:g}" for r in s["cscore_ratios"])
        report.figure(plot_cscores(result), fmt="png", caption=(
            "C-scores: each example's accuracy under models that held it out, averaged over "
            f"subset ratios {ratios} ({s['cscore_models']} models per ratio; the population "
            f"itself at {s['subset_fraction']:g}). Look at (b): memorized examples sit at "
            "low C-scores."))
    report.table(tables["proxy_correlations"], float_format="{:.2f}", caption=(
        "Spearman correlation of cheap proxies from the training records (averaged over the "
        "models that trained on each example) with memorization and held-out accuracy"
        + ("" if s["recorded_epochs"] else
           "; train with --record-epochs for first_learned and cumulative_accuracy")))

    report.heading("Reproduce", collapsed=True)
    report.code(reproduce_text(result))
    return report


def headline_lines(result: Result) -> list[str]:
    """What ``memlab memorize`` prints: the finding (the report's first sentences), the
    estimator, and where the tables are (the full numbers: summary.json)."""
    s = result.summary
    lines = list(finding(s))
    if s.get("estimator"):
        lines.append(f"estimator: {s['estimator']['estimator']} ({s['estimator']['reason']})")
    if s.get("grown"):
        lines.append(f"grown from {s['grown']['pilot_models']} to {s['grown']['models']} "
                     f"models for se <= {s['target_se']} at 90% of the examples")
    if "removal" in s:
        lines.append(removal_caption(s, result.tables["removal_summary"]))
    out = result.out
    return lines + [f"summary:   {out / 'summary.json'}",
                    f"scores:    {out / 'tables' / 'scores.parquet'}",
                    f"influence: {out / 'influence.npy'} (+ influence_se.npy)",
                    f"pairs:     {out / 'tables' / 'pairs.parquet'}",
                    f"run:       {s['run_dir']}"]
