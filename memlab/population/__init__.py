"""Populations on disk: many models trained at once, each on its own random subset, kept
in a run directory that survives crashes.

    from memlab.data import load
    from memlab.population import open_run, train_population

    run = train_population(load("mnist1d"), n_models=2000, subset_fraction=0.7,
                           out="runs/pop")
    run.membership_mask          # (2000, 4000) bool
    run.records("test_correct")  # (2000, 1000) bool
    run = open_run("runs/pop")   # the same run later, memory-mapped

Calling ``train_population`` again with the same ``out`` resumes: finished chunks are kept,
the rest are trained, and the result equals an uninterrupted run.

Several processes can train one run, each its shard of the chunks (``shard="i/N"``, a
Slurm job array); the last to finish consolidates it (or ``consolidate(out)``).

Modules: ``train`` (the run lifecycle: create, lock, resume, repair, grow, progress),
``consolidate`` (chunks into records), ``shards`` (several processes, one run),
``run`` (``open_run`` -> ``Run``), ``store`` (the run-directory format),
``executor`` and ``ray_executor`` (chunks in worker processes or Ray tasks), ``plan``
(disk, memory and time before a run starts). The math of training K models at once, with
no files and no processes, is :mod:`memlab.engine`.
"""

from memlab.engine.config import PopulationConfig
from memlab.engine.task import TASKS
from memlab.population.consolidate import consolidate
from memlab.population.run import Run, open_run
from memlab.population.train import train_population

__all__ = ["PopulationConfig", "Run", "TASKS", "consolidate", "open_run", "train_population"]
