"""``memlab lesde``: the LE-SDE phase diagram, the LE-SDE fitted to real networks and the
locally elastic stability table (Su's local-elasticity talk, parts 2 and 3; docs/science.md §6).

    memlab lesde --quick --out runs/lesde
    memlab lesde --out runs/lesde --parts phase,stability     # the full preset's settings

Results go to --out: summary.json, tables/*.parquet, report.html (and the populations it
trains under --out/populations, which resume)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "lesde", help="LE-SDE phase diagram, fit to real networks, locally elastic stability",
        description="Simulate locally elastic SDEs (Zhang, Wang & Su 2021) over intra/inter "
                    "strength ratios and noise levels; fit their strengths to one-hidden-layer "
                    "MLPs trained on MNIST-1D and digits and compare trajectories; estimate "
                    "uniform and locally elastic stability (Deng, He & Su 2021) from a "
                    "population, with permuted-mask noise floors.")
    from memlab.cli.common import add_study_arguments

    add_study_arguments(parser, out="runs/lesde")
    parser.add_argument("--parts", default="phase,fit,stability",
                        help="comma-separated parts to run (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memlab import validate
    from memlab.cli.common import finish, preset
    from memlab.errors import ConfigError
    from memlab.studies.lesde import LESDEConfig
    from memlab.studies.lesde import run as lesde_run

    validate.output_dir(args.out)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not parts:
        raise ConfigError("--parts is empty; give e.g. phase,fit,stability")
    config = preset(LESDEConfig, args).replace(parts=parts)
    result = lesde_run(config, args.out, progress=not args.quiet)
    s = result.summary
    for drift, d in s.get("phase", {}).items():
        print(f"phase/{drift}: threshold {d['threshold']} (predicted 1), separated above "
              f"{d['separated_above']:.2f}, at or below {d['separated_at_or_below']:.2f}")
    for name, f in s.get("fit", {}).items():
        st = f["strengths"]
        print(f"fit/{name}: α/β fitted {st['ratio']['mean']:.2f}, kernel "
              f"{st['kernel_ratio']['mean']:.2f}; loss rms error "
              f"{f['error_fitted']['loss']['rms']:.4f}")
    for key, r in s.get("stability", {}).items():
        print(f"stability/{key}: gap {r['gap']:.4f}, uniform bound {r['bound_uniform']:.3g}, "
              f"LE bound {r['bound_le']:.3g} (floor {r['bound_le_floor']:.3g})")
    print(json.dumps(s.get("timing_s", {})))
    return finish(result, args=args)
