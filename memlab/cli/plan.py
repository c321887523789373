"""``memlab plan``: disk, memory and time of a population run, before it starts.

It computes from shapes and never allocates them: ``--shape 1281167,50000,3x224x224,1000``
(ImageNet) plans in a second on a laptop."""

from __future__ import annotations

import argparse

from memlab import validate
from memlab.cli.study import apply_flags
from memlab.cli.train import add_population_arguments
from memlab.errors import ConfigError
from memlab.population.plan import DataShape, plan_run


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
                        help="sustained GFLOP/s of one worker (default: an assumed CPU "
                             "core's; see --calibrate)")
    parser.add_argument("--calibrate", action="store_true",
                        help="measure one worker's GFLOP/s here first (a few seconds)")
    parser.set_defaults(func=run)


def parse_shape(text: str) -> DataShape:
    """``50000,10000,3x32x32,10`` -> DataShape(50000, 10000, (3, 32, 32), 10)."""
    parts = text.split(",")
    example = "50000,10000,3x32x32,10"
    if len(parts) != 4:
        raise ConfigError(f"--shape must look like {example} (train, test, input, classes), "
                          f"got {text!r}")
    try:
        n_train, n_test, n_classes = int(parts[0]), int(parts[1]), int(parts[3])
        dims = tuple(int(d) for d in parts[2].split("x"))
    except ValueError:
        raise ConfigError(f"--shape must look like {example}, got {text!r}") from None
    fix = f"--shape looks like {example}"
    validate.integer(n_train, "--shape's training examples", minimum=2, fix=fix)
    validate.integer(n_test, "--shape's test examples", minimum=1, fix=fix)
    validate.integer(n_classes, "--shape's classes", minimum=2, fix=fix)
    for d in dims:
        validate.integer(d, "--shape's input dimensions", minimum=1, fix=fix)
    return DataShape(n_train, n_test, dims, n_classes, name=f"shape {text}")


def run(args: argparse.Namespace) -> int:
    from memlab.studies.base import PopulationStudyConfig, training_data

    # The target machine may be another one: --device cuda plans without a GPU here.
    validate.device(args.device, "--device", available=False)
    workers = validate.workers(args.workers) or 1
    gflops = None if args.gflops is None else validate.real(
        args.gflops, "--gflops", minimum=0, open_low=True,
        fix="give the sustained GFLOP/s of one worker, e.g. --gflops 50")
    if args.shape:  # a dataset that is not here: plan from its shape alone
        data = parse_shape(args.shape)
        config = apply_flags(PopulationStudyConfig(data=None), args, sizing_data=data)
    else:
        config = apply_flags(PopulationStudyConfig(), args)
        data = DataShape.of(training_data(config))
    config = config.population
    plan = plan_run(data, config, workers=workers, gflops_per_worker=gflops,
                    calibrate=args.calibrate)
    print(f"{data.name}: {data.n_train:,} train / {data.n_test:,} test, input "
          f"{data.input_shape}, model {config.model}, {config.epochs} epochs, subsets of "
          f"{config.subset_size(data.n_train):,}")
    print(plan.describe())
    return 0
