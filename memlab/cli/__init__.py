"""The ``memlab`` command line: the tools (one module each: train, consolidate, info,
spectra, plan, verify) and one generated sub-command per registered study (:mod:`memlab.cli.study`).

Each tool module defines ``register(subparsers)``, which adds its parser and sets ``func``
(called with the parsed arguments; its return value is the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from memlab import __version__
from memlab.errors import MemlabError

COMMAND_MODULES = ["train", "consolidate", "info", "spectra", "plan", "verify"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memlab", description="Measure what neural networks memorize and why."
    )
    parser.add_argument("--version", action="version", version=f"memlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"memlab.cli.{name}").register(subparsers)
    from memlab.cli.study import add_study_command
    from memlab.studies.base import all_studies

    tools = set(subparsers.choices)
    for study in all_studies().values():
        if study.command in tools:  # a tool's name: said, never silently skipped
            print(f"memlab: warning: the study {study.name!r} has no command: "
                  f"'memlab {study.command}' is a tool; rename the study", file=sys.stderr)
            continue
        add_study_command(subparsers, study)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MemlabError as error:
        # Problems with the user's input or run directory: a message, not a traceback.
        print(f"memlab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmemlab: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `memlab info RUN | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no flush error)
        return 141


if __name__ == "__main__":
    sys.exit(main())
