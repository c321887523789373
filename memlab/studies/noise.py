"""Real data vs noise (Arpit et al. 2017): do networks learn patterns first and noise later?

The study trains the same architecture on

- ``real``: the data as it is;
- ``randY``: every training label replaced by a different random class;
- ``randX``: every training input replaced by Gaussian noise with the data's mean and std;
- ``noise20`` ... ``noise80``: a fraction of the labels randomized (partial label noise),

and measures, per condition:

1. learning dynamics per example, from population runs over seeds with per-epoch records
   (:mod:`memlab.measures.dynamics`): epoch first learned, learned for good, forgetting
   events, order consistency across seeds; training / validation accuracy curves, and for
   partial noise the accuracy on clean and on corrupted training examples separately;
2. one-epoch difficulty: each example's misclassification rate after one epoch across many
   seeds, against the Binomial reference of equally hard examples (over-dispersion test);
3. capacity and time: epochs to 100% training accuracy against dataset size and width;
4. critical sample ratio (LASS) and loss-sensitivity Gini, tracked during training;
5. a regularizer sweep: training accuracy reached on randY against the best validation
   accuracy on real data, for dropout, input dropout, input noise, weight decay and
   adversarial training.

Every model is trained by the population engine (``memlab.population``): full-data models
through an explicit all-ones membership mask, the regularizers as per-model sweep values
(dropout, input dropout, input noise, weight decay) or a callback that adds LASS samples to
each batch (adversarial training), the checkpoint measurements of part 4 as a callback.
So every model follows the engine's seeding rules: model (replicate r) of any population
of this study starts from the same weights and sees the same batches, whatever else is
trained beside it, and the caller's torch RNG is never touched. Everything lands in
``RUN/``: ``populations/`` (engine runs, resumable), ``tables/*.parquet``,
``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from memlab.data import Dataset, load
from memlab.errors import ConfigError
from memlab.measures import dynamics
from memlab.measures.critical import LassSettings, gini, lass, loss_sensitivity
from memlab.population import Run, train_population
from memlab.population.executor import single_thread
from memlab.population.store import atomic_save_table, atomic_write_json

REGULARIZERS = ("dropout", "input_dropout", "input_noise", "weight_decay", "adversarial")
# The engine's per-model settings that carry each regularizer (adversarial: a callback).
SWEEP_KEYS = {"dropout": "dropout", "input_dropout": "input_dropout",
              "input_noise": "input_noise", "weight_decay": "weight_decay"}
# This study's own random stream (LASS noise), beside the engine's streams 0-4 of
# memlab.population.config: seeds are SeedSequence([seed, replicate, STREAM_LASS, t]).
STREAM_LASS = 16


@dataclass(frozen=True)
class NoiseStudyConfig:
    """Everything that sets the study's results. ``quick()`` and ``full()`` are the presets.

    n_train: training examples used (a fixed random subset; None = all); the test split is
        the validation set. Every seed's model of the dynamics, one-epoch difficulty,
        critical-sample and regularizer parts trains on all of them (an all-ones mask).
    difficulty_n_train: training examples for the one-epoch difficulty (None = all of the
        data's): one epoch must be enough SGD steps to learn more than class frequencies.
    lass_scale: LASS α, β, r are the paper's values rescaled to the data's range, times this.
    regularizers: name -> strengths (dropout and input_dropout: drop probability;
        input_noise: Gaussian std in units of the data's std; weight_decay: L2 coefficient;
        adversarial: LASS radius as a multiple of the scaled paper radius).
    sweep_seeds: models per (regularizer, strength) and condition (the mean is reported).
    """

    data: str = "mnist1d"
    n_train: int | None = 1000
    hidden: tuple[int, ...] = (100, 100)
    noise_fractions: tuple[float, ...] = (0.2, 0.5)
    seeds: int = 16
    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    difficulty_seeds: int = 100
    difficulty_n_train: int | None = None
    capacity_sizes: tuple[int, ...] = (125, 250, 500, 1000)
    capacity_widths: tuple[int, ...] = (16, 32, 64, 128)
    capacity_seeds: int = 3
    capacity_epochs: int = 100
    csr_seeds: int = 3
    csr_every: int = 5
    csr_examples: int = 1000
    lass_scale: float = 1.0
    lass_iter: int = 20
    sweep_epochs: int = 60
    sweep_seeds: int = 1
    regularizers: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "dropout": (0.2, 0.4, 0.6, 0.8),
        "input_dropout": (0.1, 0.2, 0.4, 0.6),
        "input_noise": (0.1, 0.3, 0.6, 1.0),
        "weight_decay": (1e-4, 1e-3, 3e-3, 1e-2),
        "adversarial": (4.0, 16.0, 64.0),
    })
    adversarial_iter: int = 3
    seed: int = 0
    workers: int | None = None

    @classmethod
    def quick(cls, data: str = "mnist1d", **changes) -> NoiseStudyConfig:
        return replace(cls(data=data), **changes)

    @classmethod
    def full(cls, data: str = "mnist1d", **changes) -> NoiseStudyConfig:
        full = cls(data=data, n_train=None, noise_fractions=(0.2, 0.4, 0.6, 0.8), seeds=32,
                   epochs=150, capacity_sizes=(250, 500, 1000, 2000, 4000),
                   capacity_widths=(16, 32, 64, 128, 256), capacity_seeds=4,
                   capacity_epochs=300, csr_seeds=3, csr_every=10, csr_examples=1000,
                   sweep_epochs=150)
        return replace(full, **changes)

    def __post_init__(self) -> None:
        unknown = set(self.regularizers) - set(REGULARIZERS)
        if unknown:
            raise ConfigError(f"unknown regularizers {sorted(unknown)}; use {REGULARIZERS}")
        for name, strengths in self.regularizers.items():
            if len(set(strengths)) != len(strengths) or not all(s > 0 for s in strengths):
                raise ConfigError(f"regularizer {name!r} needs distinct positive strengths, "
                                  f"got {strengths}")
        for fraction in self.noise_fractions:
            if not 0 < fraction < 1:
                raise ConfigError(f"partial noise fractions must lie in (0, 1), got {fraction}")
        if min(self.seeds, self.difficulty_seeds, self.capacity_seeds, self.csr_seeds) < 2:
            raise ConfigError("every part of the study needs at least 2 seeds")
        if self.sweep_seeds < 1:
            raise ConfigError(f"sweep_seeds must be at least 1, got {self.sweep_seeds}")

    def expected_minutes(self, n_train: int, n_available: int) -> float:
        """A rough wall-time estimate on two free CPU cores, from the number of
        model-example-epochs (calibrated on the quick preset, ~3 min on MNIST-1D).
        n_train: examples the study uses; n_available: all of the data's (for difficulty)."""
        n_conditions = 3 + len(self.noise_fractions)
        n_difficulty = min(self.difficulty_n_train or n_available, n_available)
        width = sum(self.hidden) / 200
        work = (n_conditions * self.seeds * self.epochs * n_train * 2  # x2: per-epoch records
                + 3 * self.difficulty_seeds * n_difficulty
                + 2 * self.capacity_seeds * self.capacity_epochs * 2
                * (sum(s for s in self.capacity_sizes if s <= n_train)
                   + len(self.capacity_widths) * n_train)
                + n_conditions * self.csr_seeds * self.epochs * n_train * 3
                + sum(map(len, self.regularizers.values())) * 2 * self.sweep_seeds
                * self.sweep_epochs * n_train * 2) * width
        return work / 0.17e6 / 60 + 0.3


# ---------------------------------------------------------------- conditions


def take_subset(dataset: Dataset, n_train: int | None, seed: int) -> Dataset:
    """A fixed random subset of ``n_train`` training examples (all if None or larger)."""
    if n_train is None or n_train >= dataset.n_train:
        return dataset
    keep = np.sort(np.random.default_rng([seed, 7]).choice(dataset.n_train, n_train,
                                                           replace=False))
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


# ---------------------------------------------------------------- callbacks (engine)


def lass_seeds(seed: int, replicates: Sequence[int], counter: int) -> list[int]:
    """One LASS seed per model from its replicate's own stream (so a model's search noise
    does not depend on the models trained beside it); ``counter``: epoch or step."""
    return [int(np.random.SeedSequence([seed, r, STREAM_LASS, counter]).generate_state(1)[0])
            for r in replicates]


class CriticalSamples:
    """Part 4's checkpoint measurements, at ``epochs`` (0 = initial weights).

    Records ``csr_{key}`` (n_models, len(epochs)): ``csr`` (critical sample ratio of the
    validation inputs ``probe``, indices into the test split), ``sensitivity_gini`` and
    ``sensitivity_mean`` (of ||dL/dx||_1 over the training examples, nats per input unit),
    ``train_acc`` and ``val_acc``. The study's networks have no dropout, so the engine's
    differentiable train-mode forward is the evaluation forward.
    """

    name = "csr"

    def __init__(self, epochs: Sequence[int], probe: np.ndarray, settings: LassSettings):
        self.epochs = tuple(int(e) for e in epochs)
        self.probe = torch.as_tensor(np.asarray(probe, dtype=np.int64))
        self.settings = settings

    def describe(self) -> dict:
        return {"epochs": list(self.epochs), "probe": self.probe.tolist(),
                "lass": asdict(self.settings)}

    def __call__(self, state) -> dict[str, np.ndarray]:
        x_train, y_train = state.tensors["train"]
        x_val = state.tensors["test"][0].index_select(0, self.probe)
        seeds = lass_seeds(state.config.seed, state.replicates, state.epoch)
        found = lass(state.train_forward, x_val, self.settings, state.n_models, seed=seeds)
        sensitivity = loss_sensitivity(state.train_forward, x_train, y_train, state.n_models)
        return {"csr": found.ratio, "sensitivity_gini": gini(sensitivity),
                "sensitivity_mean": sensitivity.mean(1),
                "train_acc": state.evaluate("train")["correct"].float().mean(1),
                "val_acc": state.evaluate("test")["correct"].float().mean(1)}


class ValidationAccuracy:
    """Validation accuracy after every epoch: record ``val_acc`` (n_models, epochs)."""

    name = "val"
    epochs = None

    def __call__(self, state) -> dict[str, torch.Tensor]:
        return {"acc": state.evaluate("test")["correct"].float().mean(1)}


class AdversarialTraining:
    """Arpit et al.'s adversarial training: every batch gets the LASS samples found from its
    inputs (radius ``scale`` x the settings' radius), so the step's mean loss is the average
    of the clean and the adversarial loss. The search's noise comes from each model's own
    stream (seeded by replicate and step)."""

    name = "adversarial"
    epochs = ()

    def __init__(self, scale: float, settings: LassSettings):
        self.scale, self.settings = float(scale), settings

    def describe(self) -> dict:
        return {"scale": self.scale, "lass": asdict(self.settings)}

    def __call__(self, state) -> dict:
        return {}

    def before_step(self, state, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        seeds = lass_seeds(state.config.seed, state.replicates, state.step)
        found = lass(state.train_forward, x, self.settings, state.n_models, seed=seeds,
                     per_model=True, model_scale=torch.full((state.n_models,), self.scale))
        return torch.cat([x, found.x_adv.to(x.dtype)], 1), torch.cat([y, y], 1)


# ---------------------------------------------------------------- the study


@dataclass
class NoiseStudyResult:
    tables: dict[str, pd.DataFrame]
    summary: dict
    out: Path


def full_data(n_models: int, dataset: Dataset) -> np.ndarray:
    """(n_models, n_train) all-ones membership: every model trains on every example."""
    return np.ones((n_models, dataset.n_train), bool)


def _population(dataset: Dataset, out: Path, config: NoiseStudyConfig, epochs: int, *,
                membership: np.ndarray | None = None, n_models: int | None = None,
                subset_fraction: float | None = None, hidden: tuple[int, ...] | None = None,
                record_epochs: bool = True, sweep: dict | None = None,
                callbacks: Sequence = (), workers: int | None = 1, **recipe) -> Run:
    """Train (or resume) a population with the study's recipe: on ``membership`` (explicit
    mask) or ``n_models`` random subsets of ``subset_fraction``; chunks split over workers
    (None: one per core)."""
    workers = workers or os.cpu_count() or 1
    n_values = math.prod(len(v) for v in sweep.values()) if sweep else 1
    per_value = membership.shape[0] // n_values if membership is not None else n_models
    settings = dict(model_kwargs={"hidden": list(hidden or config.hidden)}, epochs=epochs,
                    batch_size=config.batch_size, optimizer="sgd", lr=config.lr,
                    momentum=config.momentum, seed=config.seed, record_epochs=record_epochs,
                    save_weights=False, chunk_size=max(1, math.ceil(per_value / workers)),
                    **recipe)
    if sweep:
        settings["sweep"] = sweep
    if membership is None:
        settings.update(n_models=n_models, subset_fraction=subset_fraction)
    return train_population(dataset, model="mlp", membership=membership, callbacks=callbacks,
                            out=out, n_workers=workers, progress=False, **settings)


def learning_dynamics(conditions: dict[str, Dataset], config: NoiseStudyConfig, out: Path,
                      log: Callable[[str], None]) -> dict[str, pd.DataFrame]:
    """Part 1: per-epoch records over seeds -> curves, per-example table, summary."""
    curves, examples, summary = [], [], []
    for name, dataset in conditions.items():
        log(f"dynamics: {name} ({config.seeds} seeds x {config.epochs} epochs)")
        run = _population(dataset, out / "populations" / f"dynamics-{name}", config,
                          config.epochs, membership=full_data(config.seeds, dataset),
                          workers=config.workers)
        history = np.asarray(run.records("epoch_train_correct"))  # (seeds, epochs, n)
        test_history = np.asarray(run.records("epoch_test_correct"))
        mask = run.membership_mask
        corrupted = corrupted_examples(dataset)
        train_acc = dynamics.accuracy_curve(history, mask)
        val_acc = test_history.mean(-1)
        frame = pd.DataFrame({
            "condition": name, "epoch": np.arange(1, config.epochs + 1),
            "train_acc": train_acc.mean(0), "train_acc_std": train_acc.std(0),
            "val_acc": val_acc.mean(0), "val_acc_std": val_acc.std(0),
        })
        if corrupted.any() and not corrupted.all():
            frame["train_acc_clean"] = dynamics.accuracy_curve(history, mask, ~corrupted).mean(0)
            frame["train_acc_corrupted"] = dynamics.accuracy_curve(history, mask,
                                                                   corrupted).mean(0)
        curves.append(frame)

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
        order = np.where(np.isnan(first) & mask, config.epochs + 1, first)
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
            "examples": pd.concat(examples, ignore_index=True),
            "dynamics": pd.DataFrame(summary)}


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over seeds (axis 0) ignoring NaN; NaN where every seed is NaN, without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0)


