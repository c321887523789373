"""What defines a population: the training recipe, and the random streams derived from its seed.

Every random choice about model k (its subset, its initialization, its shuffling) comes
from its own stream ``numpy.random.SeedSequence([seed, k, stream])``, so model k is the
same whether it is trained alone, in a chunk of 64, on another worker, or after a resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from memlab import streams, validate
from memlab.errors import ConfigError
from memlab.options import compact_json, key_value, option

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "warmup_linear", "onecycle")
# The tasks by name (their behaviour: memlab.engine.task.TASKS, keyed by these names).
TASK_NAMES = ("classification", "binary", "language_model")
INITS = ("seed", "pretrained")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16", "auto")
ON_DIVERGE = ("error", "record")

# Stream identifiers: never reuse one for another purpose, or old runs stop resuming.
# Each model's own streams, named in memlab.streams (never change a number: old runs resume).
STREAM_SUBSET, STREAM_INIT, STREAM_SHUFFLE, STREAM_DROPOUT, STREAM_AUGMENT = (
    streams.SUBSET, streams.INIT, streams.SHUFFLE, streams.DROPOUT, streams.AUGMENT)

# Settings a sweep may vary per model (besides the model's own keyword arguments).
# (Not epochs: records over epochs must have one length per run; record checkpoints of
# one longer run with a callback instead.)
DEFAULT_PRIVACY_CANARIES = 100  # a DP run's canaries unless dp_canaries says otherwise
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
    dp_noise_multiplier, dp_max_grad_norm, dp_epsilon, dp_delta: DP-SGD
        (:mod:`memlab.engine.dp`): Poisson batches of expected size ``batch_size``, every
        example's gradient clipped to ``dp_max_grad_norm``, Gaussian noise of std
        σ·C; σ given, or solved for a target ``dp_epsilon`` at ``dp_delta``.
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
    compact_records: store correctness as bits and margins/losses as float16 (about 10
        instead of 15 bytes per model and example), for large runs.
    compute_dtype: precision of the training step's matrix products and activations:
        ``float32``; ``bfloat16`` (float32 master weights, optimizer state, loss and
        softmax; fast on CPUs with AVX512-BF16 or AMX and on GPUs); ``float16`` (GPUs
        without bfloat16, with loss scaling); ``auto`` (bfloat16 where the device has it
        natively, else float32 on a CPU and float16 on a GPU; decided from the device's
        reported capabilities, never from a timing; the run's manifest records the
        resolved precision). Evaluation and records always use the float32 weights.
        Changes results, so it is part of the recipe; the default keeps float32 bits.
    on_diverge: what a model whose training diverged (its loss, final margins/losses or
        weights NaN or infinite) does to the run: ``error`` stops training with a one-line
        error naming the models; ``record`` keeps the run, marks those models diverged
        (``Run.diverged``, the ``diverged`` column of ``tables/models.parquet``; their
        records keep their NaN/inf values) and the estimators leave them out. Changes no
        model that did not diverge, so a run may be resumed with the other value.
    """

    model: str = option("mlp", metavar="NAME", example="cnn1d", help=(
        "mlp | cnn1d | cnn2d | a registered name | package.module:factory (a function "
        "(input_shape, n_classes, **kwargs) -> nn.Module)"))
    model_kwargs: dict[str, Any] = option(
        default_factory=dict, flag="--model-option", repeat=True, metavar="KEY=VALUE",
        parse=lambda words: _model_options(words), show=lambda value: _show_model_options(value),
        shorthands={"--hidden": ("W1,W2", "MLP hidden widths, comma-separated (the same as "
                                 "--model-option hidden=[W1,W2])", "hidden=[{}]")},
        help="keyword argument for the model (VALUE as JSON), repeatable", example="width=8")
    init: str = option("seed", choices=INITS, help=(
        "seed: each model's weights from its own seed; pretrained: every model starts from "
        "the template's weights"))
    reinit: tuple[str, ...] = option((), metavar="MODULE,...", help=(
        "with --init pretrained: modules (e.g. the head) that get their own seeded "
        "initialization"), example="head")
    n_models: int = option(100, flag="--models", help="models in the population")
    subset_fraction: float = option(0.5, flag="--subset", help=(
        "fraction of the training set each model sees, in (0, 1)"))
    epochs: int = option(30, help="training epochs")
    batch_size: int = option(128, help="minibatch size")
    optimizer: str = option("sgd", choices=OPTIMIZERS, help="optimizer")
    lr: float = option(0.05, help="learning rate (the peak of a schedule)")
    momentum: float = option(0.9, help="SGD momentum")
    nesterov: bool = option(False, help="Nesterov momentum (SGD)")
    weight_decay: float = option(0.0, help="weight decay")
    decay_bias_and_norm: bool = option(True, flag="--no-decay-bias-norm", help=(
        "no weight decay on biases and normalization weights"))
    schedule: str = option("constant", choices=SCHEDULES, example="cosine", help=(
        "learning-rate schedule, evaluated at every step"))
    warmup_epochs: float = option(0.0, help="warm-up epochs of a warmup_* schedule")
    lr_step_epochs: int = option(0, help="for --schedule step: epochs between drops by "
                                         "--lr-gamma")
    lr_gamma: float = option(0.1, help="factor of each step-schedule drop")
    clip_grad_norm: float = option(0.0, help="clip each model's gradient norm (0 = off)")
    label_smoothing: float = option(0.0, help="label smoothing of the cross-entropy")
    dp_noise_multiplier: float = option(0.0, help=(
        "DP-SGD: Gaussian noise multiplier sigma (noise std sigma*C on each model's summed "
        "clipped gradients, Poisson batches); 0 = no DP unless --dp-epsilon"), example="1.1")
    dp_max_grad_norm: float = option(1.0, help=(
        "DP-SGD: every example's gradient is clipped to this L2 norm C"))
    dp_epsilon: float = option(0.0, help=(
        "DP-SGD: a target epsilon for the whole run (sigma is solved for it with the RDP "
        "accountant); 0 = give --dp-noise-multiplier instead"), example="4")
    dp_delta: float = option(1e-5, help=(
        "DP-SGD: delta of the (epsilon, delta) guarantee; below 1/(examples per model)"))
    dp_canaries: int = option(-1, help=(
        "privacy canaries appended to the training set for `memlab audit --dp` (random "
        "inputs with random labels, each IN for a random half of the models); -1: 100 in a "
        "DP run, none otherwise; 0: none"), example="200")
    augment: tuple[str, ...] = option(
        (), repeat=True, metavar="SPEC", parse=tuple, show=list, example="flip",
        help="crop:P | flip | shift:S | package.module:function, repeatable")
    input_noise: float = option(0.0, help="std of Gaussian noise added to training inputs")
    input_dropout: float = option(0.0, help="probability of zeroing each training input "
                                            "feature")
    sweep: dict[str, list] = option(
        default_factory=dict, repeat=True, metavar="KEY=V1,V2,...",
        parse=lambda words: _sweep(words), show=lambda value: _show_sweep(value),
        example="weight_decay=0,0.001", help=(
            "vary a setting across the population (values as JSON), e.g. "
            "weight_decay=0,1e-4,1e-3; repeatable (a grid)"))
    subsets: str = option("random", cli=False)  # "explicit" follows from --membership
    task: str = option("classification", choices=TASK_NAMES, help=(
        "classification: softmax over classes; binary: one logit with labels 0/1"))
    seed: int = option(0, help="master seed of every model's streams")
    record_epochs: bool = option(False, help=(
        "also record every example's correctness and loss after every epoch"))
    save_weights: bool = option(True, flag="--no-weights", help="do not save final weights")
    chunk_size: int = option(32, parse=lambda text: _chunk_size(text), show=lambda v: [str(v)],
                             help="models trained together (memory grows with it, results "
                                  "do not change), or 'auto': 32 on a CPU, as many as fit in a "
                                  "GPU's free memory", example="16")
    compact_records: bool = option(False, help=(
        "store correctness as bits and margins/losses as float16 (~10 instead of 15 bytes "
        "per model and example)"))
    compute_dtype: str = option("float32", choices=COMPUTE_DTYPES, metavar="DTYPE", help=(
        "precision of the training step's matrix products: float32 | bfloat16 (float32 "
        "master weights) | float16 (GPUs, loss scaling) | auto (from the device's "
        "capabilities)"))
    on_diverge: str = option("error", choices=ON_DIVERGE, help=(
        "a model whose loss, margins or weights become NaN/inf: error (stop, naming it) | "
        "record (mark it diverged and leave it out of the estimates)"))

    def __post_init__(self) -> None:
        for name in ("augment", "reinit"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,) if value else ())
            elif isinstance(value, list | tuple):
                object.__setattr__(self, name, tuple(value))
        with validate.all_problems("population settings"):  # every problem at once
            self._check()

    def _check(self) -> None:
        """Each setting's own check (one ConfigError per problem, all of them reported
        together by :func:`memlab.validate.all_problems`)."""
        check = validate.check
        with check():
            validate.choice(self.subsets, "subsets", ("random", "explicit"))
        if self.subsets == "random":
            with check():
                validate.fraction(self.subset_fraction, "subset_fraction", fix=(
                    "each model needs some examples in and some out of its subset (papers "
                    "use 0.7); for full-data or leave-one-out models pass an explicit "
                    "membership mask"))
        for name in ("n_models", "epochs", "batch_size", "chunk_size"):
            with check():
                validate.integer(getattr(self, name), name, minimum=1)
        with check():
            validate.seed(self.seed, "seed")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("task", TASK_NAMES), ("compute_dtype", COMPUTE_DTYPES),
                              ("init", INITS), ("on_diverge", ON_DIVERGE)):
            with check():
                validate.choice(getattr(self, name), name, choices)
        if "hidden" in self.model_kwargs:  # the MLP's widths, refused here, not in torch
            hidden = self.model_kwargs["hidden"]
            with check():
                for width in hidden if isinstance(hidden, list | tuple) else [hidden]:
                    validate.integer(width, "hidden", minimum=1)
        check_recipe_values(dataclasses.asdict(self))
        for name in ("nesterov", "decay_bias_and_norm", "record_epochs", "save_weights",
                     "compact_records"):
            with check():
                validate.boolean(getattr(self, name), name)
        with check():
            validate.integer(self.lr_step_epochs, "lr_step_epochs", minimum=0)
        for spec in self.augment:
            with check():
                check_augmentation(spec)
        with check():
            check_sweep(self.sweep)
        with check():
            validate.integer(self.dp_canaries, "dp_canaries", minimum=-1)
        if self.dp:
            with check():
                self._check_dp()
        # Settings combined: only where each one passed its own check above.
        numbers = all(isinstance(getattr(self, name), int | float)
                      and not isinstance(getattr(self, name), bool)
                      for name in ("lr_step_epochs", "warmup_epochs", "epochs"))
        if not numbers or not isinstance(self.schedule, str):
            return
        if self.schedule == "step" and self.lr_step_epochs < 1:
            validate.problem("schedule 'step' needs lr_step_epochs >= 1 (epochs between "
                             "learning-rate drops)")
        if self.schedule.startswith("warmup") and not 0 < self.warmup_epochs < self.epochs:
            validate.problem(f"schedule {self.schedule!r} needs 0 < warmup_epochs < epochs "
                             f"({self.epochs}), got {self.warmup_epochs}")

    def privacy_canaries(self) -> int:
        """Privacy canaries the run appends (``dp_canaries``; -1: 100 with DP, else 0)."""
        if self.dp_canaries == -1:
            return DEFAULT_PRIVACY_CANARIES if self.dp else 0
        return self.dp_canaries

    def base_examples(self, n_train: int) -> int:
        """Of ``n_train`` training examples, those before the run's privacy canaries (which
        the run appends last): the ones random subsets and DP's sampling rate are of."""
        return n_train - self.privacy_canaries()

    @property
    def dp(self) -> bool:
        """Whether the models train with DP-SGD (memlab.engine.dp)."""
        return bool(self.dp_noise_multiplier) or bool(self.dp_epsilon)

    def _check_dp(self) -> None:
        """DP-SGD's own settings, and what it cannot be combined with (one line each)."""
        for name in ("dp_noise_multiplier", "dp_max_grad_norm", "dp_epsilon", "dp_delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0, "
                                  f"got {value!r}")
        if self.dp_noise_multiplier and self.dp_epsilon:
            raise ConfigError("give --dp-noise-multiplier or --dp-epsilon, not both (a target "
                              "epsilon sets the noise multiplier)")
        conflicts = {"clip_grad_norm": self.clip_grad_norm != 0,
                     "compute_dtype": self.compute_dtype != "float32",
                     "task": self.task not in ("classification", "binary")}
        fixes = {"clip_grad_norm": "every example's gradient is clipped to "
                                  "--dp-max-grad-norm; drop --clip-grad-norm",
                 "compute_dtype": "trains in float32 only; drop --compute-dtype",
                 "task": "DP-SGD supports the classification and binary tasks only"}
        asked = "--dp-epsilon" if self.dp_epsilon else "--dp-noise-multiplier"
        for name, bad in conflicts.items():
            if bad:
                raise ConfigError(f"{asked} (DP-SGD): {fixes[name]}")

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


