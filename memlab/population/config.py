"""What defines a population: the training recipe, and the random streams derived from its seed.

Every random choice about model k (its subset, its initialization, its shuffling) comes
from its own stream ``numpy.random.SeedSequence([seed, k, stream])``, so model k is the
same whether it is trained alone, in a chunk of 64, on another worker, or after a resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memlab.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "warmup_linear", "onecycle")
TASKS = ("classification", "binary", "language_model")
INITS = ("seed", "pretrained")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16", "auto")

# Stream identifiers: never reuse one for another purpose, or old runs stop resuming.
STREAM_SUBSET, STREAM_INIT, STREAM_SHUFFLE, STREAM_DROPOUT, STREAM_AUGMENT = 0, 1, 2, 3, 4

# Settings a sweep may vary per model (besides the model's own keyword arguments).
# (Not epochs: records over epochs must have one length per run; record checkpoints of
# one longer run with a callback instead.)
SWEEPABLE = ("lr", "weight_decay", "momentum", "label_smoothing", "input_noise",
             "input_dropout", "clip_grad_norm")


@dataclass(frozen=True)
class PopulationConfig:
    """The recipe shared by all models of a population (everything that changes results).

    model: a registered name (``mlp``, ``cnn1d``, ``cnn2d``, see ``register_model``),
        ``package.module:factory``, or, for a model object passed to ``train_population``,
        its class path (the object itself travels beside the config).
    init: ``seed`` (model k's weights from its own seed) or ``pretrained`` (every model
        starts from the template's weights; ``reinit`` names modules, e.g. the head, that
        get their own seeded initialization).
    n_models: models in the population (with a ``sweep``: models per sweep value).
    subset_fraction: each model trains on round(subset_fraction * n_train) examples drawn
        without replacement (Feldman & Zhang use 0.7). Ignored with an explicit membership
        mask (``subsets="explicit"``).
    lr: learning rate (the peak of a schedule); momentum is used by ``sgd`` only.
    schedule: ``constant``, ``step`` (x ``lr_gamma`` every ``lr_step_epochs``), ``cosine``
        (to 0), ``warmup_cosine`` / ``warmup_linear`` (linear warm-up over
        ``warmup_epochs``, then cosine / linear decay to 0), ``onecycle`` (Smith's: warm-up
        over the first 30% from lr/25, cosine down to lr/25e4; momentum is not cycled);
        evaluated at every optimizer step.
    decay_bias_and_norm: False puts biases and normalization weights (every parameter
        with one dimension per model) in a group without weight decay.
    clip_grad_norm: clip each model's gradient to this global L2 norm (0 = off), as
        ``torch.nn.utils.clip_grad_norm_`` does for one model.
    augment: ``crop:P`` (random crop after zero-padding P pixels; images),
        ``flip`` (horizontal flip with probability 1/2; images), ``shift:S`` (random
        circular shift by up to S steps; signals), or ``package.module:function`` (your
        own: ``f(x, rng) -> x`` for one model's batch x (b, *input_shape) and its numpy
        Generator); applied in order with draws from each model's own stream per epoch.
    input_noise: std of Gaussian noise added to training inputs (per model, per step).
    input_dropout: probability of zeroing each input feature (rescaled by 1/(1-p)).
    sweep: setting -> list of values; the population holds ``n_models`` models for every
        combination (grid), model (value, replicate r) sharing subset, initialization and
        shuffling with replicate r of every other value (paired comparisons, and adding a
        value changes no other model). Keys: any of ``SWEEPABLE`` or a keyword of the model.
    subsets: ``random`` (subsets drawn from the seed) or ``explicit`` (a membership mask
        given to ``train_population(membership=...)``, stored in the run directory).
    task: ``classification`` (softmax cross-entropy over n_classes logits), ``binary``
        (one logit, logistic loss; labels 0/1), ``language_model`` (documents).
    record_epochs: also record correctness and loss of every example after every epoch.
    chunk_size: models trained together in one vectorized chunk, the unit of work,
        storage and resumption. Memory grows with it, not with n_models.
    compact_records: store correctness as bits and margins/losses as float16 (about 6
        instead of 11 bytes per model and example), for large runs.
    compute_dtype: precision of the training step's matrix products and activations:
        ``float32``; ``bfloat16`` (float32 master weights, optimizer state, loss and
        softmax; fast on CPUs with AVX512-BF16 or AMX and on GPUs); ``float16`` (GPUs
        without bfloat16, with loss scaling); ``auto`` (bfloat16 where the device has it
        natively, else float32 on a CPU and float16 on a GPU; decided from the device's
        reported capabilities, never from a timing; the run's manifest records the
        resolved precision). Evaluation and records always use the float32 weights.
        Changes results, so it is part of the recipe; the default keeps float32 bits.
    """

    model: str = "mlp"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    init: str = "seed"
    reinit: tuple[str, ...] = ()
    n_models: int = 100
    subset_fraction: float = 0.5
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    decay_bias_and_norm: bool = True
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    lr_step_epochs: int = 0
    lr_gamma: float = 0.1
    clip_grad_norm: float = 0.0
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ()
    input_noise: float = 0.0
    input_dropout: float = 0.0
    sweep: dict[str, list] = field(default_factory=dict)
    subsets: str = "random"
    task: str = "classification"
    seed: int = 0
    record_epochs: bool = False
    save_weights: bool = True
    chunk_size: int = 32
    compact_records: bool = False
    compute_dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("augment", "reinit"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,) if value else ())
            elif isinstance(value, list | tuple):
                object.__setattr__(self, name, tuple(value))
        if self.subsets not in ("random", "explicit"):
            raise ConfigError(f"subsets must be 'random' or 'explicit', got {self.subsets!r}")
        if self.subsets == "random" and not (0 < self.subset_fraction < 1):
            raise ConfigError(
                f"subset_fraction must lie strictly between 0 and 1, got {self.subset_fraction}: "
                "each model needs some examples in and some out of its subset (papers use "
                "0.7); for full-data or leave-one-out models pass an explicit membership mask"
            )
        for name in ("n_models", "epochs", "batch_size", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}: choose one of "
                              f"{', '.join(SCHEDULES)}")
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}: choose one of {', '.join(TASKS)}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got "
                              f"{self.compute_dtype!r}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {self.init!r}")
        check_recipe_values(dataclasses.asdict(self))
        for name in ("nesterov", "decay_bias_and_norm", "record_epochs", "save_weights",
                     "compact_records"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.schedule == "step" and self.lr_step_epochs < 1:
            raise ConfigError("schedule 'step' needs lr_step_epochs >= 1 (epochs between "
                              "learning-rate drops)")
        if self.schedule.startswith("warmup") and not 0 < self.warmup_epochs < self.epochs:
            raise ConfigError(f"schedule {self.schedule!r} needs 0 < warmup_epochs < epochs "
                              f"({self.epochs}), got {self.warmup_epochs}")
        for spec in self.augment:
            check_augmentation(spec)
        check_sweep(self.sweep)

    @property
    def n_values(self) -> int:
        """Sweep combinations (1 without a sweep)."""
        return math.prod(len(v) for v in self.sweep.values()) if self.sweep else 1

    @property
    def n_total(self) -> int:
        """Models in the run: n_models for every sweep combination."""
        return self.n_models * self.n_values

    def sweep_values(self) -> list[dict[str, Any]]:
        """The sweep's combinations in model order (the first key varies slowest)."""
        combos: list[dict[str, Any]] = [{}]
        for key, values in self.sweep.items():
            combos = [{**c, key: v} for c in combos for v in values]
        return combos

    def for_value(self, index: int) -> PopulationConfig:
        """The recipe of sweep combination ``index``: the sweep applied, no sweep left."""
        overrides = self.sweep_values()[index]
        fields = {f.name for f in dataclasses.fields(self)}
        settings = {k: v for k, v in overrides.items() if k in fields}
        model_kwargs = {**self.model_kwargs,
                        **{k: v for k, v in overrides.items() if k not in fields}}
        return dataclasses.replace(self, sweep={}, model_kwargs=model_kwargs, **settings)

    def model_key(self, k: int) -> tuple[int, int]:
        """(sweep combination, replicate) of model k; model k's random streams are keyed by
        its replicate, so they do not depend on its position in the run."""
        if not 0 <= k < self.n_total:
            raise ConfigError(f"model {k} out of range: the run has {self.n_total} models")
        return divmod(k, self.n_models)

    def subset_size(self, n_train: int) -> int:
        size = int(round(self.subset_fraction * n_train))
        if not 1 <= size < n_train:
            raise ConfigError(
                f"subset_fraction {self.subset_fraction} of {n_train} examples gives subsets of "
                f"{size}; choose a fraction that leaves at least one example in and one out"
            )
        return size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists), the form a manifest stores."""
        return json.loads(json.dumps(dataclasses.asdict(self), allow_nan=False))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PopulationConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown population settings: {sorted(unknown)}")
        return cls(**values)


def check_recipe_values(values: dict[str, Any]) -> None:
    """Range, type and finiteness of the numeric settings (also each sweep value)."""
    def number(name: str, low: float, high: float, low_open: bool = False,
               high_open: bool = True) -> None:
        if name not in values:
            return
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number, got {value!r} "
                              f"({type(value).__name__})")
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be finite, got {value}")
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            raise ConfigError(f"{name} must lie in {left}{low}, {high}{right}, got {value}")

    number("lr", 0, math.inf, low_open=True)
    number("weight_decay", 0, math.inf)
    number("momentum", 0, 1)
    number("label_smoothing", 0, 1)
    number("input_noise", 0, math.inf)
    number("input_dropout", 0, 1)
    number("clip_grad_norm", 0, math.inf)
    number("warmup_epochs", 0, math.inf)
    number("lr_gamma", 0, 1, low_open=True, high_open=False)
    if "epochs" in values and (isinstance(values["epochs"], bool)
                               or not isinstance(values["epochs"], int)
                               or values["epochs"] < 1):
        raise ConfigError(f"epochs must be a positive integer, got {values['epochs']!r}")


def check_augmentation(spec: str) -> None:
    """``crop:P``, ``flip``, ``shift:S`` or ``package.module:function``."""
    if not isinstance(spec, str):
        raise ConfigError(f"augmentations are strings such as 'crop:4', got {spec!r}")
    name, _, arg = spec.partition(":")
    if name in ("crop", "shift"):
        if not arg.isdigit() or int(arg) < 1:
            raise ConfigError(f"augmentation {spec!r} needs a positive integer, e.g. "
                              f"'{name}:4'")
    elif name == "flip":
        if arg:
            raise ConfigError(f"augmentation 'flip' takes no argument, got {spec!r}")
    elif not (arg and name):
        raise ConfigError(f"unknown augmentation {spec!r}: use crop:P, flip, shift:S or "
                          "package.module:function")


def check_sweep(sweep: dict[str, list]) -> None:
    if not isinstance(sweep, dict):
        raise ConfigError(f"sweep must be a dict of setting -> list of values, got {sweep!r}")
    fields = {f.name for f in dataclasses.fields(PopulationConfig)}
    for key, values in sweep.items():
        if key in fields and key not in SWEEPABLE:
            raise ConfigError(f"{key!r} cannot vary within a population; sweepable settings: "
                              f"{', '.join(SWEEPABLE)} and the model's keyword arguments")
        if not isinstance(values, list | tuple) or not values:
            raise ConfigError(f"sweep[{key!r}] must be a non-empty list of values, "
                              f"got {values!r}")
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"sweep[{key!r}] repeats a value: {values!r}")
        for value in values:
            if key in fields:
                check_recipe_values({key: value})


def model_rng(seed: int, model_index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, model_index, stream])


def model_seed(seed: int, model_index: int, stream: int) -> int:
    """A 63-bit integer seed for torch generators, from the model's own stream."""
    state = np.random.SeedSequence([seed, model_index, stream]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def membership_mask(config: PopulationConfig, n_train: int,
                    models: range | None = None) -> np.ndarray:
    """(n_total, n_train) bool: row k marks the examples model k trains on (drawn from
    model k's replicate stream: every sweep value's replicate r has the same subset)."""
    models = range(config.n_total) if models is None else models
    size = config.subset_size(n_train)
    mask = np.zeros((len(models), n_train), dtype=bool)
    for row, k in enumerate(models):
        replicate = config.model_key(k)[1]
        chosen = model_rng(config.seed, replicate, STREAM_SUBSET).choice(n_train, size,
                                                                       replace=False)
        mask[row, chosen] = 1
    return mask
