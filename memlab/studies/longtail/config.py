"""What the long-tail study measures, and with which populations (docs/science.md §1,
docs/longtail.md)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from memlab import validate
from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.options import compact_json, option
from memlab.studies.base import StudyConfig

BASELINE = "baseline"
CONTROL = "uniform"
# What a knob may change in the baseline's recipe.
KNOB_SETTINGS = ("weight_decay", "epochs", "label_smoothing", "model_kwargs", "lr")

# The baseline of every (prior, knob) population: 96 MLPs 64-64 on random halves of the
# mixture, 40 epochs of SGD (lr 0.05, momentum 0.9, batch 32): they fit their subsets.
RECIPE = PopulationConfig(model_kwargs={"hidden": [64, 64]}, n_models=96, subset_fraction=0.5,
                          epochs=40, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9)


def default_knobs() -> dict[str, dict[str, Any]]:
    """knob name -> changes to the baseline's recipe (model_kwargs are merged into the
    baseline's). Strengths chosen so that each knob leaves most training singletons
    unfitted while frequent subpopulations are still learned."""
    return {
        "weight_decay": {"weight_decay": 2e-2},
        "early_stopping": {"epochs": 6},
        "dropout": {"model_kwargs": {"dropout": 0.5}},
        "label_smoothing": {"label_smoothing": 0.5},
        "small_model": {"model_kwargs": {"hidden": [12]}},
    }


def strength_grid() -> dict[str, dict[str, Any]]:
    """Each knob at several strengths (the full preset, or ``memlab longtail --grid``)."""
    grid: dict[str, dict[str, Any]] = {}
    for value in (5e-3, 2e-2, 5e-2):
        grid[f"weight_decay={value:g}"] = {"weight_decay": value}
    for value in (3, 6, 12):
        grid[f"epochs={value}"] = {"epochs": value}
    for value in (0.3, 0.5, 0.7):
        grid[f"dropout={value:g}"] = {"model_kwargs": {"dropout": value}}
    for value in (0.5, 0.9):
        grid[f"label_smoothing={value:g}"] = {"label_smoothing": value}
    for value in (8, 12, 24):
        grid[f"hidden=[{value}]"] = {"model_kwargs": {"hidden": [value]}}
    return grid


def _parse_knobs(text: str) -> dict[str, dict[str, Any]]:
    try:
        knobs = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--knobs takes a JSON object, name -> changes, e.g. "
                          f'\'{{"wd": {{"weight_decay": 0.02}}}}\' ({error}) (knobs)') from None
    if not isinstance(knobs, dict) or not all(isinstance(v, dict) for v in knobs.values()):
        raise ConfigError(f"--knobs takes a JSON object of objects (name -> changes), got "
                          f"{text!r} (knobs)")
    return knobs


@dataclass(frozen=True)
class LongtailConfig(StudyConfig):
    """Everything that sets the study's results; ``quick()`` and ``full()`` are the presets.

    exponents: Zipf exponents s of the long-tailed priors (k = n_subpopulations each).
    control_subpopulations: k of the uniform no-tail control (k ≪ m: no singletons).
    n_train / n_test / n_features / n_classes / spread: the mixture (see LongTailSpec).
    population: the baseline recipe (MLP, SGD, models per population on random
        subset_fraction subsets of n_train, the seed of mixtures and models); every
        (prior, knob) population is it with the knob's changes, never keeping weights.
    knobs: name -> changes to the baseline (see :func:`default_knobs`); ``grid``: each
        knob at several strengths instead (:func:`strength_grid`).
    """

    exponents: tuple[float, ...] = option((0.5, 1.0, 1.5), example="1", help=(
        "Zipf exponents s (the uniform control is always added)"))
    n_subpopulations: int = option(500, help="subpopulations of each Zipf mixture")
    control_subpopulations: int = option(50, help="subpopulations of the uniform control")
    n_train: int = option(1000, help="training draws of each mixture")
    n_test: int = option(2000, help="test draws of each mixture")
    n_features: int = option(16, help="input features")
    n_classes: int = option(10, help="classes (each subpopulation's label drawn at random)")
    spread: float = option(0.2, help="cluster spread of a subpopulation's draws")
    population: PopulationConfig = option(default_factory=lambda: RECIPE)
    knobs: dict[str, dict[str, Any]] = option(
        default_factory=default_knobs, metavar="JSON", parse=_parse_knobs,
        show=lambda value: [compact_json(value)], example='{"wd":{"weight_decay":0.03}}',
        help=("memorization-limiting knobs: a JSON object, name -> changes to the baseline "
              f"({', '.join(KNOB_SETTINGS)})"))
    grid: bool = option(False, help=(
        "sweep each knob over several strengths (the full preset does; 14 knobs instead "
        "of 5)"))

    @classmethod
    def quick(cls, **changes: Any) -> LongtailConfig:
        """docs/longtail.md's preset (the defaults): Zipf 0.5, 1, 1.5 and the control, one strength
        per knob, 96 models per population (about 2 minutes on 2 free cores)."""
        return cls(**changes)

    @classmethod
    def full(cls, **changes: Any) -> LongtailConfig:
        """Six exponents, 512 models per population, every knob at several strengths."""
        return cls(**{**dict(exponents=(0.5, 0.75, 1.0, 1.25, 1.5, 2.0),
                             population=dataclasses.replace(RECIPE, n_models=512),
                             grid=True), **changes})

    @classmethod
    def tiny(cls) -> LongtailConfig:
        return cls.quick(
            exponents=(1.0,), n_subpopulations=60, control_subpopulations=5, n_train=120,
            n_test=200, population=dataclasses.replace(
                RECIPE, model_kwargs={"hidden": [16]}, epochs=5, n_models=8),
            knobs={"weight_decay": {"weight_decay": 3e-2}})

    def __post_init__(self) -> None:
        if isinstance(self.exponents, list | tuple):
            object.__setattr__(self, "exponents", tuple(float(s) for s in self.exponents))

    def validate(self) -> None:
        """Refuse settings the study cannot use, with the fix."""
        super().validate()
        p = self.population
        if not isinstance(p, PopulationConfig):
            raise ConfigError("population must be a memlab.population.PopulationConfig")
        if not self.exponents:
            raise ConfigError("give at least one Zipf exponent (exponents)")
        for s in self.exponents:  # named by flag, as typed
            validate.real(s, "each --exponents value", minimum=0, fix=(
                "Zipf exponents such as 0.5,1,1.5 (the uniform control is always included)"))
        validate.integer(p.n_models, "--models", minimum=4, fix=(
            "IN/OUT estimates need models on both sides of every example (population."
            "n_models)"))
        if p.model != "mlp" or "hidden" not in p.model_kwargs:
            raise ConfigError(f"population.model: the knobs change an MLP's widths and "
                              f"dropout; give model 'mlp' with hidden widths, got {p.model!r}")
        if p.sweep or p.subsets != "random":
            raise ConfigError("population.sweep / subsets: every (prior, knob) population is "
                              "one recipe on random subsets; the knobs are the study's sweep")
        if p.task != "classification":
            raise ConfigError(f"population.task must be 'classification', got {p.task!r}")
        if self.grid and self.knobs != default_knobs():
            raise ConfigError("give knobs or grid, not both (grid replaces the knobs by "
                              "strength_grid())")
        for name, changes in self.knobs.items():
            if name == BASELINE or not changes or set(changes) - set(KNOB_SETTINGS):
                raise ConfigError(f"knob {name!r} must change some of {list(KNOB_SETTINGS)}, "
                                  f"got {changes!r} (knobs)")
        for name in ("n_subpopulations", "control_subpopulations", "n_train", "n_test",
                     "n_features", "n_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.priors()  # the mixtures' own checks

    def knob_settings(self) -> dict[str, dict[str, Any]]:
        """The knobs the study trains: ``knobs``, or the strength grid with ``grid``."""
        return strength_grid() if self.grid else dict(self.knobs)

    @property
    def subset_size(self) -> int:
        """m: training examples per model (the engine's rounding)."""
        return int(round(self.population.subset_fraction * self.n_train))

    def priors(self) -> dict[str, Any]:
        """name -> LongTailSpec: ``zipf<s>`` for each exponent, then the uniform control."""
        from memlab.data.longtail import LongTailSpec

        common = dict(n_train=self.n_train, n_test=self.n_test, n_features=self.n_features,
                      n_classes=self.n_classes, spread=self.spread, seed=self.population.seed)
        specs = {f"zipf{s:g}": LongTailSpec(self.n_subpopulations, "zipf", s, **common)
                 for s in self.exponents}
        specs[CONTROL] = LongTailSpec(self.control_subpopulations, "uniform", 0.0, **common)
        return specs

    def recipe(self, knob: str) -> PopulationConfig:
        """The recipe of a knob's populations (the baseline's for ``BASELINE``), without
        weights."""
        changes: dict[str, Any] = {"save_weights": False}
        for key, value in self.knob_settings().get(knob, {}).items():
            changes[key] = ({**self.population.model_kwargs, **value} if key == "model_kwargs"
                            else value)
        return dataclasses.replace(self.population, **changes)

    def expected_minutes(self) -> float:
        """Rough wall time on two free CPU cores, from model-example-epochs (dropout's autograd
        path counts double). Calibrated on the quick preset: 4 minutes of CPU time."""
        work = 0.0
        for knob in (BASELINE, *self.knob_settings()):
            recipe = self.recipe(knob)
            work += recipe.epochs * (2 if recipe.model_kwargs.get("dropout") else 1)
        work *= self.population.n_models * self.subset_size * (len(self.exponents) + 1)
        return work / 3.5e5 / 60 + 0.3
