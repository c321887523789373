"""The rest of Su's local-elasticity talk: the LE-SDE phase diagram, the LE-SDE fitted to
real networks, and locally elastic stability from a population.

    from memlab.studies.lesde import LESDEConfig, run
    result = run(LESDEConfig.quick(), out="runs/lesde")
    result.summary["phase"]["ce"]["threshold"]      # measured α/β where margins start growing
    result.summary["fit"]["digits"]["error_fitted"]  # simulated vs real trajectories
    result.tables["stability"]                      # gap, bounds, noise floors per dataset

Three parts (``config.parts`` chooses):

1. **Phase diagram** (:mod:`memlab.studies.lesde.phase`, no training).
2. **Fitted to a real network**: one-hidden-layer ReLU MLPs trained by plain SGD on all of a
   training subset (the base recipe varied by the ``fit_*`` settings); a callback
   (:class:`memlab.measures.callbacks.features.FeatureCallback`) records every epoch's
   features, read-out and class-pair kernel means. Per model, the strengths are fitted by
   least squares (:func:`memlab.measures.lesde.estimate_strengths`) and, separately, read
   off the kernel (E = η·(n/B)·κ); the LE-SDE is simulated from the model's initial
   features with its recorded read-out and compared with the real run epoch by epoch.
3. **Locally elastic stability** (:mod:`memlab.measures.stability`): the base recipe's
   population on random subsets; Δ̂(z, z') for the 0–1 loss and the cross-entropy clipped
   at ``loss_clip``; plug-in constants, permuted-mask noise floors, the uniform and locally
   elastic bounds, and the measured generalization gap.

The populations live in ``out/populations/{fit,stability}-<dataset>`` and resume.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab import streams
from memlab.measures import lesde, stability
from memlab.measures.callbacks.features import FeatureCallback
from memlab.measures.stats import (
    mean_se,
)
from memlab.studies.base import Execution, Result
from memlab.studies.lesde.config import LESDEConfig
from memlab.studies.lesde.phase import phase_diagram, phase_summary, stream_seed, threshold_summary
from memlab.studies.lesde.verdicts import (
    ratio_interval,
    stability_verdict,
    transition_summary,
)

STUDY = "lesde"
STATS = lesde.TRAJECTORY_STATS


# ------------------------------------------------------------------ 1. where the phase changes


# ------------------------------------------------------------------ 2. fitted to real networks


def fit_population(name: str, config: LESDEConfig, out: Path, execution: Execution):
    """(the training subset, the trained population) of the fit part on dataset ``name``."""
    from memlab.data import load
    from memlab.population import train_population

    data = load(name)
    rng = np.random.default_rng([config.population.seed, streams.LESDE_FIT_DATA])
    keep = np.sort(rng.choice(data.n_train, min(config.fit_n_train, data.n_train),
                              replace=False))
    sub = data.subset(keep)
    sub.name = f"{data.name}-{len(keep)}"
    recipe = dataclasses.replace(
        config.population, model="mlp", model_kwargs={"hidden": [config.fit_hidden]},
        n_models=config.fit_models, epochs=config.fit_epochs, optimizer="sgd", momentum=0.0,
        lr=config.fit_lr, batch_size=config.fit_batch_size, chunk_size=config.fit_models)
    return sub, train_population(
        sub, recipe, membership=np.ones((config.fit_models, sub.n_train), bool),
        callbacks=[FeatureCallback(sub.n_classes)], out=out / "populations" / f"fit-{name}",
        **execution.training())


def fit_real(name: str, config: LESDEConfig, out: Path, execution: Execution
             ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(trajectory rows real / fitted / kernel, strength rows, summary) for one dataset."""
    data, run = fit_population(name, config, out, execution)
    feats = run.records("lesde_features").astype(np.float64)  # (M, E+1, n, d)
    head_w = run.records("lesde_head_w").astype(np.float64)
    head_b = run.records("lesde_head_b").astype(np.float64)
    kernel = run.records("lesde_kernel").astype(np.float64)  # (M, E+1, C, C)
    labels, k = np.asarray(data.y_train), data.n_classes
    epochs = np.arange(feats.shape[1], dtype=np.float64)
    steps_per_epoch = int(np.ceil(data.n_train / config.fit_batch_size))
    traj_rows, strength_rows = [], []
    errors: dict[str, dict[str, list]] = {"fitted": {s: [] for s in STATS},
                                          "kernel": {s: [] for s in STATS}}
    for m in range(feats.shape[0]):
        heads = [(head_w[m, e], head_b[m, e]) for e in range(len(epochs))]
        real = lesde.trajectory_stats(feats[m], labels, heads, k)
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
            # (the key is len(source): 6 for both, so both simulations share their noise)
            sim = lesde.simulate(labels, matrix, fit.noise, float(epochs[-1]), config.fit_dt,
                                 n_runs=config.fit_runs, x0=feats[m, 0], head=head_at,
                                 n_records=len(epochs) - 1, seed=stream_seed(
                                     config.population.seed, streams.LESDE_FIT_SIMULATION, m,
                                     len(source)))
            stats = lesde.trajectory_stats(sim.features, labels, sim.heads, k)  # (T, R)
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
               "strengths": {c: mean_se(strengths[c], skip="nan", n=len(strengths)).as_dict(
                   "mean", "se") for c in ("intra", "inter", "ratio", "noise", "r2",
                                           "kernel_intra", "kernel_inter", "kernel_ratio")},
               "ratio_interval": ratio_interval(strengths["ratio"].to_numpy())}
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


