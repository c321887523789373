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

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memlab.errors import RunError

# Re-exported: older callers take the atomic writers from here (they live in memlab.io).
from memlab.io import (  # noqa: F401
    atomic_save_npy,
    atomic_save_table,
    atomic_write_bytes,
    atomic_write_json,
)

MANIFEST = "manifest.json"
RUN_FORMAT = "memlab-run/2"
# Format 1 (no task, model or chunk-plan records) is read as: classification or language
# model by dataset, chunks of config.chunk_size, the model by its name.
READABLE_FORMATS = ("memlab-run/1", RUN_FORMAT)


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{what} {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(
            f"{what} {path} is unreadable ({error}); the run directory is corrupted: "
            "delete it (or pass a new --out) and train again"
        ) from None


def load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    """Load a record array, memory-mapped by default; a damaged file gets a RunError."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise RunError(f"record {path} is missing; the run is incomplete or corrupted") from None
    except (ValueError, OSError, EOFError) as error:
        raise RunError(
            f"record {path} is unreadable ({error}); delete the run directory and train again"
        ) from None


# ---------------------------------------------------------------- compact records
#
# With ``compact_records`` a run stores 0/1 records (``*_correct``) as bits packed along the
# example axis and float32 margins and losses as float16: about 6 bytes per model and
# example instead of 11, for runs with many models on large datasets. ``Run.records``
# decodes them, so readers never see the encoding.


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


def write_chunk(run_dir: Path, chunk_index: int, arrays: dict[str, np.ndarray],
                weights: dict | None, info: dict) -> None:
    """Commit one chunk's records: build it in a temporary directory, then rename it in."""
    from safetensors.numpy import save_file

    final = chunk_dir(run_dir, chunk_index)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        files = {}
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            files[f"{name}.npy"] = (tmp / f"{name}.npy").stat().st_size
        if weights is not None:
            save_file({k: np.ascontiguousarray(v) for k, v in weights.items()},
                      str(tmp / "weights.safetensors"))
            files["weights.safetensors"] = (tmp / "weights.safetensors").stat().st_size
        # done.json lists every file with its size: a truncated file is caught on resume.
        (tmp / "done.json").write_text(json.dumps({**info, "files": files}, indent=2))
        for path in tmp.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():  # a stale, unverified copy (e.g. a damaged chunk being redone)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def chunk_is_complete(run_dir: Path, chunk_index: int) -> bool:
    """True when the chunk's marker exists and every file it lists has its recorded size."""
    directory = chunk_dir(run_dir, chunk_index)
    try:
        info = json.loads((directory / "done.json").read_text())
        return all((directory / name).stat().st_size == size
                   for name, size in info["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


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
    atomic_write_json(run_dir / MANIFEST, manifest)


def read_manifest(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a run directory (it does not exist)")
    manifest = read_json(run_dir / MANIFEST, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE_FORMATS:
        manifest = manifest if isinstance(manifest, dict) else {}
        raise RunError(
            f"{run_dir / MANIFEST} has format {manifest.get('format')!r}; this memlab reads "
            f"{RUN_FORMAT!r} runs. Retrain with this version or open it with the version "
            f"that wrote it ({manifest.get('versions', {}).get('memlab', 'unknown')})"
        )
    return manifest
