"""``memlab spectra``: per-layer heavy-tailed spectral analysis of a model's weights."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from memlab.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "spectra",
        help="data-free weight spectra: power-law α, norm metrics, MP fit, phases per layer",
        description=(
            "Analyze every weight matrix of a model from its weights alone (Martin & Mahoney "
            "heavy-tailed self-regularization). PATH_OR_NAME: a .safetensors/.pt file, a "
            "Hugging Face model directory, a memlab run directory, or 'minilm'."
        ),
    )
    parser.add_argument("source", metavar="PATH_OR_NAME")
    parser.add_argument("--out", type=Path, default=None,
                        help="write spectra.parquet, summary.parquet and report.html here")
    parser.add_argument("--layers", default=None, help="regular expression on layer names")
    parser.add_argument("--no-mp-fit", action="store_true", help="skip the MP bulk fit")
    parser.add_argument("--no-randomize", action="store_true",
                        help="skip the shuffled-weights comparison")
    parser.add_argument("--reference", action="store_true",
                        help="WeightWatcher 0.7.7's estimator and conventions, for comparison")
    parser.add_argument("--fit", choices=["power_law", "truncated_power_law"],
                        default="power_law")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffles (default 0)")
    parser.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    parser.add_argument("--precision", choices=["auto", "float32", "float64"], default="auto",
                        help="arithmetic of the eigensolves: auto (float32 for ≤32-bit weights, "
                             "float64 where float32 cannot resolve the result), or forced")
    parser.set_defaults(func=run_spectra)

    study = subparsers.add_parser(
        "spectra-study",
        help="train MLPs on MNIST-1D varying one knob at a time; relate α to test accuracy",
        description=(
            "Generalization study: a family of MLPs on MNIST-1D (batch size, width, fraction "
            "of random labels, training length varied one at a time); Spearman and Kendall τ "
            "between each spectral metric and test accuracy per knob."
        ),
    )
    study.add_argument("--out", type=Path, required=True,
                       help="directory for the runs, tables and report (resumable)")
    study.add_argument("--models-per-config", type=int, default=4)
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--figure", type=Path, default=None,
                       help="also save the study plot as a PNG here")
    study.set_defaults(func=run_study)


def run_spectra(args: argparse.Namespace) -> int:
    from memlab.measures.spectra import TABLE_COLUMNS, analyze_full, write_report
    from memlab.population.store import atomic_save_table

    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file; give a directory")
    result = analyze_full(
        args.source, layers=args.layers, mp_fit=not args.no_mp_fit,
        randomize=not args.no_randomize, seed=args.seed, device=args.device,
        reference=args.reference, fit=args.fit, precision=args.precision,
    )
    table = result.table
    shown = [c for c in ["model", *TABLE_COLUMNS] if c in table and c != "reason"]
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.max_rows", 500, "display.float_format", "{:.3g}".format):
        print(table[shown].to_string(index=False))
        print()
        print(result.summary.T.to_string(header=False))
    for _, row in table[table["reason"] != ""].iterrows():
        print(f"not fitted: {row['name']}: {row['reason']}")
    print(f"{len(table)} matrices in {result.seconds:.2f} s")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_save_table(args.out / "spectra.parquet", table)
        atomic_save_table(args.out / "summary.parquet", result.summary)
        write_report(result, args.out / "report.html")
        print(f"wrote {args.out / 'spectra.parquet'}, {args.out / 'report.html'}")
    return 0


def run_study(args: argparse.Namespace) -> int:
    import time

    from memlab.measures.spectra import generalization_study, plot_study
    from memlab.population.store import atomic_save_table
    from memlab.report import Report

    if args.models_per_config < 2:
        raise ConfigError("--models-per-config must be at least 2 (correlations need spread)")
    start = time.perf_counter()
    models, correlations = generalization_study(args.out, args.models_per_config, args.seed)
    seconds = time.perf_counter() - start
    summary = (models.groupby(["knob", "value"], sort=False)
               .mean(numeric_only=True).drop(columns="model").reset_index())
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(summary.to_string(index=False))
        print()
        print(correlations.to_string(index=False))
    print(f"study took {seconds / 60:.1f} min")
    atomic_save_table(args.out / "study_models.parquet", models)
    atomic_save_table(args.out / "study_correlations.parquet", correlations)
    report = Report("Spectral metrics vs generalization (MNIST-1D MLPs)")
    report.text(f"{len(models)} models, {seconds / 60:.1f} min. One knob varied at a time.")
    report.table(summary, caption="Mean per configuration")
    report.table(correlations, caption="Rank correlation with test accuracy, per knob")
    figure = plot_study(models)
    if args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure, dpi=110)
    report.figure(figure, caption="Metrics against test accuracy", fmt="png")
    report.save(args.out / "report.html")
    print(f"wrote {args.out / 'report.html'}")
    return 0
