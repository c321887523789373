"""A study's output directory, with the run store's guarantees.

    OUT/
      .lock            held while a study computes or saves here (one writer at a time)
      study.json       written first: which study, config and inputs own this directory
      tables/*.parquet, summary.json, config.json, report.html, arrays a study keeps
      population/ ...  population runs (each a run directory with its own manifest)
      outputs.json     written last: every output file above and its checksum

A second study, or the same study with other settings, is refused with one line naming
what the directory holds. ``outputs.json`` is the commit marker: without it the study has
not finished (re-running resumes: its populations keep their finished chunks); with it,
each file is checked against its checksum, and re-running the command recomputes what is
missing or damaged and rewrites only those files (an intact file is left as it is). Study
outputs never go into a population run directory itself (only into a folder of their own).

The checksums catch accidents (a truncated copy, a deleted file, bit rot), not a person
who edits a file and its checksum together: that would need a secret key.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memlab.errors import RunError
from memlab.io import (
    DirectoryLock,
    atomic_write_bytes,
    atomic_write_json,
    checksum_bytes,
    file_checksum,
    loads_strict,
)

OWNER = "study.json"
OUTPUTS = "outputs.json"
LOCK = ".lock"
RUN_MANIFEST = "manifest.json"  # a population run directory's (memlab.population.store)
LEGACY_OWNER = "config.json"  # results saved before study.json existed name their owner here
FORMAT = 1

# Output directories this process holds the lock of (resolved path -> [lock, depth]): the
# study's run and its Result.save both take it, and a second flock by the same process on
# a new descriptor would refuse it.
_HELD: dict[str, list] = {}


class StudyLock(DirectoryLock):
    busy = "wait for it to finish (or stop it), or give another --out"


class StudyOutputs:
    """The output directory ``out`` of one study: its lock, owner and checksums."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    # ------------------------------------------------------------ one writer

    @contextlib.contextmanager
    def locked(self) -> Iterator[StudyOutputs]:
        """Hold ``OUT/.lock`` (re-entrant within this process)."""
        refuse_population_run(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        key = str(self.out.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
        else:
            _HELD[key] = [StudyLock(self.out / LOCK).acquire(self.out), 1]
        try:
            yield self
        finally:
            _HELD[key][1] -= 1
            if _HELD[key][1] == 0:
                _HELD.pop(key)[0].release()

    # ------------------------------------------------------------ who owns it

    def owner(self) -> dict[str, Any] | None:
        """``{"study", "config", "inputs"}`` of the study that owns ``out`` (None: no one)."""
        for name in (OWNER, LEGACY_OWNER):
            path = self.out / name
            if path.exists():
                document = _read_json(path, self.out)
                if not (isinstance(document, dict) and isinstance(document.get("study"), str)):
                    raise RunError(f"{path} does not name a study; it is damaged or not "
                                   f"memlab's: remove {self.out} or give another --out")
                return {"study": document["study"], "config": document.get("config"),
                        "inputs": document.get("inputs") or {}}
        return None

    def claim(self, study: str, config: dict[str, Any], inputs: dict[str, Any]) -> None:
        """Make ``out`` this study's (writing ``study.json``), or refuse it in one line when
        it holds another study, the same study with other settings, or other files."""
        owner = self.owner()
        wanted = {"study": study, "config": config, "inputs": inputs}
        if owner is None:
            stray = sorted(p.name for p in self.out.iterdir() if not p.name.startswith("."))
            if stray:
                raise RunError(
                    f"{self.out} is not empty and holds no memlab study ({', '.join(stray[:3])}"
                    f"{', ...' if len(stray) > 3 else ''}); give a new or empty --out")
            atomic_write_json(self.out / OWNER, {"format": FORMAT, **wanted})
            return
        if owner != wanted and self._claimed_only():
            # A study that stopped before writing anything (a bad setting found once the
            # data was loaded, say): the directory is free for the corrected command.
            atomic_write_json(self.out / OWNER, {"format": FORMAT, **wanted})
            return
        if owner["study"] != study:
            raise RunError(f"{self.out} holds the results of the study {owner['study']!r}; "
                           f"give {study} another --out (nothing was changed)")
        if owner["config"] != config or owner["inputs"] != inputs:
            differ = differences(owner["config"], config) or differences(
                owner["inputs"], inputs, "input ")
            raise RunError(
                f"{self.out} holds {study} results for other settings ("
                f"{'; '.join(differ[:3])}{'; ...' if len(differ) > 3 else ''}); give another "
                "--out, or remove it to start over (nothing was changed)")
        if not (self.out / OWNER).exists():  # a result saved before study.json existed
            atomic_write_json(self.out / OWNER, {"format": FORMAT, **wanted})

    def _claimed_only(self) -> bool:
        """Whether ``out`` holds study.json and nothing else of a study's."""
        return (self.out / OWNER).exists() and not any(
            not p.name.startswith(".") and p.name != OWNER for p in self.out.iterdir())

    # ------------------------------------------------------------ checksums

    def manifest(self) -> dict[str, str] | None:
        """Output file (relative path) -> checksum, or None when the study has not
        finished here (no outputs.json)."""
        path = self.out / OUTPUTS
        if not path.exists():
            return None
        document = _read_json(path, self.out, repair=True)
        files = document.get("files") if isinstance(document, dict) else None
        if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise RunError(f"{path} is damaged (no file list); run the same command again to "
                           "recompute the study's outputs")
        return files

    def damage(self) -> dict[str, str] | None:
        """Output file -> what is wrong with it ({} when every file is intact), or None when
        the study has not finished here."""
        files = self.manifest()
        if files is None:
            return None
        return {name: problem for name, expected in sorted(files.items())
                if (problem := file_problem(self.out / name, expected))}

    def discard(self, names: list[str]) -> None:
        """Remove damaged outputs, so that a study's own caches recompute them."""
        for name in names:
            path = self.out / name
            if path.is_dir() and not path.is_symlink():
                import shutil

                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def write(self, name: str, data: bytes) -> None:
        """Write one output atomically, unless the file already holds exactly ``data`` (a
        repair rewrites only what is missing or damaged)."""
        path = self.out / name
        if path.is_file() and not path.is_symlink() and file_checksum(path) == \
                checksum_bytes(data):
            return
        atomic_write_bytes(path, data)

    def commit(self) -> dict[str, str]:
        """Record every output file now in ``out`` and its checksum (outputs.json, written
        last: the study's commit marker)."""
        files = {name: file_checksum(self.out / name) for name in output_files(self.out)}
        atomic_write_json(self.out / OUTPUTS, {"format": FORMAT, "files": files})
        return files

    def uncommit(self) -> None:
        """The outputs are about to change: until the next commit, the study is unfinished."""
        (self.out / OUTPUTS).unlink(missing_ok=True)

    def damage_error(self, damage: dict[str, str]) -> RunError:
        name, problem = next(iter(damage.items()))
        more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
        return RunError(f"{self.out / name} is {problem}{more}; run the same command again "
                        "to recompute it")


def output_files(out: Path) -> list[str]:
    """The study's output files under ``out`` (relative paths): everything but hidden files
    (locks, temporaries), the owner and commit marker, and population run directories
    (each has its own manifest and checksums)."""
    found = []
    for root, dirs, files in os.walk(out):
        here = Path(root)
        if here != out and (here / RUN_MANIFEST).exists():
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            relative = (here / name).relative_to(out).as_posix()
            if name.startswith(".") or relative in (OWNER, OUTPUTS):
                continue
            found.append(relative)
    return found


def file_problem(path: Path, expected: str) -> str | None:
    """What is wrong with an output file (None: it matches its checksum)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    try:
        return None if file_checksum(path) == expected else "damaged (its checksum differs)"
    except OSError as error:
        return f"unreadable ({error.strerror})"


def refuse_population_run(out: Path) -> None:
    """Study outputs go into a directory of their own, never into a population run."""
    if (out / RUN_MANIFEST).exists():
        raise RunError(f"{out} is a population run directory (it holds {RUN_MANIFEST}); a "
                       f"study writes its outputs elsewhere: give --out {out / 'study'} or "
                       "another directory (to measure this run, give it as RUN)")


def differences(held: Any, wanted: Any, prefix: str = "") -> list[str]:
    """``"name: held here → asked"`` for each setting that differs (nested dicts flattened)."""
    if isinstance(held, dict) and isinstance(wanted, dict):
        found = []
        for key in sorted(set(held) | set(wanted)):
            sub = f"{prefix}{key}"
            if key not in held or key not in wanted:
                found.append(f"{sub}: {'absent' if key not in held else held[key]!r} here, "
                             f"{'absent' if key not in wanted else wanted[key]!r} asked")
            else:
                found += differences(held[key], wanted[key], f"{sub}.")
        return found
    if held != wanted:
        return [f"{prefix.rstrip('.')}: {held!r} here, {wanted!r} asked"]
    return []


def _read_json(path: Path, out: Path, repair: bool = False) -> Any:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise ValueError("not a regular file")
        return loads_strict(path.read_text())
    except (OSError, ValueError, json.JSONDecodeError) as error:
        fix = ("run the same command again to recompute the study's outputs" if repair
               else f"remove {out} or give another --out")
        raise RunError(f"{path} is unreadable ({error}); {fix}") from None
