"""The run directory: where a population's every record lives, written atomically.

Layout (see docs/architecture.md)::

    RUN/
      manifest.json            config, dataset fingerprint, versions, status of every chunk
      dataset.npz              the exact data trained on (after any corruption)
      membership_mask.npy      (n_models, n_train) bool: M[k, i] = example i in model k's subset
      chunks/00000/            one finished chunk of models (the unit of work and resumption):
        train_correct.npy ...    its records, model axis first
        weights.safetensors      its final weights, stacked (optional)
        done.json                written last: the chunk's commit marker
      records/                 all chunks' records concatenated on completion (memory-mappable)
        train_correct.npy      (n_models, n_train) bool
        train_margin.npy       (n_models, n_train) float32 ...
      tables/models.parquet    one row per model: subset size, accuracies, final loss

A chunk directory is built under a temporary name and renamed into place, so a chunk is
either wholly present or absent; a killed run resumes from the chunks it finished.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memlab import io
from memlab.errors import ConfigError, RunError

# Re-exported: older callers take the atomic writers from here (they live in memlab.io).
from memlab.io import (  # noqa: F401
    atomic_save_npy,
    atomic_save_table,
    atomic_write_bytes,
    atomic_write_json,
)

MANIFEST = "manifest.json"
LOCK = ".lock"
MASK = "membership_mask.npy"
RUN_FORMAT = "memlab-run/2"
# Format 1 (no task, model or chunk-plan records) is read as: classification or language
# model by dataset, chunks of config.chunk_size, the model by its name.
READABLE_FORMATS = ("memlab-run/1", RUN_FORMAT)
# The errors of a full or read-only disk: reported in one line, and the run stays resumable.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
               errno.EFBIG)


def read_json(path: Path, what: str) -> dict:
    try:
        io.check_regular(path)  # a FIFO is refused, never opened (reading it would hang)
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{what} {path} is missing") from None
    except IsADirectoryError:
        raise RunError(f"{what} {path} is a directory, not a file; the run directory is "
                       "damaged") from None
    except io.NotARegularFile as error:
        raise RunError(f"{what} {path} {error.strerror}; the run directory is damaged")\
            from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(
            f"{what} {path} is unreadable ({error}); the run directory is corrupted: "
            "delete it (or pass a new --out) and train again"
        ) from None


def load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    """Load a record array, memory-mapped by default; a damaged file gets a RunError."""
    try:
        io.check_regular(path)  # a FIFO is refused, never opened
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise RunError(f"record {path} is missing; the run is incomplete or corrupted: run "
                       "the same train command again to repair it") from None
    except (ValueError, OSError, EOFError) as error:
        raise RunError(
            f"record {path} is unreadable ({error}); run the same train command again to "
            "repair it (memlab verify RUN lists what is damaged)"
        ) from None


def disk_error(error: OSError, run_dir: Path) -> RunError | None:
    """A one-line RunError for a full or read-only disk (None for other errors)."""
    if error.errno not in DISK_ERRORS:
        return None
    name = errno.errorcode.get(error.errno, str(error.errno))
    where = error.filename or run_dir
    fix = ("free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
           else "make it writable")
    return RunError(f"cannot write {where}: {error.strerror} ({name}); {fix} and run the "
                    f"same command again to resume {run_dir} (finished chunks are kept)")


# ---------------------------------------------------------------- checksums
#
# Every file of a run has a checksum: chunk files in their done.json, the dataset, the mask
# and every consolidated file in the manifest (``checksums``: path relative to the run ->
# "sha256:<hex>"), and done.json and the manifest carry a checksum of their own content.


class Verifier:
    """Checks files against their checksums, hashing each file at most once per instance
    (a resume checks every chunk, then opens the run: the second look is free)."""

    def __init__(self):
        self._seen: dict[tuple, str] = {}

    def problem(self, path: Path, expected: str | None, size: int | None = None) -> str | None:
        """Why ``path`` is damaged ('missing', 'truncated ...', 'checksum mismatch'), or
        None when intact (or when nothing was recorded to check it against)."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return "missing"
        except OSError as error:
            return f"unreadable ({error.strerror})"
        if not os.path.isfile(path):
            return "not a file"
        if size is not None and stat.st_size != size:
            return f"truncated or extended ({stat.st_size} bytes, {size} recorded)"
        if expected is None:
            return None
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in self._seen:
            algorithm = expected.partition(":")[0]
            try:
                self._seen[key] = io.file_checksum(path, algorithm)
            except (OSError, ValueError) as error:
                return f"unreadable ({error})"
        return None if self._seen[key] == expected else "checksum mismatch"


