"""``memlab elasticity``: local elasticity (He & Su) — one-step similarities, the ratio over
training for a ReLU MLP and its linear twin, and the hidden-class clustering experiment."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

import pandas as pd

from memlab import validate
from memlab.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "elasticity",
        help="local elasticity: one-step similarity, intra/inter ratio, hidden-class clustering",
        description=(
            "Train a ReLU MLP and its linear twin (identity activation), measure how one SGD "
            "step on each example moves the others (S_rel, S_ker) at checkpoint epochs, and "
            "cluster the two hidden classes of a union-labeled positive class. Writes "
            "ratio.parquet, clustering.parquet, the final matrices and report.html to --out. "
            "With --from-run, measure one model of a population run instead."
        ),
    )
    parser.add_argument("--data", default="digits",
                        help="digits | mnist1d | mnist | path/to/data.npz (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output directory; its populations/ resume when rerun")
    parser.add_argument("--quick", action="store_true",
                        help="the quick preset (hidden 32, checkpoints 0,1,3, 6 probes per "
                             "class, pair 3-5, 20 positives per class, 2 seeds); options "
                             "given explicitly override it")
    parser.add_argument("--hidden", default=None, metavar="W1,W2",
                        help="MLP hidden widths (default: 100: a two-layer network)")
    parser.add_argument("--checkpoints", default=None, metavar="E1,E2,...",
                        help="epochs at which to measure; training stops at the last "
                             "(default: 0,1,2,5,10,20)")
    parser.add_argument("--lr", type=float, default=None,
                        help="SGD learning rate, also the step size η of the measured step "
                             "(default: 0.05)")
    parser.add_argument("--batch-size", type=int, default=None, help="(default: 32)")
    parser.add_argument("--probe-per-class", type=int, default=None,
                        help="examples per class for the ratio (default: 20)")
    parser.add_argument("--pairs", default=None, metavar="A-B,...",
                        help="hidden class pairs for the clustering experiment, or 'none' "
                             "(default: 3-5,4-9,5-8,7-9)")
    parser.add_argument("--cluster-per-class", type=int, default=None,
                        help="positives per hidden class to cluster (default: 150)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="replicates 0..N-1 of every population (default: 3)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the populations' seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="engine worker processes (changes no result; default 1)")
    parser.add_argument("--from-run", type=Path, default=None, metavar="RUN",
                        help="measure model --model of this population run instead")
    parser.add_argument("--model", type=int, default=0, help="model index for --from-run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from memlab.population.store import atomic_save_npy, atomic_save_table, atomic_write_json
    from memlab.studies import elasticity as study

    _fill_defaults(args)
    hidden, checkpoints = check_options(args)
    torch.set_num_threads(args.threads)
    command = "memlab " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    if args.from_run is not None:
        return _from_run(args, command)

    from memlab.data import load

    dataset = load(args.data)
    widths = [math.prod(dataset.input_shape), *hidden, dataset.n_classes]
    n_params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    # The one-step measurement holds 64 stepped copies of the weights in float64
    # (measures/elasticity.py, chunk_size), beside the network and its gradient.
    validate.fits_in_memory(8.0 * n_params * (64 + 3), f"--hidden {args.hidden}",
                            "give smaller hidden widths (the paper's: 100)")
    config = study.StudyConfig(
        hidden=hidden, checkpoints=checkpoints,
        lr=args.lr, batch_size=args.batch_size, probe_per_class=args.probe_per_class,
        pairs=_pairs(args.pairs), cluster_per_class=args.cluster_per_class,
        n_seeds=args.seeds, seed=args.seed,
    )
    result = study.run_study(dataset, config, out=args.out, progress=not args.quiet,
                             n_workers=args.workers)

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_save_table(args.out / "ratio.parquet", result.ratio)
    atomic_save_table(args.out / "clustering.parquet", result.clustering)
    atomic_save_table(args.out / "ratio_summary.parquet", study.ratio_summary(result.ratio))
    for key, entry in result.matrices.items():
        stem = key.replace("/", "_").replace(" ", "_").replace("+", "p")
        for name, array in entry.items():
            atomic_save_npy(args.out / "matrices" / f"{stem}_{name}.npy", array)
    atomic_write_json(args.out / "config.json", {**result.config, "dataset": dataset.name,
                                                 "runs": result.runs})
    study.write_report(result, dataset.name, args.out, command)

    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(study.headline(result).to_string(index=False))
        if len(result.clustering):
            print()
            print(study.clustering_summary(result.clustering).to_string(index=False))
    print(f"{result.seconds:.0f} s; wrote {args.out / 'report.html'}")
    return 0


def _from_run(args: argparse.Namespace, command: str) -> int:
    from memlab.population.store import atomic_save_npy, atomic_write_json
    from memlab.report import Report
    from memlab.studies import elasticity as study

    member = study.population_member(args.from_run, args.model, args.probe_per_class, args.lr)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("s_rel", "s_ker", "classes"):
        atomic_save_npy(args.out / f"member_{name}.npy", member[name])
    summary = {k: member[k] for k in ("ratio_rel", "ratio_ker", "model", "dataset")}
    atomic_write_json(args.out / "member.json", {**summary, "run": str(args.from_run),
                                                 "index": args.model, "lr": args.lr})
    report = Report(f"Local elasticity of model {args.model} of {args.from_run}")
    if command:
        report.code(command)
    report.text(f"{member['model']} on {member['dataset']}: intra/inter S_rel ratio "
                f"{member['ratio_rel']:.3f}, |S_ker| ratio {member['ratio_ker']:.3f}.")
    matrices = {f"model {args.model}/{member['model']}": member}
    report.figure(study.heatmap_figure(matrices, activations=(member["model"],)),
                  "Symmetrized S_rel, grouped by class", fmt="png")
    report.save(args.out / "report.html")
    print(f"ratio_rel {member['ratio_rel']:.3f}  ratio_ker {member['ratio_ker']:.3f}; "
          f"wrote {args.out / 'report.html'}")
    return 0


def _fill_defaults(args: argparse.Namespace) -> None:
    """Options not given take the preset's values (``--quick`` or the paper defaults)."""
    from memlab.studies.elasticity import StudyConfig

    preset = StudyConfig.quick() if args.quick else StudyConfig()
    given = {
        "hidden": ",".join(map(str, preset.hidden)),
        "checkpoints": ",".join(map(str, preset.checkpoints)),
        "lr": preset.lr, "batch_size": preset.batch_size,
        "probe_per_class": preset.probe_per_class,
        "pairs": ",".join(f"{a}-{b}" for a, b in preset.pairs) or "none",
        "cluster_per_class": preset.cluster_per_class, "seeds": preset.n_seeds,
    }
    for name, value in given.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def check_options(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Every option in range and finite, before any work: (hidden widths, checkpoints)."""
    validate.output_dir(args.out)
    validate.threads(args.threads)
    validate.real(args.lr, "--lr", minimum=0, open_low=True,
                  fix="a finite step size such as 0.05 (inf or nan give all-NaN results)")
    validate.integer(args.batch_size, "--batch-size", minimum=1)
    validate.integer(args.probe_per_class, "--probe-per-class", minimum=2)
    validate.integer(args.cluster_per_class, "--cluster-per-class", minimum=2)
    validate.integer(args.seeds, "--seeds", minimum=1)
    validate.seed(args.seed, "--seed")
    validate.workers(args.workers)
    validate.integer(args.model, "--model", minimum=0)
    hidden = validate.integer_list(args.hidden, "--hidden", example="100")
    checkpoints = validate.integer_list(args.checkpoints, "--checkpoints", minimum=0,
                                        example="0,1,2,5,10,20")
    if list(checkpoints) != sorted(set(checkpoints)):
        raise ConfigError(f"--checkpoints must be increasing epochs, got {args.checkpoints!r}")
    return hidden, checkpoints


def _pairs(text: str) -> tuple[tuple[int, int], ...]:
    if text.strip().lower() == "none":
        return ()
    pairs = []
    for item in text.split(","):
        parts = item.strip().split("-")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"--pairs takes class pairs like 5-8,4-9 (or 'none'), got {item!r}")
        pairs.append((int(parts[0]), int(parts[1])))
    return tuple(pairs)
