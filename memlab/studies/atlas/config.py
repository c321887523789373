"""What the atlas joins, and which population it reads (docs/atlas.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from memlab import validate
from memlab.engine.config import PopulationConfig
from memlab.options import option
from memlab.studies.base import PopulationStudyConfig, check_run_dir

ESTIMATORS = ("auto", "binary", "probit", "probit_pooled")

# memlab memorize's population (MLPs 40-100-100-10 on 70% subsets of MNIST-1D, 30 epochs of
# Adam), with every epoch's records: learning order needs them.
RECIPE = PopulationConfig(n_models=512, subset_fraction=0.7, epochs=30, batch_size=64,
                          optimizer="adam", lr=0.005, record_epochs=True)


@dataclass(frozen=True)
class AtlasConfig(PopulationStudyConfig):
    """Every measure of one population side by side: the run in ``run_dir`` (or one
    trained into ``OUT/population`` from the data options and ``population``).

    estimator: memorization's estimator, chosen as ``memlab memorize`` does (``auto``:
        probit where the margins fit its model, else binary).
    n_bootstrap: resamples of the examples for the Spearman matrix's intervals.
    neighbours: k of the k-nearest-neighbour label agreement (a proxy of the C-score).
    duplicate_threshold: cosine (centred inputs) from which two training inputs are
        near-duplicates.
    critical_models: LASS (Arpit et al.) searches every example's critical status in this
        many models; 0 skips.
    elasticity_models, elasticity_examples: one-step similarities (local elasticity) of
        this many models, on this many examples drawn per model among its members; 0 skips.
    audit_dir: a saved ``memlab audit`` result of this same run to take the membership-
        inference vulnerability from (else the atlas scores LiRA itself).
    spectra: every model's per-layer spectra (α raw and aspect-corrected, norms) from its
        saved weights.
    """

    run_dir: str | None = option(None, flag="RUN", example="runs/memorize/population", help=(
        "an existing population run (omit it to train one from the options below)"))
    population: PopulationConfig = option(default_factory=lambda: RECIPE)
    estimator: str = option("auto", choices=ESTIMATORS, help=(
        "memorization estimator (auto: probit where the margins fit, else binary)"))
    n_bootstrap: int = option(200, flag="--bootstrap",
                              help="bootstrap resamples of the examples for the matrix")
    neighbours: int = option(10, help="k of the input-space k-NN label agreement")
    duplicate_threshold: float = option(0.98, help=(
        "cosine of centred inputs from which two training examples are near-duplicates"))
    critical_models: int = option(4, help=(
        "models whose critical samples LASS searches, every example (0: skip)"))
    elasticity_models: int = option(4, help=(
        "models whose one-step similarities are measured (0: skip local elasticity)"))
    elasticity_examples: int = option(256, help="examples per model for local elasticity")
    audit_dir: str | None = option(None, metavar="DIR", example="runs/audit", help=(
        "a saved memlab audit of the same run: its vulnerability is used"))
    spectra: bool = option(True, help="per-layer spectra of every model's weights")

    @classmethod
    def quick(cls, **changes: Any) -> AtlasConfig:
        """64 MLPs on digits with 10% of the labels flipped, trained long enough to fit
        them (60 epochs of batch 32; at 20 epochs of 64 the IN models fit 90% of their
        examples and the flipped labels went unmemorized): about a minute on 2 cores."""
        return cls(**{**dict(data="digits", label_noise=0.1,
                             population=dataclasses.replace(RECIPE, n_models=64, epochs=60,
                                                            batch_size=32),
                             n_bootstrap=100), **changes})

    @classmethod
    def full(cls, **changes: Any) -> AtlasConfig:
        """The default MNIST-1D population at 1,000 models."""
        return cls(**{**dict(population=dataclasses.replace(RECIPE, n_models=1000)),
                      **changes})

    @classmethod
    def tiny(cls) -> AtlasConfig:
        quick = cls.quick()
        return quick.replace(n_train=300, population=dataclasses.replace(
            quick.population, n_models=16, epochs=4), n_bootstrap=50, elasticity_models=2,
            elasticity_examples=32, critical_models=2)

    def validate(self) -> None:
        """Every problem at once (:func:`memlab.validate.all_problems`)."""
        with validate.all_problems("atlas settings"):
            super().validate()
            check_run_dir(self)
            with validate.check():
                validate.integer(self.n_bootstrap, "--bootstrap", minimum=20,
                                 fix="give 20 or more resamples")
            with validate.check():
                validate.integer(self.neighbours, "--neighbours", minimum=1)
            with validate.check():
                validate.real(self.duplicate_threshold, "--duplicate-threshold", minimum=0,
                              maximum=1)
            with validate.check():
                validate.integer(self.critical_models, "--critical-models", minimum=0)
            with validate.check():
                validate.integer(self.elasticity_models, "--elasticity-models", minimum=0)
            with validate.check():
                validate.integer(self.elasticity_examples, "--elasticity-examples",
                                 minimum=4)
