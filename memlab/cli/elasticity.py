"""``memlab elasticity``: local elasticity (He & Su) — one-step similarities, the ratio over
training for a ReLU MLP and its linear twin, and the hidden-class clustering experiment.

    memlab elasticity --data mnist1d --out runs/elasticity        the study
    memlab elasticity --from-run RUN --model 3                    one member of a population
"""

from __future__ import annotations

import argparse
from pathlib import Path

from memlab.cli.common import add_study_arguments, finish, preset

DEFAULT_OUT = "runs/elasticity"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "elasticity",
        help="local elasticity: one-step similarity, intra/inter ratio, hidden-class clustering",
        description=(
            "Train a ReLU MLP and its linear twin (identity activation), measure how one SGD "
            "step on each example moves the others (S_rel, S_ker) at checkpoint epochs, and "
            "cluster the two hidden classes of a union-labeled positive class. Writes tables/, "
            "summary.json and report.html to --out. With --from-run, measure one model of a "
            "population run instead (results in RUN/elasticity unless --out is given)."
        ),
    )
    add_study_arguments(parser, out=None)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output directory (default: {DEFAULT_OUT}, or RUN/elasticity "
                             "with --from-run); running the same command again resumes")
    parser.add_argument("--data", default=None,
                        help="digits | mnist1d | mnist | path/to/data.npz (default: digits)")
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
    parser.add_argument("--from-run", type=Path, default=None, metavar="RUN",
                        help="measure model --model of this population run instead")
    parser.add_argument("--model", type=int, default=0, help="model index for --from-run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from memlab import validate
    from memlab.studies import elasticity

    config = preset(elasticity.ElasticityConfig, args).replace(**options(args))
    out = args.out if args.out is not None else (
        None if args.from_run is not None else Path(DEFAULT_OUT))
    if out is not None:
        validate.output_dir(out)
    torch.set_num_threads(validate.threads(args.threads))
    result = elasticity.run(config, out, progress=not args.quiet)
    # --figures DIR: DIR/elasticity_<data>_{ratio,heatmaps}.png (one set per dataset)
    name = Path(str(result.summary.get("dataset", "member"))).stem
    return finish(result, headline(result), args, prefix=f"elasticity_{name}_")


def options(args: argparse.Namespace) -> dict:
    """The options given explicitly, checked, as ElasticityConfig changes (the others keep
    the preset's values)."""
    from memlab import validate
    from memlab.errors import ConfigError

    changes: dict = {}
    if args.data is not None:
        changes["data"] = args.data
    if args.hidden is not None:
        changes["hidden"] = validate.integer_list(args.hidden, "--hidden", example="100")
    if args.checkpoints is not None:
        checkpoints = validate.integer_list(args.checkpoints, "--checkpoints", minimum=0,
                                            example="0,1,2,5,10,20")
        if list(checkpoints) != sorted(set(checkpoints)):
            raise ConfigError(f"--checkpoints must be increasing epochs, got "
                              f"{args.checkpoints!r}")
        changes["checkpoints"] = checkpoints
    if args.lr is not None:
        changes["lr"] = validate.real(
            args.lr, "--lr", minimum=0, open_low=True,
            fix="a finite step size such as 0.05 (inf or nan give all-NaN results)")
    for option, field, minimum in (("batch_size", "batch_size", 1),
                                   ("probe_per_class", "probe_per_class", 2),
                                   ("cluster_per_class", "cluster_per_class", 2),
                                   ("seeds", "n_seeds", 1)):
        value = getattr(args, option)
        if value is not None:
            changes[field] = validate.integer(value, "--" + option.replace("_", "-"),
                                              minimum=minimum)
    if args.pairs is not None:
        changes["pairs"] = pairs(args.pairs)
    member = validate.integer(args.model, "--model", minimum=0)
    if args.from_run is not None:
        changes["run_dir"], changes["member"] = str(args.from_run), member
    return changes


def headline(result) -> list[str]:
    s = result.summary
    if s.get("mode") == "member":
        return [f"ratio_rel {s['ratio_rel']:.3f}  ratio_ker {s['ratio_ker']:.3f}"]
    lines = []
    for task, row in s["ratio"].items():
        interval = ("no interval" if row["ci_low"] is None
                    else f"95% CI [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]")
        lines.append(f"{task}: S_rel ratio ReLU {row['ratio_relu']:.3f} vs linear "
                     f"{row['ratio_linear']:.3f} (difference {row['difference']:+.3f}, "
                     f"{interval}); ReLU exceeds its twin: {row['verdict']}")
    for method, row in s["clustering_vs_inputs"].items():
        lines.append(f"clustering, {method}: symmetric accuracy {row['accuracy']:.3f}; beats "
                     f"K-means on raw inputs: {row['verdict']}")
    lines.append(f"{s['seconds']:.0f} s")
    return lines


def pairs(text: str) -> tuple[tuple[int, int], ...]:
    """``"5-8,4-9"`` -> ((5, 8), (4, 9)); ``"none"`` -> ()."""
    from memlab.errors import ConfigError

    if text.strip().lower() == "none":
        return ()
    found = []
    for item in text.split(","):
        parts = item.strip().split("-")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"--pairs takes class pairs like 5-8,4-9 (or 'none'), got {item!r}")
        found.append((int(parts[0]), int(parts[1])))
    return tuple(found)
