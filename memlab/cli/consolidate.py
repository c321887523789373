"""``memlab consolidate RUN``: build the records of a run whose chunks shard processes
trained (``memlab train --shard i/N``), after checking every chunk; names what is missing."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "consolidate", help="build a sharded run's records once every shard is done",
        description="Check every chunk of a run (checksums, provenance) and build its "
                    "records and models table. The last shard to finish does this itself; "
                    "run it by hand after a shard failed and was re-run, or to see which "
                    "chunks a run still lacks.")
    parser.add_argument("run", help="run directory (the --out of the shards)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memlab.population import consolidate

    result = consolidate(args.run)
    print(json.dumps(result.manifest["summary"], indent=2))
    print(f"run directory: {result.path}")
    return 0
