"""Shards: independent processes (a Slurm job array, several machines sharing a file system)
that each train their share of one run's chunks into the same run directory.

Shard i of N trains the chunks whose index is i mod N (round robin, so a sweep's costly
values spread over every shard). While it trains, a shard holds its own lock,
``RUN/shards/i-of-N.lock``, and the run's lock only for moments: to open (or create) the
run, and, once its chunks are committed, to look whether every chunk is; the shard that
finds them all consolidates the run. ``memlab consolidate RUN`` does that last step by
hand, naming what is missing. A chunk is committed atomically by whoever trains it, so no
shard ever writes another's files, and the manifest is written only under the run's lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from memlab import io
from memlab.errors import RunError
from memlab.population import store

SHARDS_DIR = "shards"
# How long a shard waits for the run's lock, which another shard holds while it opens the
# run (seconds) or consolidates it (minutes for a large run). A whole-run `memlab train`
# holds it for hours: after this wait the shard stops with the usual "in use by" line.
WAIT_SECONDS = 1800.0


def owns(shard: tuple[int, int] | None, chunk: store.ChunkPlan) -> bool:
    """Whether ``shard`` (i, N) trains ``chunk`` (every chunk belongs to the whole run)."""
    return shard is None or chunk.index % shard[1] == shard[0]


def name(shard: tuple[int, int]) -> str:
    return f"{shard[0]}/{shard[1]}"


class ShardLock(io.DirectoryLock):
    """One shard's lock, ``RUN/shards/i-of-N.lock`` (held while that shard trains)."""

    busy = ("this shard is already training; wait for it (or stop it), or run another "
            "shard")


def _path(run_dir: Path, shard: tuple[int, int]) -> Path:
    return run_dir / SHARDS_DIR / f"{shard[0]}-of-{shard[1]}.lock"


def live(run_dir: Path, besides: tuple[int, int] | None = None) -> dict[str, str]:
    """The shards training ``run_dir`` now, as {"i/N": holder}, other than ``besides``
    (a lock is held exactly while its process lives: the kernel drops it at death)."""
    found = {}
    for path in sorted((run_dir / SHARDS_DIR).glob("*-of-*.lock")):
        i, _, n = path.stem.partition("-of-")
        if not (i.isdigit() and n.isdigit()) or (int(i), int(n)) == besides:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            found[f"{i}/{n}"] = ShardLock(path).holder()
        finally:
            os.close(fd)
    return found


def take(run_dir: Path, shard: tuple[int, int]) -> ShardLock:
    """Hold shard ``shard``'s lock (call while holding the run's lock). Refused in one line
    when that shard already trains, or shards of another count N do (their chunks would
    overlap this one's)."""
    others = {key: holder for key, holder in live(run_dir, shard).items()
              if int(key.partition("/")[2]) != shard[1]}
    if others:
        key, holder = next(iter(others.items()))
        raise RunError(f"{run_dir} is being trained by shard {key} ({holder}), out of "
                       f"{key.partition('/')[2]} shards; run every shard with the same N "
                       f"(--shard i/{key.partition('/')[2]}), or wait for those to finish")
    (run_dir / SHARDS_DIR).mkdir(exist_ok=True)
    # a moment's wait: live() of another process may be testing this lock just now
    return ShardLock(_path(run_dir, shard)).acquire(f"{run_dir} (shard {name(shard)})",
                                                   wait=2.0)


def refuse_if_live(run_dir: Path) -> None:
    """A whole-run train (no shard) while shards train would train their chunks too: a
    one-line RunError naming one of them."""
    found = live(run_dir)
    if found:
        key, holder = next(iter(found.items()))
        raise RunError(f"{run_dir} is being trained by shard {key} ({holder}); wait for the "
                       f"shards to finish (memlab consolidate {run_dir} then builds the "
                       "records), or stop them")


def missing_message(run_dir: Path, problems: dict[int, list[tuple[str, str]]],
                    n_chunks: int, n_shards: int | None) -> str:
    """One line: which chunks are missing or damaged, which shards train them, and what
    to run."""
    missing = sorted(i for i, found in problems.items() if found[0][0] == "done.json"
                     and found[0][1].startswith("missing"))
    damaged = {i: found[0] for i, found in problems.items() if i not in missing}
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {n_chunks} chunks are missing "
                     f"(chunks {_listed(missing)})")
    if damaged:
        i, (file, problem) = next(iter(sorted(damaged.items())))
        parts.append(f"{len(damaged)} damaged (chunk {i}: {file} {problem})")
    if n_shards:
        owners = sorted({i % n_shards for i in problems})
        fix = (f"run shard{'s' if len(owners) > 1 else ''} "
               f"{', '.join(f'{i}/{n_shards}' for i in owners)} again (memlab train ... "
               f"--shard i/{n_shards}), or the train command without --shard")
    else:
        fix = "run the same train command again to train them"
    return f"{run_dir} is not complete: {' and '.join(parts)}; {fix}"


def _listed(indices: list[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return shown + (f", ... ({len(indices) - limit} more)" if len(indices) > limit else "")
