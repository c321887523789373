"""What the memorization study measures, and with which population (docs/science.md §1)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from memlab import validate
from memlab.engine.config import PopulationConfig
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
        the demo of docs/memorization.md, 512 MLPs on 70% subsets of MNIST-1D).
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
        """docs/memorization.md's MNIST-1D study: the demo with the removal study."""
        return cls(**{**dict(removal=True), **changes})

    @classmethod
    def tiny(cls) -> MemorizeConfig:
        quick = cls.quick()
        return quick.replace(n_train=200, population=dataclasses.replace(
            quick.population, n_models=8, epochs=3))

    def validate(self) -> None:
        """Refuse settings the study cannot use, with the fix: every problem at once
        (:func:`memlab.validate.all_problems`)."""
        check, problem = validate.check, validate.problem
        with validate.all_problems("memorize settings"):
            super().validate()
            if self.membership is not None or self.population.subsets != "random" \
                    or self.population.sweep:
                problem("the memorization study draws random subsets for one recipe: no "
                        "membership mask and no sweep (train explicit masks or sweeps with "
                        "memlab train, then measure them with memlab audit)")
            if self.population.task == "language_model":
                problem("memorize scores classifiers; for language models use "
                        "memlab lm-memorize")
            with check():  # (1 model ended in an IndexError after training it)
                validate.integer(self.population.n_models, "--models", minimum=4, fix=(
                    "IN/OUT estimates need models on both sides of every example (population"
                    ".n_models); a few hundred give usable scores"))
            for name in ("mem_min", "infl_min", "duplicate_threshold"):
                with check():
                    validate.real(getattr(self, name), name, minimum=0, maximum=1)
            if self.estimator not in ("auto", *MEM_ESTIMATORS):
                problem(f"estimator must be one of auto, {', '.join(MEM_ESTIMATORS)}; "
                        f"got {self.estimator!r}")
            with check():
                validate.real(self.target_se, "target_se", minimum=0, open_low=True)
            with check():
                validate.integer(self.reliability_splits, "reliability_splits", minimum=1)
            if self.removal:
                with check():
                    validate.integer(self.removal_seeds, "removal_seeds", minimum=2,
                                     fix="intervals over seeds need at least 2")
            if self.cscores:
                with check():
                    validate.integer(self.cscore_models, "cscore_models", minimum=1)
                if not self.cscore_ratios or not all(
                        isinstance(r, int | float) and not isinstance(r, bool) and 0 < r < 1
                        for r in self.cscore_ratios):
                    problem(f"cscore_ratios must be numbers in (0, 1), got "
                            f"{self.cscore_ratios}")

    def without_effect(self) -> dict[str, str]:
        """Settings that change nothing with this config (field -> why); the command line
        refuses such flags when they are given."""
        ineffective = {}
        if not self.removal:
            ineffective["removal_seeds"] = "it belongs to the removal study: give --removal"
        if not self.cscores:
            for name in ("cscore_models", "cscore_ratios"):
                ineffective[name] = "it belongs to the C-score sweep: give --cscores"
        return ineffective
