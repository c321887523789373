"""What every study command shares: the same options, the same last lines.

    def register(subparsers):
        parser = subparsers.add_parser("noise", help=..., description=...)
        add_study_arguments(parser, out="runs/noise")
        parser.add_argument(...)             # the study's own options
        parser.set_defaults(func=run)

    def run(args):
        config = preset(NoiseConfig, args).replace(...)   # options -> config
        return finish(noise.run(config, args.out, progress=not args.quiet))

A study command is thin: options -> config -> ``memlab.studies.<name>.run`` -> where the
results are. The study writes its own outputs (``Result.save``).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_study_arguments(parser: argparse.ArgumentParser, out: str | None,
                        seed: bool = True, workers: bool = True) -> None:
    """``--out``, ``--quick`` / ``--full`` (the config's presets), ``--seed``,
    ``--workers``, ``--figures DIR`` and ``--quiet``, with the same meaning in every study
    command."""
    if out is not None:
        parser.add_argument("--out", default=out, help="output directory (default: %(default)s);"
                            " running the same command again resumes")
    presets = parser.add_mutually_exclusive_group()
    presets.add_argument("--quick", action="store_true",
                         help="the quick preset: minutes on 2 CPU cores (a smoke test)")
    presets.add_argument("--full", action="store_true",
                         help="the full preset: the settings behind the README's figures")
    if seed:
        parser.add_argument("--seed", type=int, default=None,
                            help="master seed (default: the preset's, 0)")
    if workers:
        parser.add_argument("--workers", type=int, default=None,
                            help="worker processes for training (default: one per core)")
    parser.add_argument("--figures", default=None, metavar="DIR",
                        help="also write the figures as PNG files into DIR (e.g. docs/figures)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def preset(config_class: type, args: argparse.Namespace) -> Any:
    """The config preset the options chose (``--quick``, ``--full`` or the defaults), with
    ``--seed`` and ``--workers`` applied when the config has those fields."""
    from memlab import validate

    config = (config_class.quick() if getattr(args, "quick", False)
              else config_class.full() if getattr(args, "full", False) else config_class())
    if getattr(args, "figures", None) is not None:
        validate.output_dir(args.figures, "--figures")  # before any work is done
    changes = {}
    if getattr(args, "seed", None) is not None:
        changes["seed"] = validate.seed(args.seed, "--seed")
    if getattr(args, "workers", None) is not None:
        changes["n_workers"] = validate.workers(args.workers, "--workers")
    fields = set(getattr(config_class, "__dataclass_fields__", {}))
    return config.replace(**{k: v for k, v in changes.items() if k in fields})


def finish(result: Any, headline: list[str] | None = None,
           args: argparse.Namespace | None = None, prefix: str | None = None) -> int:
    """Print the headline lines and where the results are, write the figures if
    ``--figures DIR`` was given (``<study>_<name>.png``, or ``<prefix><name>.png``);
    exit code 0."""
    for line in headline or []:
        print(line)
    out = result.out
    print(f"summary: {out / 'summary.json'}\nreport:  {out / 'report.html'}")
    directory = getattr(args, "figures", None)
    if directory is not None:
        paths = result.save_figures(directory, prefix=prefix)
        print(f"figures: {len(paths)} PNG files in {directory}")
    return 0
