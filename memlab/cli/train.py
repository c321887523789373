"""``memlab train``: train (or resume) a population and write its run directory."""

from __future__ import annotations

import argparse
import dataclasses
import json

from memlab.data import load
from memlab.errors import ConfigError
from memlab.population.config import COMPUTE_DTYPES, SCHEDULES, PopulationConfig


def add_population_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """Options shared by every command that trains a population (train, memorize, ...)."""
    d = {"data": "mnist1d", "model": "mlp", "models": 100, "subset": 0.5, "epochs": 30,
         "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "chunk_size": 32, **defaults}
    group = parser.add_argument_group("population")
    group.add_argument("--data", default=d["data"],
                       help="mnist1d | digits | mnist | path/to/data.npz (default: %(default)s)")
    group.add_argument("--label-noise", type=float, default=0.0, metavar="FRACTION",
                       help="flip the labels of this fraction of training examples first")
    group.add_argument("--model", default=d["model"], metavar="NAME",
                       help="mlp | cnn1d | cnn2d | a registered name | package.module:factory "
                            "(a function (input_shape, n_classes, **kwargs) -> nn.Module)")
    group.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                       help="keyword argument for the model (VALUE as JSON), repeatable")
    group.add_argument("--hidden", default=None, metavar="W1,W2",
                       help="MLP hidden widths, comma-separated (default 100,100)")
    group.add_argument("--task", default="classification",
                       choices=["classification", "binary"],
                       help="softmax over classes, or one logit with labels 0/1")
    group.add_argument("--models", type=int, default=d["models"], help="number of models")
    group.add_argument("--subset", type=float, default=d["subset"],
                       help="fraction of the training set each model sees, in (0, 1)")
    group.add_argument("--epochs", type=int, default=d["epochs"])
    group.add_argument("--batch-size", type=int, default=d["batch_size"])
    group.add_argument("--optimizer", default=d["optimizer"], choices=["sgd", "adam", "adamw"])
    group.add_argument("--lr", type=float, default=d["lr"])
    group.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    group.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    group.add_argument("--weight-decay", type=float, default=0.0)
    group.add_argument("--no-decay-bias-norm", action="store_true",
                       help="no weight decay on biases and normalization weights")
    group.add_argument("--schedule", default="constant", choices=list(SCHEDULES),
                       help="learning-rate schedule, per step (default: %(default)s)")
    group.add_argument("--warmup-epochs", type=float, default=0.0)
    group.add_argument("--lr-step-epochs", type=int, default=0,
                       help="for --schedule step: epochs between drops by --lr-gamma")
    group.add_argument("--lr-gamma", type=float, default=0.1)
    group.add_argument("--clip-grad-norm", type=float, default=0.0,
                       help="clip each model's gradient norm (0 = off)")
    group.add_argument("--label-smoothing", type=float, default=0.0)
    group.add_argument("--augment", action="append", default=[], metavar="SPEC",
                       help="crop:P | flip | shift:S | package.module:function, repeatable")
    group.add_argument("--input-noise", type=float, default=0.0,
                       help="std of Gaussian noise added to training inputs")
    group.add_argument("--input-dropout", type=float, default=0.0,
                       help="probability of zeroing each training input feature")
    group.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="vary a setting across the population (values as JSON), e.g. "
                            "weight_decay=0,1e-4,1e-3; repeatable (a grid)")
    group.add_argument("--membership", default=None, metavar="MASK.npy",
                       help="explicit (n_models, n_train) bool membership mask")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--record-epochs", action="store_true",
                       help="also record every example's correctness and loss after every epoch")
    group.add_argument("--no-weights", action="store_true", help="do not save final weights")
    group.add_argument("--compact-records", action="store_true",
                       help="store correctness as bits and margins/losses as float16 "
                            "(~6 instead of 11 bytes per model and example)")
    group.add_argument("--chunk-size", type=_chunk_size, default=d["chunk_size"],
                       help="models trained together (memory grows with it), or 'auto': "
                            "32 on a CPU, as many as fit in a GPU's free memory")
    group.add_argument("--device", default="cpu", help="cpu | cuda")
    group.add_argument("--compute-dtype", default="float32", metavar="DTYPE",
                       help="precision of the training step's matrix products: float32 | "
                            "bfloat16 (float32 master weights; fast with AVX512-BF16/AMX or a "
                            "GPU) | float16 (GPUs without bfloat16, loss scaling) | auto (from "
                            "the device's capabilities) (default: %(default)s)")
    group.add_argument("--workers", type=int, default=None,
                       help="CPU worker processes (default: one per core)")
    group.add_argument("--executor", default="local", choices=["local", "ray"],
                       help="where chunks run: this machine, or Ray tasks (default: %(default)s)")
    group.add_argument("--ray-address", default=None,
                       help="Ray cluster to use ('auto', 'host:6379', 'ray://host:10001'); "
                            "default: start a local one")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _chunk_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a positive integer or 'auto', not {text!r}") from None


