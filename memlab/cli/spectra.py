"""``memlab spectra`` and ``memlab spectra-compare``: the data-free tools. (The study,
``memlab spectra-study``, is generated from its config: :mod:`memlab.studies.spectra_study`.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from memlab.cli.study import add_threads_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "spectra",
        help="data-free weight spectra: power-law α with tests, norm metrics, MP fit, phases",
        description=(
            "Analyze every weight matrix of a model from its weights alone (Martin & Mahoney "
            "heavy-tailed self-regularization), in the model's layer order. PATH_OR_NAME: a "
            ".safetensors/.pt file, a Hugging Face model directory, a memlab run directory "
            "(one row per layer per model, and a population report), 'minilm' or "
            "'efficientnet-lite0'."
        ),
    )
    parser.add_argument("source", metavar="PATH_OR_NAME")
    parser.add_argument("--out", type=Path, default=None,
                        help="write spectra.parquet, summary.parquet and report.html here")
    parser.add_argument("--layers", default=None, help="regular expression on layer names")
    parser.add_argument("--uncertainty", action="store_true",
                        help="bootstrap interval of α and x_min and GOF p-value per layer "
                             "(costly: about 0.1-0.3 s per layer)")
    parser.add_argument("--bootstrap", type=int, default=200, metavar="B",
                        help="resamples for --uncertainty (default 200)")
    parser.add_argument("--no-tests", action="store_true",
                        help="skip the likelihood-ratio tests (exponential, log-normal, TPL)")
    parser.add_argument("--no-mp-fit", action="store_true", help="skip the MP bulk fit")
    parser.add_argument("--no-randomize", action="store_true",
                        help="skip the shuffled-weights comparison (correlation traps)")
    parser.add_argument("--reference", action="store_true",
                        help="WeightWatcher 0.7.7's estimator and conventions, for comparison")
    parser.add_argument("--fit", choices=["power_law", "truncated_power_law"],
                        default="power_law")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the shuffles and bootstraps (default 0)")
    parser.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    parser.add_argument("--eig-dtype", choices=["auto", "float32", "float64"], default="auto",
                        help="dtype of the Gram matrices and eigensolves: auto (float32 for "
                             "≤32-bit weights, float64 where float32 cannot resolve the "
                             "result), or forced")
    add_threads_flag(parser)
    parser.set_defaults(func=run_spectra)

    compare = subparsers.add_parser(
        "spectra-compare",
        help="base vs fine-tuned model: per-layer Δα, weight distance, ESD of W_ft − W_base",
        description="Compare two models layer by layer (matched by name): α of each, Δα, "
                    "‖ΔW‖_F, and the rank and spikes of the difference's spectrum.")
    compare.add_argument("base", metavar="BASE")
    compare.add_argument("tuned", metavar="TUNED")
    compare.add_argument("--layers", default=None, help="regular expression on layer names")
    compare.add_argument("--out", type=Path, default=None, help="write compare.parquet here")
    compare.add_argument("--device", default="auto")
    add_threads_flag(compare)
    compare.set_defaults(func=run_compare)


def _use_threads(args: argparse.Namespace) -> None:
    """The thread count of memlab.threads' rule (--threads N), set and said."""
    from memlab import threads

    choice = threads.choose(args.threads)
    threads.use(choice.count)
    print(choice.message, flush=True)


def _print(frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 220, "display.max_columns", 40,
                           "display.max_rows", 500, "display.max_colwidth", 60,
                           "display.float_format", "{:.3g}".format):
        print(frame.to_string(index=False))


def run_spectra(args: argparse.Namespace) -> int:
    import numpy as np

    from memlab import validate
    from memlab.io import atomic_save_table
    from memlab.measures.spectra import TABLE_COLUMNS, analyze_full
    from memlab.measures.spectra.analyze import NON_FINITE_REASON
    from memlab.studies.spectra_study.figures import (
        layer_finding,
        population_finding,
        write_report,
    )

    validate.seed(args.seed, "--seed")
    validate.integer(args.bootstrap, "--bootstrap", minimum=20, maximum=100_000,
                     fix="a 95% interval needs at least 20 resamples; 200 is the default")
    if args.out is not None:
        validate.output_dir(args.out)
    _use_threads(args)
    result = analyze_full(
        args.source, layers=args.layers, mp_fit=not args.no_mp_fit,
        randomize=not args.no_randomize, seed=args.seed, device=args.device,
        reference=args.reference, fit=args.fit, eig_dtype=args.eig_dtype,
        alternatives=not args.no_tests, uncertainty=args.uncertainty,
        n_bootstrap=args.bootstrap,
    )
    table = result.table
    if len(table) and "reason" in table and (table["reason"] == NON_FINITE_REASON).all():
        from memlab.errors import DataError

        raise DataError(f"every weight matrix of {args.source} contains NaN or inf "
                        f"({', '.join(map(str, table['name'][:3]))}"
                        f"{', ...' if len(table) > 3 else ''}): nothing to fit; the "
                        "checkpoint is corrupted or its training diverged")
    population = "model" in table and table["model"].nunique() > 1
    accuracy = None
    if population:
        from memlab.measures.spectra import population_layers

        accuracy = _population_accuracy(args.source)
        layers = population_layers(table, accuracy)
        _print(layers)
        finding = population_finding(table, layers, accuracy)
    else:
        _print(table[[c for c in TABLE_COLUMNS if c in table and c not in ("reason",
                                                                           "verdict")]])
        print()
        print(result.summary.T.to_string(header=False))
        for _, row in table.iterrows():
            print(f"{row['layer_id']:>3} {row['name']}: {row.get('verdict', '')}")
        finding = layer_finding(table)
    print()
    for sentence in finding:  # the report's finding, computed from the same table
        print(sentence)
    print(f"{len(table)} matrices in {result.seconds:.2f} s (layer order: {result.order})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_save_table(args.out / "spectra.parquet", table)
        atomic_save_table(args.out / "summary.parquet", result.summary)
        write_report(result, args.out / "report.html",
                     accuracy=None if accuracy is None else np.asarray(accuracy))
        print(f"wrote {args.out / 'spectra.parquet'}, {args.out / 'report.html'}")
    return 0


def _population_accuracy(source: object):
    """Each model's test accuracy for a run directory, else None."""
    path = Path(str(source))
    if not (path / "manifest.json").is_file():
        return None
    from memlab.population import open_run

    return open_run(path).records("test_correct").mean(axis=1)


def run_compare(args: argparse.Namespace) -> int:
    from memlab.io import atomic_save_table
    from memlab.measures.spectra import compare

    _use_threads(args)
    table = compare(args.base, args.tuned, layers=args.layers, device=args.device)
    _print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_save_table(args.out / "compare.parquet", table)
        print(f"wrote {args.out / 'compare.parquet'}")
    return 0

