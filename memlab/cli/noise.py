"""``memlab noise``: real data vs noise (Arpit et al. 2017; docs/science.md §3).

    memlab noise --data mnist1d --quick --out runs/noise
    memlab noise --data digits --quick --out runs/noise-digits --figures docs/figures

Results go to --out: summary.json, tables/*.parquet, report.html; the populations it trains
(under --out/populations) resume when the command is run again."""

from __future__ import annotations

import argparse

from memlab.cli.common import add_study_arguments, finish, preset


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "noise", help="real data vs noise: learning order, critical samples, regularizers",
        description="Train the same network on real data, random labels (randY), random "
                    "inputs (randX) and partial label noise, over many seeds, and measure "
                    "learning order, one-epoch difficulty, capacity/time, critical sample "
                    "ratio and a regularizer sweep (Arpit et al. 2017); each of the paper's "
                    "directions gets a verdict from its 95% interval.")
    add_study_arguments(parser, out="runs/noise")
    parser.add_argument("--data", default="mnist1d",
                        help="mnist1d | digits | mnist | path/to/data.npz (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=None,
                        help="training examples to use (default: 1000 with --quick, else all)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="models per condition in the learning-dynamics part")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of the dynamics, critical-sample and regularizer parts")
    parser.add_argument("--lass-scale", type=float, default=None,
                        help="multiply the paper's LASS α, β, r (rescaled to the data's "
                             "range) by this (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memlab import validate
    from memlab.data import load
    from memlab.studies import noise
    from memlab.studies.noise import NoiseConfig

    config = preset(NoiseConfig, args).replace(**options(args))
    n_train = load(config.data).n_train
    n_used = min(config.n_train or n_train, n_train)
    # Every seed's model keeps per-epoch records (correctness + loss, 3 bytes) of every
    # training example in the learning-dynamics part, for each of its conditions.
    validate.fits_in_memory(3.0 * config.seeds * (config.epochs + 1) * n_used
                            * (3 + len(config.noise_fractions)),
                            f"--seeds {config.seeds} x --epochs {config.epochs}",
                            "give fewer seeds or epochs")
    print(f"noise study on {config.data} ({n_used} training examples): expected about "
          f"{config.expected_minutes(n_used, n_train):.0f} min on 2 free CPU cores")
    result = noise.run(config, args.out, progress=not args.quiet)
    lines = [f"note: {note}" for note in result.summary["notes"]]
    lines += [f"[{row.verdict}] {row.finding}: {row.measured}"
              for row in result.tables["directions"].itertuples()]
    lines.append(f"{result.summary['seconds']:.0f} s")
    return finish(result, lines, args)


def options(args: argparse.Namespace) -> dict:
    """Every option typed, finite and in range before any work; returns the changes to
    the preset."""
    from memlab import validate

    validate.output_dir(args.out)
    changes = {"data": args.data}
    for option in ("n_train", "seeds", "epochs"):
        value = getattr(args, option)
        if value is not None:
            changes[option] = validate.integer(value, f"--{option.replace('_', '-')}",
                                               minimum=1)
    if args.lass_scale is not None:
        changes["lass_scale"] = validate.real(args.lass_scale, "--lass-scale", minimum=0,
                                              open_low=True)
    if args.epochs is not None:
        changes["sweep_epochs"] = changes["epochs"]
    return changes
