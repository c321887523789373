"""Real data vs noise (Arpit et al. 2017; docs/science.md §3): do networks learn patterns
first and noise later?

    from memlab.studies.noise import NoiseConfig, run
    result = run(NoiseConfig.quick().replace(data="digits"), out="runs/noise-digits")
    result.tables["directions"][["finding", "verdict"]]

The study trains the same architecture on

- ``real``: the data as it is;
- ``randY``: every training label replaced by a different random class;
- ``randX``: every training input replaced by Gaussian noise with the data's mean and std;
- ``noise20`` ... ``noise80``: a fraction of the labels randomized (partial label noise),

and measures (:mod:`memlab.studies.noise.parts`) the learning dynamics per example, the
one-epoch difficulty against the Binomial of equally hard examples, epochs to 100%
training accuracy against size and width, the critical sample ratio and loss-sensitivity
Gini during training, and a regularizer sweep (randY fitting vs real validation accuracy).
Every direction of the paper becomes a verdict with an interval
(:mod:`memlab.studies.noise.verdicts`).

Every model is a population on the engine (``memlab.population``): full-data models
through an explicit all-ones membership mask, the regularizers as per-model sweep values or
a callback adding LASS samples to each batch, the checkpoint measurements as a callback.
``OUT/`` holds ``populations/`` (engine runs, resumable), ``tables/*.parquet``,
``summary.json`` (strict JSON), ``config.json`` and ``report.html``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from memlab.data import load
from memlab.errors import ConfigError
from memlab.population.executor import single_thread
from memlab.studies.base import Result, StudyConfig, saved_result
from memlab.studies.noise import parts
from memlab.studies.noise.verdicts import NOT_REPRODUCED, REPRODUCED, UNDECIDED, directions

STUDY = "noise"
REGULARIZERS = ("dropout", "input_dropout", "input_noise", "weight_decay", "adversarial")
PARTS = ("dynamics", "difficulty", "capacity", "critical samples", "regularizer sweep")


@dataclass(frozen=True)
class NoiseConfig(StudyConfig):
    """Everything that sets the study's results; the defaults are the full preset
    (``full()``), ``quick()`` the small one behind the README's tables.

    n_train: training examples used (a fixed random subset; None = all); the test split is
        the validation set. Every seed's model of the dynamics, one-epoch difficulty,
        critical-sample and regularizer parts trains on all of them (an all-ones mask).
    difficulty_n_train: training examples for the one-epoch difficulty (None = all of the
        data's): one epoch must be enough SGD steps to learn more than class frequencies.
    lass_scale: LASS α, β, r are the paper's values rescaled to the data's range, times this.
    regularizers: name -> strengths (dropout and input_dropout: drop probability;
        input_noise: Gaussian std in units of the data's std; weight_decay: L2 coefficient;
        adversarial: LASS radius as a multiple of the scaled paper radius).
    sweep_seeds: models per (regularizer, strength) and condition.
    n_workers: worker processes (None: one per core); results do not depend on it.
    """

    data: str = "mnist1d"
    n_train: int | None = None
    hidden: tuple[int, ...] = (100, 100)
    noise_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    seeds: int = 32
    epochs: int = 150
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    difficulty_seeds: int = 100
    difficulty_n_train: int | None = None
    capacity_sizes: tuple[int, ...] = (250, 500, 1000, 2000, 4000)
    capacity_widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    capacity_seeds: int = 4
    capacity_epochs: int = 300
    csr_seeds: int = 3
    csr_every: int = 10
    csr_examples: int = 1000
    lass_scale: float = 1.0
    lass_iter: int = 20
    sweep_epochs: int = 150
    sweep_seeds: int = 1
    regularizers: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "dropout": (0.2, 0.4, 0.6, 0.8),
        "input_dropout": (0.1, 0.2, 0.4, 0.6),
        "input_noise": (0.1, 0.3, 0.6, 1.0),
        "weight_decay": (1e-4, 1e-3, 3e-3, 1e-2),
        "adversarial": (4.0, 16.0, 64.0),
    })
    adversarial_iter: int = 3
    seed: int = 0
    n_workers: int | None = None

    @classmethod
    def quick(cls, **changes: Any) -> NoiseConfig:
        """1,000 training examples, 16 seeds x 60 epochs, noise20 and noise50: ~15 min on
        2 shared cores (MNIST-1D), the README's tables."""
        return cls(**{**dict(n_train=1000, noise_fractions=(0.2, 0.5), seeds=16, epochs=60,
                             capacity_sizes=(125, 250, 500, 1000),
                             capacity_widths=(16, 32, 64, 128), capacity_seeds=3,
                             capacity_epochs=100, csr_every=5, sweep_epochs=60), **changes})

    @classmethod
    def full(cls, **changes: Any) -> NoiseConfig:
        """All training examples, 32 seeds x 150 epochs, four noise fractions."""
        return cls(**changes)

    def __post_init__(self) -> None:
        # JSON gives lists back; the config keeps tuples so that equal configs compare equal.
        object.__setattr__(self, "regularizers", {
            name: tuple(float(s) for s in strengths)
            for name, strengths in dict(self.regularizers).items()})
        unknown = set(self.regularizers) - set(REGULARIZERS)
        if unknown:
            raise ConfigError(f"unknown regularizers {sorted(unknown)}; use {REGULARIZERS}")
        for name, strengths in self.regularizers.items():
            if len(set(strengths)) != len(strengths) or not all(s > 0 for s in strengths):
                raise ConfigError(f"regularizer {name!r} needs distinct positive strengths, "
                                  f"got {strengths}")
        for fraction in self.noise_fractions:
            if not 0 < fraction < 1:
                raise ConfigError(f"partial noise fractions must lie in (0, 1), got {fraction}")
        if min(self.seeds, self.difficulty_seeds, self.capacity_seeds, self.csr_seeds) < 2:
            raise ConfigError("every part of the study needs at least 2 seeds; give --seeds 2 "
                              "or more")
        if self.sweep_seeds < 1:
            raise ConfigError(f"sweep_seeds must be at least 1, got {self.sweep_seeds}")
        if min(self.epochs, self.sweep_epochs, self.capacity_epochs, self.csr_every) < 1:
            raise ConfigError("epochs, sweep_epochs, capacity_epochs and csr_every must be "
                              "at least 1")

    def expected_minutes(self, n_train: int, n_available: int) -> float:
        """A rough wall-time estimate on two free CPU cores, from the number of
        model-example-epochs (calibrated on the quick preset, ~3 min on MNIST-1D).
        n_train: examples the study uses; n_available: all of the data's (for difficulty)."""
        n_conditions = 3 + len(self.noise_fractions)
        n_difficulty = min(self.difficulty_n_train or n_available, n_available)
        width = sum(self.hidden) / 200
        work = (n_conditions * self.seeds * self.epochs * n_train * 2  # x2: per-epoch records
                + 3 * self.difficulty_seeds * n_difficulty
                + 2 * self.capacity_seeds * self.capacity_epochs * 2
                * (sum(s for s in self.capacity_sizes if s <= n_train)
                   + len(self.capacity_widths) * n_train)
                + n_conditions * self.csr_seeds * self.epochs * n_train * 3
                + sum(map(len, self.regularizers.values())) * 2 * self.sweep_seeds
                * self.sweep_epochs * n_train * 2) * width
        return work / 0.17e6 / 60 + 0.3


def run(config: NoiseConfig, out: str | Path | None = None, progress: bool = True) -> Result:
    """Run every part of the study and save the result in ``out`` (resumable: the engine
    runs under ``out/populations`` resume, and a finished ``out`` is returned as saved)."""
    if out is None:
        raise ConfigError("the noise study trains populations: give an output directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    saved = saved_result(out, STUDY, config)
    if saved is not None:
        return saved
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    all_data = load(config.data)
    dataset = parts.take_subset(all_data, config.n_train, config.seed)
    conditions = parts.make_conditions(dataset, config.noise_fractions, config.seed)
    notes = []  # settings the data cannot honour: said out loud, never skipped silently
    if config.n_train is not None and config.n_train > all_data.n_train:
        notes.append(f"n_train {config.n_train} exceeds the data's {all_data.n_train} "
                     "training examples; all of them are used")
    too_large = [size for size in config.capacity_sizes if size > dataset.n_train]
    if too_large:
        notes.append(f"capacity sizes {too_large} exceed the {dataset.n_train} training "
                     "examples and are left out")
    bar = tqdm(total=len(PARTS), desc="noise study", unit="part", disable=not progress)

    def log(message: str) -> None:
        bar.set_postfix_str(message[:70])

    steps = {
        "dynamics": lambda: parts.learning_dynamics(conditions, config, out, log),
        "difficulty": lambda: parts.one_epoch_difficulty(
            parts.take_subset(all_data, config.difficulty_n_train, config.seed), config, out,
            log),
        "capacity": lambda: {"capacity": parts.capacity_and_time(dataset, config, out, log)},
        "critical samples": lambda: {"csr": parts.critical_samples(conditions, config, out,
                                                                   log)},
        "regularizer sweep": lambda: {"sweep": parts.regularizer_sweep(conditions, config,
                                                                       out, log)},
    }
    tables: dict[str, pd.DataFrame] = {}
    seconds: dict[str, float] = {}
    for part, step in steps.items():
        part_started = time.perf_counter()
        with single_thread():  # small matrices: one thread is fastest, and repeatable
            tables.update(step())
        seconds[part] = round(time.perf_counter() - part_started, 1)
        bar.update()
    bar.close()
    tables["directions"] = directions(tables, config.to_dict())
    result = Result(study=STUDY, config=config.to_dict(), tables=tables,
                    summary=summarize(tables, dataset, config, notes, seconds,
                                      time.perf_counter() - started))
    result.save(out)
    return result


def summarize(tables: dict[str, pd.DataFrame], dataset, config: NoiseConfig, notes: list[str],
              seconds: dict[str, float], total: float) -> dict[str, Any]:
    """The summary: data, LASS settings, time, notes, the directions and headline numbers."""
    described = dataset.describe()
    described.pop("class_names", None)
    dyn = tables["dynamics"].set_index("condition")
    verdicts = tables["directions"].verdict
    return {
        "dataset": described,
        "lass": asdict(parts.lass_settings(dataset, config, config.lass_iter)),
        "seconds": round(total, 1), "seconds_per_part": seconds, "notes": notes,
        "verdicts": {v: int((verdicts == v).sum())
                     for v in (REPRODUCED, NOT_REPRODUCED, UNDECIDED)},
        "directions": tables["directions"].to_dict(orient="records"),
        "dynamics": {name: {key: float(value) for key, value in row.items()}
                     for name, row in dyn.iterrows()},
    }
