"""``memlab train``: train (or resume) a population and write its run directory.

Its options are :class:`~memlab.studies.base.PopulationStudyConfig`'s (the data options
and the whole recipe), generated from the fields as every study command's are, plus
``--out`` and the execution options."""

from __future__ import annotations

import argparse
import json

from memlab.cli.study import add_config_flags, add_execution_flags, apply_flags
from memlab.studies.base import PopulationStudyConfig


def add_population_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The data and recipe options (train, plan), and how to compute (the group is
    returned)."""
    add_config_flags(parser, PopulationStudyConfig, "data")
    return add_execution_flags(parser)


def config_from_args(args: argparse.Namespace) -> PopulationStudyConfig:
    """The data and recipe the options describe (``--chunk-size auto`` sized for
    ``--device``)."""
    return apply_flags(PopulationStudyConfig(), args)


def train_from_args(args: argparse.Namespace, out: str):
    from memlab import validate
    from memlab.cli.study import execution_from_args
    from memlab.population import train_population
    from memlab.studies.base import load_membership, training_data

    validate.output_dir(out)
    shard = validate.shard(getattr(args, "shard", None), "--shard")
    config = config_from_args(args)
    execution = execution_from_args(args)
    dataset = training_data(config)
    validate.fits_in_memory(config.population.n_total * dataset.n_train,
                            "the membership mask", "lower --models")
    return train_population(dataset, config.recipe(),
                            membership=load_membership(config.membership), out=out,
                            shard=shard, **execution.training())


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train (or resume) a population of subset-trained models",
        description="Train a population of models, each on its own random subset, and write "
                    "every record to a run directory. Re-running resumes.")
    how = add_population_arguments(parser)
    how.add_argument("--shard", default=None, metavar="i/N",
                     help="train only shard i of N of the run's chunks, while the other "
                          "shards run as other processes into the same --out (a Slurm job "
                          "array: --shard $SLURM_ARRAY_TASK_ID/N); the last to finish "
                          "builds the records (or: memlab consolidate RUN)")
    parser.add_argument("--out", default="runs/train", help="run directory (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = train_from_args(args, args.out)
    if result is None:  # a shard, and other shards' chunks are still to come
        return 0
    print(json.dumps(result.manifest["summary"], indent=2))
    print(f"run directory: {result.path}")
    return 0
