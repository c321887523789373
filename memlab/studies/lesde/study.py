"""The rest of Su's local-elasticity talk: the LE-SDE phase diagram, the LE-SDE fitted to
real networks, and locally elastic stability from a population.

    from memlab.studies.lesde import LESDEConfig, run
    result = run(LESDEConfig.quick(), out="runs/lesde")
    result.summary["phase"]["ce"]["threshold"]      # measured α/β where margins start growing
    result.summary["fit"]["digits"]["error"]        # simulated vs real trajectories
    result.tables["stability"]                      # gap, bounds, noise floors per dataset

Three parts (each can be switched off):

1. **Phase diagram** (:mod:`memlab.measures.lesde`): K classes of logit features, strengths
   α = ratio·β on the diagonal and β off it, noise σ; for every (ratio, σ) R runs from
   random features, and the training loss, accuracy, NC1 and the best linear classifier's
   margin at the end. The predicted transition is α/β = 1; the measured one is where the
   initial growth rate of the features along their own class direction changes sign, on a
   fine grid of ratios.
2. **Fitted to a real network**: one-hidden-layer ReLU MLPs trained by plain SGD on all of a
   training subset; a callback records, at every epoch, every example's penultimate
   features, the read-out layer and the class-pair means of the feature tangent kernel
   (:class:`FeatureCallback`). Per model, the strengths are fitted by least squares of the
   feature increments on the class gradients (:func:`memlab.measures.lesde.
   estimate_strengths`) and, separately, read off the kernel (E = η·(n/B)·κ, the drift SGD
   gives when the kernel is replaced by its class-pair mean times the identity). The LE-SDE
   is then simulated from the model's initial features, with its read-out as recorded, and
   its statistics compared with the real ones epoch by epoch.
3. **Locally elastic stability** (:mod:`memlab.measures.stability`): a population on random
   half subsets; Δ̂(z, z') on test points for the 0–1 loss and the cross-entropy clipped
   at ``loss_clip``; the plug-in constants, the permuted-mask noise floor, the uniform and
   locally elastic bounds, and the measured generalization gap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab.errors import ConfigError
from memlab.measures import lesde, stability
from memlab.studies.base import Result, StudyConfig, saved_result

STUDY = "lesde"
STATS = ("loss", "accuracy", "nc1", "feature_norm", "within_norm", "between_norm")


@dataclass(frozen=True)
class LESDEConfig(StudyConfig):
    """Settings of the three parts (defaults: the ``full`` preset's sizes)."""

    parts: tuple[str, ...] = ("phase", "fit", "stability")
    seed: int = 0
    # 1. phase diagram
    n_classes: int = 3
    n_per_class: int = 100
    inter: float = 5.0  # β; α = ratio · β
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0)
    noises: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0)
    drifts: tuple[str, ...] = ("ce", "linear")
    t_end: float = 50.0
    dt: float = 0.05
    n_runs: int = 16
    init_scale: float = 1.0
    scan_ratios: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2)
    scan_t_end: float = 1.0
    scan_offset: float = 0.5  # initial own-direction amplitude for the threshold scan
    # 2. fitted to real networks
    fit_datasets: tuple[str, ...] = ("mnist1d", "digits")
    fit_n_train: int = 500
    fit_models: int = 8
    fit_hidden: int = 100
    fit_epochs: int = 30
    fit_lr: float = 0.05
    fit_batch_size: int = 32
    fit_runs: int = 4
    fit_dt: float = 0.05  # SDE step in epochs
    # 3. stability
    stab_datasets: tuple[str, ...] = ("mnist1d", "digits")
    stab_n_train: int | None = None  # a random subset of the training set (None: all)
    stab_models: int = 256
    stab_epochs: int = 30
    stab_lr: float = 0.005
    stab_batch_size: int = 64
    subset_fraction: float = 0.5
    loss_clip: float = 10.0  # M for the clipped cross-entropy (nats)
    confidence_delta: float = 0.05
    n_permutations: int = 5
    n_workers: int | None = None

    @classmethod
    def quick(cls, **changes: Any) -> LESDEConfig:
        """A small grid, 3 MLPs per dataset, 64-model stability populations: under 2 minutes."""
        return cls(**{**dict(
            n_per_class=50, ratios=(0.5, 0.8, 1.0, 1.25, 2.0), noises=(0.0, 0.3, 1.0),
            n_runs=4, fit_n_train=300, fit_models=3, fit_epochs=10, fit_runs=4,
            stab_n_train=1000, stab_models=64, stab_epochs=20, n_permutations=3), **changes})

    @classmethod
    def full(cls, **changes: Any) -> LESDEConfig:
        return cls(**changes)

    def validate(self) -> None:
        unknown = set(self.parts) - {"phase", "fit", "stability"}
        if unknown:
            raise ConfigError(f"unknown parts {sorted(unknown)}; choose from phase, fit, "
                              "stability")
        bad = set(self.drifts) - set(lesde.DRIFTS)
        if bad:
            raise ConfigError(f"unknown drifts {sorted(bad)}; choose from {lesde.DRIFTS}")
        if self.n_classes < 2 or self.n_per_class < 2 or self.n_runs < 1:
            raise ConfigError("need n_classes >= 2, n_per_class >= 2 and n_runs >= 1")
        if min(self.ratios) < 0 or min(self.noises) < 0 or self.inter <= 0:
            raise ConfigError("ratios and noises must be >= 0 and inter > 0")
        if not 0 < self.subset_fraction < 1:
            raise ConfigError(f"subset_fraction must lie in (0, 1), got {self.subset_fraction}")
        if self.stab_models < 8:
            raise ConfigError("stab_models must be >= 8 (every example needs models in and "
                              "out of its subset)")