def one_epoch_difficulty(dataset: Dataset, config: NoiseStudyConfig, out: Path,
                         log: Callable[[str], None]) -> dict[str, pd.DataFrame]:
    """Part 2: misclassification rate of every example after one epoch, across seeds, on
    ``dataset`` (real, randY and randX versions of it), with the over-dispersion test against
    one Binomial rate (the paper's reference) and against one rate per class."""
    conditions = make_conditions(dataset, (), config.seed)
    rates, tests = [], []
    for name in ("real", "randY", "randX"):
        log(f"one-epoch difficulty: {name} ({config.difficulty_seeds} seeds)")
        data = conditions[name]
        run = _population(data, out / "populations" / f"difficulty-{name}", config, 1,
                          membership=full_data(config.difficulty_seeds, data),
                          record_epochs=False, workers=config.workers)
        errors, trials = dynamics.misclassification_rates(run.records("train_correct"),
                                                          run.membership_mask)
        test = dynamics.dispersion_test(errors, trials)
        per_class = dynamics.dispersion_test(errors, trials, groups=data.y_train)
        reference = dynamics.binomial_reference(trials, test.mean_rate, seed=config.seed)
        rates.append(pd.DataFrame({"condition": name, "example": np.arange(len(errors)),
                                   "label": data.y_train,
                                   "misclassification_rate": errors / np.maximum(trials, 1),
                                   "binomial_reference": reference, "trials": trials}))
        tests.append({"condition": name, **asdict(test), "over_dispersed": test.over_dispersed,
                      "dispersion_index_within_class": per_class.dispersion_index,
                      "p_value_within_class": per_class.p_value})
    return {"difficulty": pd.concat(rates, ignore_index=True),
            "dispersion": pd.DataFrame(tests)}


