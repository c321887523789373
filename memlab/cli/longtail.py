"""``memlab longtail``: why memorization pays on long-tailed data (Feldman 2020)."""

from __future__ import annotations

import argparse
from pathlib import Path

from memlab import validate


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "longtail", help="long-tail laboratory: the test-accuracy cost of not memorizing",
        description="Draw long-tailed mixtures of subpopulations (Zipf priors and a uniform "
                    "no-tail control), train one population of MLPs per memorization-"
                    "limiting knob (weight decay, early stopping, dropout, label smoothing, "
                    "a small model), and measure memorization and test accuracy by how "
                    "often each subpopulation was seen, beside Feldman's τ₁ estimate of the "
                    "cost of each unfitted singleton. Writes Parquet tables, summary.json "
                    "and report.html to --out; re-running resumes the populations.")
    parser.add_argument("--out", type=Path, default=Path("runs/longtail"),
                        help="output directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="the small preset: Zipf exponents 0.5, 1, 1.5 and the control, "
                             "one strength per knob, 96 models per population (minutes on a "
                             "laptop CPU)")
    parser.add_argument("--exponents", type=float, nargs="+", default=None,
                        help="Zipf exponents s (default: 0.5 1 1.5 with --quick, "
                             "else 0.5 0.75 1 1.25 1.5 2)")
    parser.add_argument("--models", type=int, default=None,
                        help="models per population (default: 96 with --quick, else 512)")
    parser.add_argument("--grid", action="store_true",
                        help="sweep each knob over several strengths (the full preset does; "
                             "with --quick: 14 knobs instead of 5)")
    parser.add_argument("--figures", type=Path, default=None,
                        help="also write each figure as DIR/longtail_*.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None,
                        help="CPU worker processes for the populations (default: one per core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memlab.studies.longtail import LongTailStudyConfig, run_longtail_study, strength_grid

    validate.output_dir(args.out)
    if args.figures is not None:
        validate.output_dir(args.figures, "--figures")
    changes: dict = {"seed": validate.seed(args.seed, "--seed"),
                     "workers": validate.workers(args.workers)}
    if args.models is not None:
        changes["n_models"] = validate.integer(
            args.models, "--models", minimum=4,
            fix="IN/OUT estimates need models on both sides of every example")
    if args.exponents is not None:
        changes["exponents"] = tuple(
            validate.real(s, "each --exponents value", minimum=0, open_low=True,
                          fix="Zipf exponents such as 0.5 1 1.5 (the uniform control is "
                              "always included)") for s in args.exponents)
    if args.grid:
        changes["knobs"] = strength_grid()
    preset = LongTailStudyConfig.quick if args.quick else LongTailStudyConfig.full
    config = preset(**changes)
    # Each population's membership mask and final records (11 bytes per model and
    # example, train and test) exist at once while it is analysed.
    validate.fits_in_memory(12.0 * config.n_models * (config.n_train + config.n_test),
                            f"--models {config.n_models}", "give fewer models")
    print(f"longtail study: {len(config.exponents) + 1} priors x {len(config.knobs) + 1} "
          f"populations of {config.n_models} models; expected about "
          f"{config.expected_minutes():.0f} min on 2 free CPU cores")
    result = run_longtail_study(config, args.out, progress=not args.quiet,
                                figures_dir=args.figures)
    for _, row in result.tables["findings"].iterrows():
        mark = "yes" if row.holds else "NO "
        print(f"[{mark}] {row.finding}: {row.measured}")
    print(f"{result.summary['seconds']:.0f} s; tables in {args.out / 'tables'}, "
          f"report {args.out / 'report.html'}")
    return 0
