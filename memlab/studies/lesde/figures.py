"""Figures and the report of the LE-SDE study, drawn from a Result's tables and summary.

The report opens with its finding: one sentence per part, each computed from the summary by
a function below (:func:`transition_sentence`, :func:`fit_sentence`,
:func:`stability_sentence`) with its interval and a verdict that can be "cannot decide"."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.measures.stats import UNDECIDED  # noqa: E402
from memlab.report import Report  # noqa: E402
from memlab.report.numbers import fmt, fmt_interval, fmt_pct, fmt_se  # noqa: E402
from memlab.studies.base import Result, command_line  # noqa: E402
from memlab.studies.lesde.config import LESDEConfig  # noqa: E402
from memlab.studies.lesde.verdicts import (  # noqa: E402
    AT_ONE,
    NOT_AT_ONE,
    NOT_SEPARATING,
    SEPARATING,
)

DRIFT_LABELS = {"ce": "cross-entropy drift (LE-SDE)", "linear": "linearized drift (LE-ODE)"}
FIT_STATS = ("loss", "accuracy", "nc1", "between_norm")


def phase_figure(result: Result) -> plt.Figure:
    """Per drift: log10 final training loss over (α/β, σ), the separated fraction written in
    each cell, the predicted threshold α/β = 1 dashed; right: the measured growth rate
    along the own class direction against α/β (threshold scan)."""
    phase, scan = result.tables["phase"], result.tables["threshold_scan"]
    drifts = list(dict.fromkeys(phase["drift"]))
    fig, axes = plt.subplots(len(drifts), 2, figsize=(11, 3.8 * len(drifts)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6, 1]})
    for row, drift in enumerate(drifts):
        part = phase[phase["drift"] == drift]
        ratios, noises = sorted(part["ratio"].unique()), sorted(part["noise"].unique())
        grid = part.pivot_table(index="noise", columns="ratio", values="loss").loc[noises, ratios]
        sep = part.pivot_table(index="noise", columns="ratio", values="separated").loc[
            noises, ratios]
        ax = axes[row, 0]
        image = ax.imshow(np.log10(np.clip(grid.to_numpy(), 1e-4, None)), origin="lower",
                          aspect="auto", cmap="viridis_r")
        for i in range(len(noises)):
            for j in range(len(ratios)):
                ax.text(j, i, f"{sep.iloc[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if sep.iloc[i, j] < 0.5 else "k")
        ax.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios])
        ax.set_yticks(range(len(noises)), [f"{s:g}" for s in noises])
        x_one = np.interp(1.0, ratios, range(len(ratios)))
        ax.axvline(x_one, ls="--", color="r", lw=1.2, label="predicted α/β = 1")
        ax.set(xlabel="intra/inter strength α/β", ylabel="noise σ",
               title=f"{DRIFT_LABELS.get(drift, drift)}: log10 final loss "
                     "(numbers: fraction of runs separated)")
        ax.legend(loc="upper left", fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.04, label="log10 final loss")
        ax = axes[row, 1]
        s = scan[scan["drift"] == drift]
        for noise, rows in s.groupby("noise"):
            ax.errorbar(rows["ratio"], rows["rate"], yerr=2 * rows["rate_se"].fillna(0),
                        marker="o", ms=3, capsize=2, label=f"σ = {noise:g}")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.axvline(1.0, ls="--", color="r", lw=1.2)
        th = result.summary.get("phase", {}).get(drift, {}).get("threshold")
        ax.set(xlabel="α/β", ylabel="initial growth rate along own direction",
               title=f"threshold scan: measured {th:.3f}" if th is not None else
               "threshold scan: no sign change")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def phase_trajectory_figure(result: Result) -> plt.Figure:
    traj = result.tables["phase_trajectories"]
    drifts = list(dict.fromkeys(traj["drift"]))
    fig, axes = plt.subplots(len(drifts), 3, figsize=(12, 3.2 * len(drifts)), squeeze=False)
    for row, drift in enumerate(drifts):
        part = traj[traj["drift"] == drift]
        colors = plt.cm.coolwarm(np.linspace(0, 1, part["ratio"].nunique()))
        for color, (ratio, rows) in zip(colors, part.groupby("ratio")):
            for ax, stat in zip(axes[row], ("loss", "accuracy", "nc1")):
                ax.plot(rows["time"], rows[stat], color=color, label=f"α/β = {ratio:g}")
        for ax, stat in zip(axes[row], ("loss", "accuracy", "nc1")):
            ax.set(xlabel="time", title=f"{DRIFT_LABELS.get(drift, drift)}: {stat}",
                   yscale="log" if stat in ("loss", "nc1") else "linear")
        axes[row, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def fit_figure(result: Result) -> plt.Figure:
    """Real (solid, mean over models ± sd) against simulated (dashed: fitted strengths;
    dotted: kernel strengths) statistics over epochs, one row per dataset."""
    traj = result.tables["fit_trajectories"]
    datasets = list(dict.fromkeys(traj["dataset"]))
    fig, axes = plt.subplots(len(datasets), len(FIT_STATS), figsize=(13, 3.1 * len(datasets)),
                             squeeze=False)
    styles = {"real": ("k", "-"), "fitted": ("C0", "--"), "kernel": ("C3", ":")}
    for row, name in enumerate(datasets):
        err = result.summary["fit"][name]["error_fitted"]
        for ax, stat in zip(axes[row], FIT_STATS):
            part = traj[(traj["dataset"] == name) & (traj["stat"] == stat)]
            for source, rows in part.groupby("source", sort=False):
                g = rows.groupby("epoch")["value"]
                mean, sd = g.mean(), g.std().fillna(0)
                color, style = styles[source]
                ax.plot(mean.index, mean, style, color=color, label=source)
                ax.fill_between(mean.index, mean - sd, mean + sd, color=color, alpha=0.12)
            ax.set(xlabel="epoch", title=f"{name}: {stat} (fit rms "
                                         f"{err[stat]['rms']:.3g})")
        axes[row, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def stability_figure(result: Result) -> plt.Figure:
    """Measured gap, the two bounds and the noise floors (log scale), per dataset and loss;
    the loss bound M dashed (above it a bound is vacuous)."""
    table = result.tables["stability"]
    fig, axes = plt.subplots(1, len(table), figsize=(3.3 * len(table), 3.8), squeeze=False)
    for ax, (_, row) in zip(axes[0], table.iterrows()):
        names = ["gap", "bound_le_signed", "bound_le", "bound_uniform"]
        labels = ["measured gap", "LE (signed)", "LE bound", "uniform bound"]
        values = [max(row[n], 1e-4) for n in names]
        floors = [np.nan, row["bound_le_signed_floor"], row["bound_le_floor"],
                  row["bound_uniform_floor"]]
        ax.bar(range(4), values, color=["k", "C2", "C0", "C3"])
        ax.scatter(range(4), floors, marker="_", s=400, color="orange", zorder=3,
                   label="permuted-mask floor")
        ax.axhline(row["loss_bound"], ls="--", color="0.4", lw=1, label="M (vacuous above)")
        ax.set_xticks(range(4), labels, rotation=30, ha="right", fontsize=8)
        ax.set(yscale="log", title=f"{row['dataset']}, {row['loss']}\n"
                                   f"{row['n_models']} models, m = {row['m']}")
        ax.title.set_fontsize(9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def stability_examples_figure(result: Result) -> plt.Figure:
    """Per training example z: mean over test points of |Δ̂(z, ·)|, real against the
    permuted-mask floor (the locally elastic constant is the maximum of these)."""
    ex = result.tables["stability_examples"]
    groups = list(ex.groupby(["dataset", "loss"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.3 * len(groups), 3.2), squeeze=False)
    for ax, ((name, loss), rows) in zip(axes[0], groups):
        bins = np.linspace(0, max(rows["mean_abs"].max(), rows["mean_abs_floor"].max()), 40)
        ax.hist(rows["mean_abs"], bins=bins, alpha=0.6, label="real mask")
        ax.hist(rows["mean_abs_floor"], bins=bins, alpha=0.6, label="permuted mask")
        ax.set(xlabel="mean_z' |Δ̂(z, z')|", title=f"{name}, {loss}")
        ax.title.set_fontsize(9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def draw_figures(result: Result) -> dict[str, plt.Figure]:
    figures = {}
    if "phase" in result.tables:
        figures["phase"] = phase_figure(result)
        figures["phase_trajectories"] = phase_trajectory_figure(result)
    if "fit_trajectories" in result.tables:
        figures["fit"] = fit_figure(result)
    if "stability" in result.tables:
        figures["stability"] = stability_figure(result)
        figures["stability_examples"] = stability_examples_figure(result)
    return figures


# ------------------------------------------------------------------ the finding


DRIFT_SHORT = {"ce": "the LE-SDE (cross-entropy drift)", "linear": "the linearized LE-ODE"}


def transition_sentence(phase: dict[str, Any]) -> str:
    """Where the simulated features start to separate (their initial growth along their own
    class turns positive), per drift: the scanned ratios that bracket it at every noise
    level and whether that is the predicted α/β = 1, or "cannot decide"."""
    clauses, undecided = [], False
    for drift, d in phase.items():
        label = DRIFT_SHORT.get(drift, drift)
        verdict = d.get("transition", UNDECIDED)
        low, high = d.get("threshold_lo"), d.get("threshold_hi")
        n, found = d.get("n_noises", 0), d.get("noises_bracketed", 0)
        if verdict == AT_ONE:
            clauses.append(f"in {label} it turns positive between α/β = {fmt(low)} and "
                           f"{fmt(high)} at all {n} noise levels: at the predicted α/β = 1")
        elif verdict == NOT_AT_ONE:
            away = [f"between {fmt(b[0])} and {fmt(b[1])} at σ = {noise}"
                    for noise, b in d.get("bracket_by_noise", {}).items()
                    if b and not b[0] <= 1 <= b[1]]
            clauses.append(f"in {label} it turns positive {'; '.join(away)}, a bracket "
                           "that excludes the predicted α/β = 1")
        else:
            undecided = True
            clauses.append(f"in {label}, cannot decide where it turns positive: the scan "
                           f"resolves the sign change at {found} of {n} noise levels")
    sentence = ("Where the simulated features start to separate (their initial growth along "
                "their own class, 95% intervals over runs): " + "; ".join(clauses) + ".")
    if undecided:
        sentence += (" More runs or scan ratios on both sides of 1 (--n-runs, --scan-ratios) "
                     "can decide it.")
    return sentence


def fit_sentence(fit: dict[str, Any]) -> str:
    """Which side of the threshold α/β = 1 the networks' fitted strengths put them, with
    the Student-t interval over networks, and how closely the fitted LE-SDE follows them."""
    words = {SEPARATING: "above 1, the separating phase", NOT_SEPARATING: "below 1, not "
             "separating", UNDECIDED: "cannot decide which side of 1"}
    clauses = []
    for name, f in fit.items():
        r = f.get("ratio_interval") or {"mean": f["strengths"]["ratio"]["mean"], "n": 0}
        verdict = r.get("verdict", UNDECIDED)
        error = f["error_fitted"]["loss"]["relative_to_range"]
        ratio = fmt_interval(r.get("mean"), r.get("low"), r.get("high"))
        clauses.append(f"on {name}, α/β = {ratio} over {r.get('n', 0)} networks: "
                       f"{words.get(verdict, verdict)}; the "
                       f"simulated loss is off by {fmt_pct(error)} of the real loss's range "
                       "(rms)")
    return "Fitted to real networks (intra/inter strength ratio, 95% interval): " \
        + "; ".join(clauses) + "."


def stability_sentence(stability: dict[str, Any]) -> str:
    """In how many dataset/loss settings the locally elastic constant stands above its
    permuted-mask noise floor and, among those, how many bounds are tighter than the
    uniform one and non-vacuous; suppressed where β_LE is at its floor."""
    rows = list(stability.values())
    total = len(rows)
    real = [r for r in rows if r["beta_le_above_floor"]]
    if not real:
        return (f"Locally elastic stability: β_LE cannot be told from its permuted-mask noise "
                f"floor in any of the {total} dataset/loss settings (cannot decide whether "
                "influence is locally elastic; its bounds say nothing beyond noise here).")
    tighter = sum(r["bound_le"] < r["bound_uniform"] for r in real)
    useful = sum(not r["bound_le_vacuous"] for r in real)
    return (f"Locally elastic stability: β_LE stands above its permuted-mask noise floor in "
            f"{len(real)} of {total} dataset/loss settings (cannot decide in "
            f"{total - len(real)}); there, the locally elastic bound is tighter than the "
            f"uniform one in {tighter} of {len(real)} and non-vacuous (below M) in {useful} "
            f"of {len(real)}: plug-in estimates, not certified bounds.")


def lesde_finding(summary: dict[str, Any]) -> list[str]:
    """The report's finding: one sentence per part run."""
    sentences = []
    if summary.get("phase"):
        sentences.append(transition_sentence(summary["phase"]))
    if summary.get("fit"):
        sentences.append(fit_sentence(summary["fit"]))
    if summary.get("stability"):
        sentences.append(stability_sentence(summary["stability"]))
    return sentences