def capacity_and_time(dataset: Dataset, config: NoiseStudyConfig, out: Path,
                      log: Callable[[str], None]) -> pd.DataFrame:
    """Part 3: epochs to 100% training accuracy vs dataset size (at the study's width) and vs
    width (at the study's size), for real and randY; NaN = not reached in capacity_epochs.
    Size n < n_train: each seed trains on its own random n examples; the study's size and
    the width axis: every seed on all examples (an all-ones mask)."""
    rows = []
    sizes = [s for s in config.capacity_sizes if s <= dataset.n_train]
    settings = [("size", s, config.hidden) for s in sizes]
    settings += [("width", w, (w,) * len(config.hidden)) for w in config.capacity_widths]
    for axis, value, hidden in settings:
        subset = axis == "size" and value < dataset.n_train
        for name, data in (("real", dataset), ("randY", dataset.with_label_noise(1.0,
                                                                                 config.seed))):
            log(f"capacity: {name}, {axis} {value}")
            membership = None if subset else full_data(config.capacity_seeds, data)
            run = _population(data, out / "populations" / f"capacity-{axis}{value}-{name}",
                              config, config.capacity_epochs, membership=membership,
                              n_models=config.capacity_seeds if subset else None,
                              subset_fraction=value / dataset.n_train if subset else None,
                              hidden=hidden, workers=1)
            accuracy = dynamics.accuracy_curve(np.asarray(run.records("epoch_train_correct")),
                                               run.membership_mask)
            for seed, epochs in enumerate(dynamics.epochs_to_reach(accuracy, 1.0)):
                rows.append({"axis": axis, "value": value, "condition": name, "seed": seed,
                             "n_train": int(run.membership_mask[seed].sum()),
                             "width": hidden[0], "epochs_to_100": epochs,
                             "final_train_acc": float(accuracy[seed, -1])})
    return pd.DataFrame(rows)


