"""Part 1 of the LE-SDE study: the phase diagram (no training). K classes of logit
features, strengths α = ratio·β on the diagonal and β off it, noise σ; for every (ratio, σ)
R runs from random features, and the training loss, accuracy, NC1 and the best linear
classifier's margin at the end. The predicted transition is α/β = 1; the measured one is
where the initial growth rate of the features along their own class direction changes sign,
on a fine grid of ratios (the threshold scan)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from memlab import streams
from memlab.measures import lesde
from memlab.studies.lesde.config import LESDEConfig


def stream_seed(seed: int, stream: int, *keys: int) -> int:
    """One integer seed from the stream ``[seed, stream, *keys]``."""
    return int(np.random.SeedSequence([seed, stream, *keys]).generate_state(1)[0])


def horizon(config: LESDEConfig, drift: str, ratio: float) -> float:
    """Simulated time: t_end, capped for the linear drift (:func:`lesde.linear_horizon`)."""
    if drift != "linear":
        return config.t_end
    return lesde.linear_horizon(config.t_end, ratio * config.inter, config.inter,
                                config.n_classes)


def phase_diagram(config: LESDEConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(phase rows per drift × ratio × noise, trajectories of selected settings, the
    threshold scan rows)."""
    k, seed = config.n_classes, config.population.seed
    labels = np.repeat(np.arange(k), config.n_per_class)
    head = lesde.identity_head(k)
    rows, traj_rows, scan_rows = [], [], []
    for d_index, drift in enumerate(config.drifts):
        for r_index, ratio in enumerate(config.ratios):
            e = lesde.strength_matrix(k, ratio * config.inter, config.inter)
            for s_index, noise in enumerate(config.noises):
                traj = lesde.simulate(labels, e, noise, horizon(config, drift, ratio), config.dt,
                                      n_runs=config.n_runs, init_scale=config.init_scale,
                                      drift=drift, seed=stream_seed(
                                          seed, streams.LESDE_PHASE, d_index, r_index, s_index))
                final = traj.features[-1]
                hs = lesde.head_stats(final, labels, head)
                nc = lesde.nc_stats(final, labels, k)
                margins = np.array([lesde.linear_separability(f, labels) for f in final])
                separated = hs["accuracy"] == 1  # the head classifies every example
                rows.append(dict(
                    drift=drift, ratio=ratio, noise=noise, intra=ratio * config.inter,
                    inter=config.inter, loss=hs["loss"].mean(), loss_sd=hs["loss"].std(),
                    accuracy=hs["accuracy"].mean(), separated=separated.mean(),
                    lp_separable=(margins > 1e-6).mean(), lp_margin=margins.mean(),
                    nc1=np.median(nc["nc1"]), etf_angle=nc["etf_angle"].mean(),
                    feature_norm=nc["feature_norm"].mean()))
                if noise == config.noises[min(1, len(config.noises) - 1)]:
                    for t, f in zip(traj.times, traj.features):
                        hs_t, nc_t = lesde.head_stats(f, labels, head), lesde.nc_stats(f, labels, k)
                        traj_rows.append(dict(drift=drift, ratio=ratio, noise=noise, time=t,
                                              loss=hs_t["loss"].mean(),
                                              accuracy=hs_t["accuracy"].mean(),
                                              nc1=np.median(nc_t["nc1"]),
                                              feature_norm=nc_t["feature_norm"].mean()))
        # The threshold: the sign change of the initial growth rate along the own direction.
        v = lesde.margin_directions(head)[labels]
        for s_index, noise in enumerate(config.noises):
            for r_index, ratio in enumerate(config.scan_ratios):
                rng = np.random.default_rng(stream_seed(seed, streams.LESDE_SCAN, d_index,
                                                        r_index, s_index))
                x0 = config.init_scale * rng.standard_normal((config.n_runs, len(labels), k))
                x0 += config.scan_offset * v
                e = lesde.strength_matrix(k, ratio * config.inter, config.inter)
                traj = lesde.simulate(labels, e, noise, config.scan_t_end, min(config.dt, 0.01),
                                      n_runs=config.n_runs, x0=x0, drift=drift, n_records=10,
                                      seed=int(rng.integers(2**31)))
                amp = lesde.own_amplitude(traj.features, labels, head)  # (T, R)
                slopes = np.polyfit(traj.times, amp, 1)[0]  # (R,)
                scan_rows.append(dict(drift=drift, noise=noise, ratio=ratio,
                                      rate=slopes.mean(),
                                      rate_se=slopes.std(ddof=1) / np.sqrt(len(slopes))
                                      if len(slopes) > 1 else np.nan))
    return pd.DataFrame(rows), pd.DataFrame(traj_rows), pd.DataFrame(scan_rows)


def threshold_summary(scan: pd.DataFrame) -> dict[str, Any]:
    """Per drift and noise: the interpolated ratio where the rate crosses 0 (None when it
    does not cross on the grid), against the predicted 1."""
    out: dict[str, Any] = {}
    for drift, part in scan.groupby("drift", sort=False):
        per_noise = {f"{noise:g}": lesde.zero_crossing(rows["ratio"].to_numpy(),
                                                        rows["rate"].to_numpy())
                     for noise, rows in part.groupby("noise")}
        values = [v for v in per_noise.values() if v is not None]
        out[drift] = {"threshold_by_noise": per_noise,
                      "threshold": float(np.mean(values)) if values else None,
                      "max_abs_deviation": float(np.max(np.abs(np.array(values) - 1.0)))
                      if values else None,
                      "predicted": 1.0}
    return out


def phase_summary(phase: pd.DataFrame) -> dict[str, Any]:
    """Per drift: separated fraction below, at and above the predicted threshold."""
    out = {}
    for drift, part in phase.groupby("drift", sort=False):
        out[drift] = {
            "separated_above": float(part.loc[part["ratio"] > 1, "separated"].mean()),
            "separated_at_or_below": float(part.loc[part["ratio"] <= 1, "separated"].mean()),
            "separated_above_noise0": float(part.loc[(part["ratio"] > 1)
                                                     & (part["noise"] == part["noise"].min()),
                                                     "separated"].mean()),
            "lp_separable_below": float(part.loc[part["ratio"] < 1, "lp_separable"].mean()),
        }
    return out
