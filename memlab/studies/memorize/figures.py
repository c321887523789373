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

from memlab.report import COLORS, Report, draw_input, plot_reliability, style  # noqa: E402
from memlab.studies.base import Result, command_line  # noqa: E402
from memlab.studies.memorize import removal as rm  # noqa: E402
from memlab.studies.memorize.config import MemorizeConfig  # noqa: E402

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


# ------------------------------------------------------------------ the report


def _interval(mean: float, low: float, high: float, digits: int = 3) -> str:
    if not np.isfinite(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _architecture(s: dict) -> str:
    if s["model"] != "mlp":
        return s["model"]
    hidden = (s.get("model_kwargs") or {}).get("hidden", [100, 100])
    return "MLP " + "-".join(map(str, [math.prod(s["input_shape"]), *hidden, s["n_classes"]]))


def noise_caption(s: dict) -> str | None:
    """What the planted label noise shows, from the AUROC and the group means."""
    if "noise_auroc" not in s:
        return None
    auroc = s["noise_auroc"]
    if auroc is None:
        return "The planted label noise cannot be scored (no flipped or no clean example)."
    quality = ("separates them almost perfectly" if auroc >= 0.95 else
               "ranks them above most clean examples" if auroc >= 0.8 else
               "separates them only weakly" if auroc > 0.6 else "does not separate them")
    return (f"Planted label noise: {s['label_noise_fraction']:.0%} of the labels were flipped; "
            f"mem {quality} (AUROC {auroc:.3f}; mean mem {s['mem_mean_flipped']:.2f} flipped, "
            f"{s['mem_mean_clean']:.2f} clean).")


def removal_caption(s: dict, summary: pd.DataFrame) -> str:
    """The removal study's verdict, computed from the paired intervals."""
    r = s["removal"]

    def said(metric: str, what: str) -> str:
        row = summary[(summary.comparison == "memorized - random") & (summary.metric == metric)]
        verdict = rm.verdict(summary, metric)
        value = _interval(*row[["mean", "ci_low", "ci_high"]].iloc[0]) if len(row) else "–"
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


def reproduce_text(result: Result) -> str:
    config = MemorizeConfig.from_dict(result.config)
    command = command_line("memorize", config, result.out)
    if command is None:
        return ("No memlab memorize command recreates this config: "
                + "; ".join(config.python_only()) + ". Reproduce it in Python with "
                "memlab.studies.memorize.run(MemorizeConfig.from_dict(config)) and the same "
                "objects (the config is in config.json).")
    return command


def build_report(result: Result) -> Report:
    """The study's self-contained HTML page, captions computed from the numbers."""
    s, tables = result.summary, result.tables
    report = Report(f"Memorization and influence: {s['dataset']}")
    report.text(
        f"{s['n_models']:,} models ({_architecture(s)}), each trained on a random "
        f"{s['subset_fraction']:.0%} of the {s['n_train']:,} training examples for "
        f"{s['epochs']} epochs ({s['optimizer']}, lr {s['lr']:g}, batch {s['batch_size']}). "
        "For every training example i, mem(i) is the accuracy on it of the models that "
        "trained on it minus that of the models that held it out; influence infl(i, j) is "
        "the same difference on test example j (Feldman & Zhang 2020; docs/science.md §1). "
        "Standard errors are the 95% intervals' half-widths / 1.96 (for the binary "
        "estimator Newcombe's, Wilson per side), which stay positive at accuracy 0 or 1; "
        "reliability is the Spearman correlation between the scores of two disjoint halves "
        "of the models.")
    choice = s.get("estimator")
    if choice and choice["estimator"] != "binary":
        report.text(
            f"Estimator: {choice['estimator']} ({choice['reason']}). It estimates the same "
            "mem from the margins (true-class logit minus the best other; right iff "
            "positive): per example and side a Gaussian, P(right) = Φ(mean/sd), mem = "
            "P_IN − P_OUT, with a MOVER interval; the binary estimate is in the scores "
            "table as mem_binary (docs/memorization.md, 'Ground truth from fewer models').")
    elif choice:
        report.text(f"Estimator: binary ({choice['reason']}).")
    if s.get("advice"):
        report.text("Standard error: " + s["advice"], note=True)
    rows = [
        ("models × subset fraction", f"{s['n_models']:,} × {s['subset_fraction']:g}"),
        ("population test accuracy (mean ± sd over models)",
         f"{s['test_acc_mean']:.3f} ± {s['test_acc_sd']:.3f}"),
        ("subset-model training accuracy, IN (mean; worst model)",
         f"{s['train_acc_in_mean']:.3f}; {s['train_acc_in_min']:.3f}"),
        ("accuracy on held-out training examples, OUT (mean)", f"{s['train_acc_out_mean']:.3f}"),
        (f"examples with mem ≥ {s['mem_min']:g} (95% interval: bootstrap over models)",
         f"{s['n_memorized']:,} ({s['memorized_fraction']:.1%}"
         + (f", [{s['memorized_fraction_lo']:.1%}, {s['memorized_fraction_hi']:.1%}])"
            if s.get("memorized_fraction_lo") is not None else ")")),
        ("mean memorization score", f"{s['mem_mean']:.3f}"),
        ("median standard error of mem", f"{s['se_median']:.3f}"),
        ("a-priori RMS error bound (docs/science.md §1)", f"{s['error_bound']:.3f}"),
        ("split-half reliability (Spearman, all models)",
         f"{s['reliability']:.3f} ± {s['reliability_sd']:.3f}"),
        (f"high-influence pairs (mem ≥ {s['mem_min']:g}, infl ≥ {s['infl_min']:g})",
         f"{s['n_pairs']:,} ({s['n_pair_tests']:,} test examples)"),
        (f"… of which near-duplicates (cosine ≥ {s['duplicate_threshold']:g})",
         f"{s['n_pairs_near_duplicate']:,}"),
        (f"pairs with infl > {s['strong_influence']:g} (near-duplicates among them)",
         f"{s['n_pairs_strong']:,} ({s['n_pairs_strong_near_duplicate']:,})"),
        ("test examples with a near-duplicate in training", f"{s['n_near_duplicate_tests']:,}"),
    ]
    if s.get("noise_auroc") is not None:
        rows.append((f"AUROC of mem for the {s['label_noise_fraction']:.0%} flipped labels",
                     f"{s['noise_auroc']:.3f}"))
    if s.get("label_error_auroc") is not None:
        rows.append(("AUROC of the label-error score (not memorization: the OUT models' "
                     "log-odds of the given label) for the flipped labels",
                     f"{s['label_error_auroc']:.3f}"))
    if s.get("models_needed"):
        rows.append((f"models for se ≤ {s['target_se']:g} at 90% of the examples, "
                     "measured on this population (per estimator)",
                     ", ".join(f"{k}: {v:,}" for k, v in s["models_needed"].items())))
    if s.get("spearman_mem_cscore") is not None:
        rows.append(("Spearman(mem, C-score)", f"{s['spearman_mem_cscore']:.3f}"))
    report.table(pd.DataFrame(rows, columns=["quantity", "value"]), caption="Summary")
    caption = noise_caption(s)
    if caption:
        report.text(caption)
    if s["train_acc_in_mean"] < 0.95:
        report.text(f"The subset models reach only {s['train_acc_in_mean']:.1%} accuracy on "
                    "their own training examples: under-trained models inflate memorization "
                    "and marginal-utility estimates. Consider more epochs.", note=True)

    report.heading("Memorization scores")
    report.figure(plot_overview(result), fmt="png", caption=(
        "(a) Distribution of memorization scores; dashed: the threshold for 'memorized'. "
        "(b) Per class (given label): the fraction of training examples memorized (bars) and "
        "the mean score (dots). (c) Agreement of the scores from two disjoint halves of the "
        "population, as the population grows (mean ± sd over random splits)."))

    report.heading("Most memorized examples")
    report.figure(plot_examples(result), fmt="png", caption=(
        "The most memorized training examples with their given label and the label the "
        "models that held them out predict most often (red: they disagree)."))
    top = tables["examples"]
    columns = ["index", "label", *(["original_label"] if "original_label" in top else []),
               "pred_out", "mem", "se", "acc_in", "acc_out", "n_in", "n_out"]
    report.table(top[columns].head(20), caption="Top 20 memorized examples",
                 float_format="{:.3f}")

    report.heading("High-influence pairs")
    if len(tables["pairs"]):
        report.figure(plot_pairs(result), fmt="png", caption=(
            "Training example (left) and the test example whose accuracy depends on it "
            "(right), strongest first. Red: near-duplicate inputs (cosine similarity of the "
            f"centred inputs ≥ {s['duplicate_threshold']:g}), the known confounder."))
        report.table(tables["pairs"].head(20), float_format="{:.3f}", caption=(
            "Top 20 high-influence pairs (nn_rank: rank of the training input among the test "
            "input's nearest training neighbours)"))
    else:
        report.text("No pair passes the thresholds.")

    report.heading("Reliability")
    curve = tables["reliability"]
    report.table(curve, float_format="{:.3f}", caption=(
        "Split-half reliability: Spearman correlation of memorization scores from two "
        "disjoint halves of n_models models (mean and sd over random splits)"))

    if "removal" in tables:
        r = s["removal"]
        report.heading("Marginal utility: removing memorized examples")
        report.text(
            f"{r['seeds']} seeds per arm, each trained on the whole training set, on the set "
            f"without the {r['n_removed']:,} examples with mem ≥ {r['threshold']:g}, and "
            f"without {r['n_removed']:,} random examples (a new random set per seed); same "
            "recipe as the population, and seed s starts every arm from the same weights. "
            "Intervals: 95% Student-t over seeds; differences are paired by seed. "
            + removal_caption(s, tables["removal_summary"]))
        report.figure(plot_removal(result), fmt="svg",
                      caption="Points: seeds; bars: mean with 95% confidence interval.")
        summary = tables["removal_summary"].copy()
        summary["mean [95% CI]"] = [_interval(row.mean, row.ci_low, row.ci_high)
                                    for row in summary.itertuples()]
        report.table(summary[["comparison", "metric", "mean [95% CI]", "seeds"]],
                     caption="Removal study (train_acc: each arm's models on their own "
                             "training set)")

    report.heading("Difficulty proxies")
    if "cscores" in tables:
        ratios = ", ".join(f"{r:g}" for r in s["cscore_ratios"])
        report.figure(plot_cscores(result), fmt="png", caption=(
            "C-scores: each example's accuracy under models that held it out, averaged over "
            f"subset ratios {ratios} ({s['cscore_models']} models per ratio; the population "
            f"itself at {s['subset_fraction']:g})."))
    report.table(tables["proxy_correlations"], float_format="{:.3f}", caption=(
        "Spearman correlation of cheap proxies from the training records (averaged over the "
        "models that trained on each example) with memorization and held-out accuracy"
        + ("" if s["recorded_epochs"] else
           "; train with --record-epochs for first_learned and cumulative_accuracy")))

    report.heading("Reproduce")
    report.code(reproduce_text(result))
    return report