def _lass_settings(dataset: Dataset, config: NoiseStudyConfig, max_iter: int) -> LassSettings:
    data_range = float(dataset.x_train.max() - dataset.x_train.min())
    return LassSettings.scaled(data_range, config.lass_scale, max_iter)


def critical_samples(conditions: dict[str, Dataset], config: NoiseStudyConfig, out: Path,
                     log: Callable[[str], None]) -> pd.DataFrame:
    """Part 4: CSR on validation inputs and loss-sensitivity Gini on training examples,
    at epoch 0 and every ``csr_every`` epochs, for csr_seeds full-data models per condition
    (a population per condition with a :class:`CriticalSamples` callback)."""
    real = conditions["real"]
    rng = np.random.default_rng([config.seed, 11])
    probe = np.sort(rng.choice(real.n_test, min(config.csr_examples, real.n_test),
                               replace=False))
    settings = _lass_settings(real, config, config.lass_iter)
    epochs = sorted({0, *range(config.csr_every, config.epochs + 1, config.csr_every),
                     config.epochs})
    callback = CriticalSamples(epochs, probe, settings)
    rows = []
    for name, dataset in conditions.items():
        log(f"critical samples: {name}, {config.csr_seeds} models, LASS r = "
            f"{settings.radius:.4g} on {len(probe)} validation inputs")
        run = _population(dataset, out / "populations" / f"csr-{name}", config, config.epochs,
                          membership=full_data(config.csr_seeds, dataset), record_epochs=False,
                          callbacks=[callback], workers=config.workers)
        records = {key: np.asarray(run.records(f"csr_{key}"))
                   for key in ("csr", "sensitivity_gini", "sensitivity_mean", "train_acc",
                               "val_acc")}
        for seed in range(config.csr_seeds):
            for i, epoch in enumerate(epochs):
                rows.append({"condition": name, "seed": seed, "epoch": epoch,
                             **{key: float(values[seed, i]) for key, values in records.items()}})
    return pd.DataFrame(rows)


