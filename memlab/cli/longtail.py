"""``memlab longtail``: why memorization pays on long-tailed data (Feldman 2020)."""

from __future__ import annotations

import argparse
from pathlib import Path

from memlab.cli.common import add_study_arguments, finish, preset


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "longtail", help="long-tail laboratory: the test-accuracy cost of not memorizing",
        description="Draw long-tailed mixtures of subpopulations (Zipf priors and a uniform "
                    "no-tail control), train one population of MLPs per memorization-"
                    "limiting knob (weight decay, early stopping, dropout, label smoothing, "
                    "a small model), and measure memorization and test accuracy by how "
                    "often each subpopulation was seen, beside Feldman's τ₁ estimate of the "
                    "cost of each unfitted singleton. Writes Parquet tables, summary.json "
                    "and report.html to --out; re-running resumes the populations. The "
                    "defaults are the --quick preset (Zipf 0.5, 1, 1.5 and the control, one "
                    "strength per knob, 96 models per population); --full: six exponents, "
                    "512 models, every knob at several strengths.")
    add_study_arguments(parser, out="runs/longtail")
    parser.add_argument("--exponents", type=float, nargs="+", default=None,
                        help="Zipf exponents s (default: the preset's; the uniform control "
                             "is always added)")
    parser.add_argument("--models", type=int, default=None,
                        help="models per population (default: 96, or 512 with --full)")
    parser.add_argument("--grid", action="store_true",
                        help="sweep each knob over several strengths (the full preset does; "
                             "otherwise 14 knobs instead of 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memlab import validate
    from memlab.studies import longtail

    validate.output_dir(args.out)
    changes: dict = {}
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
        changes["knobs"] = longtail.strength_grid()
    config = preset(longtail.LongtailConfig, args).replace(**changes)
    # Each population's membership mask and final records (11 bytes per model and
    # example, train and test) exist at once while it is analysed.
    validate.fits_in_memory(12.0 * config.n_models * (config.n_train + config.n_test),
                            f"--models {config.n_models}", "give fewer models")
    if not args.quiet:
        print(f"longtail study: {len(config.exponents) + 1} priors x {len(config.knobs) + 1} "
              f"populations of {config.n_models} models; expected about "
              f"{config.expected_minutes():.0f} min on 2 free CPU cores")
    result = longtail.run(config, Path(args.out), progress=not args.quiet)
    lines = [f"[{row.verdict}] {row.finding}: {row.measured}"
             for row in result.tables["findings"].itertuples()]
    lines.append(f"{result.summary['seconds']:.0f} s; tables in {result.out / 'tables'}")
    return finish(result, lines, args)  # --figures DIR: DIR/longtail_*.png