def config_from_args(args: argparse.Namespace, dataset,
                     device_available: bool = True) -> PopulationConfig:
    """The population settings given on the command line; ``--chunk-size auto`` is sized
    for ``--device`` by plan.suggest_chunk_size."""
    from memlab import validate
    from memlab.population.plan import suggest_chunk_size

    validate.population_options(args, device_available=device_available)
    compute_dtype = validate.choice(getattr(args, "compute_dtype", "float32"),
                                    "--compute-dtype", COMPUTE_DTYPES)
    model_kwargs = {}
    if args.hidden:
        try:
            model_kwargs["hidden"] = [int(width) for width in args.hidden.split(",")]
        except ValueError:
            raise ConfigError(f"--hidden takes comma-separated widths like 100,100, "
                              f"got {args.hidden!r}") from None
    for option in getattr(args, "model_option", []):
        key, value = _key_value(option, "--model-option")
        model_kwargs[key] = value[0] if len(value) == 1 else value
    sweep = {}
    for option in getattr(args, "sweep", []):
        key, values = _key_value(option, "--sweep")
        sweep[key] = values
    auto = args.chunk_size == "auto"
    config = PopulationConfig(
        model=args.model, model_kwargs=model_kwargs, n_models=args.models,
        subset_fraction=args.subset, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
        weight_decay=args.weight_decay, decay_bias_and_norm=not args.no_decay_bias_norm,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        lr_step_epochs=args.lr_step_epochs, lr_gamma=args.lr_gamma,
        clip_grad_norm=args.clip_grad_norm, label_smoothing=args.label_smoothing,
        augment=tuple(args.augment), input_noise=args.input_noise,
        input_dropout=args.input_dropout, sweep=sweep, task=args.task,
        subsets="explicit" if args.membership else "random", seed=args.seed,
        record_epochs=args.record_epochs, save_weights=not args.no_weights,
        chunk_size=32 if auto else args.chunk_size, compact_records=args.compact_records,
        compute_dtype=compute_dtype)
    if auto:
        config = dataclasses.replace(
            config, chunk_size=suggest_chunk_size(dataset, config, args.device))
    return config


def _key_value(option: str, flag: str) -> tuple[str, list]:
    """``KEY=V1,V2`` -> (KEY, [V1, V2]) with each value parsed as JSON (else a string)."""
    key, sep, text = option.partition("=")
    if not sep or not key or not text:
        raise ConfigError(f"{flag} takes KEY=VALUE[,VALUE...], got {option!r}")
    values = []
    for part in _split_top_level(text):
        try:
            values.append(json.loads(part))
        except json.JSONDecodeError:
            values.append(part)
    return key.replace("-", "_"), values


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: 'hidden=[50,50],[100,100]' -> two lists."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def load_membership(path: str | None):
    if path is None:
        return None
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read --membership {path} as a .npy bool array ({error})"
                          ) from None


def train_from_args(args: argparse.Namespace, out: str):
    from memlab import validate
    from memlab.population import train_population

    validate.output_dir(out)
    dataset = load(args.data)
    if args.label_noise:
        dataset = dataset.with_label_noise(args.label_noise, seed=args.seed)
    config = config_from_args(args, dataset)
    validate.fits_in_memory(config.n_total * dataset.n_train, "the membership mask",
                            "lower --models")
    return train_population(
        dataset, config, membership=load_membership(getattr(args, "membership", None)),
        out=out, device=args.device, n_workers=args.workers, executor=args.executor,
        ray_address=args.ray_address, progress=not args.quiet,
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train (or resume) a population of subset-trained models",
        description="Train a population of models, each on its own random subset, and write "
                    "every record to a run directory. Re-running resumes.")
    add_population_arguments(parser)
    parser.add_argument("--out", default="runs/train", help="run directory (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = train_from_args(args, args.out)
    print(json.dumps(result.manifest["summary"], indent=2))
    print(f"run directory: {result.path}")
    return 0
