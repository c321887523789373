"""Real data vs noise (Arpit et al. 2017; docs/science.md §3): do networks learn patterns
first and noise later?

    from memlab.studies.noise import NoiseConfig, run
    result = run(NoiseConfig.quick().replace(data="digits"), out="runs/noise-digits")
    result.tables["directions"][["finding", "verdict"]]

The study trains the same architecture (``config.population``, the recipe) on

- ``real``: the data as it is;
- ``randY``: every training label replaced by a different random class;
- ``randX``: every training input replaced by Gaussian noise with the data's mean and std;
- ``noise20`` ... ``noise80``: a fraction of the labels randomized (partial label noise),

and measures (:mod:`memlab.studies.noise.parts`) the learning dynamics per example, the
one-epoch difficulty against the Binomial of equally hard examples, epochs to 100% training
accuracy against size and width, the critical sample ratio and loss-sensitivity Gini
during training, and a regularizer sweep (randY fitting vs real validation accuracy).
Every direction of the paper becomes a verdict with an interval
(:mod:`memlab.studies.noise.verdicts`).

Every model is a population on the engine (``memlab.population``): full-data models
through an explicit all-ones membership mask, the regularizers as per-model sweep values or
a callback adding LASS samples to each batch, the checkpoint measurements as a callback
(:mod:`memlab.measures.callbacks`). ``OUT/`` holds ``populations/`` (engine runs,
resumable), ``tables/*.parquet``, ``summary.json`` (strict JSON), ``config.json`` and
``report.html``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from memlab import validate
from memlab.data import load
from memlab.measures.stats import NOT_REPRODUCED, REPRODUCED, UNDECIDED
from memlab.population.executor import single_thread
from memlab.progress import tqdm
from memlab.studies.base import Execution, Result
from memlab.studies.noise import parts
from memlab.studies.noise.config import NoiseConfig
from memlab.studies.noise.verdicts import directions, learned_last

STUDY = "noise"
PARTS = ("dynamics", "difficulty", "capacity", "critical samples", "regularizer sweep")


def run(config: NoiseConfig, out: Path, execution: Execution) -> Result:
    """Run every part of the study (resumable: the engine runs under ``out/populations``
    resume). Called through :func:`memlab.studies.base.run_study`, which validates, reuses
    a saved result and saves this one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seed = config.population.seed
    all_data = load(config.data)
    dataset = parts.take_subset(all_data, config.n_train, seed)
    # Every seed's model keeps per-epoch records (correctness + loss, 3 bytes) of every
    # training example in the learning-dynamics part, for each of its conditions.
    epochs = config.population.epochs
    validate.fits_in_memory(3.0 * config.seeds * (epochs + 1) * dataset.n_train
                            * (3 + len(config.noise_fractions)),
                            f"--seeds {config.seeds} x --epochs {epochs}",
                            "give fewer seeds or epochs")
    conditions = parts.make_conditions(dataset, config.noise_fractions, seed)
    notes = []  # settings the data cannot honour: said out loud, never skipped silently
    if config.n_train is not None and config.n_train > all_data.n_train:
        notes.append(f"n_train {config.n_train} exceeds the data's {all_data.n_train} "
                     "training examples; all of them are used")
    too_large = [size for size in config.capacity_sizes if size > dataset.n_train]
    if too_large:
        notes.append(f"capacity sizes {too_large} exceed the {dataset.n_train} training "
                     "examples and are left out")
    minutes = config.expected_minutes(dataset.n_train, all_data.n_train)
    bar = tqdm(total=len(PARTS), desc=f"noise study (~{minutes:.0f} min on 2 cores)",
               unit="part", disable=not execution.progress)

    def log(message: str) -> None:
        bar.set_postfix_str(message[:70])

    how = dict(log=log, execution=execution)
    steps = {
        "dynamics": lambda: parts.learning_dynamics(conditions, config, out, **how),
        "difficulty": lambda: parts.one_epoch_difficulty(
            parts.take_subset(all_data, config.difficulty_n_train, seed), config, out, **how),
        "capacity": lambda: {"capacity": parts.capacity_and_time(dataset, config, out, **how)},
        "critical samples": lambda: {"csr": parts.critical_samples(conditions, config, out,
                                                                   **how)},
        "regularizer sweep": lambda: {"sweep": parts.regularizer_sweep(conditions, config,
                                                                       out, **how)},
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
    tables["directions"] = directions(tables, epochs=epochs,
                                      capacity_epochs=config.capacity_epochs, seed=seed)
    return Result(STUDY, config.to_dict(), tables,
                  summarize(tables, dataset, config, notes, seconds,
                            time.perf_counter() - started))


def summarize(tables: dict[str, pd.DataFrame], dataset, config: NoiseConfig, notes: list[str],
              seconds: dict[str, float], total: float) -> dict[str, Any]:
    """The summary: data, LASS settings, time, notes, the directions and headline numbers
    (``learned_last``: per partial-noise condition, how much later its corrupted examples
    are learned than its clean ones, with the interval the report's finding quotes)."""
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
        "learned_last": learned_last(tables["examples"], config.population.epochs),
        "dynamics": {name: {key: float(value) for key, value in row.items()}
                     for name, row in dyn.iterrows()},
    }


def headline_lines(result: Result) -> list[str]:
    """What ``memlab noise`` prints: notes, each direction's verdict, the time."""
    lines = [f"note: {note}" for note in result.summary["notes"]]
    lines += [f"[{row.verdict}] {row.finding}: {row.measured}"
              for row in result.tables["directions"].itertuples()]
    return lines + [f"{result.summary['seconds']:.0f} s"]