# ------------------------------------------------------------------ 3. stability


def stability_population(name: str, config: LESDEConfig, out: Path, execution: Execution):
    """The base recipe trained on dataset ``name`` (a random ``stab_n_train`` of it)."""
    from memlab.data import load
    from memlab.population import train_population

    data = load(name)
    if config.stab_n_train is not None and config.stab_n_train < data.n_train:
        keep = np.sort(np.random.default_rng(
            [config.population.seed, streams.LESDE_STAB_N_TRAIN]).choice(
            data.n_train, config.stab_n_train, replace=False))
        data = data.subset(keep)
        data.name = f"{name}-{config.stab_n_train}"
    return train_population(data, config.population,
                            out=out / "populations" / f"stability-{name}",
                            **execution.training())


def stability_rows(name: str, config: LESDEConfig, out: Path, execution: Execution
                   ) -> tuple[list[dict], pd.DataFrame]:
    """The stability table's rows (one per loss) and the per-example constants."""
    run = stability_population(name, config, out, execution)
    mask = np.asarray(run.membership_mask)
    m = int(round(mask.sum(1).mean()))
    floor_seed = config.population.seed + streams.LESDE_PERMUTATIONS
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
            stability.permuted_mask(mask, seed=floor_seed + p), test_loss).delta)
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
            # One permuted mask gives no spread of the floor: nothing is "above" it then.
            row[f"{const}_above_floor"] = bool(len(values) > 1
                                               and real[const] > values.mean() + 3 * spread)
        for which, const in (("uniform", "beta_uniform"), ("le", "beta_le"),
                             ("le_signed", "beta_le_signed")):
            b = stability.stability_bound(real[const], m, bound, config.confidence_delta)
            row[f"bound_{which}"] = b
            row[f"bound_{which}_floor"] = stability.stability_bound(
                row[f"{const}_floor"], m, bound, config.confidence_delta)
            row[f"bound_{which}_vacuous"] = bool(b >= bound)
        row["verdict"] = stability_verdict(row, config.n_permutations)
        rows.append(row)
        per_example.append(pd.DataFrame({
            "dataset": name, "loss": kind, "example": np.arange(mask.shape[1]),
            "mean_abs": np.abs(est.delta).mean(1), "signed_mean": est.delta.mean(1),
            "max_abs": np.abs(est.delta).max(1),
            "mean_abs_floor": np.abs(stability.loss_influence(
                stability.permuted_mask(mask, seed=floor_seed), test_loss).delta).mean(1),
        }))
    return rows, pd.concat(per_example, ignore_index=True)


# ------------------------------------------------------------------ the study


def run(config: LESDEConfig, out: Path, execution: Execution) -> Result:
    """The parts in ``config.parts``; the populations resume under ``out/populations``."""
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    # The simulations multiply small matrices many times: one BLAS thread is fastest, and
    # on shared cores a BLAS thread pool is several times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_parts(config, Path(out), execution)


def _run_parts(config: LESDEConfig, out: Path, execution: Execution) -> Result:
    tables: dict[str, pd.DataFrame] = {}
    summary: dict[str, Any] = {"timing_s": {}}
    if "phase" in config.parts:
        clock = time.perf_counter()
        phase, traj, scan = phase_diagram(config)
        tables.update(phase=phase, phase_trajectories=traj, threshold_scan=scan)
        transitions = transition_summary(scan)
        summary["phase"] = {drift: {**threshold, **phase_summary(phase)[drift],
                                    **transitions[drift]}
                            for drift, threshold in threshold_summary(scan).items()}
        summary["timing_s"]["phase"] = time.perf_counter() - clock
    if "fit" in config.parts:
        clock = time.perf_counter()
        found = [fit_real(name, config, out, execution) for name in config.fit_datasets]
        tables.update(fit_trajectories=pd.concat([t for t, _, _ in found], ignore_index=True),
                      fit_strengths=pd.concat([s for _, s, _ in found], ignore_index=True))
        summary["fit"] = {name: f for name, (_, _, f) in zip(config.fit_datasets, found)}
        summary["timing_s"]["fit"] = time.perf_counter() - clock
    if "stability" in config.parts:
        clock = time.perf_counter()
        rows, examples = [], []
        for name in config.stab_datasets:
            r, e = stability_rows(name, config, out, execution)
            rows += r
            examples.append(e)
        tables.update(stability=pd.DataFrame(rows),
                      stability_examples=pd.concat(examples, ignore_index=True))
        summary["stability"] = {f"{r['dataset']}/{r['loss']}": r for r in rows}
        summary["timing_s"]["stability"] = time.perf_counter() - clock
    return Result(STUDY, config.to_dict(), tables, summary)
