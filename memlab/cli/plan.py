"""``memlab plan``: disk, memory and time of a population run, before it starts.

It computes from shapes and never allocates them: ``--shape 1281167,50000,3x224x224,1000``
(ImageNet) plans in a second on a laptop."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from memlab import options, validate
from memlab.cli.study import apply_flags
from memlab.cli.train import add_population_arguments
from memlab.errors import ConfigError

if TYPE_CHECKING:  # imported where used: `memlab --help` must not import torch
    from memlab.population.plan import DataShape


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
                        help="sustained GFLOP/s of one worker on the target machine (e.g. a "
                             "GPU's) instead of measuring here; start-up is then assumed")
    parser.add_argument("--calibrate", action="store_true", default=True,
                        help="(the default) time this recipe here: a fresh process's "
                             "start-up and short runs of the model on random data of the "
                             "data's shape, by CPU time (a few seconds)")
    parser.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                        help="an instant estimate instead: FLOPs at assumed per-layer, "
                             "per-precision CPU rates and an assumed start-up")
    parser.add_argument("--pilot", default=None, metavar="RUN",
                        help="a finished small population: say how many models each "
                             "memorization estimator needs for --target-se (measured on "
                             "it), and plan the run of the pilot's recipe with that many "
                             "models (the automatic estimator's)")
    parser.add_argument("--trust-run", action="store_true",
                        help="with --pilot: the pilot may import the package.module its "
                             "manifest names as its model factory (to count its model); "
                             "only for a run you trust")
    parser.add_argument("--target-se", type=float, default=None, metavar="SE",
                        help="with --pilot: the wanted standard error of mem at 90%% of "
                             "the examples (default 0.05)")
    parser.set_defaults(func=run)


def pilot_plan(args: argparse.Namespace) -> tuple:
    """(data shape, recipe with the models the target needs) from the pilot run, after
    printing each estimator's count."""
    from memlab.measures import memorization as mz
    from memlab.population import open_run
    from memlab.population.plan import DataShape

    target = 0.05 if args.target_se is None else validate.real(
        args.target_se, "--target-se", minimum=0, open_low=True,
        fix="give the wanted standard error, e.g. --target-se 0.05")
    pilot = open_run(args.pilot, trust_code=args.trust_run)
    pilot.require_trust(purpose="plan its recipe (its model is built to count it)")
    mask = np.asarray(pilot.membership_mask)
    records = {name: np.asarray(pilot.records(name)) for name in
               ("train_correct", "train_margin") if name in pilot.record_names}
    choice = mz.choose_estimator(mask, records)
    print(f"pilot {pilot.path}: {pilot.n_models} models; automatic estimator: "
          f"{choice.estimator} ({choice.reason})")
    needed = {}
    for name in mz.ESTIMATORS:
        if name != "binary" and "train_margin" not in records:
            continue
        se = mz.estimate(mask, records, name).se
        needed[name] = mz.models_needed_for_se(se, pilot.n_models, target)
        print(f"  {name:14s} {needed[name]:>8,} models for se <= {target:g} at 90% of "
              "the examples")
    recipe = dataclasses.replace(pilot.config, n_models=max(needed[choice.estimator],
                                                            pilot.n_models))
    return DataShape.of(pilot.dataset), recipe


def parse_shape(text: str) -> DataShape:
    """``50000,10000,3x32x32,10`` -> DataShape(50000, 10000, (3, 32, 32), 10)."""
    from memlab.population.plan import DataShape

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


def plan_from_args(args: argparse.Namespace) -> tuple:
    """(data shape, population config, Plan) of the parsed ``memlab plan`` arguments."""
    from memlab.population.plan import DataShape, plan_run
    from memlab.studies.base import PopulationStudyConfig, training_data

    # The target machine may be another one: --device cuda plans without a GPU here.
    validate.device(args.device, "--device", available=False)
    workers = validate.workers(args.workers) or 1
    gflops = None if args.gflops is None else validate.real(
        args.gflops, "--gflops", minimum=0, open_low=True,
        fix="give the sustained GFLOP/s of one worker, e.g. --gflops 50")
    if args.trust_run and not args.pilot:
        raise ConfigError("--trust-run goes with --pilot RUN (the run whose code it trusts); "
                          "a model named with --model is imported as given")
    if args.target_se is not None and not args.pilot:
        raise ConfigError("--target-se needs --pilot RUN (the population whose errors it "
                          "extrapolates)")
    source = None  # the dataset a real run would load (its loading is timed)
    if args.pilot:
        recipe_flags = [flag.name for flag in options.flags(PopulationStudyConfig)
                        if flag.template is None and hasattr(args, flag.dest)]
        if recipe_flags or args.shape:
            raise ConfigError(f"--pilot plans the pilot run's own data and recipe; drop "
                              f"{(recipe_flags or ['--shape'])[0]}")
        data, config = pilot_plan(args)
    elif args.shape:  # a dataset that is not here: plan from its shape alone
        data = parse_shape(args.shape)
        config = apply_flags(PopulationStudyConfig(data=None), args, sizing_data=data)
    else:
        config = apply_flags(PopulationStudyConfig(), args)
        data = DataShape.of(training_data(config))
        source = config.data
    if not args.pilot:
        config = config.population
    plan = plan_run(data, config, workers=workers, gflops_per_worker=gflops,
                    calibrate=args.calibrate, data_source=source, device=args.device)
    return data, config, plan


def run(args: argparse.Namespace) -> int:
    data, config, plan = plan_from_args(args)
    print(f"{data.name}: {data.n_train:,} train / {data.n_test:,} test, input "
          f"{data.input_shape}, model {config.model}, {config.epochs} epochs, subsets of "
          f"{config.subset_size(data.n_train):,}")
    print(plan.describe())
    return 0


def train_cpu_seconds(flags: list[str], out: str) -> float:
    """CPU seconds (user + system, its children included) of a real ``memlab train
    FLAGS --workers 1 --out OUT`` in a fresh process: what tests/test_plan_accuracy.py
    holds a plan against."""
    import os
    import subprocess
    import sys

    import memlab

    root = os.path.dirname(os.path.dirname(os.path.abspath(memlab.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-m", "memlab", "train", *flags, "--workers", "1",
               "--quiet", "--out", out]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=env)
    _, status, usage = os.wait4(child.pid, 0)  # the child's own and its children's
    error = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {error[-500:]}")
    return usage.ru_utime + usage.ru_stime


def markdown_table(rows: list[dict]) -> str:
    lines = ["| case | flags | planned CPU-s (±) | of which start-up | measured CPU-s | "
             "planned / measured |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | `{r['flags']}` | {r['planned']:.1f} "
                     f"(±{100 * r['error']:.0f}%) | {r['startup']:.1f} | "
                     f"{r['measured']:.1f} | {r['ratio']:.2f} |")
    return "\n".join(lines)