def _self_checksum(document: dict) -> str:
    body = {k: v for k, v in document.items() if k != "checksum"}
    return io.checksum_bytes(io.dumps_strict(body).encode("utf-8"))


def self_check(document: dict) -> bool:
    """Whether a JSON document's own ``checksum`` matches its content (True when absent:
    written before checksums)."""
    return "checksum" not in document or document["checksum"] == _self_checksum(document)


def with_checksum(document: dict) -> dict:
    # Through JSON first, so the checksum is of what a reader will load back.
    plain = io.loads_strict(io.dumps_strict(document))
    return {**plain, "checksum": _self_checksum(plain)}


# ---------------------------------------------------------------- compact records
#
# With ``compact_records`` a run stores 0/1 records (``*_correct``) as bits packed along the
# example axis and float32 margins and losses as float16: about 10 bytes per model and
# example instead of 15 (tests/test_population.py measures both), for runs with many models
# on large datasets. ``Run.records`` decodes them, so readers never see the encoding.


BIT_RECORDS = ("train_correct", "test_correct", "epoch_train_correct", "epoch_test_correct")
HALF_RECORDS = ("train_margin", "test_margin", "train_loss", "test_loss")


def is_bit_record(name: str) -> bool:
    return name in BIT_RECORDS


def is_half_record(name: str) -> bool:
    return name in HALF_RECORDS


def encode_record(name: str, array: np.ndarray) -> np.ndarray:
    if is_bit_record(name):
        return np.packbits(array.astype(bool), axis=-1)
    if is_half_record(name):
        return array.astype(np.float16)
    return array


def decode_record(name: str, array: np.ndarray, n_examples: int) -> np.ndarray:
    """Undo ``encode_record``; ``n_examples`` is the unpacked length of the last axis.
    Arrays that were not encoded (bool, float32) come back unchanged."""
    if is_bit_record(name) and array.dtype == np.uint8:
        return np.unpackbits(array, axis=-1, count=n_examples).astype(bool)
    return array


# ---------------------------------------------------------------- chunks


def chunk_dir(run_dir: Path, chunk_index: int) -> Path:
    return run_dir / "chunks" / f"{chunk_index:05d}"


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def is_plain_name(name: object) -> bool:
    """Whether ``name`` can name a file inside a run as it is: letters, digits, ``_``,
    ``.`` and ``-``, not starting with a dot (no ``/``, no ``..``: never outside the run)."""
    return isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None