# ------------------------------------------------------------------ 1. phase diagram


def _own_amplitude(features: np.ndarray, labels: np.ndarray, head: lesde.Head) -> np.ndarray:
    """Mean over examples of ⟨h_i, v_{c_i}⟩, the features' amplitude along their own class
    direction: (..., n, d) -> (...,)."""
    v = lesde.margin_directions(head)[labels]
    return (features * v).sum(-1).mean(-1)


def phase_diagram(config: LESDEConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(phase rows per drift × ratio × noise, trajectories of selected settings, the
    threshold scan rows)."""
    k = config.n_classes
    labels = np.repeat(np.arange(k), config.n_per_class)
    head = lesde.identity_head(k)
    rows, traj_rows, scan_rows = [], [], []
    for d_index, drift in enumerate(config.drifts):
        for r_index, ratio in enumerate(config.ratios):
            e = lesde.strength_matrix(k, ratio * config.inter, config.inter)
            for s_index, noise in enumerate(config.noises):
                traj = lesde.simulate(labels, e, noise, _horizon(config, drift, ratio), config.dt,
                                      n_runs=config.n_runs, init_scale=config.init_scale,
                                      drift=drift, seed=_seed(config, 1, d_index, r_index,
                                                              s_index))
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
                rng = np.random.default_rng(_seed(config, 2, d_index, r_index, s_index))
                x0 = config.init_scale * rng.standard_normal((config.n_runs, len(labels), k))
                x0 += config.scan_offset * v
                e = lesde.strength_matrix(k, ratio * config.inter, config.inter)
                traj = lesde.simulate(labels, e, noise, config.scan_t_end, min(config.dt, 0.01),
                                      n_runs=config.n_runs, x0=x0, drift=drift, n_records=10,
                                      seed=int(rng.integers(2**31)))
                amp = _own_amplitude(traj.features, labels, head)  # (T, R)
                slopes = np.polyfit(traj.times, amp, 1)[0]  # (R,)
                scan_rows.append(dict(drift=drift, noise=noise, ratio=ratio,
                                      rate=slopes.mean(),
                                      rate_se=slopes.std(ddof=1) / np.sqrt(len(slopes))
                                      if len(slopes) > 1 else np.nan))
    return pd.DataFrame(rows), pd.DataFrame(traj_rows), pd.DataFrame(scan_rows)


def _horizon(config: LESDEConfig, drift: str, ratio: float) -> float:
    """Simulated time: t_end, but for the linear drift (exponential growth) at most the
    time its fastest mode takes to grow by e^15 (beyond that, float64 overflows)."""
    if drift != "linear":
        return config.t_end
    fastest = max(lesde.linear_mode_rates(ratio * config.inter, config.inter,
                                          config.n_classes))
    return config.t_end if fastest <= 0 else min(config.t_end, 15.0 / fastest)


def threshold_summary(scan: pd.DataFrame, config: LESDEConfig) -> dict[str, Any]:
    """Per drift and noise: the interpolated ratio where the rate crosses 0 (None when it
    does not cross on the grid), against the predicted 1."""
    out: dict[str, Any] = {}
    for drift, part in scan.groupby("drift", sort=False):
        per_noise = {}
        for noise, rows in part.groupby("noise"):
            rates, ratios = rows["rate"].to_numpy(), rows["ratio"].to_numpy()
            crossing = None
            sign = np.sign(rates)
            change = np.nonzero(np.diff(sign) != 0)[0]
            if len(change):
                i = change[0]
                crossing = float(ratios[i] - rates[i] * (ratios[i + 1] - ratios[i])
                                 / (rates[i + 1] - rates[i]))
            per_noise[f"{noise:g}"] = crossing
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


# ------------------------------------------------------------------ 2. fitted to real networks


class FeatureCallback:
    """Records, at every epoch 0..E, for every training example of a one-hidden-layer MLP:
    ``features`` (K, n, d) the penultimate (hidden) activations, ``head_w`` (K, C, d),
    ``head_b`` (K, C), and ``kernel`` (K, C, C) the class-pair means of the isotropic
    feature tangent kernel k(i, j) = mean(a_i ⊙ a_j)·(x_i·x_j + 1) (a: ReLU derivative
    pattern), which is tr(J_h(x_i) J_h(x_j)ᵀ)/d for h = relu(W₁x + b₁)."""

    name = "lesde"

    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    def epochs(self, config) -> tuple[int, ...]:
        return tuple(range(config.epochs + 1))  # 0 = the initial weights

    def describe(self) -> dict:
        return {"n_classes": self.n_classes}

    def __call__(self, state) -> dict[str, np.ndarray]:
        import torch

        names = sorted(state.params)
        if names != ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight"]:
            raise ConfigError("the LE-SDE fit needs a one-hidden-layer MLP (hidden=(d,)), got "
                              f"parameters {names}")
        x, y = state.tensors["train"][:2]
        x, y = x.flatten(1).to("cpu", torch.float64), y.cpu()
        p = {k: v.detach().to("cpu", torch.float64) for k, v in state.params.items()}
        pre = torch.einsum("kdp,np->knd", p["layers.0.weight"], x) + p["layers.0.bias"][:, None]
        h = torch.relu(pre)
        active = (pre > 0).to(torch.float64)
        kernel = torch.einsum("kid,kjd->kij", active, active) / active.shape[-1]
        kernel = kernel * (x @ x.T + 1.0)[None]
        onehot = torch.nn.functional.one_hot(y.long(), self.n_classes).to(torch.float64)
        counts = onehot.sum(0)
        pair = torch.einsum("ia,kij,jb->kab", onehot, kernel, onehot) / (counts[:, None]
                                                                        * counts[None, :])
        return {"features": h.to(torch.float32).numpy(),
                "head_w": p["layers.1.weight"].to(torch.float32).numpy(),
                "head_b": p["layers.1.bias"].to(torch.float32).numpy(),
                "kernel": pair.numpy()}


def _fit_data(name: str, config: LESDEConfig):
    from memlab.data import load

    data = load(name)
    rng = np.random.default_rng([config.seed, 11])
    keep = np.sort(rng.choice(data.n_train, min(config.fit_n_train, data.n_train),
                              replace=False))
    sub = data.subset(keep)
    sub.name = f"{data.name}-{len(keep)}"
    return sub


def fit_population(name: str, config: LESDEConfig, out: Path | None, progress: bool):
    from memlab.population import train_population

    data = _fit_data(name, config)
    membership = np.ones((config.fit_models, data.n_train), bool)
    path = None if out is None else out / "populations" / f"fit-{name}"
    return data, train_population(
        data, model="mlp", model_kwargs={"hidden": [config.fit_hidden]},
        membership=membership, n_models=config.fit_models, epochs=config.fit_epochs,
        optimizer="sgd", momentum=0.0, lr=config.fit_lr, batch_size=config.fit_batch_size,
        seed=config.seed, callbacks=[FeatureCallback(data.n_classes)], out=path,
        progress=progress, n_workers=config.n_workers, save_weights=False,
        chunk_size=config.fit_models)


def _trajectory_stats(features: np.ndarray, labels: np.ndarray, heads: list[lesde.Head],
                      k: int) -> dict[str, np.ndarray]:
    """STATS over time of features (T, ..., n, d) with one head per time: each (T, ...)."""
    out: dict[str, list] = {s: [] for s in STATS}
    for f, head in zip(features, heads):
        hs, nc = lesde.head_stats(f, labels, head), lesde.nc_stats(f, labels, k)
        for s in STATS:
            out[s].append((hs if s in hs else nc)[s])
    return {s: np.array(v) for s, v in out.items()}


def fit_real(name: str, config: LESDEConfig, out: Path | None, progress: bool
             ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(trajectory rows real / fitted / kernel, strength rows, summary) for one dataset."""
    data, run = fit_population(name, config, out, progress)
    feats = run.records("lesde_features").astype(np.float64)  # (M, E+1, n, d)
    head_w = run.records("lesde_head_w").astype(np.float64)
    head_b = run.records("lesde_head_b").astype(np.float64)
    kernel = run.records("lesde_kernel").astype(np.float64)  # (M, E+1, C, C)
    labels = np.asarray(data.y_train)
    k = data.n_classes
    epochs = np.arange(feats.shape[1], dtype=np.float64)
    steps_per_epoch = int(np.ceil(data.n_train / config.fit_batch_size))
    traj_rows, strength_rows = [], []
    errors: dict[str, dict[str, list]] = {"fitted": {s: [] for s in STATS},
                                          "kernel": {s: [] for s in STATS}}
    for m in range(feats.shape[0]):
        heads = [(head_w[m, e], head_b[m, e]) for e in range(len(epochs))]
        real = _trajectory_stats(feats[m], labels, heads, k)
        gbar = np.stack([lesde.class_gradients(lesde.loss_gradients(f, labels, h), labels, k)
                         for f, h in zip(feats[m], heads)])
        fit = lesde.estimate_strengths(epochs, feats[m], labels, gbar, rule="mid")
        # SGD's drift per epoch with the kernel replaced by its class-pair mean: η (n/B) κ.
        e_kernel = config.fit_lr * data.n_train / config.fit_batch_size * kernel[m].mean(0)
        off = ~np.eye(k, dtype=bool)
        strength_rows.append(dict(
            dataset=name, model=m, intra=fit.intra, inter=fit.inter,
            ratio=fit.intra / fit.inter if fit.inter else np.nan, noise=fit.noise, r2=fit.r2,
            condition=fit.condition, kernel_intra=float(np.diag(e_kernel).mean()),
            kernel_inter=float(e_kernel[off].mean()),
            kernel_ratio=float(np.diag(e_kernel).mean() / e_kernel[off].mean()),
            steps_per_epoch=steps_per_epoch))

        def head_at(t: float, m=m) -> lesde.Head:
            i = min(int(np.floor(t)), len(epochs) - 2)
            w = min(max(t - i, 0.0), 1.0)
            return ((1 - w) * head_w[m, i] + w * head_w[m, i + 1],
                    (1 - w) * head_b[m, i] + w * head_b[m, i + 1])

        for source, matrix in (("fitted", fit.matrix), ("kernel", e_kernel)):
            sim = lesde.simulate(labels, matrix, fit.noise, float(epochs[-1]), config.fit_dt,
                                 n_runs=config.fit_runs, x0=feats[m, 0], head=head_at,
                                 n_records=len(epochs) - 1, seed=_seed(config, 3, m,
                                                                      len(source)))
            stats = _trajectory_stats(sim.features, labels, sim.heads, k)  # (T, R)
            for s in STATS:
                sim_mean = stats[s].mean(1)
                errors[source][s].append(sim_mean - real[s])
                for e in range(len(epochs)):
                    traj_rows.append(dict(dataset=name, model=m, source=source, epoch=e,
                                          stat=s, value=sim_mean[e], sd=stats[s][e].std()))
        for s in STATS:
            for e in range(len(epochs)):
                traj_rows.append(dict(dataset=name, model=m, source="real", epoch=e, stat=s,
                                      value=real[s][e], sd=0.0))
    traj = pd.DataFrame(traj_rows)
    strengths = pd.DataFrame(strength_rows)
    summary = {"n_train": data.n_train, "n_classes": k, "models": int(feats.shape[0]),
               "epochs": int(epochs[-1]), "hidden": config.fit_hidden,
               "final_real_accuracy": float(traj.query("source == 'real' and stat == "
                                                       "'accuracy' and epoch == @epochs[-1]")
                                            ["value"].mean()),
               "strengths": _mean_se(strengths, ["intra", "inter", "ratio", "noise", "r2",
                                                 "kernel_intra", "kernel_inter",
                                                 "kernel_ratio"])}
    for source in ("fitted", "kernel"):
        summary[f"error_{source}"] = {}
        for s in STATS:
            diffs = np.array(errors[source][s])  # (M, T): sim − real per model and epoch
            real_all = traj.query("source == 'real' and stat == @s")["value"].to_numpy()
            span = float(np.ptp(real_all)) or 1.0
            rms = float(np.sqrt((diffs[:, 1:] ** 2).mean()))
            summary[f"error_{source}"][s] = {"rms": rms, "relative_to_range": rms / span,
                                             "final": float(diffs[:, -1].mean())}
    return traj, strengths, summary


def _mean_se(frame: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, float]]:
    n = len(frame)
    return {c: {"mean": float(frame[c].mean()),
                "se": float(frame[c].std(ddof=1) / np.sqrt(n)) if n > 1 else None}
            for c in columns}


