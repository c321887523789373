"""``memlab info RUN``: what a run directory holds and how far it got."""

from __future__ import annotations

import argparse
from pathlib import Path

from memlab.errors import RunError


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe a run directory")
    parser.add_argument("run", help="run directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `memlab --help` builds every parser and must not
    # import torch (memlab.population does).
    from memlab.population import provenance, shards, store
    from memlab.population.run import Run

    path = Path(args.run)
    if not path.exists():
        raise RunError(f"run directory {path} does not exist; give the --out of a "
                       "memlab train/memorize run")
    if not path.is_dir():
        raise RunError(f"{path} is a file, not a run directory; give the --out of a "
                       "memlab train/memorize run")
    if not (path / store.MANIFEST).exists():
        raise RunError(f"{path} is not a run directory (no {store.MANIFEST}); give the --out "
                       "of a memlab train/memorize run")
    result = Run(path)
    manifest = result.manifest
    plan = store.chunk_plan_from_json(manifest.get("chunk_plan") or [])
    # committed: on disk (shards commit chunks without writing the manifest)
    committed = {chunk.index: store.read_chunk_info(path, chunk.index) for chunk in plan
                 if (store.chunk_dir(path, chunk.index) / "done.json").is_file()}
    print(repr(result))
    print(f"status:  {manifest['status']} ({len(committed)}/{len(plan)} chunks committed)")
    if manifest.get("shards"):
        live = shards.live(path)
        print(f"shards:  trained as {manifest['shards']} shards"
              + (f"; training now: {', '.join(sorted(live))}" if live else ""))
    print(f"created: {manifest['created']} with memlab {manifest['versions']['memlab']}, "
          f"torch {manifest['versions']['torch']}")
    print("config:")
    for key, value in manifest["config"].items():
        print(f"  {key:16s} {value}")
    dataset = manifest["dataset"]
    print(f"dataset: {dataset['name']} fingerprint {dataset['fingerprint'][:16]}, "
          f"corruption: {sorted(dataset['corruption']) or 'none'}")
    if result.code_modules:  # named by the manifest; info imports nothing
        print(f"code:    module {', '.join(map(repr, result.code_modules))}, imported to "
              "rebuild its models only with --trust-run / open_run(path, trust_code=True)")
    if committed:  # where the chunks were trained (memlab.population.provenance)
        print("trained on (chunks):")
        for description, count in provenance.table(committed):
            print(f"  {count:5d}  {description}")
    if result.complete:
        table = result.models_table()
        print(f"records: {', '.join(result.record_names)}")
        diverged = result.diverged.nonzero()[0]
        if len(diverged):  # (on_diverge="record")
            more = ", ..." if len(diverged) > 10 else ""
            print(f"diverged: {len(diverged)} of {result.n_models} models, left out of the "
                  f"estimates: {', '.join(map(str, diverged[:10]))}{more}")
        print(table[["n_in", "train_acc_in", "train_acc_out", "test_acc"]]
              .describe().loc[["mean", "std", "min", "max"]].to_string(float_format="%.4f"))
    return 0