def write_chunk(run_dir: Path, chunk_index: int, arrays: dict[str, np.ndarray],
                weights: dict | None, info: dict) -> None:
    """Commit one chunk's records: build it in a temporary directory, then rename it in.
    Its done.json, written last, lists every file's size and checksum."""
    from safetensors.numpy import save as save_safetensors

    bad = [name for name in arrays if not is_plain_name(name)]
    if bad:  # a callback's record key, say: its file would land outside the chunk
        raise ConfigError(f"record name {bad[0]!r} is not a plain name (letters, digits, "
                          "_ . -, not starting with a dot); rename the callback's key")
    final = chunk_dir(run_dir, chunk_index)
    try:  # (never "remove unless a directory, then create": two workers race in between)
        final.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # chunks/ replaced by a file: damage being repaired
        clear_path(final.parent)
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        files, checksums = {}, {}
        for name, array in arrays.items():
            # Files inside the temporary directory need no rename of their own.
            checksums[f"{name}.npy"] = io.atomic_save_npy(tmp / f"{name}.npy", array,
                                                          atomic=False)
        if weights is not None:
            data = save_safetensors({k: np.ascontiguousarray(v) for k, v in weights.items()})
            checksums["weights.safetensors"] = io.write_file(
                tmp / "weights.safetensors", lambda handle: handle.write(data), atomic=False)
        for name in checksums:
            files[name] = (tmp / name).stat().st_size
        marker = with_checksum({**info, "files": files, "checksums": checksums})
        io.write_file(tmp / "done.json",
                      lambda handle: handle.write(json.dumps(marker, indent=2).encode()),
                      atomic=False)
        clear_path(final)  # a stale, damaged copy being redone (or a file in its place)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clear_path(path: Path, unless_file: bool = False) -> None:
    """Remove whatever is at ``path`` (a directory tree, a file, a link, a FIFO) before a
    repair writes there: damage can put a directory where a file belongs, or the reverse.
    ``unless_file``: keep a regular file (it is replaced atomically by the write)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if unless_file and stat.S_ISREG(info.st_mode):
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def chunk_problems(run_dir: Path, chunk_index: int,
                   verifier: Verifier | None = None) -> list[tuple[str, str]]:
    """(file, problem) for each damaged file of a chunk: its done.json missing or damaged,
    or a file it lists missing, of the wrong size or with the wrong checksum."""
    directory = chunk_dir(run_dir, chunk_index)
    marker = directory / "done.json"
    try:
        io.check_regular(marker)  # a FIFO is refused, never opened
        info = json.loads(marker.read_text())
        files = info["files"]
        checksums = info.get("checksums", {})
        if not isinstance(files, dict) or not isinstance(checksums, dict) \
                or not self_check(info):
            raise ValueError("its checksum does not match its content")
    except FileNotFoundError:
        return [("done.json", "missing (the chunk was never committed)")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return [("done.json", f"damaged ({error})")]
    verifier = verifier or Verifier()
    found = []
    for name, size in files.items():
        problem = verifier.problem(directory / name, checksums.get(name), size)
        if problem:
            found.append((name, problem))
    return found


def chunk_is_complete(run_dir: Path, chunk_index: int, verifier: Verifier | None = None
                      ) -> bool:
    """True when the chunk's marker is intact and every file it lists has its recorded size
    and checksum."""
    return not chunk_problems(run_dir, chunk_index, verifier)


def read_chunk_array(run_dir: Path, chunk_index: int, name: str) -> np.ndarray:
    return load_npy(chunk_dir(run_dir, chunk_index) / f"{name}.npy", mmap=False)


def read_chunk_info(run_dir: Path, chunk_index: int) -> dict:
    return read_json(chunk_dir(run_dir, chunk_index) / "done.json", "chunk marker")


# ---------------------------------------------------------------- manifest


@dataclass
class ChunkPlan:
    """Models [start, stop) form chunk ``index``."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_chunks(n_models: int, chunk_size: int, boundaries: list[int] | tuple = (),
                existing: list[ChunkPlan] | None = None) -> list[ChunkPlan]:
    """Chunks of at most ``chunk_size`` consecutive models that never cross a boundary
    (a model index where a new group starts: a sweep value, another subset size).
    ``existing``: the plan of a run being grown; its chunks are kept as they are and new
    chunks cover the models after them."""
    chunks = list(existing or [])
    start = chunks[-1].stop if chunks else 0
    cuts = sorted({b for b in boundaries if start < b < n_models} | {n_models})
    for cut in cuts:
        while start < cut:
            stop = min(start + chunk_size, cut)
            chunks.append(ChunkPlan(len(chunks), start, stop))
            start = stop
    return chunks


def chunk_plan_to_json(chunks: list[ChunkPlan]) -> list[list[int]]:
    return [[c.start, c.stop] for c in chunks]


def chunk_plan_from_json(plan: list[list[int]]) -> list[ChunkPlan]:
    return [ChunkPlan(i, int(start), int(stop)) for i, (start, stop) in enumerate(plan)]


def write_manifest(run_dir: Path, manifest: dict) -> None:
    """Write the manifest atomically, with a checksum of its own content."""
    stamped = with_checksum(manifest)
    manifest["checksum"] = stamped["checksum"]
    atomic_write_json(Path(run_dir) / MANIFEST, stamped)


# What a manifest must hold, and the type of each entry.
MANIFEST_KEYS = {"config": dict, "dataset": dict, "chunks": dict, "status": str}


