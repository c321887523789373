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

Parts 1-3 use the population engine; parts 4-5 need checkpoints and input-level
regularizers, so they train a small stack of MLPs here (:class:`StackedMLP`, all models in
one vectorized step). Everything lands in ``RUN/``: ``populations/`` (engine runs,
resumable), ``tables/*.parquet``, ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from memlab.data import Dataset, load
from memlab.errors import ConfigError
from memlab.measures import dynamics
from memlab.measures.critical import LassSettings, gini, lass, loss_sensitivity
from memlab.population import train_population
from memlab.population.executor import single_thread
from memlab.population.store import atomic_save_table, atomic_write_json

REGULARIZERS = ("dropout", "input_dropout", "input_noise", "weight_decay", "adversarial")


@dataclass(frozen=True)
class NoiseStudyConfig:
    """Everything that sets the study's results. ``quick()`` and ``full()`` are the presets.

    n_train: training examples used (a fixed random subset; None = all); the test split is
        the validation set. ``subset_fraction``: each seed's model trains on this fraction
        (the engine needs some examples out; 0.99 is "the whole set" for the dynamics).
    difficulty_n_train: training examples for the one-epoch difficulty (None = all of the
        data's): one epoch must be enough SGD steps to learn more than class frequencies.
    lass_scale: LASS α, β, r are the paper's values rescaled to the data's range, times this.
    regularizers: name -> strengths (dropout and input_dropout: drop probability;
        input_noise: Gaussian std in units of the data's std; weight_decay: L2 coefficient;
        adversarial: LASS radius as a multiple of the scaled paper radius).
    """

    data: str = "mnist1d"
    n_train: int | None = 1000
    hidden: tuple[int, ...] = (100, 100)
    noise_fractions: tuple[float, ...] = (0.2, 0.5)
    seeds: int = 16
    epochs: int = 60
    subset_fraction: float = 0.99
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
        for fraction in self.noise_fractions:
            if not 0 < fraction < 1:
                raise ConfigError(f"partial noise fractions must lie in (0, 1), got {fraction}")
        if min(self.seeds, self.difficulty_seeds, self.capacity_seeds, self.csr_seeds) < 2:
            raise ConfigError("every part of the study needs at least 2 seeds")

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
                + sum(map(len, self.regularizers.values())) * 2 * self.sweep_epochs * n_train
                * 2) * width
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


# ---------------------------------------------------------------- a stack of small MLPs


class StackedMLP:
    """K independent ReLU MLPs with stacked weights (K, out, in), trained in one step.

    Unlike the population engine's models, every model here can carry its own input-level
    regularization (input dropout, input noise, adversarial examples) and be inspected at
    checkpoints. Initialization matches nn.Linear's default.
    """

    def __init__(self, n_models: int, n_features: int, hidden: tuple[int, ...],
                 n_classes: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        widths = [n_features, *hidden, n_classes]
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            bound = 1 / math.sqrt(fan_in)
            for shape, store in (((fan_out, fan_in), self.weights), ((fan_out,), self.biases)):
                uniform = torch.rand(n_models, *shape, generator=generator) * 2 - 1
                store.append((uniform * bound).requires_grad_(True))
        self.n_models = n_models

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def __call__(self, x: torch.Tensor, dropout: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """x (K, b, *input_shape) -> logits (K, b, n_classes). ``dropout`` (K,): per-model
        drop probability of hidden units (training only; None = evaluation)."""
        h = x.flatten(2)
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if layer < len(self.weights) - 1:
                h = h.relu()
                if dropout is not None:
                    h = _drop(h, dropout, generator)
        return h


def _drop(h: torch.Tensor, rate: torch.Tensor, generator: torch.Generator | None
          ) -> torch.Tensor:
    """Inverted dropout with a per-model rate (K,) on (K, ...) activations."""
    rate = rate.view(-1, *([1] * (h.dim() - 1)))
    keep = torch.rand(h.shape, generator=generator) >= rate
    return h * keep / (1 - rate)


@dataclass
class Regularization:
    """Per-model regularizer strengths, each a (K,) tensor (0 = off)."""

    dropout: torch.Tensor
    input_dropout: torch.Tensor
    input_noise: torch.Tensor  # std, in input units
    weight_decay: torch.Tensor
    adversarial: torch.Tensor  # multiple of the LASS settings' radius

    @classmethod
    def none(cls, n_models: int) -> Regularization:
        return cls(*(torch.zeros(n_models) for _ in range(5)))


def train_stack(net: StackedMLP, x: torch.Tensor, y: torch.Tensor, epochs: int,
                batch_size: int, lr: float, momentum: float,
                regularization: Regularization | None = None,
                lass_settings: LassSettings | None = None, seed: int = 0,
                on_epoch: Callable[[int], None] | None = None) -> None:
    """Train model k on (x[k], y[k]) with SGD: x (K, n, *input_shape), y (K, n).

    ``on_epoch(epoch)`` is called after every epoch (1-based), e.g. to take measurements.
    Adversarial training (``regularization.adversarial`` > 0) averages the loss on clean
    inputs and on LASS samples found from them, as in Arpit et al.
    """
    n_models, n = y.shape
    reg = regularization or Regularization.none(n_models)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    adversarial = bool((reg.adversarial > 0).any())
    if adversarial and lass_settings is None:
        raise ConfigError("adversarial training needs lass_settings")
    shape = [n_models, 1] + [1] * (x.dim() - 2)
    for epoch in range(1, epochs + 1):
        order = torch.argsort(torch.rand(n_models, n, generator=generator), dim=1)
        for start in range(0, n, batch_size):
            index = order[:, start:start + batch_size]
            x_batch = torch.gather(x, 1, index.view(*index.shape, *[1] * (x.dim() - 2))
                                   .expand(-1, -1, *x.shape[2:]))
            y_batch = torch.gather(y, 1, index)
            if (reg.input_dropout > 0).any():
                x_batch = _drop(x_batch, reg.input_dropout, generator)
            x_batch = x_batch + reg.input_noise.view(shape) * torch.randn(
                x_batch.shape, generator=generator)
            logits = net(x_batch, reg.dropout, generator)
            loss = F.cross_entropy(logits.flatten(0, 1), y_batch.flatten(), reduction="none")
            loss = loss.view(n_models, -1).mean(1)  # (K,): models stay independent
            if adversarial:
                search_seed = int(torch.randint(1 << 30, (1,), generator=generator))
                found = lass(net, x_batch, lass_settings, n_models, seed=search_seed,
                             per_model=True, model_scale=reg.adversarial).x_adv
                adv_logits = net(found, reg.dropout, generator)
                adv_loss = F.cross_entropy(adv_logits.flatten(0, 1), y_batch.flatten(),
                                           reduction="none").view(n_models, -1).mean(1)
                loss = torch.where(reg.adversarial > 0, (loss + adv_loss) / 2, loss)
            # L2 on every parameter, biases included, like torch.optim's weight_decay.
            decay = sum((w ** 2).flatten(1).sum(1) for w in net.parameters())
            total = (loss + 0.5 * reg.weight_decay * decay).sum()
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch)


@torch.no_grad()
def stack_accuracy(net: StackedMLP, x: torch.Tensor, y: torch.Tensor, shared: bool = False
                   ) -> np.ndarray:
    """(K, n) bool correctness of every model on (x, y): per-model (K, n, ...) and (K, n),
    or ``shared`` (n, ...) and (n,)."""
    if shared:
        x, y = x.expand(net.n_models, *x.shape), y.expand(net.n_models, -1)
    return (net(x).argmax(-1) == y).numpy()


# ---------------------------------------------------------------- the study


@dataclass
class NoiseStudyResult:
    tables: dict[str, pd.DataFrame]
    summary: dict
    out: Path


def _population(dataset: Dataset, out: Path, config: NoiseStudyConfig, n_models: int,
                epochs: int, hidden: tuple[int, ...] | None = None,
                subset_fraction: float | None = None, record_epochs: bool = True,
                workers: int | None = 1):
    """Train (or resume) a population with the study's recipe; chunks split over workers
    (None: one per core)."""
    workers = workers or os.cpu_count() or 1
    return train_population(
        dataset, model="mlp", model_kwargs={"hidden": list(hidden or config.hidden)},
        n_models=n_models, subset_fraction=subset_fraction or config.subset_fraction,
        epochs=epochs, batch_size=config.batch_size, optimizer="sgd", lr=config.lr,
        momentum=config.momentum, seed=config.seed, record_epochs=record_epochs,
        save_weights=False, chunk_size=max(1, math.ceil(n_models / workers)), out=out,
        n_workers=workers, progress=False,
    )


def learning_dynamics(conditions: dict[str, Dataset], config: NoiseStudyConfig, out: Path,
                      log: Callable[[str], None]) -> dict[str, pd.DataFrame]:
    """Part 1: per-epoch records over seeds -> curves, per-example table, summary."""
    curves, examples, summary = [], [], []
    for name, dataset in conditions.items():
        log(f"dynamics: {name} ({config.seeds} seeds x {config.epochs} epochs)")
        run = _population(dataset, out / "populations" / f"dynamics-{name}", config,
                          config.seeds, config.epochs, workers=config.workers)
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
        run = _population(data, out / "populations" / f"difficulty-{name}", config,
                          config.difficulty_seeds, epochs=1, record_epochs=False,
                          workers=config.workers)
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
    width (at the study's size), for real and randY; NaN = not reached in capacity_epochs."""
    rows = []
    sizes = [s for s in config.capacity_sizes if s <= dataset.n_train]
    settings = [("size", s, config.hidden) for s in sizes]
    settings += [("width", w, (w,) * len(config.hidden)) for w in config.capacity_widths]
    for axis, value, hidden in settings:
        # Size n: the models train on random subsets of n examples of the study's data.
        fraction = min(value / dataset.n_train, 0.99) if axis == "size" else None
        for name, data in (("real", dataset), ("randY", dataset.with_label_noise(1.0,
                                                                                 config.seed))):
            log(f"capacity: {name}, {axis} {value}")
            run = _population(data, out / "populations" / f"capacity-{axis}{value}-{name}",
                              config, config.capacity_seeds, config.capacity_epochs,
                              hidden=hidden, subset_fraction=fraction, workers=1)
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


def critical_samples(conditions: dict[str, Dataset], config: NoiseStudyConfig,
                     log: Callable[[str], None]) -> pd.DataFrame:
    """Part 4: CSR on validation inputs and loss-sensitivity Gini on training examples,
    every ``csr_every`` epochs, for csr_seeds models per condition (one stack)."""
    names = list(conditions)
    labels = [name for name in names for _ in range(config.csr_seeds)]
    x = torch.stack([torch.from_numpy(conditions[name].x_train) for name in labels])
    y = torch.stack([torch.from_numpy(conditions[name].y_train) for name in labels])
    real = conditions["real"]
    rng = np.random.default_rng([config.seed, 11])
    probe = rng.choice(real.n_test, min(config.csr_examples, real.n_test), replace=False)
    x_val = torch.from_numpy(real.x_test[probe])
    x_test, y_test = torch.from_numpy(real.x_test), torch.from_numpy(real.y_test)
    settings = _lass_settings(real, config, config.lass_iter)
    net = StackedMLP(len(labels), math.prod(real.input_shape), config.hidden,
                     real.n_classes, seed=config.seed)
    rows = []

    def measure(epoch: int) -> None:
        if epoch % config.csr_every and epoch != config.epochs:
            return
        found = lass(net, x_val, settings, len(labels), seed=config.seed + epoch)
        sensitivity = loss_sensitivity(net, x, y, len(labels), per_model=True)
        train_acc = stack_accuracy(net, x, y).mean(1)
        val_acc = stack_accuracy(net, x_test, y_test, shared=True).mean(1)
        for k, name in enumerate(labels):
            rows.append({"condition": name, "seed": k % config.csr_seeds, "epoch": epoch,
                         "csr": float(found.ratio[k]),
                         "sensitivity_gini": float(gini(sensitivity[k])),
                         "sensitivity_mean": float(sensitivity[k].mean()),
                         "train_acc": float(train_acc[k]), "val_acc": float(val_acc[k])})

    log(f"critical samples: {len(labels)} models x {config.epochs} epochs, LASS r = "
        f"{settings.radius:.4g} on {len(probe)} validation inputs")
    measure(0)
    train_stack(net, x, y, config.epochs, config.batch_size, config.lr, config.momentum,
                seed=config.seed, on_epoch=measure)
    return pd.DataFrame(rows)


def regularizer_sweep(conditions: dict[str, Dataset], config: NoiseStudyConfig,
                      log: Callable[[str], None]) -> pd.DataFrame:
    """Part 5: for every (regularizer, strength), one model on randY and one on real data.

    Reports the training accuracy reached on randY (after sweep_epochs, no regularization at
    evaluation) and the best validation accuracy over epochs on real data."""
    real, noisy = conditions["real"], conditions["randY"]
    settings = _lass_settings(real, config, config.adversarial_iter)
    grid = [("none", 0.0)] + [(name, s) for name, strengths in config.regularizers.items()
                              for s in strengths]
    groups = {"plain": [g for g in grid if g[0] != "adversarial"],
              "adversarial": [g for g in grid if g[0] == "adversarial"]}
    rows = []
    for group, entries in groups.items():
        if entries:
            log(f"regularizer sweep ({group}): {2 * len(entries)} models x "
                f"{config.sweep_epochs} epochs")
            rows += _sweep_group(entries, real, noisy, config, settings)
    return pd.DataFrame(rows)


def _sweep_group(entries: list[tuple[str, float]], real: Dataset, noisy: Dataset,
                 config: NoiseStudyConfig, settings: LassSettings) -> list[dict]:
    """Train one stack: model 2j on randY, model 2j + 1 on real data, both with entry j."""
    settings_per_model = [entry for entry in entries for _ in range(2)]
    n_models = len(settings_per_model)
    data_std = float(real.x_train.std())
    strengths = {name: torch.zeros(n_models) for name in REGULARIZERS}
    for k, (name, strength) in enumerate(settings_per_model):
        if name in strengths:
            strengths[name][k] = strength * (data_std if name == "input_noise" else 1.0)
    x = torch.from_numpy(np.stack([noisy.x_train, real.x_train] * len(entries)))
    y = torch.from_numpy(np.stack([noisy.y_train, real.y_train] * len(entries)))
    x_test, y_test = torch.from_numpy(real.x_test), torch.from_numpy(real.y_test)
    net = StackedMLP(n_models, math.prod(real.input_shape), config.hidden, real.n_classes,
                     seed=config.seed)
    best_val = np.zeros(n_models)

    def track(epoch: int) -> None:
        best_val[:] = np.maximum(best_val, stack_accuracy(net, x_test, y_test,
                                                          shared=True).mean(1))

    train_stack(net, x, y, config.sweep_epochs, config.batch_size, config.lr, config.momentum,
                Regularization(**strengths), settings, seed=config.seed, on_epoch=track)
    train_acc = stack_accuracy(net, x, y).mean(1)
    return [{"regularizer": name, "strength": strength,
             "randY_train_acc": float(train_acc[2 * j]),
             "real_best_val_acc": float(best_val[2 * j + 1]),
             "real_train_acc": float(train_acc[2 * j + 1])}
            for j, (name, strength) in enumerate(entries)]


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
        "critical samples": lambda: {"csr": critical_samples(conditions, config, log)},
        "regularizer sweep": lambda: {"sweep": regularizer_sweep(conditions, config, log)},
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
