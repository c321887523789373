"""What the attribution study scores, and against which population (docs/science.md §8)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from memlab import validate
from memlab.engine.config import PopulationConfig
from memlab.options import option
from memlab.studies.base import PopulationStudyConfig, check_run_dir

# memlab.measures.attribution.methods.METHODS, written out so that the command line imports
# no science (tests/test_attribution_study.py checks that the two agree).
METHODS = ("grad_dot", "grad_cos", "tracin", "trak", "if_exact", "if_cg", "if_lissa",
           "if_ekfac", "representer", "knn", "random")
# Every method that applies (methods=None): if_exact only where the exact Hessian fits.
DEFAULT_METHODS = ("grad_dot", "grad_cos", "tracin", "trak", "if_exact", "if_cg", "if_ekfac",
                   "representer", "knn", "random")
# Self-influence (self_influence_methods=None): these, if_exact only when it is scored.
SELF_INFLUENCE_METHODS = ("grad_dot", "trak", "if_exact", "if_ekfac")
# Methods that take a damping (chosen on the validation models from ``dampings``).
DAMPED = ("trak", "if_exact", "if_cg", "if_lissa", "if_ekfac")
# Methods the self-influence sample cannot use (they need checkpoints or iterative solves).
NO_SELF_INFLUENCE = ("tracin", "if_cg", "if_lissa")
# The options that only some methods read: given without any of them, they change nothing.
METHOD_OPTIONS = {"trak_models": ("trak",), "proj_dim": ("trak",), "dampings": DAMPED,
                  "damping_extensions": DAMPED,
                  "hessian_examples": ("if_cg", "if_lissa", "if_ekfac"),
                  "cg_iter": ("if_cg",), "knn_k": ("knn",), "tracin_checkpoints": ("tracin",)}
# Where TracIn's checkpoints fall (tracin_checkpoints=None): these fractions of training.
CHECKPOINT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)

# The population trained when no RUN is given: MNIST-1D, the MLP 40-100-100-10, 1,000
# models on 50% subsets (the LDS convention), 30 epochs of Adam.
RECIPE = PopulationConfig(n_models=1000, subset_fraction=0.5, epochs=30, batch_size=64,
                          optimizer="adam", lr=0.005)


class DampingEdgeWarning(UserWarning):
    """A method's damping is still on the edge of its (extended) grid: the validation LDS
    might rise further beyond it."""


@dataclass(frozen=True)
class AttributeConfig(PopulationStudyConfig):
    """Attribution methods scored against a population: the run in ``run_dir``, or one
    trained first (into ``OUT/population``) from the data options and ``population``.

    data, n_train, label_noise, membership, population: see
        :class:`~memlab.studies.base.PopulationStudyConfig` (default: 1,000 MLPs on 50%
        subsets of MNIST-1D). With ``run_dir`` they stay at their defaults, except
        ``population.seed``, which also seeds the study's own draws (TRAK's projection,
        the random baseline, the bootstraps, the self-influence sample, the removal study).
    methods, self_influence_methods, tracin_checkpoints: None chooses from the population
        (every method that applies; if_exact only for logistic regression or models of at
        most 4,000 parameters; TracIn at 1/4, 1/2, 3/4 and the end of training).
    dampings, damping_extensions: the damping grid, extended by factors of 10 past an edge
        where the validation LDS is highest, at most damping_extensions times.
    ceiling: train the held-out masks a second time with other seeds (in ``OUT/ceiling``)
        for the LDS ceiling that training noise sets (docs/attribution.md).
    """

    run_dir: str | None = option(None, flag="RUN", example="runs/pop", help=(
        "an existing population run to score the methods against (omit it to train one "
        "from the options below)"))
    population: PopulationConfig = option(default_factory=lambda: RECIPE)
    methods: tuple[str, ...] | None = option(None, example="grad_dot,random", help=(
        f"comma-separated, from {','.join(METHODS)} (default: all that apply: if_exact only "
        "for logistic regression / small models)"))
    n_targets: int = option(100, flag="--targets", help="test examples attributed (the first "
                                                        "ones)")
    n_heldout: int = option(100, flag="--heldout", help="models held out for the LDS")
    n_validation: int = option(50, flag="--validation",
                               help="models that choose each method's damping")
    method_models: int = option(1, flag="--method-models",
                                help="models each cheap method reads")
    trak_models: int = option(10, help="models TRAK ensembles over")
    proj_dim: int = option(512, help="TRAK projection dimension")
    dampings: tuple[float, ...] = option((0.01, 0.1, 1.0, 10.0), help=(
        "damping grid of TRAK and the influence functions (chosen on the validation models)"))
    damping_extensions: int = option(3, help=(
        "times the damping grid is extended by a factor of 10 past the edge where the "
        "validation LDS is highest (0: never); a choice still on an edge is warned about"))
    ceiling: bool = option(True, flag="--no-ceiling", help=(
        "skip the LDS ceiling (otherwise the --heldout masks are trained once more with "
        "other seeds: --heldout more models, 10% more training with the defaults, 20% "
        "with --quick)"))
    hessian_examples: int | None = option(2000, help=(
        "training examples in the curvature sample of the iterative solvers (none: all)"))
    cg_iter: int = option(30, help="conjugate-gradient iterations (if_cg)")
    knn_k: int = option(50, help="neighbours of the k-NN baseline")
    tracin_checkpoints: tuple[int, ...] | None = option(None, metavar="EPOCHS", example="2,4",
                                                        help=(
        "TracIn's checkpoint epochs (those <= the run's epochs; the last epoch is always "
        "added; default: 1/4, 1/2, 3/4 and the end of training)"))
    self_influence_examples: int = option(300, help="training examples whose self-influence "
                                                    "is computed")
    self_influence_methods: tuple[str, ...] | None = option(
        None, example="grad_dot,trak", help=(
            "methods whose self-influence is computed (default: grad_dot,trak,if_ekfac, and "
            "if_exact when it is among --methods)"))
    removal: bool = option(False, help="also retrain without each method's top-k examples "
                                       "of a target")
    removal_k: int = option(50, help="examples removed per target and method")
    removal_targets: int = option(10, help="targets of the removal study")
    removal_seeds: int = option(4, help="retrained models per target and arm")
    removal_methods: tuple[str, ...] = option(("datamodels", "trak", "if_exact", "grad_dot"),
                                              example="datamodels,trak", help=(
        "methods whose top-k examples the removal study drops (with random k)"))
    top_examples: int = option(4, help="test examples shown with their top training examples")

    @classmethod
    def quick(cls, **changes: Any) -> AttributeConfig:
        """300 logistic regressions on digits: about a minute on 2 cores."""
        population = dataclasses.replace(RECIPE, model_kwargs={"hidden": []}, n_models=300,
                                         epochs=20, batch_size=32, optimizer="sgd", lr=0.05,
                                         momentum=0.0)
        return cls(**{**dict(data="digits", population=population, n_targets=40,
                             n_heldout=60, n_validation=40, trak_models=4,
                             tracin_checkpoints=(5, 10, 20), self_influence_examples=100,
                             methods=("grad_dot", "grad_cos", "tracin", "trak", "if_exact",
                                      "if_ekfac", "representer", "knn", "random")),
                     **changes})

    @classmethod
    def full(cls, **changes: Any) -> AttributeConfig:
        """docs/attribution.md's MNIST-1D study: the default population, with the removal study."""
        return cls(**{**dict(removal=True), **changes})

    @classmethod
    def tiny(cls) -> AttributeConfig:
        quick = cls.quick()
        return quick.replace(
            population=dataclasses.replace(quick.population, n_models=40, epochs=4),
            n_targets=10, n_heldout=20, n_validation=10, trak_models=2,
            tracin_checkpoints=(2, 4), self_influence_examples=20,
            methods=("grad_dot", "tracin", "knn", "random"),
            self_influence_methods=SELF_INFLUENCE_METHODS, removal=True, removal_targets=2,
            removal_seeds=2, removal_k=20)

    def validate(self) -> None:
        """Every problem at once (:func:`memlab.validate.all_problems`). A method's own
        options are checked only when the method is scored (see :meth:`without_effect`)."""
        check, problem = validate.check, validate.problem
        with validate.all_problems("attribute settings"):
            super().validate()
            if self.run_dir is not None and self.population.n_models != RECIPE.n_models:
                problem("--models is the size of a population trained here, not RUN's "
                        "(give either RUN or --models); the models each cheap method "
                        "reads: --method-models")
            with check():
                check_run_dir(self)
            for field in ("methods", "self_influence_methods"):
                unknown = sorted(set(getattr(self, field) or ()) - set(METHODS))
                if unknown:
                    problem(f"unknown attribution methods {unknown} in {field}; choose "
                            f"from {', '.join(METHODS)}")
            if self.methods is not None and not self.methods:
                problem("methods is empty: name at least one method (or none for every "
                        "method that applies)")
            skipped = sorted(set(self.self_influence_methods or ()) & set(NO_SELF_INFLUENCE))
            if skipped:
                problem(f"self_influence_methods {skipped}: no self-influence is computed "
                        f"by {', '.join(NO_SELF_INFLUENCE)}; choose from "
                        f"{', '.join(m for m in METHODS if m not in NO_SELF_INFLUENCE)}")
            for name in ("n_heldout", "n_validation"):
                with check():
                    validate.integer(getattr(self, name), name, minimum=3)
            for name in ("method_models", "n_targets", "self_influence_examples",
                         "top_examples"):
                with check():
                    validate.integer(getattr(self, name), name,
                                     minimum=0 if name == "top_examples" else 1)
            if self.population.task == "language_model":
                problem("attribute scores classifiers (test_logodds); language-model "
                        "runs have no such output")
            self._check_method_options()

    def _check_method_options(self) -> None:
        """The options of the methods (and the removal study) that will run."""
        check, problem = validate.check, validate.problem
        used = self.scored()
        if "trak" in used:
            with check():
                validate.integer(self.trak_models, "trak_models", minimum=1)
            with check():
                validate.integer(self.proj_dim, "proj_dim", minimum=1)
        if used & set(DAMPED):
            with check():
                validate.integer(self.damping_extensions, "damping_extensions", minimum=0)
            if not self.dampings or not all(
                    isinstance(d, int | float) and not isinstance(d, bool)
                    and math.isfinite(d) and d >= 0 for d in self.dampings):
                problem(f"dampings must be non-negative numbers, got {self.dampings}")
        if used & {"if_cg", "if_lissa", "if_ekfac"} and self.hessian_examples is not None:
            with check():
                validate.integer(self.hessian_examples, "hessian_examples", minimum=1)
        if "if_cg" in used:
            with check():
                validate.integer(self.cg_iter, "cg_iter", minimum=1)
        if "knn" in used:
            with check():
                validate.integer(self.knn_k, "knn_k", minimum=1)
        if "tracin" in used and self.tracin_checkpoints is not None:
            with check():
                validate.integer_list(self.tracin_checkpoints, "tracin_checkpoints",
                                      example="2,4")
        if self.removal:
            for name in ("removal_k", "removal_targets"):
                with check():
                    validate.integer(getattr(self, name), name, minimum=1)
            with check():
                validate.integer(self.removal_seeds, "removal_seeds", minimum=2,
                                 fix="the removal effect's interval needs 2 seeds or more")
            unknown = sorted(set(self.removal_methods) - set(METHODS)
                             - {"datamodels", "diff_in_means"})
            if unknown:
                problem(f"unknown removal_methods {unknown}; choose from datamodels, "
                        f"diff_in_means, {', '.join(METHODS)}")

    def scored(self) -> set[str]:
        """Every method whose scores the study computes (with ``methods=None``: every
        one that may apply; self-influence included)."""
        methods = self.methods if self.methods is not None else DEFAULT_METHODS
        return set(methods) | set(self.resolved_self_influence_methods(tuple(methods)))

    def without_effect(self) -> dict[str, str]:
        """Settings that change nothing with this config (field -> why): the options of
        methods not scored, the removal study's without ``removal``. The command line
        refuses such flags when they are given (a flag that is accepted has an effect)."""
        used = self.scored()
        owners = {name: [m for m in methods if m in METHODS]
                  for name, methods in METHOD_OPTIONS.items()}
        ineffective = {}
        for name, methods in owners.items():
            if name in ("dampings", "damping_extensions"):  # self-influence: damping 1
                methods = [m for m in methods if m in (self.methods or DEFAULT_METHODS)]
                if methods:
                    continue
                ineffective[name] = f"no method among --methods uses it ({', '.join(DAMPED)} do)"
            elif not used & set(methods):
                ineffective[name] = f"{' or '.join(methods)} is not among --methods"
        if not self.removal:
            for name in ("removal_k", "removal_targets", "removal_seeds", "removal_methods"):
                ineffective[name] = "it belongs to the removal study: give --removal"
        return ineffective

    def resolved_methods(self, small: bool) -> tuple[str, ...]:
        """``methods``, or every method that applies (``small``: the exact Hessian fits)."""
        if self.methods is not None:
            return self.methods
        return tuple(m for m in DEFAULT_METHODS if small or m != "if_exact")

    def resolved_self_influence_methods(self, methods: tuple[str, ...]) -> tuple[str, ...]:
        if self.self_influence_methods is not None:
            return self.self_influence_methods
        return tuple(m for m in SELF_INFLUENCE_METHODS if m != "if_exact" or m in methods)

    def resolved_checkpoints(self, epochs: int) -> tuple[int, ...]:
        if self.tracin_checkpoints is not None:
            return self.tracin_checkpoints
        return tuple(sorted({max(1, round(epochs * f)) for f in CHECKPOINT_FRACTIONS}))

