"""One memlab population trained as a Slurm job array from Python, with submitit.

Each array job trains shard i of N into the same run directory (the cluster's shared file
system); the last to finish consolidates, and ``consolidate`` here checks the whole run.
``python examples/submitit_shards.py --local`` runs the same jobs as local processes
(submitit's debugging executor), as the test suite does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import submitit

from memlab.data import load
from memlab.population import consolidate, train_population

SETTINGS = dict(n_models=4096, epochs=30, progress=False)


def train_shard(shard: int, n_shards: int, out: str, settings: dict) -> bool:
    """One array job: shard ``shard`` of ``n_shards``; whether it found the run complete
    (the last to finish consolidates it)."""
    run = train_population(load("mnist1d"), **settings, out=out, shard=(shard, n_shards))
    return run is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/population")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--local", action="store_true", help="local processes, not Slurm")
    parser.add_argument("--models", type=int, default=SETTINGS["n_models"])
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    args = parser.parse_args(argv)
    settings = {**SETTINGS, "n_models": args.models, "epochs": args.epochs}

    executor = submitit.AutoExecutor(folder=Path(args.out).with_suffix(".submitit"),
                                     cluster="local" if args.local else None)
    executor.update_parameters(timeout_min=240, cpus_per_task=4,
                               slurm_array_parallelism=args.shards)
    jobs = executor.map_array(train_shard, range(args.shards), [args.shards] * args.shards,
                              [args.out] * args.shards, [settings] * args.shards)
    finished = [job.result() for job in jobs]  # re-raises a failed job's error here
    print(f"{sum(finished)} of {args.shards} shards found the run complete:",
          consolidate(args.out))


if __name__ == "__main__":
    main()
