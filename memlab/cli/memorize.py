"""``memlab memorize``: which training examples does the network memorize, which test
predictions hang on one training example, and does that memorization pay for itself?

With no arguments: the README's main job, 1,000 MLPs on 70% subsets of MNIST-1D."""

from __future__ import annotations

import argparse
import json
import sys

# The defaults of memlab.studies.memorize, written out so that building the command line
# stays free of pandas/scipy imports (tests/test_memorization_cli.py checks they agree).
RECIPE = dict(n_models=1000, subset_fraction=0.7, epochs=30, batch_size=64, optimizer="adam",
              lr=0.005)
PRECISION, MEMORIZED, HIGH_INFLUENCE, NEAR_DUPLICATE, REMOVAL_SEEDS = 0.1, 0.25, 0.15, 0.95, 8
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "memorize", help="memorization and influence scores, C-scores, removal study, report",
        description="Train (or resume) a population of subset-trained models and estimate "
                    "every training example's memorization score and every train/test "
                    "influence (Feldman & Zhang 2020), with standard errors, split-half "
                    "reliability and a self-contained HTML report. Re-running resumes.")
    from memlab.cli.train import add_population_arguments

    add_population_arguments(
        parser, models=RECIPE["n_models"], subset=RECIPE["subset_fraction"],
        epochs=RECIPE["epochs"], batch_size=RECIPE["batch_size"],
        optimizer=RECIPE["optimizer"], lr=RECIPE["lr"])
    parser.add_argument("--out", default="runs/memorize",
                        help="run directory; results are written into it (default: %(default)s)")
    group = parser.add_argument_group("memorization")
    group.add_argument("--precision", type=float, default=PRECISION,
                       help="wanted RMS error of every score; warns when --models cannot "
                            "guarantee it (default: %(default)s)")
    group.add_argument("--threshold", type=float, default=MEMORIZED,
                       help="mem at or above which an example counts as memorized "
                            "(default: %(default)s)")
    group.add_argument("--infl-min", type=float, default=HIGH_INFLUENCE,
                       help="influence of a high-influence pair (default: %(default)s)")
    group.add_argument("--any-label", action="store_true",
                       help="keep high-influence pairs whose labels differ")
    group.add_argument("--duplicate-threshold", type=float, default=NEAR_DUPLICATE,
                       help="cosine similarity (centred inputs) flagging a near-duplicate "
                            "train/test pair (default: %(default)s)")
    group.add_argument("--removal", action="store_true",
                       help="also run the marginal-utility study: retrain without the "
                            "memorized examples and without as many random ones")
    group.add_argument("--removal-seeds", type=int, default=REMOVAL_SEEDS,
                       help="models per arm of the removal study (default: %(default)s)")
    group.add_argument("--cscores", action="store_true",
                       help="also train one population per subset ratio for C-scores")
    group.add_argument("--cscore-models", type=int, default=64,
                       help="models per subset ratio of the C-score sweep (default: %(default)s)")
    group.add_argument("--cscore-ratios", default=",".join(f"{r:g}" for r in RATIOS),
                       help="subset ratios of the C-score sweep (default: %(default)s)")
    group.add_argument("--figures", default=None, metavar="DIR",
                       help="also save the report's figures as PNG files in DIR")
    parser.set_defaults(func=run)


def _ratios(text: str) -> list[float]:
    from memlab.errors import ConfigError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--cscore-ratios must be comma-separated numbers, got {text!r}") \
            from None


def run(args: argparse.Namespace) -> int:
    from memlab import validate
    from memlab.cli.train import train_from_args
    from memlab.errors import ConfigError
    from memlab.measures.memorization import precision_advice
    from memlab.studies.memorize import analyze

    validate.population_options(args)
    validate.real(args.precision, "--precision", minimum=0, open_low=True)
    validate.fraction(args.threshold, "--threshold", allow_zero=True, allow_one=True)
    validate.real(args.infl_min, "--infl-min", minimum=0, maximum=1)
    validate.fraction(args.duplicate_threshold, "--duplicate-threshold", allow_zero=True,
                      allow_one=True)
    if args.removal and args.removal_seeds < 2:
        raise ConfigError(f"--removal-seeds must be at least 2, got {args.removal_seeds}")
    ratios = _ratios(args.cscore_ratios)
    if 0 < args.subset < 1:
        advice = precision_advice(args.models, args.subset, args.precision)
        if advice:
            print(f"memlab: warning: {advice}", file=sys.stderr)
    population = train_from_args(args, args.out)
    result = analyze(
        population, mem_min=args.threshold, infl_min=args.infl_min,
        same_label=not args.any_label, duplicate_threshold=args.duplicate_threshold,
        precision=args.precision, removal=args.removal, removal_seeds=args.removal_seeds,
        cscores=args.cscores, cscore_models=args.cscore_models, cscore_ratios=ratios,
        device=args.device, n_workers=args.workers, progress=not args.quiet)
    s = result.summary
    keys = ["n_models", "test_acc_mean", "train_acc_in_mean", "memorized_fraction",
            "se_median", "error_bound", "reliability", "n_pairs", "n_pairs_near_duplicate",
            "noise_auroc", "spearman_mem_cscore"]
    print(json.dumps({k: s[k] for k in keys if k in s}, indent=2))
    if result.removal is not None:
        table = result.removal.summary()
        print(table[table.metric != "train_acc"].to_string(index=False, float_format="%.4f"))
    if args.figures:
        for figure in result.save_figures(args.figures):
            print(f"figure:    {figure}")
    path = result.run.path
    print(f"scores:    {path / 'memorization.parquet'}\n"
          f"influence: {path / 'influence.npy'} (+ influence_se.npy)\n"
          f"pairs:     {path / 'pairs.csv'}\n"
          f"report:    {path / 'report.html'}")
    return 0
