"""``memlab noise-study``: real data vs noise (Arpit et al. 2017) as one ready-to-run study."""

from __future__ import annotations

import argparse
from pathlib import Path

from memlab import validate


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "noise-study", help="real data vs noise: learning order, critical samples, regularizers",
        description="Train the same network on real data, random labels (randY), random "
                    "inputs (randX) and partial label noise, over many seeds, and measure "
                    "learning order, one-epoch difficulty, capacity/time, critical sample "
                    "ratio and a regularizer sweep (Arpit et al. 2017). Writes Parquet tables "
                    "and report.html to --out; re-running resumes the population runs.")
    parser.add_argument("--data", default="mnist1d",
                        help="mnist1d | digits | mnist | path/to/data.npz (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/noise-study"),
                        help="output directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="the small preset: 1,000 training examples, 16 seeds, 60 epochs "
                             "(minutes on a laptop CPU)")
    parser.add_argument("--n-train", type=int, default=None,
                        help="training examples to use (default: 1000 with --quick, else all)")
    parser.add_argument("--seeds", type=int, default=None, help="models per condition")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per training run")
    parser.add_argument("--lass-scale", type=float, default=None,
                        help="multiply the paper's LASS α, β, r (rescaled to the data's "
                             "range) by this (default 1)")
    parser.add_argument("--figures", type=Path, default=None,
                        help="also write each figure as DIR/noise_*.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None,
                        help="CPU worker processes for the population runs (default: cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memlab.data import load
    from memlab.studies.noise import NoiseStudyConfig, run_noise_study

    changes = check_options(args)
    preset = NoiseStudyConfig.quick if args.quick else NoiseStudyConfig.full
    config = preset(args.data, **changes)
    n_train = load(args.data).n_train
    n_used = min(config.n_train or n_train, n_train)
    # Every seed's model keeps per-epoch records (correctness + loss, 3 bytes) of every
    # training example in the learning-dynamics part, for each of its conditions.
    validate.fits_in_memory(3.0 * config.seeds * (config.epochs + 1) * n_used
                            * (3 + len(config.noise_fractions)),
                            f"--seeds {config.seeds} x --epochs {config.epochs}",
                            "give fewer seeds or epochs")
    print(f"noise study on {args.data} ({n_used} training examples): expected about "
          f"{config.expected_minutes(n_used, n_train):.0f} min on 2 free CPU cores")
    result = run_noise_study(config, args.out, progress=not args.quiet,
                             figures_dir=args.figures)
    for note in result.summary["notes"]:
        print(f"note: {note}")
    with_verdict = result.tables["directions"]
    for _, row in with_verdict.iterrows():
        mark = "yes" if row.reproduced else "NO "
        print(f"[{mark}] {row.finding}: {row.measured}")
    print(f"{result.summary['seconds']:.0f} s; tables in {args.out / 'tables'}, "
          f"report {args.out / 'report.html'}")
    return 0


def check_options(args: argparse.Namespace) -> dict:
    """Every option typed, finite and in range before any work; returns the changes to
    the preset."""
    validate.output_dir(args.out)
    if args.figures is not None:
        validate.output_dir(args.figures, "--figures")
    changes = {"seed": validate.seed(args.seed, "--seed"),
               "workers": validate.workers(args.workers)}
    for option in ("n_train", "seeds", "epochs"):
        value = getattr(args, option)
        if value is not None:
            changes[option] = validate.integer(value, f"--{option.replace('_', '-')}",
                                               minimum=1)
    if args.lass_scale is not None:
        changes["lass_scale"] = validate.real(args.lass_scale, "--lass-scale", minimum=0,
                                              open_low=True)
    if args.epochs is not None:
        changes["sweep_epochs"] = args.epochs
    return changes