def _model_options(words: list[str]) -> dict[str, Any]:
    """``--model-option KEY=VALUE`` words -> model keyword arguments."""
    kwargs = {}
    for word in words:
        key, values = key_value(word, "--model-option")
        kwargs[key] = values[0] if len(values) == 1 else values
    return kwargs


def _show_model_options(kwargs: dict[str, Any]) -> list[str]:
    return [f"{key}={compact_json(value)}" for key, value in kwargs.items()]


def _sweep(words: list[str]) -> dict[str, list]:
    """``--sweep KEY=V1,V2`` words -> the sweep dict."""
    return dict(key_value(word, "--sweep") for word in words)


def _show_sweep(sweep: dict[str, list]) -> list[str]:
    return [f"{key}=" + ",".join(compact_json(v) for v in values)
            for key, values in sweep.items()]


def _chunk_size(text: str) -> int | str:
    if text == "auto":
        return text  # sized for the device by the command line (plan.suggest_chunk_size)
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--chunk-size takes a positive integer or 'auto', got {text!r}"
                          ) from None


def check_recipe_values(values: dict[str, Any]) -> None:
    """Range, type and finiteness of the numeric settings (also each sweep value)."""
    ranges = {  # name -> (minimum, maximum, open_low, open_high)
        "lr": (0, None, True, False), "weight_decay": (0, None, False, False),
        "momentum": (0, 1, False, True), "label_smoothing": (0, 1, False, True),
        "input_noise": (0, None, False, False), "input_dropout": (0, 1, False, True),
        "clip_grad_norm": (0, None, False, False), "warmup_epochs": (0, None, False, False),
        "lr_gamma": (0, 1, True, False)}
    for name, (low, high, open_low, open_high) in ranges.items():
        if name in values:
            with validate.check():  # each one noted inside validate.all_problems
                validate.real(values[name], name, minimum=low, maximum=high,
                              open_low=open_low, open_high=open_high)
    if "epochs" in values:
        with validate.check():
            validate.integer(values["epochs"], "epochs", minimum=1)


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
    n_base = config.base_examples(n_train)
    size = config.subset_size(n_base)
    mask = np.zeros((len(models), n_train), dtype=bool)
    for row, k in enumerate(models):
        replicate = config.model_key(k)[1]
        chosen = model_rng(config.seed, replicate, STREAM_SUBSET).choice(n_base, size,
                                                                       replace=False)
        mask[row, chosen] = 1
    mask[:, n_base:] = privacy_canary_columns(config, models)
    return mask


def privacy_canary_columns(config: PopulationConfig, models: range) -> np.ndarray:
    """(len(models), n_canaries) bool: which privacy canaries each model trains on, from its
    own stream. With DP each canary is in independently with probability 1/2: a canary's
    presence is then an added example, the neighbouring datasets the accountant's ε is
    about (a fixed-size draw would swap it for another, a bound of 2ε). Without DP a random
    half, so that every model has as many examples as the others."""
    n_canaries = config.privacy_canaries()
    columns = np.zeros((len(models), n_canaries), dtype=bool)
    for row, k in enumerate(models if n_canaries else ()):
        rng = model_rng(config.seed, config.model_key(k)[1], streams.PRIVACY_CANARY)
        columns[row] = (rng.random(n_canaries) < 0.5 if config.dp
                        else rng.permutation(n_canaries) < n_canaries // 2)
    return columns
