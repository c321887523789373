"""What the noise study measures, and with which populations (docs/science.md §3)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from memlab import validate
from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.options import option
from memlab.studies.base import StudyConfig

REGULARIZERS = ("dropout", "input_dropout", "input_noise", "weight_decay", "adversarial")

# The recipe every population of the study starts from: the paper's MLP 100-100 (ReLU),
# SGD lr 0.05, momentum 0.9, batch 64, 150 epochs. Each part sets its own models (an
# all-ones membership mask, or random subsets for the capacity sizes) and what it records.
RECIPE = PopulationConfig(model_kwargs={"hidden": [100, 100]}, epochs=150, batch_size=64,
                          optimizer="sgd", lr=0.05, momentum=0.9)


def default_regularizers() -> dict[str, tuple[float, ...]]:
    return {"dropout": (0.2, 0.4, 0.6, 0.8), "input_dropout": (0.1, 0.2, 0.4, 0.6),
            "input_noise": (0.1, 0.3, 0.6, 1.0), "weight_decay": (1e-4, 1e-3, 3e-3, 1e-2),
            "adversarial": (4.0, 16.0, 64.0)}


def parse_regularizers(words: list[str]) -> dict[str, tuple[float, ...]]:
    """``["dropout=0.2,0.5", "adversarial=4"]`` -> {"dropout": (0.2, 0.5), ...};
    ``["none"]``: no regularizer (only the unregularized models)."""
    from memlab.options import key_value

    if list(words) == ["none"]:
        return {}
    found: dict[str, tuple[float, ...]] = {}
    for word in words:
        name, values = key_value(word, "--regularizer")
        if name not in REGULARIZERS:
            raise ConfigError(f"--regularizer: unknown regularizer {name!r}; use one of "
                              f"{', '.join(REGULARIZERS)} (regularizers)")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"--regularizer {word}: strengths must be numbers "
                              "(regularizers)")
        found[name] = tuple(float(v) for v in values)
    return found


def show_regularizers(value: dict[str, tuple[float, ...]]) -> list[str]:
    if not value:
        return ["none"]
    return [f"{name}={','.join(json.dumps(float(s)) for s in strengths)}"
            for name, strengths in value.items()]


@dataclass(frozen=True)
class NoiseConfig(StudyConfig):
    """Everything that sets the study's results; the defaults are the full preset
    (``full()``), ``quick()`` the small one behind docs/noise.md's tables.

    data: the dataset (a built-in name or a path); its test split is the validation set.
    n_train: training examples used (a fixed random subset, stream ``streams.N_TRAIN`` of
        the population's seed; None = all). Every seed's model of the dynamics, one-epoch
        difficulty, critical-sample and regularizer parts trains on all of them (an
        all-ones mask).
    population: the recipe every part starts from (model, optimizer, epochs of the
        dynamics and critical-sample parts, seed); each part sets its own number of models
        (``seeds``, ``difficulty_seeds``, ...), its masks and what it records, and never
        keeps weights.
    difficulty_n_train: training examples for the one-epoch difficulty (None = all of the
        data's): one epoch must be enough SGD steps to learn more than class frequencies.
    lass_scale: LASS α, β, r are the paper's values rescaled to the data's range, times this.
    sweep_epochs: epochs of the regularizer sweep (None: the population's epochs).
    regularizers: name -> strengths (dropout and input_dropout: drop probability;
        input_noise: Gaussian std in units of the data's std; weight_decay: L2 coefficient;
        adversarial: LASS radius as a multiple of the scaled paper radius).
    sweep_seeds: models per (regularizer, strength) and condition.
    """

    data: str = option("mnist1d", example="digits",
                       help="mnist1d | digits | mnist | path/to/data.npz")
    n_train: int | None = option(None, example="200", help=(
        "training examples to use, a fixed random subset (default: 1000 with --quick, "
        "else all)"))
    population: PopulationConfig = option(default_factory=lambda: RECIPE)
    noise_fractions: tuple[float, ...] = option((0.2, 0.4, 0.6, 0.8), help=(
        "label-noise fractions of the partial-noise conditions"))
    seeds: int = option(32, help="models per condition in the learning-dynamics part")
    difficulty_seeds: int = option(100, help="models per condition of the one-epoch "
                                             "difficulty")
    difficulty_n_train: int | None = option(None, example="500", help=(
        "training examples of the one-epoch difficulty (default: all of the data's)"))
    capacity_sizes: tuple[int, ...] = option((250, 500, 1000, 2000, 4000), help=(
        "training-set sizes of the capacity part"))
    capacity_widths: tuple[int, ...] = option((16, 32, 64, 128, 256), help=(
        "hidden widths of the capacity part"))
    capacity_seeds: int = option(4, help="models per setting of the capacity part")
    capacity_epochs: int = option(300, help="epochs of the capacity part (the cap on "
                                            "epochs to 100% training accuracy)")
    csr_seeds: int = option(3, help="models per condition of the critical-sample part")
    csr_every: int = option(10, help="epochs between critical-sample checkpoints")
    csr_examples: int = option(1000, help="validation inputs searched for critical samples")
    lass_scale: float = option(1.0, help=(
        "multiply the paper's LASS α, β, r (rescaled to the data's range) by this"))
    lass_iter: int = option(20, help="LASS iterations of the critical-sample search")
    sweep_epochs: int | None = option(None, example="5", help=(
        "epochs of the regularizer sweep (default: the population's --epochs)"))
    sweep_seeds: int = option(1, help="models per regularizer strength and condition")
    regularizers: dict[str, tuple[float, ...]] = option(
        default_factory=default_regularizers, flag="--regularizer", repeat=True,
        metavar="NAME=S1,S2,...", parse=parse_regularizers, show=show_regularizers,
        example="dropout=0.5", help=(
            f"a regularizer of the sweep and its strengths ({', '.join(REGULARIZERS)}), "
            "repeatable; replaces the default set ('none': no regularizer)"))
    adversarial_iter: int = option(3, help="LASS iterations of adversarial training")

    @classmethod
    def quick(cls, **changes: Any) -> NoiseConfig:
        """1,000 training examples, 16 seeds x 60 epochs, noise20 and noise50: ~15 min on
        2 shared cores (MNIST-1D), docs/noise.md's tables."""
        return cls(**{**dict(n_train=1000, noise_fractions=(0.2, 0.5), seeds=16,
                             population=dataclasses.replace(RECIPE, epochs=60),
                             capacity_sizes=(125, 250, 500, 1000),
                             capacity_widths=(16, 32, 64, 128), capacity_seeds=3,
                             capacity_epochs=100, csr_every=5), **changes})

    @classmethod
    def full(cls, **changes: Any) -> NoiseConfig:
        """All training examples, 32 seeds x 150 epochs, four noise fractions."""
        return cls(**changes)

    @classmethod
    def tiny(cls) -> NoiseConfig:
        quick = cls.quick()
        return quick.replace(
            data="digits", n_train=150, population=dataclasses.replace(
                quick.population, model_kwargs={"hidden": [16]}, epochs=3),
            noise_fractions=(), seeds=2, difficulty_seeds=2, difficulty_n_train=150,
            capacity_sizes=(150,), capacity_widths=(), capacity_seeds=2, capacity_epochs=3,
            csr_every=3, csr_examples=20, lass_iter=2, sweep_epochs=2,
            regularizers={"dropout": (0.5,)})

    def __post_init__(self) -> None:
        # JSON gives lists back; the config keeps tuples so that equal configs compare equal.
        if isinstance(self.regularizers, dict):
            object.__setattr__(self, "regularizers", {
                name: tuple(float(s) for s in strengths)
                for name, strengths in self.regularizers.items()})

    @property
    def hidden(self) -> tuple[int, ...]:
        """The MLP's hidden widths (``population.model_kwargs["hidden"]``)."""
        return tuple(int(w) for w in self.population.model_kwargs["hidden"])

    @property
    def epochs_of_sweep(self) -> int:
        return self.population.epochs if self.sweep_epochs is None else self.sweep_epochs

    def validate(self) -> None:
        """Refuse settings the study cannot use, with the fix."""
        super().validate()
        p = self.population
        if not isinstance(p, PopulationConfig):
            raise ConfigError("population must be a memlab.population.PopulationConfig")
        if not (isinstance(self.data, str) and self.data):
            raise ConfigError(f"data must be a dataset name or path, got {self.data!r}")
        if p.model != "mlp" or not isinstance(p.model_kwargs.get("hidden"), list | tuple) \
                or not p.model_kwargs["hidden"]:
            raise ConfigError("the noise study trains MLPs and varies their widths: "
                              "population.model must be 'mlp' with hidden widths (--hidden "
                              f"W1,W2), got model {p.model!r}, model_kwargs {p.model_kwargs}")
        if set(p.model_kwargs) - {"hidden", "activation"}:
            raise ConfigError(f"population.model_kwargs: the noise study sets dropout itself "
                              f"(a regularizer of the sweep); only hidden and activation can "
                              f"be given, got {sorted(p.model_kwargs)}")
        for name, flag in (("n_models", "--seeds, --difficulty-seeds, --capacity-seeds, "
                                        "--csr-seeds and --sweep-seeds"),
                           ("subset_fraction", "--capacity-sizes")):
            if getattr(p, name) != getattr(RECIPE, name):
                raise ConfigError(f"population.{name}: each part of the noise study sets its "
                                  f"own; use {flag}")
        if p.sweep or p.subsets != "random":
            raise ConfigError("population.sweep / subsets: the noise study sets its own masks "
                              "and sweeps (the regularizer sweep: --regularizer)")
        if p.task != "classification":
            raise ConfigError(f"population.task must be 'classification', got {p.task!r}")
        unknown = set(self.regularizers) - set(REGULARIZERS)
        if unknown:
            raise ConfigError(f"unknown regularizers {sorted(unknown)}; use {REGULARIZERS}")
        for name, strengths in self.regularizers.items():
            if len(set(strengths)) != len(strengths) or not all(s > 0 for s in strengths):
                raise ConfigError(f"regularizer {name!r} needs distinct positive strengths, "
                                  f"got {strengths}")
        for fraction in self.noise_fractions:
            if not 0 < fraction < 1:
                raise ConfigError(f"partial noise fractions must lie in (0, 1), got {fraction}"
                                  " (noise_fractions)")
        for name in ("n_train", "difficulty_n_train", "seeds", "difficulty_seeds",
                     "capacity_seeds", "csr_seeds", "sweep_seeds"):
            if getattr(self, name) is not None:  # named by flag, as typed
                validate.integer(getattr(self, name), "--" + name.replace("_", "-"),
                                 minimum=1)
        if min(self.seeds, self.difficulty_seeds, self.capacity_seeds, self.csr_seeds) < 2:
            raise ConfigError("every part of the study needs at least 2 seeds; give --seeds 2 "
                              "or more (seeds, difficulty_seeds, capacity_seeds, csr_seeds)")
        if min(self.epochs_of_sweep, self.capacity_epochs, self.csr_every, self.csr_examples,
               self.lass_iter, self.adversarial_iter) < 1 \
                or any(v < 1 for v in (*self.capacity_sizes, *self.capacity_widths)):
            raise ConfigError("sweep_epochs, capacity_epochs, csr_every, csr_examples, "
                              "lass_iter, adversarial_iter, capacity_sizes and "
                              "capacity_widths must be at least 1")
        validate.real(self.lass_scale, "--lass-scale", minimum=0, open_low=True)

    def expected_minutes(self, n_train: int, n_available: int) -> float:
        """A rough wall-time estimate on two free CPU cores, from the number of
        model-example-epochs (calibrated on the quick preset, ~3 min on MNIST-1D).
        n_train: examples the study uses; n_available: all of the data's (for difficulty)."""
        epochs = self.population.epochs
        n_conditions = 3 + len(self.noise_fractions)
        n_difficulty = min(self.difficulty_n_train or n_available, n_available)
        width = sum(self.hidden) / 200
        work = (n_conditions * self.seeds * epochs * n_train * 2  # x2: per-epoch records
                + 3 * self.difficulty_seeds * n_difficulty
                + 2 * self.capacity_seeds * self.capacity_epochs * 2
                * (sum(s for s in self.capacity_sizes if s <= n_train)
                   + len(self.capacity_widths) * n_train)
                + n_conditions * self.csr_seeds * epochs * n_train * 3
                + sum(map(len, self.regularizers.values())) * 2 * self.sweep_seeds
                * self.epochs_of_sweep * n_train * 2) * width
        return work / 0.17e6 / 60 + 0.3
