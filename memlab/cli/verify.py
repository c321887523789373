"""``memlab verify RUN``: check every file of a run against its checksum.

Names each damaged file and how it is repaired (almost always: run the same train command
again, which retrains a damaged chunk and rebuilds what was consolidated from chunks/).
Exit status 0 when the run is intact, 2 when something is damaged or unreadable.

What it vouches for is said with the result: the checksums prove the files are as written
(no truncation, bit rot or partial copy), not that nobody edited them on purpose (a
checksum without a secret is re-stamped by whoever edits the file); and it names the code
the run would import to rebuild its models, which memlab imports only with --trust-run.
Verifying imports nothing the run names.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from memlab import io
from memlab.errors import RunError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="check a run directory's files against their checksums",
        description="Check every file of a run (dataset, mask, chunks, consolidated records) "
                    "against its checksum; name each damaged file and its repair. Exit 2 "
                    "when something is damaged.")
    parser.add_argument("run", help="run directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `memlab --help` must not import torch (memlab.population does).
    from memlab.population import store

    path = Path(args.run)
    if not path.is_dir() or not (path / store.MANIFEST).exists():
        what = "does not exist" if not path.exists() else f"has no {store.MANIFEST}"
        raise RunError(f"{path} is not a run directory ({what}); give the --out of a memlab "
                       "train/memorize run")
    started = time.perf_counter()
    manifest = store.read_manifest(path)  # a damaged manifest: one line, exit 2
    damage = store.verify_run(path)
    seconds = time.perf_counter() - started
    leftovers = [p for d in (path, path / "records", path / "tables") if d.is_dir()
                 for p in d.glob(f".*{io.TEMP_SUFFIX}")]
    leftovers += list((path / "chunks").glob(".*"))
    for item in damage:
        print(f"damaged: {item}")
    for leftover in leftovers:
        print(f"leftover: {leftover.relative_to(path)} (from a killed writer; the next train "
              "command removes it)")
    if not manifest.get("checksums"):
        print("note: this run records no checksums (written by an older memlab): only sizes "
              "and readability were checked")
    for line in vouching(manifest):
        print(line)
    chunks = manifest["chunks"]
    done = sum(status == "done" for status in chunks.values())
    status = f"status {manifest['status']}, {done}/{len(chunks)} chunks done"
    if damage:
        lost = [d.path for d in damage if not d.repairable]
        print(f"{path}: {len(damage)} damaged file(s) ({status}); "
              + (f"cannot be repaired by memlab: {', '.join(lost)}" if lost
                 else "run the same train command to repair them"))
        return 2
    print(f"{path}: intact ({status}; checked in {seconds:.2f} s)")
    return 0


def vouching(manifest: dict) -> list[str]:
    """What the checksums do and do not prove, and the code the run names (never imported
    here): the model factory's and user augmentations' modules, callbacks' class paths."""
    from memlab.engine.recipe import code_modules
    from memlab.models import code_module

    lines = ["vouches for: files as written (no truncation, bit rot or partial copy); not "
             "against deliberate edits: the checksums hold no secret, so whoever edits a "
             "file can re-stamp them (trust a run as far as you trust where it came from)"]
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    described = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    model, augment = config.get("model"), config.get("augment") or ()
    modules = code_modules(model, augment if isinstance(augment, list | tuple) else ())
    factory = code_module(described.get("factory"))
    modules += [factory] if factory and factory not in modules else []
    if modules:
        lines.append(f"code: the run names model code in module {', '.join(map(repr, modules))}"
                     f" (model {model!r}), imported only with --trust-run (Python: "
                     "open_run(path, trust_code=True)); verify imported nothing")
    else:
        lines.append(f"code: none to import (model {model!r}: a built-in or registered name, "
                     "or memlab's own code)")
    return lines