# ------------------------------------------------------------------ the report


def _transition_table(phase: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for drift, d in phase.items():
        bracket = ("–" if d.get("threshold_lo") is None
                   else f"({fmt(d['threshold_lo'])}, {fmt(d['threshold_hi'])})")
        crossing = d["threshold"] if d["threshold"] is not None else np.nan
        rows.append({"drift": drift, "crossing (mean over σ)": crossing,
                     "bracket": bracket, "verdict": d.get("transition", UNDECIDED),
                     "separated, α/β > 1": d["separated_above"],
                     "separated, α/β ≤ 1": d["separated_at_or_below"],
                     "LP-separable, α/β < 1": d["lp_separable_below"]})
    return pd.DataFrame(rows)


def _fit_table(fit: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name, f in fit.items():
        r = f.get("ratio_interval") or {}
        st = f["strengths"]
        rows.append({"dataset": name, "networks": f["models"],
                     "α/β fitted": fmt_interval(r.get("mean"), r.get("low"), r.get("high")),
                     "verdict": r.get("verdict", UNDECIDED),
                     "α/β from kernel": fmt_se(st["kernel_ratio"]["mean"],
                                               st["kernel_ratio"]["se"]),
                     "R²": fmt_se(st["r2"]["mean"], st["r2"]["se"]),
                     "final accuracy": f["final_real_accuracy"],
                     "loss rms / range": f["error_fitted"]["loss"]["relative_to_range"]})
    return pd.DataFrame(rows)


STABILITY_COLUMNS = {"dataset": "dataset", "loss": "loss", "n_models": "models", "m": "m",
                     "gap": "gap", "gap_se": "gap_se", "beta_uniform": "β_U",
                     "beta_uniform_floor": "β_U floor", "beta_le": "β_LE",
                     "beta_le_floor": "β_LE floor", "bound_uniform": "uniform bound",
                     "bound_le": "LE bound", "bound_le_vacuous": "LE vacuous"}


def _reproduce(result: Result) -> str | None:
    return command_line("lesde", LESDEConfig.from_dict(result.config), result.out)


def build_report(result: Result) -> Report:
    """The finding, then one section per part (figure with what to look at, its table
    rounded), secondary figures and per-model tables collapsed, Reproduce last."""
    s = result.summary
    page = Report("memlab lesde: locally elastic dynamics and stability")
    page.finding(*lesde_finding(s))
    figures = draw_figures(result)
    if "phase" in figures:
        page.heading("LE-SDE phase diagram")
        cfg = result.config
        page.text(f"{cfg['n_classes']} classes × {cfg['n_per_class']} examples, logit features "
                  f"starting N(0, {cfg['init_scale']:g}²), β = {cfg['inter']:g}, α = ratio·β, "
                  f"{cfg['n_runs']} runs per cell, Euler–Maruyama dt = {cfg['dt']:g} to "
                  f"t = {cfg['t_end']:g}. Separated: every example classified by its own "
                  "logit (training error 0).")
        page.figure(figures["phase"], fmt="png", caption=(
            "Left: log10 final training loss over (α/β, σ), the fraction of runs separated "
            "in each cell. Right: the initial growth rate along the own class (± 2 se). Look "
            "for the loss dropping and the rate crossing 0 at the dashed line α/β = 1."))
        page.table(_transition_table(s["phase"]), caption=(
            "Where the rate crosses 0: the interpolated crossing, and the bracket of scanned "
            "ratios whose rates are resolved below and above 0 (95%); separated fractions"))
        page.heading("Trajectories", collapsed=True)
        page.figure(figures["phase_trajectories"], fmt="png", caption=(
            "Loss, accuracy and NC1 over time at the second noise level, one line per α/β"))
    if "fit" in figures:
        page.heading("LE-SDE fitted to real networks")
        page.text("One-hidden-layer ReLU MLPs, plain SGD on all of a training subset; a "
                  "callback records every epoch's penultimate features, read-out and feature "
                  "tangent kernel. Strengths fitted per model by least squares of the feature "
                  "increments on the class gradients ('fitted'), or read off the kernel "
                  "('kernel'); the LE-SDE simulated from each model's initial features with "
                  "its recorded read-out.")
        page.figure(figures["fit"], fmt="png", caption=(
            "Real (solid) vs simulated (dashed: fitted strengths, dotted: kernel strengths), "
            "mean ± sd over models. Look for the dashed line tracking the solid one."))
        page.table(_fit_table(s["fit"]), caption=(
            "Per dataset: fitted α/β [Student-t 95% over networks] and its side of 1; the "
            "kernel's α/β and R² (mean ± se)"))
        page.heading("Fitted strengths and simulation errors", collapsed=True)
        page.table(result.tables["fit_strengths"].drop(columns=["steps_per_epoch"],
                                                       errors="ignore"),
                   caption="fitted strengths per model")
        rows = []
        for name, f in s["fit"].items():
            for source in ("fitted", "kernel"):
                for stat, e in f[f"error_{source}"].items():
                    rows.append(dict(dataset=name, strengths=source, stat=stat, **e))
        page.table(pd.DataFrame(rows), caption="simulated − real: rms over epochs 1..E, "
                   "relative to the real range, and the final-epoch difference")
    if "stability" in figures:
        page.heading("Locally elastic stability")
        page.text("Δ̂(z, z') = mean test loss at z' over models with z in their subset minus "
                  "over models without (random subsets of size m). This is E[Δloss] at one "
                  "subset size, not the supremum over training sets the theory uses; the "
                  "bounds are the Bousquet–Elisseeff form 2β + (4mβ + M)√(ln(1/δ)/(2m)) with "
                  "β the plug-in constant: an empirical estimate, not a certified bound. "
                  "Floors: the same computation on permuted masks.", note=True)
        page.figure(figures["stability"], fmt="png", caption=(
            "Measured gap and the bounds (log scale), with the permuted-mask floors (orange "
            "ticks) and M (dashed: a bound above it is vacuous). Look for bars well above "
            "their floor and below M."))
        table = result.tables["stability"]
        shown = table[[c for c in STABILITY_COLUMNS if c in table]].rename(
            columns=STABILITY_COLUMNS)
        page.table(shown, se={"gap": "gap_se"}, caption=(
            "Gap (mean ± se over models), plug-in constants beside their noise floors, bounds"))
        page.text(" · ".join(f"{r['dataset']}/{r['loss']}: {r['verdict']}"
                             for _, r in table.iterrows()))
        page.heading("Per-example constants", collapsed=True)
        page.figure(figures["stability_examples"], fmt="png", caption=(
            "Per training example, the mean over test points of |Δ̂(z, ·)| with the real mask "
            "and a permuted one. Look for a right tail of the real histogram beyond the "
            "permuted one."))
    command = _reproduce(result)
    if command is not None:
        page.heading("Reproduce", collapsed=True)
        page.code(command)
    return page


def headline_lines(result: Result) -> list[str]:
    """What ``memlab lesde`` prints: the report's finding, then the measured durations (the
    full numbers: summary.json)."""
    s = result.summary
    timings = ", ".join(f"{part} {fmt(seconds)} s"
                        for part, seconds in (s.get("timing_s") or {}).items())
    return [*lesde_finding(s), *([f"time: {timings}"] if timings else [])]

