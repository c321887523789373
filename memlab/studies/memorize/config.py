"""What the memorization study measures, and with which population (docs/science.md §1)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.measures.thresholds import (
    CSCORE_RATIOS,
    HIGH_INFLUENCE,
    MEM_ESTIMATORS,
    MEMORIZED,
    NEAR_DUPLICATE,
)
from memlab.options import option
from memlab.studies.base import PopulationStudyConfig

# The recipe of ``memlab memorize`` with no arguments: MNIST-1D, the MLP 40-100-100-10,
# trained to fit its subsets (≈99% training accuracy), 512 models at r = 0.7: with the
# probit estimator as reliable (split-half 0.990) as 1,000 models were with the binary one
# (0.989; docs/memorization.md, "Ground truth from fewer models").
RECIPE = PopulationConfig(n_models=512, subset_fraction=0.7, epochs=30, batch_size=64,
                          optimizer="adam", lr=0.005)


class TargetSEWarning(UserWarning):
    """``n_models`` cannot guarantee the requested RMS error of every score."""


@dataclass(frozen=True)
class MemorizeConfig(PopulationStudyConfig):
    """Memorization and influence of one population (docs/science.md §1).

    data, n_train, label_noise, population: see :class:`PopulationStudyConfig` (default:
        the README's demo, 512 MLPs on 70% subsets of MNIST-1D).
    mem_min, infl_min, same_label, duplicate_threshold: what counts as memorized, a
        high-influence pair, and a near-duplicate pair (cosine of centred inputs).
    estimator: how mem is estimated (docs/memorization.md, "fewer models"): ``auto``
        (default: the probit estimator on the margins where they fit its model, else the
        binary one; the choice and its reason are in the summary), ``binary`` (Feldman &
        Zhang's acc_in − acc_out), ``probit``, ``probit_pooled``.
    target_se: the wanted RMS error of every score; a warning says how many models reach
        it when ``population.n_models`` cannot (an a-priori worst case); the summary says
        how many models each estimator needs for 90% of the examples to have se ≤
        ``target_se``, measured on this population (the pilot).
    grow: train more models until 90% of the examples have se ≤ ``target_se`` with the
        chosen estimator (this population is the pilot; the run grows in place).
    removal, removal_seeds: the marginal-utility study and its models per arm.
    cscores, cscore_models, cscore_ratios: the C-score sweep (one population per ratio;
        the main population serves at its own ratio).
    """

    population: PopulationConfig = option(default_factory=lambda: RECIPE)
    mem_min: float = option(MEMORIZED, flag="--threshold", help=(
        "mem at or above which an example counts as memorized"), example="0.3")
    infl_min: float = option(HIGH_INFLUENCE, help="influence of a high-influence pair",
                             example="0.2")
    same_label: bool = option(True, flag="--any-label", help=(
        "keep high-influence pairs whose labels differ"))
    duplicate_threshold: float = option(NEAR_DUPLICATE, help=(
        "cosine similarity (centred inputs) flagging a near-duplicate train/test pair"),
        example="0.9")
    estimator: str = option("auto", choices=("auto", *MEM_ESTIMATORS), help=(
        "how mem is estimated: auto (the probit on margins where it fits, else binary), "
        "binary (acc_in - acc_out), probit, probit_pooled"))
    grow: bool = option(False, help=(
        "grow the population until 90% of the examples have se <= --target-se (the "
        "population trained first is the pilot)"))
    target_se: float = option(0.1, help=(
        "wanted RMS error (standard error) of every score; warns when --models cannot "
        "guarantee it"), example="0.05")
    reliability_splits: int = option(5, help="random split-halves of the reliability curve",
                                     example="3")
    removal: bool = option(False, help=(
        "also run the marginal-utility study: retrain without the memorized examples and "
        "without as many random ones"))
    removal_seeds: int = option(8, help="models per arm of the removal study", example="4")
    cscores: bool = option(False, help="also train one population per subset ratio for "
                                       "C-scores")
    cscore_models: int = option(64, help="models per subset ratio of the C-score sweep",
                                example="16")
    cscore_ratios: tuple[float, ...] = option(CSCORE_RATIOS, help=(
        "subset ratios of the C-score sweep"), example="0.2,0.5")

    @classmethod
    def quick(cls, **changes: Any) -> MemorizeConfig:
        """32 MLPs (64-256-10) on digits with 10% of the labels flipped, 50 epochs: the
        flipped labels stand out (under a minute on 2 cores)."""
        population = dataclasses.replace(RECIPE, n_models=32, epochs=50, batch_size=32,
                                         model_kwargs={"hidden": [256]})
        return cls(**{**dict(data="digits", label_noise=0.1, population=population),
                      **changes})

    @classmethod
    def full(cls, **changes: Any) -> MemorizeConfig:
        """The README's MNIST-1D study: the demo with the removal study."""
        return cls(**{**dict(removal=True), **changes})

    @classmethod
    def tiny(cls) -> MemorizeConfig:
        quick = cls.quick()
        return quick.replace(n_train=200, population=dataclasses.replace(
            quick.population, n_models=8, epochs=3))

    def validate(self) -> None:
        """Refuse settings the study cannot use, with the fix."""
        super().validate()

        def unit(name: str, value: float) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value <= 1:
                raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")

        if self.membership is not None or self.population.subsets != "random" \
                or self.population.sweep:
            raise ConfigError("the memorization study draws random subsets for one recipe: "
                              "no membership mask and no sweep (train explicit masks or "
                              "sweeps with memlab train, then measure them with memlab audit)")
        if self.population.task == "language_model":
            raise ConfigError("memorize scores classifiers; for language models use "
                              "memlab lm-memorize")
        for name in ("mem_min", "infl_min", "duplicate_threshold"):
            unit(name, getattr(self, name))
        if self.estimator not in ("auto", *MEM_ESTIMATORS):
            raise ConfigError(f"estimator must be one of auto, {', '.join(MEM_ESTIMATORS)}; "
                              f"got {self.estimator!r}")
        if not (isinstance(self.target_se, int | float) and math.isfinite(self.target_se)
                and self.target_se > 0):
            raise ConfigError(f"target_se must be a positive number, got {self.target_se!r}")
        if self.removal and self.removal_seeds < 2:
            raise ConfigError(f"removal_seeds must be at least 2 (intervals over seeds), got "
                              f"{self.removal_seeds}")
        if self.reliability_splits < 1 or self.cscore_models < 1:
            raise ConfigError("reliability_splits and cscore_models must be positive")
        if self.cscores and (not self.cscore_ratios
                             or not all(0 < r < 1 for r in self.cscore_ratios)):
            raise ConfigError(f"cscore_ratios must be numbers in (0, 1), got "
                              f"{self.cscore_ratios}")