def read_manifest(run_dir: Path) -> dict:
    """The run's manifest, checked: a readable JSON object of a known format with every
    entry memlab needs and an intact checksum; otherwise a one-line RunError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a run directory (it does not exist)")
    path = run_dir / MANIFEST
    manifest = read_json(path, "manifest")
    if not isinstance(manifest, dict):
        raise RunError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest "
                       "object; the run directory is damaged: " + _UNREPAIRABLE)
    if manifest.get("format") not in READABLE_FORMATS:
        versions = manifest.get("versions")
        version = versions.get("memlab", "unknown") if isinstance(versions, dict) \
            else "unknown"
        raise RunError(
            f"{path} has format {manifest.get('format')!r}; this memlab reads "
            f"{RUN_FORMAT!r} runs. Retrain with this version or open it with the version "
            f"that wrote it ({version})"
        )
    for key, kind in MANIFEST_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            what = "has no" if key not in manifest else "has a malformed"
            raise RunError(f"{path} {what} {key!r} entry; the run directory is damaged: "
                           + _UNREPAIRABLE)
    if manifest["format"] == RUN_FORMAT and not isinstance(manifest.get("chunk_plan"), list):
        raise RunError(f"{path} has no valid 'chunk_plan'; the run directory is damaged: "
                       + _UNREPAIRABLE)
    if not self_check(manifest):
        raise RunError(f"{path} is damaged (its checksum does not match its content); "
                       + _UNREPAIRABLE)
    if "checksum" not in manifest and _written_with_checksums(run_dir, manifest):
        # Only a run from before checksums may lack one: deleting it disables no check.
        raise RunError(f"{path} has lost its 'checksum' entry (this run was written with "
                       "checksums), so nothing in it can be trusted; the run directory is "
                       "damaged: " + _UNREPAIRABLE)
    return manifest


def _written_with_checksums(run_dir: Path, manifest: dict) -> bool:
    """Whether a run was written by a memlab that stamps checksums: its manifest lists file
    checksums, or a chunk marker carries its own checksum."""
    if manifest.get("checksums"):
        return True
    for marker in sorted((run_dir / "chunks").glob("*/done.json"))[:1]:
        try:
            io.check_regular(marker)
            return "checksum" in json.loads(marker.read_text())
        except (OSError, ValueError, TypeError):
            return False
    return False


_UNREPAIRABLE = ("without an intact manifest its chunks cannot be matched to settings; move "
                 "the directory away and train again")


# ---------------------------------------------------------------- lock


class RunLock(io.DirectoryLock):
    """The run directory's lock (``RUN/.lock``): see :class:`memlab.io.DirectoryLock`."""

    busy = "wait for it to finish (or stop it), or train into another directory"


def remove_stale_staging(run_dir: Path) -> None:
    """Delete the ``.RUN.creating-*`` directories of run creations that died before their
    rename (their lock is free); live creations keep theirs."""
    for staging in run_dir.parent.glob(f".{run_dir.name}.creating-*"):
        lock = staging / LOCK
        try:
            if not lock.exists():
                # Killed between mkdtemp and taking its lock: stale once it is old.
                if time.time() - staging.stat().st_mtime > 3600:
                    shutil.rmtree(staging, ignore_errors=True)
                continue
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a creation in progress
            finally:
                os.close(fd)
            shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            continue


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete what killed writers left in a run (temporary files and chunk directories);
    call only while holding the run's lock."""
    removed = []
    for directory in (run_dir, run_dir / "records", run_dir / "tables"):
        if directory.is_dir():
            removed += io.remove_stale_temporaries(directory)
    for leftover in (run_dir / "chunks").glob(".*"):  # a chunk being written when killed
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover)
    return removed


# ---------------------------------------------------------------- verification


@dataclass
class Damage:
    """One damaged file of a run: which, what is wrong with it, and how it is repaired
    (``repairable``: by running the same train command again)."""

    path: str
    problem: str
    repair: str
    repairable: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.problem} -> {self.repair}"


CONSOLIDATED = ("records/", "tables/")
REPAIR_CONSOLIDATED = "run the same train command: it rebuilds this from chunks/"


