"""``memlab memorize``: which training examples does the network memorize, which test
predictions hang on one training example, and does that memorization pay for itself?

With no arguments: the README's demo, 1,000 MLPs on 70% subsets of MNIST-1D
(``MemorizeConfig()``). Options -> ``MemorizeConfig`` -> ``memlab.studies.memorize.run``.
Without ``--quick`` / ``--full`` the preset is the demo: mnist1d, 1,000 models, subsets of
0.7, 30 epochs, batch 64, Adam at lr 0.005.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from memlab.measures.cscores import RATIOS
from memlab.measures.memorization import HIGH_INFLUENCE, MEMORIZED, NEAR_DUPLICATE

# Options whose default comes from the chosen preset (--quick / --full / none): their
# parser default is None, filled in from the preset's config before the config is built.
PRESET_OPTIONS = ("data", "label_noise", "models", "subset", "epochs", "batch_size",
                  "optimizer", "lr")
# The study's own defaults (memlab.studies.memorize.study), kept here as numbers so that
# building the parser stays free of pandas/scipy imports; a test checks they agree.
TARGET_SE, REMOVAL_SEEDS, CSCORE_MODELS = 0.1, 8, 64


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "memorize", help="memorization and influence scores, C-scores, removal study, report",
        description="Train (or resume) a population of subset-trained models and estimate "
                    "every training example's memorization score and every train/test "
                    "influence (Feldman & Zhang 2020), with standard errors, split-half "
                    "reliability and a self-contained HTML report. Without --quick/--full: "
                    "1,000 MLPs on 70% subsets of MNIST-1D, 30 epochs of Adam (lr 0.005, "
                    "batch 64). Re-running resumes.")
    from memlab.cli.train import add_population_arguments

    add_population_arguments(parser)
    parser.set_defaults(**{name: None for name in PRESET_OPTIONS})
    for action in parser._actions:  # their defaults come from the preset
        if action.dest in PRESET_OPTIONS:
            action.help = ((action.help or "").replace(" (default: %(default)s)", "")
                           + " (default: the preset's)")
    parser.add_argument("--n-train", type=int, default=None,
                        help="train on a random subset of this many training examples")
    parser.add_argument("--out", default="runs/memorize",
                        help="output directory; the population is trained in OUT/population "
                             "(default: %(default)s); running the same command again resumes")
    presets = parser.add_mutually_exclusive_group()
    presets.add_argument("--quick", action="store_true",
                         help="the quick preset: 32 MLPs on digits with 10%% flipped labels "
                              "(a smoke test, under a minute)")
    presets.add_argument("--full", action="store_true",
                         help="the full preset: the demo with the removal study")
    group = parser.add_argument_group("memorization")
    group.add_argument("--target-se", type=float, default=TARGET_SE,
                       help="wanted RMS error (standard error) of every score; warns when "
                            "--models cannot guarantee it (default: %(default)s)")
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
    group.add_argument("--cscore-models", type=int, default=CSCORE_MODELS,
                       help="models per subset ratio of the C-score sweep (default: %(default)s)")
    group.add_argument("--cscore-ratios", default=",".join(f"{r:g}" for r in RATIOS),
                       help="subset ratios of the C-score sweep (default: %(default)s)")
    group.add_argument("--figures", default=None, metavar="DIR",
                       help="also save the report's figures as PNG files in DIR")
    parser.set_defaults(func=run)


def _ratios(text: str) -> tuple[float, ...]:
    from memlab.errors import ConfigError

    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--cscore-ratios must be comma-separated numbers, got {text!r}") \
            from None


def config_from_args(args: argparse.Namespace):
    """The ``MemorizeConfig`` the options describe (validated; nothing is trained)."""
    from memlab import validate
    from memlab.cli.train import config_from_args as population_from_args
    from memlab.errors import ConfigError
    from memlab.studies.memorize import MemorizeConfig

    preset = (MemorizeConfig.quick() if args.quick else MemorizeConfig.full() if args.full
              else MemorizeConfig())
    p = preset.population
    filled = {"data": preset.data, "label_noise": preset.label_noise, "models": p.n_models,
              "subset": p.subset_fraction, "epochs": p.epochs, "batch_size": p.batch_size,
              "optimizer": p.optimizer, "lr": p.lr}
    for name, value in filled.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.hidden is None and "hidden" in p.model_kwargs and args.model == p.model:
        args.hidden = ",".join(str(w) for w in p.model_kwargs["hidden"])
    if args.membership is not None:
        raise ConfigError("memorize draws random subsets: --membership is for memlab train")
    validate.real(args.target_se, "--target-se", minimum=0, open_low=True)
    validate.fraction(args.threshold, "--threshold", allow_zero=True, allow_one=True)
    validate.real(args.infl_min, "--infl-min", minimum=0, maximum=1)
    validate.fraction(args.duplicate_threshold, "--duplicate-threshold", allow_zero=True,
                      allow_one=True)
    if args.n_train is not None:
        validate.integer(args.n_train, "--n-train", minimum=2)
    if args.removal and args.removal_seeds < 2:
        raise ConfigError(f"--removal-seeds must be at least 2, got {args.removal_seeds}")
    validate.integer(args.cscore_models, "--cscore-models", minimum=1)
    dataset = None
    if args.chunk_size == "auto":  # sized from the data and the device
        from memlab.data import load

        dataset = load(args.data)
    population = population_from_args(args, dataset)
    config = MemorizeConfig(
        data=args.data, n_train=args.n_train, label_noise=args.label_noise,
        population=population, mem_min=args.threshold, infl_min=args.infl_min,
        same_label=not args.any_label, duplicate_threshold=args.duplicate_threshold,
        target_se=args.target_se, removal=args.removal or preset.removal,
        removal_seeds=args.removal_seeds, cscores=args.cscores,
        cscore_models=args.cscore_models, cscore_ratios=_ratios(args.cscore_ratios),
        device=args.device, n_workers=args.workers)
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    from memlab import validate
    from memlab.cli.common import finish
    from memlab.studies import memorize

    config = config_from_args(args)
    validate.output_dir(args.out)
    if args.figures is not None:
        validate.output_dir(args.figures, "--figures")  # before any work is done
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", memorize.TargetSEWarning)
        result = memorize.run(config, args.out, progress=not args.quiet,
                              executor=args.executor, ray_address=args.ray_address)
    for warning in caught:
        if issubclass(warning.category, memorize.TargetSEWarning):
            print(f"memlab: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
    s = result.summary
    keys = ["n_models", "test_acc_mean", "train_acc_in_mean", "memorized_fraction",
            "se_median", "error_bound", "reliability", "n_pairs", "n_pairs_near_duplicate",
            "noise_auroc", "spearman_mem_cscore"]
    lines = json.dumps({k: s[k] for k in keys if k in s}, indent=2).splitlines()
    if "removal_summary" in result.tables:
        table = result.tables["removal_summary"]
        lines += table[table.metric != "train_acc"].to_string(
            index=False, float_format="%.4f").splitlines()
    out = result.out
    lines += [f"scores:    {out / 'tables' / 'scores.parquet'}",
              f"influence: {out / 'influence.npy'} (+ influence_se.npy)",
              f"pairs:     {out / 'tables' / 'pairs.parquet'}",
              f"run:       {s['run_dir']}"]
    return finish(result, lines, args, prefix="memorization_")
