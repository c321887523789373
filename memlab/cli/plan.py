"""``memlab plan``: disk, memory and time of a population run, before it starts."""

from __future__ import annotations

import argparse

import numpy as np

from memlab.cli.train import add_population_arguments, config_from_args
from memlab.data import Dataset, load
from memlab.errors import ConfigError
from memlab.population.plan import plan_run


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan", help="estimate disk, RAM and time of a population run before starting it",
        description="Estimate a run's disk, RAM and time. Give --data, or the shape of a "
                    "dataset you don't have here (--shape), e.g. CIFAR-10: --shape "
                    "50000,10000,3x32x32,10.")
    add_population_arguments(parser)
    parser.add_argument("--shape", default=None, metavar="N_TRAIN,N_TEST,INPUT,CLASSES",
                        help="plan for a dataset of this shape instead of --data "
                             "(INPUT like 3x32x32)")
    parser.add_argument("--gflops", type=float, default=None,
                        help="sustained GFLOP/s of one worker (default: measured here)")
    parser.set_defaults(func=run)


def shaped_dataset(shape: str) -> Dataset:
    """A stand-in dataset with the given shape (zeros: only the sizes matter)."""
    try:
        n_train, n_test, input_shape, n_classes = shape.split(",")
        dims = tuple(int(d) for d in input_shape.split("x"))
        n_train, n_test, n_classes = int(n_train), int(n_test), int(n_classes)
    except ValueError:
        raise ConfigError(f"--shape must look like 50000,10000,3x32x32,10, got {shape!r}") from None
    return Dataset(name=f"shape {shape}", x_train=np.zeros((n_train, *dims), np.float32),
                   y_train=np.zeros(n_train, np.int64), x_test=np.zeros((n_test, *dims),
                   np.float32), y_test=np.zeros(n_test, np.int64),
                   class_names=[str(c) for c in range(n_classes)])


def run(args: argparse.Namespace) -> int:
    dataset = shaped_dataset(args.shape) if args.shape else load(args.data)
    config = config_from_args(args, dataset)
    workers = args.workers or 1
    plan = plan_run(dataset, config, workers=workers, gflops_per_worker=args.gflops)
    print(f"{dataset.name}: {dataset.n_train:,} train / {dataset.n_test:,} test, input "
          f"{dataset.input_shape}, model {config.model}, {config.epochs} epochs, subsets of "
          f"{config.subset_size(dataset.n_train):,}")
    print(plan.describe())
    return 0
