"""What the local-elasticity study measures, and with which populations (docs/science.md §4).

Light: no torch, pandas or measures (``memlab elasticity --help`` imports only this)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from memlab import validate
from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.options import option
from memlab.studies.base import StudyConfig

# The base recipe of every population: the paper's two-layer network (one hidden layer of
# 100), plain minibatch SGD (no momentum) whose lr is also the η of the measured step, 20
# epochs; n_models = the replicates (seeds) of every population. The study trains it as a
# sweep over the activation (ReLU and its linear twin) on explicit masks.
RECIPE = PopulationConfig(n_models=3, model_kwargs={"hidden": [100]}, epochs=20,
                          batch_size=32, optimizer="sgd", lr=0.05, momentum=0.0)
PAIRS = ((3, 5), (4, 9), (5, 8), (7, 9))


def parse_pairs(text: str) -> tuple[tuple[int, int], ...]:
    """``"5-8,4-9"`` -> ((5, 8), (4, 9)); ``"none"`` -> ()."""
    if text.strip().lower() in ("none", ""):
        return ()
    found = []
    for item in text.split(","):
        parts = item.strip().split("-")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"--pairs takes class pairs like 5-8,4-9 (or 'none'), got "
                              f"{item!r}")
        found.append((int(parts[0]), int(parts[1])))
    return tuple(found)


def show_pairs(pairs: tuple[tuple[int, int], ...]) -> list[str]:
    return [",".join(f"{a}-{b}" for a, b in pairs) or "none"]


@dataclass(frozen=True)
class ElasticityConfig(StudyConfig):
    """Settings of the study; the defaults (the paper's two-layer networks on digits) run in
    about 2.5 minutes on 2 CPU cores.

    data: a built-in dataset name or an .npz path (training split used).
    population: the base recipe of every population (:data:`RECIPE`): its ``n_models`` is
        the number of replicates (seeds) 0..n-1, its ``lr`` both the training rate and the
        η of the measured step, its ``epochs`` the training length (the last checkpoint).
        The study sets the model's activation (a sweep: ReLU and linear), the task and the
        explicit training masks.
    checkpoints: epochs at which the ratio is measured (the last epoch always is).
    run_dir / member: measure model ``member`` of this population run instead (its final
        weights, ``probe_per_class`` probes per class, step size ``population.lr``, probes
        drawn from ``population.seed``); the other settings are then not used.
    """

    data: str = option("digits", example="mnist1d",
                       help="digits | mnist1d | mnist | path/to/data.npz")
    population: PopulationConfig = option(default_factory=lambda: RECIPE)
    checkpoints: tuple[int, ...] = option((0, 1, 2, 5, 10, 20), metavar="E1,E2,...",
                                          example="0,1,5", help=(
        "epochs at which to measure the ratio (the last epoch, --epochs, always is)"))
    probe_per_class: int = option(20, example="6", help=(
        "ratio experiment: training examples per class whose similarities are measured"))
    pairs: tuple[tuple[int, int], ...] = option(
        PAIRS, metavar="A-B,...", parse=parse_pairs, show=show_pairs, example="5-8",
        help="hidden class pairs of the clustering experiment, or 'none'")
    cluster_per_class: int = option(150, example="20", help=(
        "clustering: positives per hidden class to cluster (at most)"))
    pca_components: int = option(10, example="5", help=(
        "principal components of the PCA baseline of the clustering"))
    run_dir: str | None = option(None, flag="--from-run", metavar="RUN", example="run",
                                 help="measure model --member of this population run instead")
    member: int = option(0, example="3", help="model index for --from-run")

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoints", tuple(int(e) for e in self.checkpoints))
        object.__setattr__(self, "pairs", tuple((int(a), int(b)) for a, b in self.pairs))

    @property
    def epochs(self) -> tuple[int, ...]:
        """The measured epochs: the checkpoints and the last epoch."""
        return tuple(sorted({*self.checkpoints, self.population.epochs}))

    @property
    def n_seeds(self) -> int:
        """Replicates of every population (``population.n_models``)."""
        return self.population.n_models

    @classmethod
    def quick(cls, **changes: Any) -> ElasticityConfig:
        """A smoke-test preset (about 15 s on 2 cores): small network, 2 seeds, one pair."""
        population = dataclasses.replace(RECIPE, n_models=2, epochs=3,
                                         model_kwargs={"hidden": [32]})
        return cls(**{**dict(population=population, checkpoints=(0, 1, 3),
                             probe_per_class=6, pairs=((3, 5),), cluster_per_class=20),
                      **changes})

    @classmethod
    def full(cls, **changes: Any) -> ElasticityConfig:
        """The settings of docs/elasticity.md's results (the defaults; ``data="mnist1d"``
        for its second column)."""
        return cls(**changes)

    @classmethod
    def tiny(cls) -> ElasticityConfig:
        population = dataclasses.replace(RECIPE, n_models=2, epochs=1,
                                         model_kwargs={"hidden": [8]})
        return cls(population=population, checkpoints=(0, 1), probe_per_class=3,
                   pairs=((0, 1),), cluster_per_class=5)

    def validate(self) -> None:
        """Every setting in range (the pairs against the dataset's classes are checked when
        it is loaded: :func:`memlab.studies.elasticity.study.check_data`)."""
        super().validate()
        p = self.population
        if not isinstance(p, PopulationConfig):
            raise ConfigError("population must be a memlab.engine.config.PopulationConfig")
        if not (isinstance(self.data, str) and self.data):
            raise ConfigError(f"data must be a dataset name or path, got {self.data!r}")
        if p.sweep or p.task != RECIPE.task or p.subsets != "random" \
                or p.subset_fraction != RECIPE.subset_fraction:
            raise ConfigError("the elasticity study sets the sweep (activation: relu, "
                              "linear), the task and the training masks of its populations "
                              "itself: give no --sweep, --task or --subset")
        if not self.checkpoints or sorted(set(self.checkpoints)) != list(self.checkpoints) \
                or self.checkpoints[0] < 0:
            raise ConfigError(f"checkpoints must be increasing epochs ≥ 0, got "
                              f"{self.checkpoints}")
        if self.checkpoints[-1] > p.epochs:
            raise ConfigError(f"checkpoint {self.checkpoints[-1]} is after the last epoch "
                              f"(epochs={p.epochs}); give --epochs {self.checkpoints[-1]} or "
                              "drop it from --checkpoints")
        hidden = p.model_kwargs.get("hidden", [])
        if not isinstance(hidden, list | tuple) or not all(
                isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ConfigError(f"hidden widths must be positive integers, got {hidden!r}")
        validate.integer(self.probe_per_class, "probe_per_class", minimum=2)
        validate.integer(self.cluster_per_class, "cluster_per_class", minimum=2)
        validate.integer(self.pca_components, "pca_components", minimum=1)
        validate.integer(self.member, "member", minimum=0)
        if self.run_dir is not None and not (isinstance(self.run_dir, str) and self.run_dir):
            raise ConfigError(f"run_dir must be a run directory, got {self.run_dir!r}")
