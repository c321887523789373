"""What the spectra generalization study varies, and around which recipe (docs/science.md §5)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.options import compact_json, key_value, option
from memlab.studies.base import StudyConfig

# What a knob may vary: the width of every hidden layer, the batch size, the fraction of
# training labels replaced by random ones, the training length and the weight decay.
KNOBS = ("hidden", "batch_size", "label_noise", "epochs", "weight_decay")

# The base recipe: MLPs with two hidden layers of 256 on MNIST-1D, each model on its own
# random 80% of the training set, 30 epochs of SGD (lr 0.05, momentum 0.9, batch 64), 8
# models per configuration.
RECIPE = PopulationConfig(model="mlp", model_kwargs={"hidden": [256, 256]}, n_models=8,
                          subset_fraction=0.8, epochs=30, batch_size=64, optimizer="sgd",
                          lr=0.05)
KNOB_VALUES = {"batch_size": [16, 64, 256, 1024], "hidden": [32, 64, 128, 256, 512],
               "label_noise": [0.0, 0.2, 0.5, 1.0], "epochs": [2, 8, 30, 60]}


def _parse_knobs(words: list[str]) -> dict[str, list]:
    """``--knob KNOB=V1,V2`` words -> the knobs dict (values as JSON)."""
    return dict(key_value(word, "--knob") for word in words)


def _show_knobs(knobs: dict[str, list]) -> list[str]:
    return [f"{knob}=" + ",".join(compact_json(v) for v in values)
            for knob, values in knobs.items()]


@dataclass(frozen=True)
class SpectraStudyConfig(StudyConfig):
    """Do spectral metrics track generalization? One knob varied at a time around a base.

    data: the dataset (a built-in name or a path).
    label_noise: the fraction of training labels replaced by random ones in the base
        configuration (seeded by the population's seed).
    knobs: knob -> values, each varied alone around the base (``hidden``: the width of
        every hidden layer; ``batch_size``; ``label_noise``; ``epochs``; ``weight_decay``).
    n_bootstrap: resamples of the correlation intervals.
    population: the base recipe; its ``n_models`` models are trained per knob value (each
        on its own random ``subset_fraction`` of the training set), its ``seed`` seeds
        everything (subsets, initializations, label noise, bootstrap).
    """

    data: str = option("mnist1d", example="digits",
                       help="mnist1d | digits | mnist | path/to/data.npz")
    label_noise: float = option(0.0, metavar="FRACTION", example="0.1", help=(
        "fraction of training labels replaced by random ones in the base configuration"))
    knobs: dict[str, list] = option(
        default_factory=lambda: {k: list(v) for k, v in KNOB_VALUES.items()}, repeat=True,
        flag="--knob", metavar="KNOB=V1,V2,...", parse=_parse_knobs, show=_show_knobs,
        example="epochs=2,10", help=(
            "a knob varied alone around the base, with its values (hidden, batch_size, "
            "label_noise, epochs, weight_decay), e.g. label_noise=0,0.5,1; repeatable; "
            "given, it replaces the default knobs"))
    n_bootstrap: int = option(2000, example="500", help=(
        "bootstrap resamples of each correlation's 95% interval"))
    population: PopulationConfig = option(default_factory=lambda: RECIPE)

    @classmethod
    def quick(cls, **changes: Any) -> SpectraStudyConfig:
        """Two knobs, narrow MLPs (width 64, 10 epochs), 4 models per value: about a minute
        on 2 cores."""
        population = dataclasses.replace(RECIPE, model_kwargs={"hidden": [64, 64]},
                                         epochs=10, n_models=4)
        return cls(**{**dict(knobs={"label_noise": [0.0, 0.5, 1.0], "epochs": [2, 10]},
                             n_bootstrap=500, population=population), **changes})

    @classmethod
    def full(cls, **changes: Any) -> SpectraStudyConfig:
        """docs/spectra.md's study: four knobs, 8 models per value."""
        return cls(**changes)

    @classmethod
    def tiny(cls) -> SpectraStudyConfig:
        # width 64: the hidden × hidden layer has 64 eigenvalues, enough to fit α (50)
        population = dataclasses.replace(RECIPE, model_kwargs={"hidden": [64, 64]},
                                         epochs=2, n_models=2)
        return cls.quick(knobs={"label_noise": [0.0, 1.0]}, n_bootstrap=50,
                         population=population)

    def base(self) -> dict[str, Any]:
        """The base configuration's knob values (the summary's ``base``)."""
        p = self.population
        return {"hidden": p.model_kwargs["hidden"][0], "batch_size": p.batch_size,
                "label_noise": self.label_noise, "epochs": p.epochs,
                "weight_decay": p.weight_decay}

    def configurations(self) -> list[tuple[str, Any, dict[str, Any], PopulationConfig]]:
        """(knob, value, settings, recipe) of every configuration trained, in order."""
        out = []
        for knob, values in self.knobs.items():
            for value in values:
                settings = {**self.base(), knob: value}
                depth = len(self.population.model_kwargs["hidden"])
                recipe = dataclasses.replace(
                    self.population, epochs=settings["epochs"],
                    batch_size=settings["batch_size"], weight_decay=settings["weight_decay"],
                    model_kwargs={
                        **self.population.model_kwargs,
                        "hidden": [settings["hidden"]] * depth})
                out.append((knob, value, settings, recipe))
        return out

    def validate(self) -> None:
        """Refuse settings the study cannot use, with the fix."""
        super().validate()
        p = self.population
        if not isinstance(p, PopulationConfig):
            raise ConfigError("SpectraStudyConfig.population must be a PopulationConfig")
        if not (isinstance(self.data, str) and self.data):
            raise ConfigError(f"data must be a dataset name or path, got {self.data!r}")
        if p.n_models < 2:
            raise ConfigError(f"--models (population.n_models, the models per configuration) "
                              f"must be at least 2: correlations need spread; got {p.n_models}")
        if p.model != "mlp":
            raise ConfigError(f"the spectra study varies the width of MLPs: population.model "
                              f"must be 'mlp', got {p.model!r}")
        hidden = p.model_kwargs.get("hidden")
        if not (isinstance(hidden, list | tuple) and hidden and len(set(hidden)) == 1
                and all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                        for w in hidden)):
            raise ConfigError(f"population.model_kwargs hidden must be equal positive widths "
                              f"(the width knob sets every hidden layer), e.g. --hidden 256,256;"
                              f" got {hidden!r}")
        if p.task != "classification" or p.sweep or p.subsets != "random" \
                or p.init != "seed" or not p.save_weights:
            raise ConfigError("the spectra study trains classifiers (population.task "
                              "'classification') from seeded weights (init 'seed') on random "
                              "subsets, one recipe per configuration (no sweep), and reads "
                              "their weights (save_weights)")
        if not (isinstance(self.n_bootstrap, int) and self.n_bootstrap >= 20):
            raise ConfigError(f"n_bootstrap must be an integer >= 20 (a 95% interval), got "
                              f"{self.n_bootstrap!r}")
        _check_noise(self.label_noise, "label_noise")
        if not isinstance(self.knobs, dict) or not self.knobs:
            raise ConfigError("knobs must map at least one knob to its values, e.g. "
                              "--knob epochs=2,10")
        unknown = set(self.knobs) - set(KNOBS)
        if unknown:
            raise ConfigError(f"unknown knobs {sorted(unknown)}; use hidden, batch_size, "
                              "label_noise, epochs, weight_decay")
        for knob, values in self.knobs.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"knobs[{knob!r}] must be a non-empty list of values")
            for value in values:
                if knob == "label_noise":
                    _check_noise(value, f"knobs['{knob}']")
                elif knob == "weight_decay":
                    if isinstance(value, bool) or not isinstance(value, int | float) \
                            or not 0 <= value < 1:
                        raise ConfigError(f"knobs['weight_decay'] takes numbers in [0, 1), "
                                          f"got {value!r}")
                elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"knobs[{knob!r}] takes positive integers, got "
                                      f"{value!r}")


def _check_noise(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a fraction in [0, 1], got {value!r}")