def sweep_populations(dataset: Dataset, condition: str, config: NoiseStudyConfig, out: Path,
                      regularizers: dict[str, tuple[float, ...]] | None = None
                      ) -> list[tuple[str, list[float], Run]]:
    """Part 5's populations on one condition: ``[(regularizer, strengths, run)]``, starting
    with ``("none", [0.0], run)``. Dropout, input dropout, input noise and weight decay are
    one population each whose sweep holds the strengths (model (strength j, replicate r) is
    row j * sweep_seeds + r); adversarial training is a population per strength (its
    radius is a callback setting, which a sweep cannot vary). Every model trains on all
    examples and records its validation accuracy after every epoch."""
    regularizers = config.regularizers if regularizers is None else regularizers
    data_std = float(dataset.x_train.std())
    adversarial = _lass_settings(dataset, config, config.adversarial_iter)
    root = out / "populations"
    common = dict(record_epochs=False, workers=config.workers)
    n = config.sweep_seeds

    def train(directory: str, values: int = 1, **settings) -> Run:
        return _population(dataset, root / directory, config, config.sweep_epochs,
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


def regularizer_sweep(conditions: dict[str, Dataset], config: NoiseStudyConfig, out: Path,
                      log: Callable[[str], None]) -> pd.DataFrame:
    """Part 5: for every (regularizer, strength), sweep_seeds models on randY and on real.

    Reports the training accuracy reached on randY (after sweep_epochs, no regularization at
    evaluation) and the best validation accuracy over epochs on real data (means over
    seeds)."""
    runs = {}
    for name in ("randY", "real"):
        log(f"regularizer sweep: {name}, {config.sweep_epochs} epochs")
        runs[name] = sweep_populations(conditions[name], name, config, out)
    n = config.sweep_seeds
    rows = []
    for (name, strengths, noisy), (_, _, real) in zip(runs["randY"], runs["real"]):
        noisy_acc = np.asarray(noisy.records("train_correct")).mean(1)
        real_acc = np.asarray(real.records("train_correct")).mean(1)
        real_best = np.asarray(real.records("val_acc")).max(1)
        for j, strength in enumerate(strengths):
            models = slice(j * n, (j + 1) * n)
            rows.append({"regularizer": name, "strength": strength,
                         "randY_train_acc": float(noisy_acc[models].mean()),
                         "real_best_val_acc": float(real_best[models].mean()),
                         "real_train_acc": float(real_acc[models].mean())})
    return pd.DataFrame(rows)


def directions(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper's findings, each as a number and whether it reproduced here."""
    dyn = tables["dynamics"].set_index("condition")
    rows = []

    def add(finding: str, value: str, reproduced: bool) -> None:
        rows.append({"finding": finding, "measured": value, "reproduced": bool(reproduced)})

    for threshold in ("0.9", "0.99"):
        real, rand = dyn.loc["real", f"epochs_to_{threshold}"], dyn.loc["randY",
                                                                        f"epochs_to_{threshold}"]
        add(f"real data reaches {float(threshold):.0%} training accuracy in fewer epochs "
            "than randY", f"real {real:g} vs randY {rand:g} epochs (NaN: not reached)",
            (np.isnan(rand) and not np.isnan(real)) or real < rand)
    disp = tables["dispersion"].set_index("condition")

    def dispersion(name: str) -> str:
        row = disp.loc[name]
        return (f"{name}: dispersion index {row.dispersion_index:.2f} (p = {row.p_value:.2g}; "
                f"within class {row.dispersion_index_within_class:.2f})")

    add("one-epoch difficulty of real data is over-dispersed vs Binomial", dispersion("real"),
        disp.loc["real", "over_dispersed"])
    add("randX's one-epoch difficulty matches the Binomial (no over-dispersion)",
        dispersion("randX") + f"; real's index is "
        f"{disp.loc['real', 'dispersion_index'] / disp.loc['randX', 'dispersion_index']:.1f}x "
        "randX's", not disp.loc["randX", "over_dispersed"])
    # After one short epoch a network mostly predicts class frequencies, which alone makes
    # error rates differ by class; "equally hard" can then only hold within a class.
    add("randX's one-epoch difficulty matches the Binomial within each class",
        f"within-class dispersion index randX "
        f"{disp.loc['randX', 'dispersion_index_within_class']:.2f} "
        f"(p = {disp.loc['randX', 'p_value_within_class']:.2g}) vs real "
        f"{disp.loc['real', 'dispersion_index_within_class']:.2f}",
        disp.loc["randX", "p_value_within_class"] >= 0.01)
    capacity = tables["capacity"]
    sizes = capacity[capacity.axis == "size"]
    largest = sizes.value.max()
    at_largest = sizes[sizes.value == largest].groupby("condition").epochs_to_100.median()
    # A condition with no run at the largest size (tiny --n-train) counts as not reached.
    real_epochs = float(at_largest.get("real", np.nan))
    rand_epochs = float(at_largest.get("randY", np.nan))
    add(f"noise needs more epochs to fit 100% at the largest size ({largest} examples)",
        f"median epochs real {real_epochs:g} vs randY {rand_epochs:g} "
        "(NaN: not within the cap)",
        (np.isnan(rand_epochs) and not np.isnan(real_epochs)) or real_epochs < rand_epochs)
    csr = tables["csr"]
    final = csr[csr.epoch == csr.epoch.max()].groupby("condition").csr.mean()
    add("CSR is higher for networks fit to noise (final epoch)",
        f"real {final['real']:.3f}, randY {final['randY']:.3f}, randX {final['randX']:.3f}",
        final["randY"] > final["real"] and final["randX"] > final["real"])
    # Averaged over the checkpoints after initialization: the paper tracks it during training.
    sens = csr[csr.epoch > 0].groupby("condition").sensitivity_gini.mean()
    last = csr[csr.epoch == csr.epoch.max()].groupby("condition").sensitivity_gini.mean()
    add("loss-sensitivity Gini is higher for real data than for noise (mean over training)",
        f"real {sens['real']:.3f}, randY {sens['randY']:.3f}, randX {sens['randX']:.3f}; "
        f"final epoch: real {last['real']:.3f}, randY {last['randY']:.3f}, "
        f"randX {last['randX']:.3f}",
        sens["real"] > sens["randY"] and sens["real"] > sens["randX"])
    for name in [c for c in dyn.index if c.startswith("noise")]:
        peak, reach = dyn.loc[name, "best_val_epoch"], dyn.loc[name, "epochs_to_1"]
        best, final = dyn.loc[name, "best_val_acc"], dyn.loc[name, "final_val_acc"]
        # A peak means: before the noise is fit, and validation clearly falls afterwards.
        add(f"{name}: validation accuracy peaks before training accuracy reaches 100%",
            f"val peak at epoch {peak} ({best:.3f}, train acc then "
            f"{dyn.loc[name, 'train_acc_at_best_val']:.3f}); train 100% at epoch {reach:g}, "
            f"final val {final:.3f}",
            (np.isnan(reach) or peak < reach) and final < best - 0.01)
    sweep = tables["sweep"]
    base = sweep[sweep.regularizer == "none"].iloc[0]
    dropout = sweep[sweep.regularizer == "dropout"]
    if len(dropout):
        strongest = dropout.loc[dropout.strength.idxmax()]
        noise_drop = base.randY_train_acc - strongest.randY_train_acc
        val_drop = base.real_best_val_acc - strongest.real_best_val_acc
        add(f"dropout {strongest.strength:g} lowers randY training accuracy far more than real "
            "validation accuracy",
            f"randY train {base.randY_train_acc:.3f} -> {strongest.randY_train_acc:.3f}, real val "
            f"{base.real_best_val_acc:.3f} -> {strongest.real_best_val_acc:.3f}",
            noise_drop > 2 * max(val_drop, 0.0) and noise_drop > 0.1)
    return pd.DataFrame(rows)


def run_noise_study(config: NoiseStudyConfig, out: str | Path, progress: bool = True,
                    figures_dir: str | Path | None = None) -> NoiseStudyResult:
    """Run every part of the study (engine runs resume) and write tables and the report
    (and, with ``figures_dir``, each figure as noise_*.png there)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    full_data = load(config.data)
    dataset = take_subset(full_data, config.n_train, config.seed)
    conditions = make_conditions(dataset, config.noise_fractions, config.seed)
    notes = []  # settings the data cannot honour: said out loud, never skipped silently
    if config.n_train is not None and config.n_train > full_data.n_train:
        notes.append(f"n_train {config.n_train} exceeds the data's {full_data.n_train} "
                     "training examples; all of them are used")
    too_large = [size for size in config.capacity_sizes if size > dataset.n_train]
    if too_large:
        notes.append(f"capacity sizes {too_large} exceed the {dataset.n_train} training "
                     "examples and are left out")
    bar = tqdm(total=5, desc="noise study", unit="part", disable=not progress)

    def log(message: str) -> None:
        bar.set_postfix_str(message[:70])

    tables: dict[str, pd.DataFrame] = {}
    seconds: dict[str, float] = {}
    steps = {
        "dynamics": lambda: learning_dynamics(conditions, config, out, log),
        "difficulty": lambda: one_epoch_difficulty(
            take_subset(full_data, config.difficulty_n_train, config.seed), config, out, log),
        "capacity": lambda: {"capacity": capacity_and_time(dataset, config, out, log)},
        "critical samples": lambda: {"csr": critical_samples(conditions, config, out, log)},
        "regularizer sweep": lambda: {"sweep": regularizer_sweep(conditions, config, out, log)},
    }
    for part, step in steps.items():
        part_started = time.perf_counter()
        with single_thread():  # small matrices: one thread is fastest, and repeatable
            tables.update(step())
        seconds[part] = round(time.perf_counter() - part_started, 1)
        bar.update()
    bar.close()
    tables["directions"] = directions(tables)

    (out / "tables").mkdir(exist_ok=True)
    for name, table in tables.items():
        atomic_save_table(out / "tables" / f"{name}.parquet", table)
    config_dict = asdict(config)
    summary = {
        "config": config_dict, "dataset": dataset.describe(),
        "lass": asdict(_lass_settings(dataset, config, config.lass_iter)),
        "seconds": round(time.perf_counter() - started, 1), "seconds_per_part": seconds,
        "notes": notes,
        "directions": tables["directions"].to_dict(orient="records"),
    }
    summary["dataset"].pop("class_names", None)
    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary, default=str)))
    write_report(tables, summary, out / "report.html",
                 Path(figures_dir) if figures_dir is not None else None)
    return NoiseStudyResult(tables, summary, out)


# ---------------------------------------------------------------- report

COLORS = {"real": "tab:blue", "randY": "tab:red", "randX": "tab:green"}


def _color(name: str) -> str:
    return COLORS.get(name, "tab:purple")


def plot_curves(curves: pd.DataFrame):
    """Training (solid) and validation (dashed) accuracy by epoch, one line per condition."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    noise_names = [c for c in curves.condition.unique() if c.startswith("noise")]
    shades = plt.cm.plasma(np.linspace(0.15, 0.75, max(len(noise_names), 1)))
    for name, frame in curves.groupby("condition", sort=False):
        color = shades[noise_names.index(name)] if name in noise_names else _color(name)
        ax.plot(frame.epoch, frame.train_acc, color=color, label=f"{name} train")
        ax.plot(frame.epoch, frame.val_acc, color=color, ls="--", alpha=0.8)
    ax.set(xlabel="epoch", ylabel="accuracy (mean over seeds)",
           title="training (solid) and validation (dashed) accuracy")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_partial_noise(curves: pd.DataFrame):
    """Per partial-noise condition: accuracy on clean and on corrupted training examples
    (w.r.t. their possibly noisy labels) and validation accuracy, by epoch."""
    import matplotlib.pyplot as plt

    names = [c for c in curves.condition.unique() if c.startswith("noise")]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 3.2),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        frame = curves[curves.condition == name]
        ax.plot(frame.epoch, frame.train_acc_clean, color="tab:blue", label="train, clean")
        ax.plot(frame.epoch, frame.train_acc_corrupted, color="tab:red",
                label="train, corrupted")
        ax.plot(frame.epoch, frame.val_acc, color="k", ls="--", label="validation")
        peak = frame.epoch.iloc[int(frame.val_acc.values.argmax())]
        ax.axvline(peak, color="grey", lw=0.8, ls=":")
        ax.set(title=name, xlabel="epoch")
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7)
    return fig


