"""What the LE-SDE study simulates and trains (docs/science.md §6). Light: no torch, pandas
or measures (``memlab lesde --help`` imports only this)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from memlab import validate
from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.options import option
from memlab.studies.base import StudyConfig

PARTS = ("phase", "fit", "stability")
DRIFTS = ("ce", "linear")  # memlab.measures.lesde.DRIFTS (a test keeps them equal)

# The base recipe: the stability part's population (MLPs on random half subsets, 30 epochs
# of Adam); the fit part's population varies it (fit_*: plain SGD, one hidden layer, every
# model on all of a training subset).
RECIPE = PopulationConfig(n_models=256, subset_fraction=0.5, epochs=30, batch_size=64,
                          optimizer="adam", lr=0.005, save_weights=False)


@dataclass(frozen=True)
class LESDEConfig(StudyConfig):
    """Settings of the three parts (defaults: the ``full`` preset's sizes).

    population: the base recipe (:data:`RECIPE`), trained as is by the stability part on
        each of ``stab_datasets``; the fit part trains ``fit_models`` one-hidden-layer MLPs
        (``fit_hidden`` units) from it with plain SGD (no momentum), ``fit_epochs``,
        ``fit_lr`` and ``fit_batch_size``, every model on all of ``fit_n_train`` examples.
        ``population.seed`` is the study's one seed (simulations, subsets, models).
    """

    parts: tuple[str, ...] = option(PARTS, choices=PARTS, example="phase,stability",
                                    help="parts to run: phase, fit, stability")
    population: PopulationConfig = option(default_factory=lambda: RECIPE)
    # 1. phase diagram
    n_classes: int = option(3, example="4", help="phase: classes of the simulated features")
    n_per_class: int = option(100, example="50", help="phase: examples per class")
    inter: float = option(5.0, example="2.0", help="phase: inter-class strength β (α = ratio·β)")
    ratios: tuple[float, ...] = option(
        (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0), example="0.5,2",
        help="phase: intra/inter strength ratios α/β of the grid")
    noises: tuple[float, ...] = option((0.0, 0.1, 0.3, 1.0, 3.0), example="0,1",
                                       help="phase: noise levels σ of the grid")
    drifts: tuple[str, ...] = option(DRIFTS, choices=DRIFTS, example="ce", help=(
        "phase: drifts simulated (ce: the LE-SDE; linear: the linearized LE-ODE)"))
    t_end: float = option(50.0, example="20.0", help="phase: simulated time")
    dt: float = option(0.05, example="0.1", help="phase: Euler–Maruyama step")
    n_runs: int = option(16, example="4", help="phase: runs per cell (and per scan ratio)")
    init_scale: float = option(1.0, example="0.5", help="phase: sd of the initial features")
    scan_ratios: tuple[float, ...] = option(
        (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2), example="0.9,1.1",
        help="phase: ratios of the threshold scan (initial growth rate along the own class)")
    scan_t_end: float = option(1.0, example="0.5", help="phase: simulated time of the scan")
    scan_offset: float = option(0.5, example="0.25", help=(
        "phase: initial own-direction amplitude of the threshold scan"))
    # 2. fitted to real networks
    fit_datasets: tuple[str, ...] = option(("mnist1d", "digits"), example="digits",
                                           help="fit: datasets of the fitted networks")
    fit_n_train: int = option(500, example="200", help="fit: training examples (a random "
                                                       "subset, every model trains on all)")
    fit_models: int = option(8, example="2", help="fit: networks per dataset")
    fit_hidden: int = option(100, example="32", help="fit: hidden units of the one-hidden-"
                                                     "layer MLP")
    fit_epochs: int = option(30, example="6", help="fit: training epochs (plain SGD)")
    fit_lr: float = option(0.05, example="0.1", help="fit: SGD learning rate")
    fit_batch_size: int = option(32, example="64", help="fit: minibatch size")
    fit_runs: int = option(4, example="2", help="fit: simulated LE-SDE runs per network")
    fit_dt: float = option(0.05, example="0.1", help="fit: SDE step, in epochs")
    # 3. stability
    stab_datasets: tuple[str, ...] = option(("mnist1d", "digits"), example="digits",
                                            help="stability: datasets of the populations")
    stab_n_train: int | None = option(None, example="1000", help=(
        "stability: a random subset of this many training examples (default: all)"))
    loss_clip: float = option(10.0, example="5.0", help=(
        "stability: M, the cross-entropy clipped at M nats (the bounded loss)"))
    confidence_delta: float = option(0.05, example="0.1", help=(
        "stability: δ of the bounds (they hold with probability 1 − δ)"))
    n_permutations: int = option(5, example="2", help=(
        "stability: permuted masks of the noise floor"))

    @classmethod
    def quick(cls, **changes: Any) -> LESDEConfig:
        """A small grid, 3 MLPs per dataset, 64-model stability populations: under 2 minutes."""
        population = dataclasses.replace(RECIPE, n_models=64, epochs=20)
        return cls(**{**dict(
            population=population, n_per_class=50, ratios=(0.5, 0.8, 1.0, 1.25, 2.0),
            noises=(0.0, 0.3, 1.0), n_runs=4, fit_n_train=300, fit_models=3, fit_epochs=10,
            fit_runs=4, stab_n_train=1000, n_permutations=3), **changes})

    @classmethod
    def full(cls, **changes: Any) -> LESDEConfig:
        return cls(**changes)

    @classmethod
    def tiny(cls) -> LESDEConfig:
        population = dataclasses.replace(RECIPE, n_models=16, epochs=2)
        return cls.quick(
            population=population, ratios=(0.5, 2.0), noises=(0.0,), n_runs=2,
            scan_ratios=(1.0,), fit_datasets=("digits",), fit_n_train=100, fit_models=2,
            fit_epochs=2, fit_runs=2, stab_datasets=("digits",), stab_n_train=100,
            n_permutations=1)

    def validate(self) -> None:
        super().validate()
        if not self.parts:
            raise ConfigError("parts is empty; give e.g. --parts phase,fit,stability")
        unknown = set(self.parts) - set(PARTS)
        if unknown:
            raise ConfigError(f"unknown parts {sorted(unknown)}; choose from phase, fit, "
                              "stability")
        bad = set(self.drifts) - set(DRIFTS)
        if bad:
            raise ConfigError(f"unknown drifts {sorted(bad)}; choose from {DRIFTS}")
        if self.n_classes < 2 or self.n_per_class < 2 or self.n_runs < 1:
            raise ConfigError("need n_classes >= 2, n_per_class >= 2 and n_runs >= 1")
        if not self.ratios or not self.noises or not self.scan_ratios or not self.drifts:
            raise ConfigError("ratios, noises, scan_ratios and drifts need a value each")
        if min(self.ratios) < 0 or min(self.noises) < 0 or self.inter <= 0:
            raise ConfigError("ratios and noises must be >= 0 and inter > 0")
        for name in ("t_end", "dt", "scan_t_end", "fit_lr", "fit_dt", "loss_clip"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("fit_n_train", "fit_models", "fit_hidden", "fit_epochs",
                     "fit_batch_size", "fit_runs", "n_permutations"):
            validate.integer(getattr(self, name), name, minimum=1)
        if self.stab_n_train is not None:
            validate.integer(self.stab_n_train, "stab_n_train", minimum=2)
        validate.real(self.confidence_delta, "confidence_delta", minimum=0, maximum=1,
                      open_low=True, open_high=True)
        p = self.population
        if not isinstance(p, PopulationConfig):
            raise ConfigError("population must be a memlab.engine.config.PopulationConfig")
        if p.sweep or p.subsets != "random" or p.task != "classification":
            raise ConfigError("the stability part needs one classification recipe on random "
                              "subsets: give no --sweep and no --task")
        if p.n_models < 8:
            raise ConfigError("population.n_models (--models) must be >= 8 (every example "
                              "needs models in and out of its subset)")
