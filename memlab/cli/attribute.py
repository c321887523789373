"""``memlab attribute RUN``: score data-attribution methods (gradient similarity, TracIn,
TRAK, influence functions, representer points, k-NN) against the population in RUN."""

from __future__ import annotations

import argparse
import json

METHODS = ("grad_dot", "grad_cos", "tracin", "trak", "if_exact", "if_cg", "if_lissa",
           "if_ekfac", "representer", "knn", "random")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "attribute", help="LDS of data-attribution methods against a population",
        description="Compute cheap data-attribution scores from a few of RUN's models and "
                    "score them against the whole population: linear datamodeling score "
                    "(LDS) on held-out models, datamodels as the reference, self-influence, "
                    "optional top-k removal, cost in seconds and FLOPs. Writes scores/, "
                    "tables/, summary.json and report.html to --out (default RUN/attribute).")
    parser.add_argument("run", help="a finished population run directory (memlab train)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated, from {','.join(METHODS)} (default: all that "
                             "apply: if_exact only for logistic regression / small models)")
    parser.add_argument("--targets", type=int, default=100,
                        help="test examples attributed (default: %(default)s)")
    parser.add_argument("--heldout", type=int, default=100,
                        help="models held out for the LDS (default: %(default)s)")
    parser.add_argument("--validation", type=int, default=50,
                        help="models that choose each method's damping (default: %(default)s)")
    parser.add_argument("--models", type=int, default=1,
                        help="models each cheap method reads (default: %(default)s)")
    parser.add_argument("--trak-models", type=int, default=10,
                        help="models TRAK ensembles over (default: %(default)s)")
    parser.add_argument("--proj-dim", type=int, default=512,
                        help="TRAK projection dimension (default: %(default)s)")
    parser.add_argument("--removal", action="store_true",
                        help="also retrain without each method's top-k examples of a target")
    parser.add_argument("--out", default=None, help="output directory (default: RUN/attribute)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from memlab.errors import ConfigError
    from memlab.population import open_run
    from memlab.studies.attribute import AttributeConfig
    from memlab.studies.attribute import run as run_study
    from memlab.studies.attribute.study import _template

    population = open_run(args.run)
    if args.methods:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ConfigError(f"unknown --methods {unknown}; choose from {', '.join(METHODS)}")
    else:
        from memlab.measures.attribution.methods import exact_hessian_applies
        from memlab.studies.attribute.study import DEFAULT_METHODS

        small = exact_hessian_applies(_template(population))
        methods = tuple(m for m in DEFAULT_METHODS if small or m != "if_exact")
    self_methods = tuple(m for m in AttributeConfig.self_influence_methods
                         if m != "if_exact" or "if_exact" in methods)
    config = AttributeConfig(run_dir=str(population.path), data=None, methods=methods,
                             self_influence_methods=self_methods,
                             n_targets=args.targets, n_heldout=args.heldout,
                             n_validation=args.validation, method_models=args.models,
                             trak_models=args.trak_models, proj_dim=args.proj_dim,
                             removal=args.removal,
                             tracin_checkpoints=_checkpoints(population.config.epochs))
    out = Path(args.out) if args.out else population.path / "attribute"
    result = run_study(config, out, progress=not args.quiet)
    rows = {**result.summary["methods"], "datamodels": result.summary["datamodels"],
            "diff_in_means": result.summary["diff_in_means"]}
    print(json.dumps({name: {k: row.get(k) for k in ("lds", "lds_se", "seconds",
                                                      "n_models_used")}
                      for name, row in rows.items()}, indent=2))
    print(f"held-out models: {result.summary['n_heldout_models']}\n"
          f"summary: {out / 'summary.json'}\nscores:  {out / 'scores'}\n"
          f"report:  {out / 'report.html'}")
    return 0


def _checkpoints(epochs: int) -> tuple[int, ...]:
    """Four checkpoints evenly spread over training (fewer for short runs)."""
    return tuple(sorted({max(1, round(epochs * f)) for f in (0.25, 0.5, 0.75, 1.0)}))