def plot_difficulty(difficulty: pd.DataFrame, dispersion: pd.DataFrame):
    """Histogram of one-epoch misclassification rates vs the Binomial reference."""
    import matplotlib.pyplot as plt

    names = list(difficulty.condition.unique())
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.2), squeeze=False)
    bins = np.linspace(0, 1, 26)
    for ax, name in zip(axes[0], names):
        frame = difficulty[difficulty.condition == name]
        ax.hist(frame.misclassification_rate, bins=bins, color=_color(name), alpha=0.7,
                label="observed")
        ax.hist(frame.binomial_reference, bins=bins, histtype="step", color="k",
                label="Binomial reference")
        index = dispersion.set_index("condition").loc[name, "dispersion_index"]
        ax.set_title(f"{name}: dispersion index {index:.2f}", fontsize=9)
        ax.set_xlabel("misclassification rate after 1 epoch")
    axes[0, 0].set_ylabel("examples")
    axes[0, 0].legend(fontsize=7)
    return fig


def plot_first_learned(examples: pd.DataFrame):
    """Distribution of the (seed-averaged) epoch each example is first learned."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name in ("real", "randY", "randX"):
        values = examples.loc[examples.condition == name, "first_learned"].dropna()
        ax.hist(values, bins=40, histtype="step", color=_color(name), label=name, lw=1.5)
    ax.set(xlabel="epoch first learned (mean over seeds)", ylabel="examples")
    ax.legend(fontsize=8)
    return fig


def plot_capacity(capacity: pd.DataFrame, epochs_cap: int):
    """Median epochs to 100% training accuracy vs dataset size and vs width; runs that never
    got there are drawn at the cap (hollow markers)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, axis, label in zip(axes, ("size", "width"), ("training examples", "hidden units")):
        for name, frame in capacity[capacity.axis == axis].groupby("condition"):
            filled = frame.assign(epochs=frame.epochs_to_100.fillna(epochs_cap))
            median = filled.groupby("value").epochs.median()
            never = frame.groupby("value").epochs_to_100.apply(lambda e: e.isna().mean() > 0.5)
            ax.plot(median.index, median.values, "-", color=_color(name), label=name)
            for value, epochs in median.items():
                ax.plot(value, epochs, "o", color=_color(name),
                        mfc="none" if never[value] else _color(name))
        ax.axhline(epochs_cap, color="grey", lw=0.8, ls=":")
        values = sorted(capacity.loc[capacity.axis == axis, "value"].unique())
        ax.set(xscale="log", xlabel=label, ylabel="epochs to 100% train acc")
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()
    axes[0].legend(fontsize=8)
    return fig


