"""The ``memlab`` command line: one sub-command per module in this package.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments; its return value is the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from memlab.errors import MemlabError

COMMAND_MODULES = ["train", "info", "elasticity", "noise", "spectra", "plan", "memorize",
                   "longtail", "lm_memorize", "attribute", "lesde", "audit", "verify"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memlab", description="Measure what neural networks memorize and why."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"memlab.cli.{name}").register(subparsers)
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


if __name__ == "__main__":
    sys.exit(main())
