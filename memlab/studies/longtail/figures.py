"""Figures and the report of the long-tail study, drawn from a Result's tables and summary
alone (so ``Result.load(out).figures()`` draws the same figures).

The report leads with its finding, each sentence computed from the findings table's 95%
intervals (:mod:`memlab.studies.longtail.verdicts`) and saying "cannot decide" where an
interval does not settle it: :func:`memorization_sentence` (singletons are memorized most;
with a pointer when the baseline models do not fit their singletons),
:func:`cost_sentence` (not memorizing costs accuracy on subpopulations seen once; a pointer
to stronger knobs when none limits memorization) and :func:`control_theory_sentence` (the
no-tail control and Feldman's τ₁ prediction)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.data.longtail import TEST_BUCKETS, TRAIN_BUCKETS  # noqa: E402
from memlab.measures.memorization import MEMORIZED  # noqa: E402
from memlab.measures.stats import NO, UNDECIDED, YES  # noqa: E402
from memlab.report import COLORS, Report, style  # noqa: E402
from memlab.report.numbers import fmt, fmt_interval, fmt_pct, fmt_se  # noqa: E402
from memlab.studies.base import Result, reproduce_text  # noqa: E402
from memlab.studies.longtail.config import BASELINE, CONTROL  # noqa: E402
from memlab.studies.longtail.verdicts import FACTOR, LIMITING_FIT  # noqa: E402


def _knob_colors(knobs: list[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10" if len(knobs) <= 10 else "tab20")
    return {knob: ("black" if knob == BASELINE else palette(i % palette.N))
            for i, knob in enumerate(knobs)}


def plot_memorization(mem: pd.DataFrame):
    """Mean memorization score by training-frequency bucket, one panel per prior."""
    priors = list(dict.fromkeys(mem.prior))
    knobs = list(dict.fromkeys(mem.knob))
    colors = _knob_colors(knobs)
    fig, axes = plt.subplots(1, len(priors), figsize=(3.4 * len(priors), 3), sharey=True,
                             squeeze=False)
    width = 0.8 / len(knobs)
    for ax, prior in zip(axes[0], priors):
        for i, knob in enumerate(knobs):
            rows = mem[(mem.prior == prior) & (mem.knob == knob)]
            x = np.arange(len(rows)) + (i - (len(knobs) - 1) / 2) * width
            ax.bar(x, rows.mem, width, yerr=rows.mem_se, color=colors[knob], label=knob)
        ax.set_xticks(range(len(TRAIN_BUCKETS)), TRAIN_BUCKETS)
        ax.set_title(prior)
    fig.supxlabel("how often the subpopulation occurs in the whole training set", fontsize=9)
    axes[0][0].set_ylabel("mean memorization score")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def plot_accuracy(acc: pd.DataFrame):
    """Test accuracy by the test example's training frequency, one line per knob."""
    priors = list(dict.fromkeys(acc.prior))
    knobs = list(dict.fromkeys(acc.knob))
    colors = _knob_colors(knobs)
    fig, axes = plt.subplots(1, len(priors), figsize=(3.4 * len(priors), 3), sharey=True,
                             squeeze=False)
    for ax, prior in zip(axes[0], priors):
        for knob in knobs:
            rows = acc[(acc.prior == prior) & (acc.knob == knob)]
            # A bucket that few models have (e.g. "seen once" on the control) is noise.
            shown = rows.accuracy.where(rows.models_with_bucket >= 0.5)
            ax.errorbar(range(len(rows)), shown, yerr=rows.accuracy_se, marker="o",
                        color=colors[knob], label=knob, lw=2 if knob == BASELINE else 1)
        ax.set_xticks(range(len(TEST_BUCKETS)), TEST_BUCKETS)
        ax.set_title(prior)
    fig.supxlabel("how often the model saw the test example's subpopulation", fontsize=9)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def plot_cost(cost: pd.DataFrame):
    """Extra test error (share of all test draws) by bucket, per knob, one panel per prior."""
    priors = list(dict.fromkeys(cost.prior))
    knobs = list(dict.fromkeys(cost.knob))
    colors = _knob_colors([BASELINE, *knobs])
    fig, axes = plt.subplots(1, len(priors), figsize=(3.4 * len(priors), 3), sharey=True,
                             squeeze=False)
    width = 0.8 / len(knobs)
    for ax, prior in zip(axes[0], priors):
        for i, knob in enumerate(knobs):
            row = cost[(cost.prior == prior) & (cost.knob == knob)].iloc[0]
            x = np.arange(len(TEST_BUCKETS)) + (i - (len(knobs) - 1) / 2) * width
            ax.bar(x, [row[f"extra_error_{b}"] for b in TEST_BUCKETS], width,
                   yerr=[row[f"extra_error_{b}_se"] for b in TEST_BUCKETS],
                   color=colors[knob], label=knob)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xticks(range(len(TEST_BUCKETS)), TEST_BUCKETS)
        ax.set_title(prior)
    fig.supxlabel("how often the model saw the test example's subpopulation", fontsize=9)
    axes[0][0].set_ylabel("extra test error vs baseline\n(share of all test draws)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def plot_theory(cost: pd.DataFrame):
    """Measured extra error on singleton subpopulations against τ₁ × extra unfit singletons."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    markers = dict(zip(dict.fromkeys(cost.prior), "osD^vP*X"))
    colors = _knob_colors([BASELINE, *dict.fromkeys(cost.knob)])
    for _, row in cost.iterrows():
        ax.errorbar(row.theory, row.extra_error_1, yerr=row.extra_error_1_se,
                    marker=markers[row.prior], color=colors[row.knob], ls="none")
    top = max(cost.theory.max(), cost.extra_error_1.max(), 1e-3) * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=0.8, label="measured = theory")
    for prior, marker in markers.items():
        ax.plot([], [], marker=marker, color="grey", ls="none", label=prior)
    for knob, color in colors.items():
        if knob != BASELINE:
            ax.plot([], [], marker="s", color=color, ls="none", label=knob)
    # a 4-inch panel holds about four tick labels of small shares (0.00025) side by side
    ax.locator_params(axis="x", nbins=4)
    ax.set_xlabel("theory: τ₁ × extra unfitted singletons")
    ax.set_ylabel("measured extra test error\non singleton subpopulations")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig




def plot_tail(subpopulations: pd.DataFrame):
    """The planted long tail: each subpopulation's training count against its frequency
    rank (log–log), beside the expected count n·p_j; one panel per prior."""
    priors = list(dict.fromkeys(subpopulations.prior))
    fig, axes = plt.subplots(1, len(priors), figsize=(3.0 * len(priors), 2.8), sharey=True,
                             squeeze=False)
    for ax, prior in zip(axes[0], priors):
        rows = subpopulations[subpopulations.prior == prior]
        seen = rows.train_count > 0
        ax.scatter(rows["rank"][seen], rows.train_count[seen], s=5, color=COLORS["blue"],
                   label="training count", lw=0)
        ax.plot(rows["rank"], rows.expected_train_count, color=COLORS["orange"], lw=1.2,
                label="planted: n · p_j")
        ax.axhline(1, color=COLORS["grey"], lw=0.5, ls=":")
        ax.set(xscale="log", yscale="log", title=prior, xlabel="frequency rank j")
        ax.set_ylabel("examples in the training set")
    axes[0][0].legend(loc="lower left")
    fig.tight_layout()
    return fig


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    t = result.tables
    with style():
        figures = {"tail": plot_tail(t["subpopulations"]),
                   "memorization": plot_memorization(t["memorization"]),
                   "accuracy": plot_accuracy(t["accuracy"])}
        if len(t["cost"]):
            figures["cost"] = plot_cost(t["cost"])
            figures["theory"] = plot_theory(t["cost"])
    return figures


# ---------------------------------------------------------------- the finding


def _claim(findings: pd.DataFrame, ends: str) -> pd.DataFrame:
    return findings[findings.finding.str.endswith(ends)]


def _overall(verdicts: list[str]) -> str:
    """Several priors' verdicts as one: "yes" if all are, "no" if any is, else undecided."""
    if verdicts and all(v == YES for v in verdicts):
        return YES
    return NO if NO in verdicts else UNDECIDED


def _lead(answer: str, yes: str, no: str, question: str) -> str:
    return {YES: yes, NO: no}.get(answer, f"{question}: {UNDECIDED}")


def _parts(rows: pd.DataFrame) -> str:
    return ", ".join(f"{row.prior} {fmt_interval(row.estimate, row.ci_low, row.ci_high)} "
                     f"({row.verdict})" for row in rows.itertuples())


def memorization_sentence(findings: pd.DataFrame, populations: pd.DataFrame,
                          epochs: int) -> str | None:
    """"Singletons are memorized most" per Zipf prior, with each prior's interval; when
    the baseline models do not fit their training singletons, the pointer to train them
    until they do (memorization cannot show what models that do not fit cannot hold)."""
    rows = _claim(findings, "singletons have the highest memorization scores")
    if not len(rows):
        return None
    answer = _overall(list(rows.verdict))
    text = (_lead(answer, "Singletons are memorized most", "Singletons are not memorized most",
                  "Whether singletons are memorized most")
            + " — the baseline's mean memorization score on subpopulations seen once minus "
            "the highest other bucket: " + _parts(rows) + " (95% intervals).")
    base = populations[(populations.knob == BASELINE) & (populations.prior != CONTROL)]
    unfit = base[base.fit_singletons < LIMITING_FIT]
    if len(unfit):
        worst = unfit.loc[unfit.fit_singletons.idxmin()]
        text += (f" The baseline models fit only {fmt_pct(worst.fit_singletons, 0)} of their "
                 f"training singletons ({worst.prior}; training accuracy "
                 f"{fmt(worst.train_accuracy, 2)}): models that do not fit their data cannot "
                 f"memorize, so this cannot answer until they do — train longer (--epochs, "
                 f"now {epochs}) or wider (--hidden).")
    return text


def cost_sentence(findings: pd.DataFrame) -> str:
    """"Not memorizing costs accuracy mostly on subpopulations seen once", per Zipf prior
    (pooled over the knobs that leave singletons unfitted), or the pointer to stronger
    knobs when no knob does."""
    rows = _claim(findings, "lose accuracy mostly on subpopulations seen once")
    if not len(rows):
        return (f"No knob leaves more than {1 - LIMITING_FIT:.0%} of the training singletons "
                "unfitted, so the cost of not memorizing is not measured here: give stronger "
                "knobs (--knobs, or --grid for several strengths).")
    answer = _overall(list(rows.verdict))
    parts = ", ".join(
        f"{row.prior} {fmt_interval(row.estimate, row.ci_low, row.ci_high)} ({row.verdict}; "
        f"{row.n_yes:.0f} of {row.n_tested:.0f} knobs on their own)"
        for row in rows.itertuples())
    return (_lead(answer, "Not memorizing costs accuracy mostly on subpopulations seen once",
                  "Not memorizing does not cost accuracy mostly on subpopulations seen once",
                  "Whether not memorizing costs accuracy mostly on subpopulations seen once")
            + " — accuracy drop seen once minus drop seen 4+ times, mean over the knobs that "
            f"fit fewer than {LIMITING_FIT:.0%} of their singletons: {parts} (95% intervals).")


def control_theory_sentence(findings: pd.DataFrame) -> str | None:
    """The no-tail control (the cost shrinks without a tail) and Feldman's prediction
    (τ₁ × extra unfitted singletons within a factor of 2 of the measured cost), each with
    its interval and verdict; None when neither was measured."""
    parts = []
    control = _claim(findings, "the singleton cost shrinks on the no-tail control")
    if len(control):
        row = control.iloc[0]
        parts.append(_lead(row.verdict, "The singleton cost shrinks on the no-tail control",
                           "The singleton cost does not shrink on the no-tail control",
                           "Whether the singleton cost shrinks on the no-tail control")
                     + " (smallest Zipf extra error on singleton subpopulations minus the "
                     f"control's: {fmt_interval(row.estimate, row.ci_low, row.ci_high)})")
    theory = findings[findings.finding.str.startswith("measured singleton cost vs Feldman")]
    if len(theory):
        row = theory.iloc[0]
        within = f"within a factor of {FACTOR:g}"
        ratio = (f"measured / predicted {fmt_interval(row.estimate, row.ci_low, row.ci_high)}, "
                 f"mean over {row.n_tested:.0f} knobs" if row.n_tested
                 else "no ratio: the knobs leave no more singletons unfitted than the baseline")
        parts.append(_lead(row.verdict, f"Feldman's τ₁ × extra unfitted singletons predicts "
                           f"the measured cost {within}",
                           f"Feldman's τ₁ × extra unfitted singletons does not predict the "
                           f"measured cost {within}",
                           f"whether Feldman's τ₁ predicts the measured cost {within}")
                     + f" ({ratio})")
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def finding(result: Result) -> list[str]:
    """The report's finding: memorization of singletons, the cost of not memorizing, the
    control and the theory, each computed from the findings table's intervals."""
    tables = result.tables
    epochs = result.config["population"]["epochs"]
    sentences = [memorization_sentence(tables["findings"], tables["populations"], epochs),
                 cost_sentence(tables["findings"]), control_theory_sentence(tables["findings"])]
    return [sentence for sentence in sentences if sentence]


# ---------------------------------------------------------------- captions from the data


def memorization_caption(mem: pd.DataFrame, n_classes: int) -> str:
    """The baseline's memorization of singletons against frequent examples, and against the
    1 − 1/C a model that fits every training example would have (known by construction)."""
    base = mem[mem.knob == BASELINE].set_index(["prior", "bucket"]).mem
    parts = []
    for prior in dict.fromkeys(mem.prior):
        if (prior, "1") in base.index and np.isfinite(base[prior, "1"]):
            parts.append(f"{prior}: {base[prior, '1']:.2f} on singletons vs "
                         f"{base.get((prior, '4+'), np.nan):.2f} on subpopulations with 4+")
    return (f"Baseline mean memorization by bucket — {'; '.join(parts) or 'no singletons'}. "
            f"A model that fits every training example and is at chance (1/{n_classes}) on "
            f"unseen subpopulations has memorization {1 - 1 / n_classes:.2f} on singletons.")


def accuracy_caption(acc: pd.DataFrame, n_classes: int) -> str:
    """Accuracy on never-seen subpopulations against chance, and the largest drops."""
    unseen = acc[acc.bucket == "0"]
    low, high = unseen.accuracy.min(), unseen.accuracy.max()
    drops = acc[(acc.knob != BASELINE) & (acc.bucket == "1")]
    text = (f"On subpopulations a model never saw, test accuracy is {low:.3f}–{high:.3f} "
            f"across priors and knobs, against 1/{n_classes} = {1 / n_classes:.3f} by "
            "construction (labels are independent of the clusters).")
    if len(drops) and drops["drop"].notna().any():
        worst = drops.loc[drops["drop"].idxmax()]
        text += (f" The largest drop on subpopulations seen once: {worst.knob} on "
                 f"{worst.prior}, −{fmt_se(worst['drop'], worst.drop_se)}.")
    return text


def findings_caption(findings: pd.DataFrame) -> str:
    counts = findings["verdict"].value_counts()
    return (f"{counts.get(YES, 0)} of {len(findings)} claims hold by more than the noise, "
            f"{counts.get(NO, 0)} do not, {counts.get(UNDECIDED, 0)} cannot be "
            "decided from these populations (95% intervals).")


# ---------------------------------------------------------------- the report

COST_COLUMNS = {"prior": "prior", "knob": "knob", "fit_singletons": "fits singletons",
                "extra_unfit": "extra unfit singletons", "extra_unfit_se": "extra_unfit_se",
                "tau1": "τ₁", "theory": "theory", "extra_error_1": "measured",
                "extra_error_1_se": "extra_error_1_se",
                "measured_over_theory": "measured / theory",
                "measured_over_theory_se": "measured_over_theory_se",
                "carry_over": "carry-over"}
THEORY_COLUMNS = {"prior": "prior", "k": "k", "m": "m", "tau1_times_m": "τ₁·m",
                  "tau1_monte_carlo": "τ₁ (Monte Carlo)",
                  "tau1_monte_carlo_se": "tau1_monte_carlo_se", "tau1": "τ₁",
                  "expected_singletons": "singletons expected",
                  "observed_singletons": "observed", "singleton_mass": "their test mass"}


def build_report(result: Result) -> Report:
    """The finding, the claims with their intervals, the figures (captions say what to
    look at), the tables rounded to their standard errors; the Reproduce line last."""
    config, summary, tables = result.config, result.summary, result.tables
    recipe = config["population"]
    figures = draw_figures(result)
    page = Report("Why memorization pays: the long-tail laboratory (Feldman 2020)")
    page.finding(*finding(result))
    page.text(
        f"Mixtures of {config['n_subpopulations']} subpopulations (Zipf exponents "
        f"{', '.join(f'{s:g}' for s in config['exponents'])}) and a uniform control of "
        f"{config['control_subpopulations']}; {config['n_train']} training / "
        f"{config['n_test']} test draws, {config['n_features']} features, "
        f"{config['n_classes']} classes, cluster spread {config['spread']}. Each population: "
        f"{recipe['n_models']} MLPs {list(recipe['model_kwargs']['hidden'])}, each on a "
        f"random {summary['subset_size']} training examples, {recipe['optimizer'].upper()} lr "
        f"{recipe['lr']}, batch {recipe['batch_size']}, {recipe['epochs']} epochs. "
        f"{summary['seconds']:.0f} s in all.")
    page.heading("Claims")
    page.text(findings_caption(tables["findings"]), note=True)
    page.table(tables["findings"][["finding", "estimate", "ci_low", "ci_high", "verdict",
                                   "measured"]].rename(
        columns={"estimate": "estimate [95% interval]"}),
        intervals={"estimate [95% interval]": ("ci_low", "ci_high")},
        caption="The claims, each with the interval its verdict is computed from")
    page.heading("Memorization")
    page.text(memorization_caption(tables["memorization"], config["n_classes"]), note=True)
    page.figure(figures["memorization"], caption="Look at whether the baseline's (black) "
                "bars for singletons (seen once) stand above its other buckets and above the "
                "knobs that limit memorization. Mean memorization score (± s.e.) by how "
                "often the example's subpopulation occurs in the training set.", fmt="png")
    page.heading("Accuracy")
    page.text(accuracy_caption(tables["accuracy"], config["n_classes"]), note=True)
    page.figure(figures["accuracy"], caption="Look at the gap between the baseline (black) "
                "and each knob at 'seen once' against the gap at 4+: that is the accuracy "
                "lost by not memorizing. Test accuracy by how many times the model saw the "
                "test example's subpopulation (buckets that fewer than half of the models "
                "have are not drawn).", fmt="png")
    if "cost" in figures:
        page.heading("Cost and theory")
        page.figure(figures["cost"], caption="Look at which bucket carries each knob's extra "
                    "error: a long-tail cost sits at 'seen once'. Extra test error of each "
                    "knob over the baseline, by bucket (paired over models).", fmt="png")
        page.figure(figures["theory"], caption="Look at whether the points lie on the "
                    "diagonal (measured = theory). Measured extra error on subpopulations "
                    "seen once vs Feldman's τ₁ × the extra training singletons the knob "
                    "leaves unfitted.", fmt="png")
        page.table(tables["cost"][list(COST_COLUMNS)].rename(columns=COST_COLUMNS),
                   se={"extra unfit singletons": "extra_unfit_se",
                       "measured": "extra_error_1_se",
                       "measured / theory": "measured_over_theory_se"},
                   caption="Cost of each knob against the theory (measured: extra test error "
                           "on subpopulations seen once, a share of all test draws; ± s.e.)")
    page.heading("The planted tail", collapsed=True)
    page.figure(figures["tail"], caption="Look at whether the dots follow the line down to "
                "one example: the subpopulations there are the singletons. Training count of "
                "each subpopulation against its frequency rank; the line is the planted "
                "frequency times n (subpopulations with no training example are not drawn).",
                fmt="png")
    page.table(tables["theory"][list(THEORY_COLUMNS)].rename(columns=THEORY_COLUMNS),
               se={"τ₁ (Monte Carlo)": "tau1_monte_carlo_se"},
               caption="τ₁ per prior, with its Monte-Carlo check and the singleton counts "
                       "(expected from the planted frequencies vs observed per model)")
    page.heading("Tables by bucket", collapsed=True)
    page.table(tables["memorization"], se={"mem": "mem_se"}, caption="Memorization by bucket "
               f"(± s.e.); memorized: share of examples with a score of at least {MEMORIZED:g}")
    page.table(tables["accuracy"], se={"accuracy": "accuracy_se", "drop": "drop_se"},
               caption="Test accuracy by bucket; drop = baseline − knob (paired; ± s.e.)")
    page.heading("Populations", collapsed=True)
    page.table(tables["populations"], caption="Every population trained")
    page.heading("Reproduce", collapsed=True)
    page.code(reproduce_text(result))
    return page