def plot_csr(csr: pd.DataFrame):
    """CSR on validation inputs and loss-sensitivity Gini on training examples, by epoch."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    noise_names = [c for c in csr.condition.unique() if c.startswith("noise")]
    shades = plt.cm.plasma(np.linspace(0.15, 0.75, max(len(noise_names), 1)))
    mean = csr.groupby(["condition", "epoch"], sort=False)[["csr", "sensitivity_gini"]].mean()
    for name in csr.condition.unique():
        frame = mean.loc[name]
        color = shades[noise_names.index(name)] if name in noise_names else _color(name)
        axes[0].plot(frame.index, frame.csr, color=color, label=name)
        axes[1].plot(frame.index, frame.sensitivity_gini, color=color, label=name)
    axes[0].set(xlabel="epoch", ylabel="critical sample ratio (validation)")
    axes[1].set(xlabel="epoch", ylabel="Gini of ||dL/dx||_1 (training)")
    axes[0].legend(fontsize=7)
    return fig


def plot_sweep(sweep: pd.DataFrame):
    """The paper's trade-off: training accuracy on randY (x) vs best validation accuracy on
    real data (y), one line per regularizer through its strengths."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    base = sweep[sweep.regularizer == "none"].iloc[0]
    for name, frame in sweep[sweep.regularizer != "none"].groupby("regularizer", sort=False):
        frame = frame.sort_values("strength")
        xs = [base.randY_train_acc, *frame.randY_train_acc]
        ys = [base.real_best_val_acc, *frame.real_best_val_acc]
        ax.plot(xs, ys, "o-", label=name, ms=4)
        ax.annotate(f"{frame.strength.iloc[-1]:g}", (xs[-1], ys[-1]), fontsize=7)
    ax.plot(base.randY_train_acc, base.real_best_val_acc, "k*", ms=12, label="no regularizer")
    ax.set(xlabel="training accuracy on randY", ylabel="best validation accuracy on real data",
           title="regularizers: noise fitting vs real generalization")
    ax.legend(fontsize=7)
    return fig