# ------------------------------------------------------------------ 3. stability


def stability_population(name: str, config: LESDEConfig, out: Path | None, progress: bool):
    from memlab.data import load
    from memlab.population import train_population

    data = load(name)
    if config.stab_n_train is not None and config.stab_n_train < data.n_train:
        keep = np.sort(np.random.default_rng([config.seed, 13]).choice(
            data.n_train, config.stab_n_train, replace=False))
        data = data.subset(keep)
        data.name = f"{name}-{config.stab_n_train}"
    path = None if out is None else out / "populations" / f"stability-{name}"
    return train_population(
        data, model="mlp", n_models=config.stab_models, subset_fraction=config.subset_fraction,
        epochs=config.stab_epochs, optimizer="adam", lr=config.stab_lr,
        batch_size=config.stab_batch_size, seed=config.seed, out=path, progress=progress,
        n_workers=config.n_workers, save_weights=False)


def stability_rows(name: str, config: LESDEConfig, out: Path | None, progress: bool
                   ) -> tuple[list[dict], pd.DataFrame]:
    run = stability_population(name, config, out, progress)
    mask = np.asarray(run.membership_mask)
    m = int(round(mask.sum(1).mean()))
    losses = {
        "zero_one": (1.0 - run.records("train_correct").astype(np.float64),
                     1.0 - run.records("test_correct").astype(np.float64), 1.0),
        "cross_entropy_clipped": (run.records("train_loss").astype(np.float64),
                                  run.records("test_loss").astype(np.float64),
                                  config.loss_clip),
    }
    rows, per_example = [], []
    for kind, (train_loss, test_loss, bound) in losses.items():
        clipped_fraction = float((test_loss > bound).mean())
        train_loss, test_loss = np.minimum(train_loss, bound), np.minimum(test_loss, bound)
        gap, gap_se = stability.generalization_gap(mask, train_loss, test_loss)
        est = stability.loss_influence(mask, test_loss)
        real = stability.stability_constants(est.delta)
        floors = [stability.stability_constants(stability.loss_influence(
            stability.permuted_mask(mask, seed=config.seed + 100 + p), test_loss).delta)
            for p in range(config.n_permutations)]
        row = dict(dataset=name, loss=kind, loss_bound=bound, n_models=len(mask),
                   n_train=mask.shape[1], n_test=test_loss.shape[1], m=m, gap=gap,
                   gap_se=gap_se, clipped_fraction=clipped_fraction,
                   median_pair_se=float(np.median(est.se)))
        for const in ("beta_uniform", "beta_le", "beta_le_signed", "beta_mean"):
            values = np.array([f[const] for f in floors])
            row[const] = real[const]
            row[f"{const}_floor"] = float(values.mean())
            row[f"{const}_floor_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            spread = max(row[f"{const}_floor_sd"], 1e-12)
            row[f"{const}_above_floor"] = bool(real[const] > values.mean() + 3 * spread)
        for which, const in (("uniform", "beta_uniform"), ("le", "beta_le"),
                             ("le_signed", "beta_le_signed")):
            b = stability.stability_bound(real[const], m, bound, config.confidence_delta)
            row[f"bound_{which}"] = b
            row[f"bound_{which}_floor"] = stability.stability_bound(
                row[f"{const}_floor"], m, bound, config.confidence_delta)
            row[f"bound_{which}_vacuous"] = bool(b >= bound)
        rows.append(row)
        per_example.append(pd.DataFrame({
            "dataset": name, "loss": kind, "example": np.arange(mask.shape[1]),
            "mean_abs": np.abs(est.delta).mean(1), "signed_mean": est.delta.mean(1),
            "max_abs": np.abs(est.delta).max(1),
            "mean_abs_floor": np.abs(stability.loss_influence(
                stability.permuted_mask(mask, seed=config.seed + 100), test_loss).delta).mean(1),
        }))
    return rows, pd.concat(per_example, ignore_index=True)


def _stability_verdict(row: dict) -> str:
    parts = []
    for const, label in (("beta_le", "β_LE"), ("beta_uniform", "β_U")):
        if row[f"{const}_above_floor"]:
            parts.append(f"{label} is above its noise floor")
        else:
            parts.append(f"{label} cannot be told from its noise floor with "
                         f"{row['n_models']} models")
    return "; ".join(parts)


# ------------------------------------------------------------------ the study


def _seed(config: LESDEConfig, *keys: int) -> int:
    return int(np.random.SeedSequence([config.seed, *keys]).generate_state(1)[0])


def run(config: LESDEConfig, out: str | Path | None = None, progress: bool = True) -> Result:
    """Run the parts in ``config.parts`` and write tables/, summary.json and report.html
    into ``out``. Resumable: a second call with the same ``out`` and config returns the
    saved result (and the populations under ``out/populations`` resume)."""
    config.validate()
    out = Path(out) if out is not None else None
    saved = saved_result(out, STUDY, config)
    if saved is not None:
        return saved
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn


    # The simulations multiply small matrices many times: one BLAS thread is fastest, and
    # on shared cores a BLAS thread pool is several times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        result = _run_parts(config, out, progress)
    if out is not None:
        result.save(out)
    return result


def _run_parts(config: LESDEConfig, out: Path | None, progress: bool) -> Result:
    tables: dict[str, pd.DataFrame] = {}
    summary: dict[str, Any] = {"timing_s": {}}
    if "phase" in config.parts:
        clock = time.perf_counter()
        phase, traj, scan = phase_diagram(config)
        tables.update(phase=phase, phase_trajectories=traj, threshold_scan=scan)
        summary["phase"] = {drift: {**threshold, **phase_summary(phase)[drift]}
                            for drift, threshold in threshold_summary(scan, config).items()}
        summary["timing_s"]["phase"] = time.perf_counter() - clock
    if "fit" in config.parts:
        clock = time.perf_counter()
        trajs, strengths, fits = [], [], {}
        for name in config.fit_datasets:
            t, s, f = fit_real(name, config, out, progress)
            trajs.append(t)
            strengths.append(s)
            fits[name] = f
        tables.update(fit_trajectories=pd.concat(trajs, ignore_index=True),
                      fit_strengths=pd.concat(strengths, ignore_index=True))
        summary["fit"] = fits
        summary["timing_s"]["fit"] = time.perf_counter() - clock
    if "stability" in config.parts:
        clock = time.perf_counter()
        rows, examples = [], []
        for name in config.stab_datasets:
            r, e = stability_rows(name, config, out, progress)
            rows += r
            examples.append(e)
        for row in rows:
            row["verdict"] = _stability_verdict(row)
        tables.update(stability=pd.DataFrame(rows),
                      stability_examples=pd.concat(examples, ignore_index=True))
        summary["stability"] = {f"{r['dataset']}/{r['loss']}": r for r in rows}
        summary["timing_s"]["stability"] = time.perf_counter() - clock
    return Result(study=STUDY, config=config.to_dict(), tables=tables, summary=summary)
