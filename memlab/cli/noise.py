"""``memlab noise-study``: real data vs noise (Arpit et al. 2017) as one ready-to-run study."""

from __future__ import annotations

import argparse
from pathlib import Path

from memlab.errors import ConfigError


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

    changes = {"seed": args.seed, "workers": args.workers}
    for option, key in (("n_train", "n_train"), ("seeds", "seeds"), ("epochs", "epochs"),
                        ("lass_scale", "lass_scale")):
        value = getattr(args, option)
        if value is not None:
            if value <= 0:
                raise ConfigError(f"--{option.replace('_', '-')} must be positive, got {value}")
            changes[key] = value
    if args.epochs is not None:
        changes["sweep_epochs"] = args.epochs
    preset = NoiseStudyConfig.quick if args.quick else NoiseStudyConfig.full
    config = preset(args.data, **changes)
    n_train = load(args.data).n_train
    n_used = min(config.n_train or n_train, n_train)
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