def write_report(tables: dict[str, pd.DataFrame], summary: dict, path: Path,
                 figures_dir: Path | None = None) -> Path:
    """The study's report.html; with ``figures_dir`` also each figure as noise_*.png."""
    from memlab.report import Report

    config = summary["config"]
    dataset = summary["dataset"]
    report = Report(f"Real data vs noise on {dataset['name']} (Arpit et al. 2017)")
    report.text(f"{dataset['n_train']} training / {dataset['n_test']} validation examples; "
                f"MLP hidden {config['hidden']}, SGD lr {config['lr']} momentum "
                f"{config['momentum']}, batch {config['batch_size']}; "
                f"{summary['seconds']:.0f} s in all.")
    for note in summary.get("notes", []):
        report.text(note, note=True)
    report.heading("Findings")
    report.table(tables["directions"], caption="The paper's directions, measured here")
    figures = [
        ("curves", plot_curves(tables["curves"]),
         "Learning curves per condition (mean over seeds): real data is fit first and "
         "generalizes; noise is fit later."),
        ("partial", plot_partial_noise(tables["curves"]),
         "Partial label noise: clean examples are learned first, corrupted ones later; the "
         "dotted line marks the validation peak."),
        ("difficulty", plot_difficulty(tables["difficulty"], tables["dispersion"]),
         f"One-epoch misclassification rates over {config['difficulty_seeds']} seeds vs "
         "the Binomial reference of equally hard examples."),
        ("first_learned", plot_first_learned(tables["examples"]),
         "When each example is first learned (mean over seeds)."),
        ("capacity", plot_capacity(tables["capacity"], config["capacity_epochs"]),
         f"Epochs to 100% training accuracy (median of {config['capacity_seeds']} seeds); "
         "hollow markers: not reached within the cap (dotted line)."),
        ("csr", plot_csr(tables["csr"]),
         f"Critical sample ratio (LASS α={summary['lass']['alpha']:.3g}, "
         f"β={summary['lass']['beta']:.3g}, r={summary['lass']['radius']:.3g}, "
         f"{summary['lass']['max_iter']} iterations) and loss-sensitivity Gini during "
         "training."),
        ("sweep", plot_sweep(tables["sweep"]),
         "Regularizer trade-off: each line goes from no regularization (star) through "
         "increasing strengths (last one labeled)."),
    ]
    sections = {"curves": "Learning curves", "difficulty": "One-epoch difficulty",
                "capacity": "Capacity and time", "csr": "Critical samples",
                "sweep": "Regularizers"}
    for name, fig, caption in figures:
        if name in sections:
            report.heading(sections[name])
        if figures_dir is not None:
            figures_dir.mkdir(parents=True, exist_ok=True)
            fig.savefig(figures_dir / f"noise_{name}.png", dpi=80, bbox_inches="tight")
        report.figure(fig, caption=caption, fmt="png")
        if name == "curves":
            report.table(tables["dynamics"], caption="Per-condition learning dynamics")
        if name == "difficulty":
            report.table(tables["dispersion"], caption="Over-dispersion test")
        if name == "sweep":
            report.table(tables["sweep"], caption="Regularizer sweep")
    return report.save(path)