def dataset_files(checksums: dict[str, str]) -> list[str]:
    return [name for name in checksums if name != MASK and not name.startswith(CONSOLIDATED)]


def dataset_repair(manifest: dict) -> tuple[str, bool]:
    """How a lost dataset file comes back, and whether it can."""
    provenance = manifest["dataset"].get("provenance") or {}
    source = provenance.get("source") if isinstance(provenance, dict) else None
    name = manifest["dataset"].get("name")
    if name in ("mnist1d", "digits", "mnist") or source is None:
        return (f"run the same train command: it re-writes this from the dataset it loads "
                f"({name}; fingerprint checked)"), True
    if Path(str(source)).exists():
        return (f"run the same train command: it re-writes this from {source} "
                "(fingerprint checked)"), True
    return (f"cannot be recovered: it was made from {source}, which is gone; restore that "
            "file and run the same train command"), False


def mask_repair(manifest: dict) -> tuple[str, bool]:
    if manifest.get("membership", {}).get("kind") == "explicit":
        return ("cannot be regenerated (an explicit mask given by the user): run the same "
                "train command with the original --membership mask"), False
    return "run the same train command: it regenerates the mask from the seed", True


def damage(manifest: dict, path: str, problem: str) -> Damage:
    """The Damage record (with its repair) for file ``path`` (relative to the run)."""
    if path == MASK:
        return Damage(path, problem, *mask_repair(manifest))
    if path.startswith(CONSOLIDATED):
        return Damage(path, problem, REPAIR_CONSOLIDATED)
    if path.startswith("chunks/"):
        index = int(path.split("/")[1])
        plan = manifest.get("chunk_plan") or []
        models = (f" (models {plan[index][0]}..{plan[index][1] - 1})"
                  if index < len(plan) else "")
        return Damage(path, problem,
                      f"run the same train command: it retrains chunk {index}{models}")
    return Damage(path, problem, *dataset_repair(manifest))


def verify_run(run_dir: Path, verifier: Verifier | None = None, chunks: bool = True,
               consolidated: bool = True) -> list[Damage]:
    """Every damaged file of a run (empty when intact): the dataset, the mask, each
    committed chunk (``chunks``) and, for a complete run, every consolidated record and
    table (``consolidated``). The manifest itself is checked by read_manifest."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    verifier = verifier or Verifier()
    checksums = manifest.get("checksums") or {}
    found = []
    for name in dataset_files(checksums) or ["dataset.npz"]:
        problem = verifier.problem(run_dir / name, checksums.get(name))
        if problem and not (name == "dataset.npz" and not checksums
                            and (run_dir / "dataset").is_dir()):
            found.append(damage(manifest, name, problem))
    problem = verifier.problem(run_dir / MASK, checksums.get(MASK))
    if problem:
        found.append(damage(manifest, MASK, problem))
    if chunks:
        for index in range(len(manifest.get("chunk_plan") or [])):
            done = manifest["chunks"].get(str(index)) == "done"
            if not done and not chunk_dir(run_dir, index).exists():
                continue  # not trained yet: the run is incomplete, not damaged
            for name, problem in chunk_problems(run_dir, index, verifier):
                if not done and name == "done.json" and problem.startswith("missing"):
                    continue
                found.append(damage(manifest, f"chunks/{index:05d}/{name}", problem))
    if consolidated and manifest["status"] == "complete":
        for name, value in consolidated_checksums(manifest).items():
            problem = verifier.problem(run_dir / name, value)
            if problem:
                found.append(damage(manifest, name, problem))
    return found


def consolidated_damage(run_dir: Path, verifier: Verifier) -> list[Damage]:
    """The damaged consolidated files (``records/``, ``tables/``) of a complete run: what
    rebuilding from the chunks repairs."""
    return [d for d in verify_run(run_dir, verifier, chunks=False)
            if d.repair == REPAIR_CONSOLIDATED]


def consolidated_checksums(manifest: dict) -> dict[str, str | None]:
    """records/ and tables/ files -> checksum (None for a run from before checksums)."""
    recorded = {name: value for name, value in (manifest.get("checksums") or {}).items()
                if name.startswith(CONSOLIDATED)}
    return recorded or {f"records/{name}.npy": None for name in manifest.get("records", {})}
