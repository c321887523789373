"""Figures and the report of the LE-SDE study, drawn from a Result's tables and summary."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.report import Report  # noqa: E402
from memlab.studies.base import Result  # noqa: E402

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


STABILITY_COLUMNS = ["dataset", "loss", "n_models", "m", "gap", "gap_se", "beta_uniform",
                     "beta_uniform_floor", "beta_le", "beta_le_floor", "beta_le_signed",
                     "beta_le_signed_floor", "bound_uniform", "bound_uniform_vacuous",
                     "bound_le", "bound_le_vacuous", "bound_le_signed",
                     "bound_le_signed_vacuous"]


def build_report(result: Result) -> Report:
    s = result.summary
    page = Report("memlab lesde: locally elastic dynamics and stability")
    figures = draw_figures(result)
    if "phase" in figures:
        page.heading("LE-SDE phase diagram")
        cfg = result.config
        page.text(f"{cfg['n_classes']} classes × {cfg['n_per_class']} examples, logit features "
                  f"starting N(0, {cfg['init_scale']:g}²), β = {cfg['inter']:g}, α = ratio·β, "
                  f"{cfg['n_runs']} runs per cell, Euler–Maruyama dt = {cfg['dt']:g} to "
                  f"t = {cfg['t_end']:g}. Separated: every example classified by its own "
                  "logit (training error 0).")
        page.figure(figures["phase"], caption="phase diagram and threshold scan", fmt="png")
        lines = []
        for drift, d in s["phase"].items():
            lines.append(f"{drift}: measured threshold {d['threshold']} (predicted 1; largest "
                         f"deviation over noise levels {d['max_abs_deviation']}); separated "
                         f"fraction {d['separated_above']:.2f} above α/β = 1, "
                         f"{d['separated_at_or_below']:.2f} at or below; linearly separable "
                         f"by some classifier below 1: {d['lp_separable_below']:.2f}")
        page.text(" · ".join(lines), note=True)
        page.figure(figures["phase_trajectories"], caption="trajectories at the second noise "
                    "level", fmt="png")
    if "fit" in figures:
        page.heading("LE-SDE fitted to real networks")
        page.text("One-hidden-layer ReLU MLPs, plain SGD on all of a training subset; a "
                  "callback records every epoch's penultimate features, read-out and feature "
                  "tangent kernel. Strengths fitted per model by least squares of the feature "
                  "increments on the class gradients ('fitted'), or read off the kernel "
                  "('kernel'); the LE-SDE simulated from each model's initial features with "
                  "its recorded read-out.")
        page.figure(figures["fit"], caption="real (solid) vs simulated (dashed: fitted, dotted: "
                    "kernel), mean ± sd over models", fmt="png")
        page.table(result.tables["fit_strengths"], caption="fitted strengths per model")
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
        page.figure(figures["stability"], caption="gap vs bounds", fmt="png")
        table = result.tables["stability"]
        page.table(table[[c for c in STABILITY_COLUMNS if c in table]],
                   caption="stability table")
        page.text(" · ".join(f"{r['dataset']}/{r['loss']}: {r['verdict']}"
                             for _, r in table.iterrows()))
        page.figure(figures["stability_examples"], caption="per-example locally elastic "
                    "constants", fmt="png")
    page.heading("Summary")
    page.code(json.dumps(s, indent=1, default=str)[:30000])
    return page
