"""The five parts of the noise study (docs/science.md §3), each trains its populations on
the engine (resumable, under ``OUT/populations/``) and returns tables.

1. :func:`learning_dynamics`: per-epoch records over seeds, full-data models;
2. :func:`one_epoch_difficulty`: misclassification rates after one epoch across seeds;
3. :func:`capacity_and_time`: epochs to 100% training accuracy vs size and width;
4. :func:`critical_samples`: CSR and loss-sensitivity Gini at checkpoints (a callback);
5. :func:`regularizer_sweep`: randY fitting vs real validation accuracy per regularizer.

Every model follows the engine's seeding rules: model (replicate r) of any population here
starts from the same weights and sees the same batches, whatever else is trained beside it
(so conditions are paired by replicate), and the caller's torch RNG is never touched.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from memlab import streams
from memlab.data import Dataset
from memlab.measures import dynamics
from memlab.measures.callbacks import AdversarialTraining, CriticalSamples, ValidationAccuracy
from memlab.measures.critical import LassSettings
from memlab.population import Run, train_population
from memlab.studies.base import Execution
from memlab.studies.noise.config import RECIPE, NoiseConfig

Log = Callable[[str], None]
# The engine's per-model settings that carry each regularizer (adversarial: a callback).
SWEEP_KEYS = {"dropout": "dropout", "input_dropout": "input_dropout",
              "input_noise": "input_noise", "weight_decay": "weight_decay"}


# ---------------------------------------------------------------- conditions


def take_subset(dataset: Dataset, n_train: int | None, seed: int) -> Dataset:
    """A fixed random subset of ``n_train`` training examples (all if None or larger)."""
    if n_train is None or n_train >= dataset.n_train:
        return dataset
    keep = np.sort(np.random.default_rng([seed, streams.N_TRAIN]).choice(
        dataset.n_train, n_train, replace=False))
    return Dataset(
        name=dataset.name, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep],
        x_test=dataset.x_test, y_test=dataset.y_test, class_names=dataset.class_names,
        provenance={**dataset.provenance, "train_subset": {"n": n_train, "seed": seed}},
    )


def make_conditions(dataset: Dataset, noise_fractions: tuple[float, ...], seed: int = 0
                    ) -> dict[str, Dataset]:
    """name -> corrupted copy of ``dataset``: real, randY, randX, noise20, noise50, ..."""
    conditions = {
        "real": dataset,
        "randY": dataset.with_label_noise(1.0, seed=seed),
        "randX": dataset.with_random_inputs(1.0, seed=seed),
    }
    for fraction in noise_fractions:
        conditions[f"noise{round(100 * fraction)}"] = dataset.with_label_noise(fraction, seed)
    return conditions


def corrupted_examples(dataset: Dataset) -> np.ndarray:
    """(n_train,) bool: examples whose label or input was replaced."""
    mask = np.zeros(dataset.n_train, bool)
    for key in ("label_noise", "random_inputs"):
        if key in dataset.corruption:
            mask[np.asarray(dataset.corruption[key]["indices"], dtype=int)] = True
    return mask


def full_data(n_models: int, dataset: Dataset) -> np.ndarray:
    """(n_models, n_train) all-ones membership: every model trains on every example."""
    return np.ones((n_models, dataset.n_train), bool)


def lass_settings(dataset: Dataset, config: NoiseConfig, max_iter: int) -> LassSettings:
    """The paper's LASS α, β, r rescaled to the data's range, times ``config.lass_scale``."""
    data_range = float(dataset.x_train.max() - dataset.x_train.min())
    return LassSettings.scaled(data_range, config.lass_scale, max_iter)


def population(dataset: Dataset, out: Path, config: NoiseConfig, epochs: int, *,
               execution: Execution | None = None, membership: np.ndarray | None = None,
               n_models: int | None = None, subset_fraction: float | None = None,
               hidden: tuple[int, ...] | None = None, record_epochs: bool = True,
               sweep: dict | None = None, callbacks: Sequence = (),
               workers: int | None = None) -> Run:
    """Train (or resume) a population with the study's recipe (``config.population``, for
    ``epochs``, without weights): on ``membership`` (explicit mask) or ``n_models`` random
    subsets of ``subset_fraction``; chunks split over ``workers`` (None: the execution's,
    else one per core) unless the recipe names a chunk size."""
    execution = execution or Execution(progress=False)
    workers = workers or execution.n_workers or os.cpu_count() or 1
    n_values = math.prod(len(v) for v in sweep.values()) if sweep else 1
    per_value = membership.shape[0] // n_values if membership is not None else n_models
    recipe = config.population
    chunk_size = (recipe.chunk_size if recipe.chunk_size != RECIPE.chunk_size
                  else max(1, math.ceil(per_value / workers)))
    changes = dict(model_kwargs={**recipe.model_kwargs, "hidden": list(hidden or config.hidden)},
                   epochs=epochs, record_epochs=record_epochs or recipe.record_epochs,
                   save_weights=False, chunk_size=chunk_size)
    if sweep:
        changes["sweep"] = sweep
    if membership is None:
        changes.update(n_models=n_models, subset_fraction=subset_fraction)
    return train_population(dataset, dataclasses.replace(recipe, **changes),
                            membership=membership, callbacks=callbacks, out=out,
                            device=execution.device, n_workers=workers,
                            executor=execution.executor, ray_address=execution.ray_address,
                            progress=False)


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over seeds (axis 0) ignoring NaN; NaN where every seed is NaN, without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0)


# ---------------------------------------------------------------- 1. dynamics


def learning_dynamics(conditions: dict[str, Dataset], config: NoiseConfig, out: Path,
                      log: Log, execution: Execution | None = None
                      ) -> dict[str, pd.DataFrame]:
    """Part 1: per-epoch records over seeds -> tables ``curves`` (mean over seeds),
    ``seed_curves`` (one row per condition, seed and epoch), ``examples`` (per example,
    means over seeds) and ``dynamics`` (per condition)."""
    curves, seed_curves, examples, summary = [], [], [], []
    for name, dataset in conditions.items():
        log(f"dynamics: {name} ({config.seeds} seeds x {config.population.epochs} epochs)")
        run = population(dataset, out / "populations" / f"dynamics-{name}", config,
                         config.population.epochs, membership=full_data(config.seeds, dataset),
                         execution=execution)
        history = np.asarray(run.records("epoch_train_correct"))  # (seeds, epochs, n)
        test_history = np.asarray(run.records("epoch_test_correct"))
        mask = run.membership_mask
        corrupted = corrupted_examples(dataset)
        train_acc = dynamics.accuracy_curve(history, mask)  # (seeds, epochs)
        val_acc = test_history.mean(-1)
        epochs = np.arange(1, config.population.epochs + 1)
        frame = pd.DataFrame({
            "condition": name, "epoch": epochs,
            "train_acc": train_acc.mean(0), "train_acc_std": train_acc.std(0),
            "val_acc": val_acc.mean(0), "val_acc_std": val_acc.std(0),
        })
        if corrupted.any() and not corrupted.all():
            frame["train_acc_clean"] = dynamics.accuracy_curve(history, mask, ~corrupted).mean(0)
            frame["train_acc_corrupted"] = dynamics.accuracy_curve(history, mask,
                                                                   corrupted).mean(0)
        curves.append(frame)
        n_seeds = len(train_acc)
        seed_curves.append(pd.DataFrame({
            "condition": name, "seed": np.repeat(np.arange(n_seeds), len(epochs)),
            "epoch": np.tile(epochs, n_seeds), "train_acc": train_acc.ravel(),
            "val_acc": val_acc.ravel(), "n_val": test_history.shape[-1]}))

        first = dynamics.first_learned(history, mask)
        for_good = dynamics.learned_for_good(history, mask)
        forgetting = dynamics.forgetting_events(history, mask)
        examples.append(pd.DataFrame({
            "condition": name, "example": np.arange(dataset.n_train),
            "corrupted": corrupted,
            "first_learned": _nanmean(first),
            "learned_for_good": _nanmean(for_good),
            "never_learned_fraction": _nanmean(np.where(mask, np.isnan(first), np.nan)),
            "forgetting_events": _nanmean(forgetting),
        }))
        # Never-learned examples rank last (epochs + 1), non-members are left out.
        order = np.where(np.isnan(first) & mask, config.population.epochs + 1, first)
        mean_train = train_acc.mean(0)
        best_val_epoch = int(val_acc.mean(0).argmax()) + 1
        row = {
            "condition": name,
            "final_train_acc": float(mean_train[-1]),
            "best_val_acc": float(val_acc.mean(0).max()),
            "best_val_epoch": best_val_epoch,
            "final_val_acc": float(val_acc.mean(0)[-1]),
            "train_acc_at_best_val": float(mean_train[best_val_epoch - 1]),
            "order_consistency": dynamics.order_consistency(order),
            "mean_forgetting_events": float(np.nanmean(forgetting)),
        }
        for threshold in (0.5, 0.9, 0.99, 1.0):
            row[f"epochs_to_{threshold:g}"] = float(dynamics.epochs_to_reach(mean_train,
                                                                             threshold))
        summary.append(row)
    return {"curves": pd.concat(curves, ignore_index=True),
            "seed_curves": pd.concat(seed_curves, ignore_index=True),
            "examples": pd.concat(examples, ignore_index=True),
            "dynamics": pd.DataFrame(summary)}


# ---------------------------------------------------------------- 2. one-epoch difficulty


def one_epoch_difficulty(dataset: Dataset, config: NoiseConfig, out: Path,
                         log: Log, execution: Execution | None = None
                         ) -> dict[str, pd.DataFrame]:
    """Part 2: misclassification rate of every example after one epoch, across seeds, on
    ``dataset`` (real, randY and randX versions of it), with the over-dispersion test against
    one Binomial rate (the paper's reference) and against one rate per class."""
    conditions = make_conditions(dataset, (), config.population.seed)
    rates, tests = [], []
    for name in ("real", "randY", "randX"):
        log(f"one-epoch difficulty: {name} ({config.difficulty_seeds} seeds)")
        data = conditions[name]
        run = population(data, out / "populations" / f"difficulty-{name}", config, 1,
                         membership=full_data(config.difficulty_seeds, data),
                         record_epochs=False, execution=execution)
        errors, trials = dynamics.misclassification_rates(run.records("train_correct"),
                                                          run.membership_mask)
        test = dynamics.dispersion_test(errors, trials)
        per_class = dynamics.dispersion_test(errors, trials, groups=data.y_train)
        reference = dynamics.binomial_reference(trials, test.mean_rate,
                                                seed=config.population.seed)
        rates.append(pd.DataFrame({"condition": name, "example": np.arange(len(errors)),
                                   "label": data.y_train, "errors": errors,
                                   "misclassification_rate": errors / np.maximum(trials, 1),
                                   "binomial_reference": reference, "trials": trials}))
        tests.append({"condition": name, **asdict(test), "over_dispersed": test.over_dispersed,
                      "dispersion_index_within_class": per_class.dispersion_index,
                      "p_value_within_class": per_class.p_value})
    return {"difficulty": pd.concat(rates, ignore_index=True),
            "dispersion": pd.DataFrame(tests)}


# ---------------------------------------------------------------- 3. capacity and time


def capacity_and_time(dataset: Dataset, config: NoiseConfig, out: Path,
                      log: Log, execution: Execution | None = None) -> pd.DataFrame:
    """Part 3: epochs to 100% training accuracy vs dataset size (at the study's width) and vs
    width (at the study's size), for real and randY; NaN = not reached in capacity_epochs.
    Size n < n_train: each seed trains on its own random n examples; the study's size and
    the width axis: every seed on all examples (an all-ones mask)."""
    rows = []
    randy = dataset.with_label_noise(1.0, config.population.seed)
    sizes = [s for s in config.capacity_sizes if s <= dataset.n_train]
    settings = [("size", s, config.hidden) for s in sizes]
    settings += [("width", w, (w,) * len(config.hidden)) for w in config.capacity_widths]
    for axis, value, hidden in settings:
        subset = axis == "size" and value < dataset.n_train
        for name, data in (("real", dataset), ("randY", randy)):
            log(f"capacity: {name}, {axis} {value}")
            membership = None if subset else full_data(config.capacity_seeds, data)
            run = population(data, out / "populations" / f"capacity-{axis}{value}-{name}",
                             config, config.capacity_epochs, membership=membership,
                             n_models=config.capacity_seeds if subset else None,
                             subset_fraction=value / dataset.n_train if subset else None,
                             hidden=hidden, workers=1, execution=execution)
            accuracy = dynamics.accuracy_curve(np.asarray(run.records("epoch_train_correct")),
                                               run.membership_mask)
            for seed, epochs in enumerate(dynamics.epochs_to_reach(accuracy, 1.0)):
                rows.append({"axis": axis, "value": value, "condition": name, "seed": seed,
                             "n_train": int(run.membership_mask[seed].sum()),
                             "width": hidden[0], "epochs_to_100": epochs,
                             "final_train_acc": float(accuracy[seed, -1])})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- 4. critical samples


def critical_samples(conditions: dict[str, Dataset], config: NoiseConfig, out: Path,
                     log: Log, execution: Execution | None = None) -> pd.DataFrame:
    """Part 4: CSR on validation inputs and loss-sensitivity Gini on training examples,
    at epoch 0 and every ``csr_every`` epochs, for csr_seeds full-data models per condition
    (a population per condition with a :class:`CriticalSamples` callback)."""
    real = conditions["real"]
    rng = np.random.default_rng([config.population.seed, streams.NOISE_CSR_PROBES])
    probe = np.sort(rng.choice(real.n_test, min(config.csr_examples, real.n_test),
                               replace=False))
    settings = lass_settings(real, config, config.lass_iter)
    last = config.population.epochs
    epochs = sorted({0, *range(config.csr_every, last + 1, config.csr_every), last})
    callback = CriticalSamples(epochs, probe, settings)
    rows = []
    for name, dataset in conditions.items():
        log(f"critical samples: {name}, {config.csr_seeds} models, LASS r = "
            f"{settings.radius:.4g} on {len(probe)} validation inputs")
        run = population(dataset, out / "populations" / f"csr-{name}", config, last,
                         membership=full_data(config.csr_seeds, dataset), record_epochs=False,
                         callbacks=[callback], execution=execution)
        records = {key: np.asarray(run.records(f"csr_{key}"))
                   for key in ("csr", "sensitivity_gini", "sensitivity_mean", "train_acc",
                               "val_acc")}
        for seed in range(config.csr_seeds):
            for i, epoch in enumerate(epochs):
                rows.append({"condition": name, "seed": seed, "epoch": epoch,
                             "n_probe": len(probe),
                             **{key: float(values[seed, i]) for key, values in records.items()}})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- 5. regularizers


def sweep_populations(dataset: Dataset, condition: str, config: NoiseConfig, out: Path,
                      regularizers: dict[str, tuple[float, ...]] | None = None,
                      execution: Execution | None = None
                      ) -> list[tuple[str, list[float], Run]]:
    """Part 5's populations on one condition: ``[(regularizer, strengths, run)]``, starting
    with ``("none", [0.0], run)``. Dropout, input dropout, input noise and weight decay are
    one population each whose sweep holds the strengths (model (strength j, replicate r) is
    row j * sweep_seeds + r); adversarial training is a population per strength (its
    radius is a callback setting, which a sweep cannot vary). Every model trains on all
    examples and records its validation accuracy after every epoch."""
    regularizers = config.regularizers if regularizers is None else regularizers
    data_std = float(dataset.x_train.std())
    adversarial = lass_settings(dataset, config, config.adversarial_iter)
    root = out / "populations"
    common = dict(record_epochs=False, execution=execution)
    n = config.sweep_seeds

    def train(directory: str, values: int = 1, **settings) -> Run:
        return population(dataset, root / directory, config, config.epochs_of_sweep,
                          membership=full_data(n * values, dataset),
                          callbacks=[ValidationAccuracy(), *settings.pop("callbacks", [])],
                          **common, **settings)

    found = [("none", [0.0], train(f"sweep-{condition}-none"))]
    for name, strengths in regularizers.items():
        strengths = [float(s) for s in strengths]
        label = "_".join(f"{s:g}" for s in strengths)
        if name == "adversarial":
            for strength in strengths:
                run = train(f"sweep-{condition}-adversarial{strength:g}",
                            callbacks=[AdversarialTraining(strength, adversarial)])
                found.append((name, [strength], run))
            continue
        values = [s * data_std if name == "input_noise" else s for s in strengths]
        run = train(f"sweep-{condition}-{name}-{label}", len(values),
                    sweep={SWEEP_KEYS[name]: values})
        found.append((name, strengths, run))
    return found


def regularizer_sweep(conditions: dict[str, Dataset], config: NoiseConfig, out: Path,
                      log: Log, execution: Execution | None = None) -> pd.DataFrame:
    """Part 5: for every (regularizer, strength), sweep_seeds models on randY and on real;
    one row per (regularizer, strength, seed): the training accuracy reached on randY (after
    sweep_epochs, evaluated without the regularizer), the best validation accuracy over
    epochs on real data, and how many examples each accuracy is over."""
    runs = {}
    for name in ("randY", "real"):
        log(f"regularizer sweep: {name}, {config.epochs_of_sweep} epochs")
        runs[name] = sweep_populations(conditions[name], name, config, out,
                                       execution=execution)
    n = config.sweep_seeds
    n_train, n_val = conditions["randY"].n_train, conditions["real"].n_test
    rows = []
    for (name, strengths, noisy), (_, _, real) in zip(runs["randY"], runs["real"]):
        noisy_acc = np.asarray(noisy.records("train_correct")).mean(1)
        real_acc = np.asarray(real.records("train_correct")).mean(1)
        real_best = np.asarray(real.records("val_acc")).max(1)
        for j, strength in enumerate(strengths):
            for seed in range(n):
                k = j * n + seed
                rows.append({"regularizer": name, "strength": strength, "seed": seed,
                             "randY_train_acc": float(noisy_acc[k]),
                             "real_best_val_acc": float(real_best[k]),
                             "real_train_acc": float(real_acc[k]),
                             "n_train": n_train, "n_val": n_val})
    return pd.DataFrame(rows)


def sweep_means(sweep: pd.DataFrame) -> pd.DataFrame:
    """The sweep table averaged over seeds: one row per (regularizer, strength), in order."""
    columns = ["randY_train_acc", "real_best_val_acc", "real_train_acc"]
    return (sweep.groupby(["regularizer", "strength"], sort=False)[columns].mean()
            .reset_index())
