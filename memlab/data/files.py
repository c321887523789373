"""Datasets read from files: an ``.npz`` archive (``load_npz``, every array's header
checked before it is read) and a directory of ``.npy`` files memory-mapped for data larger
than memory (``load_npy_dir``; written by ``Dataset.save`` / ``save_npy_dir``)."""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from memlab.data.dataset import NPY_FILES, Dataset
from memlab.errors import DataError


def load_npy_dir(directory: str | Path) -> Dataset:
    """A dataset larger than memory: ``x_train.npy``, ``y_train.npy``, ``x_test.npy``,
    ``y_test.npy`` (and optionally ``meta.json`` with ``class_names``) in one directory,
    inputs memory-mapped (read from disk as batches need them), labels loaded."""
    import json

    directory = Path(directory)
    missing = [n for n in NPY_FILES if not (directory / f"{n}.npy").exists()]
    if missing:
        raise DataError(f"{directory} lacks {[f'{n}.npy' for n in missing]}; a dataset "
                        f"directory holds {', '.join(f'{n}.npy' for n in NPY_FILES)}")
    try:
        arrays = {n: np.load(directory / f"{n}.npy", mmap_mode="r" if n.startswith("x")
                             else None, allow_pickle=False) for n in NPY_FILES}
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the .npy files in {directory} ({error}); write them "
                        "with np.save (no pickles)") from None
    meta: dict[str, Any] = {}
    if (directory / "meta.json").exists():
        try:
            meta = json.loads((directory / "meta.json").read_text())
        except ValueError as error:
            raise DataError(f"{directory / 'meta.json'} is not valid JSON ({error})") from None
    for n in ("y_train", "y_test"):
        if np.issubdtype(arrays[n].dtype, np.integer):
            arrays[n] = arrays[n].astype(np.int64)
    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    return Dataset(name=meta.get("name", directory.name), **arrays,
                   class_names=list(meta.get("class_names")
                                    or [str(c) for c in range(n_classes)]),
                   provenance=meta.get("provenance", {"source": str(directory)}),
                   corruption=meta.get("corruption", {}))


NPZ_KEYS = ("x", "y", "x_test", "y_test")
# Labels may skip ids (a class absent from a small file), but not thousands of them: a
# label of 50,000 among 60 examples means a 50,001-way model, never what anyone wanted.
MAX_UNUSED_CLASS_IDS = 16


def load_npz(path: str | Path) -> Dataset:
    """Read a dataset from an ``.npz`` with arrays ``x``, ``y``, ``x_test``, ``y_test`` (and
    the optional ``meta`` JSON that :meth:`Dataset.save` writes). Every array's declared
    shape and dtype are checked from its header before it is read, so a damaged or huge
    file gets a one-line :class:`DataError`, not a traceback or an out-of-memory kill."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a directory; give an .npz file")
    if not path.is_file():  # a FIFO, socket or device: never opened (a FIFO blocks)
        raise DataError(f"{path} is not a regular file (a FIFO, socket or device); give an "
                        ".npz file")
    headers = _npz_headers(path)
    missing = [k for k in NPZ_KEYS if k not in headers]
    if missing:
        raise DataError(
            f"{path} lacks arrays {missing}; it needs x, y, x_test, y_test "
            f"(found {sorted(headers)})"
        )
    for key in NPZ_KEYS:
        shape, dtype = headers[key]
        if dtype.kind not in "biuf" and not (key.startswith("x") and dtype.kind == "c"):
            raise DataError(f"{path}: array {key} has dtype {dtype}; it must hold numbers "
                            "(x: features, y: integer class indices)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in (*NPZ_KEYS, "meta") if k in headers}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"cannot read {path} ({type(error).__name__}: {_first_line(error)}); the file "
            "is damaged: save it again with np.savez(path, x=..., y=..., x_test=..., "
            "y_test=...)"
        ) from None
    meta = _npz_meta(path, arrays.pop("meta", None))
    for key in ("x", "x_test"):
        if np.iscomplexobj(arrays[key]):
            raise DataError(f"{path}: {key} is complex ({arrays[key].dtype}); give real "
                            "features, e.g. np.concatenate([x.real, x.imag], axis=1)")
        if arrays[key].dtype != np.float32:
            arrays[key] = arrays[key].astype(np.float32)
    for key in ("y", "y_test"):
        y = arrays[key]
        if y.dtype.kind == "u" and y.size and y.max() > np.iinfo(np.int64).max:
            raise DataError(f"{path}: {key} has labels up to {y.max()}; labels must be "
                            "class indices 0..C-1")
        if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
            arrays[key] = y.astype(np.int64)
    class_names = meta.get("class_names")
    if class_names is None:
        class_names = _inferred_class_names(path, arrays["y"], arrays["y_test"])
    if len(np.unique(arrays["y"])) < 2 and arrays["y"].size:
        raise DataError(f"{path}: every training label is {arrays['y'].ravel()[0]}; a "
                        "classifier needs examples of at least 2 classes")
    return Dataset(
        name=str(meta.get("name", path.stem)),
        x_train=arrays["x"], y_train=arrays["y"], x_test=arrays["x_test"],
        y_test=arrays["y_test"], class_names=list(class_names),
        provenance=meta.get("provenance", {"source": str(path)}),
        corruption=meta.get("corruption", {}),
    )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:160]


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape, dtype) of every array in the archive, read from the ``.npy``
    headers only. Refuses files that are not zip archives (empty, garbage, a bare
    ``.npy``), pickled arrays, and arrays larger than their stored bytes or than memory."""
    from memlab.validate import size_text, total_memory

    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes); write it with np.savez(path, x=..., "
                        "y=..., x_test=..., y_test=...)")
    with open(path, "rb") as handle:
        start = handle.read(6)
    if start == b"\x93NUMPY":
        raise DataError(f"{path} is a single .npy array, not an .npz archive; save the four "
                        "arrays with np.savez(path, x=..., y=..., x_test=..., y_test=...)")
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                key = info.filename[:-4]
                if dtype.hasobject:
                    raise DataError(f"{path}: array {key} holds Python objects (a pickle); "
                                    "memlab reads numeric arrays only")
                n_bytes = math.prod(shape) * dtype.itemsize
                if n_bytes > info.file_size:
                    raise DataError(f"{path}: array {key} declares shape {shape} "
                                    f"({size_text(n_bytes)}) but stores "
                                    f"{size_text(info.file_size)}; the file is truncated or "
                                    "damaged: save it again")
                headers[key] = (tuple(shape), dtype)
                total += n_bytes
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable .npz archive ({_first_line(error)}); "
                        "save the data with np.savez(path, x=..., y=..., x_test=..., "
                        "y_test=...)") from None
    limit = total_memory()
    if total > limit:
        raise DataError(f"{path} declares arrays of {size_text(total)}, more than the "
                        f"{size_text(limit)} of memory here; use a smaller dataset")
    return headers


def _npz_meta(path: Path, raw: np.ndarray | None) -> dict[str, Any]:
    """The ``meta`` JSON of a file written by Dataset.save, checked field by field."""
    if raw is None:
        return {}
    try:
        meta = json.loads(str(raw))
    except (json.JSONDecodeError, ValueError) as error:
        raise DataError(f"{path}: the meta array is not valid JSON ({_first_line(error)}); "
                        "remove it or write the file with Dataset.save") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: meta must be a JSON object, got {type(meta).__name__}")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(c, str) for c in names)):
        raise DataError(f"{path}: meta class_names must be a list of strings")
    for key in ("provenance", "corruption"):
        if not isinstance(meta.get(key, {}), dict):
            raise DataError(f"{path}: meta {key} must be a JSON object")
    return meta


def _inferred_class_names(path: Path, y: np.ndarray, y_test: np.ndarray) -> list[str]:
    """"0".."C-1" for labels 0..C-1, after refusing label spaces mostly unused (checked
    before the list of names is built: a label of 2**40 must not allocate 2**40 names)."""
    for key, labels in (("y", y), ("y_test", y_test)):
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: {key} must hold integer class indices, got dtype "
                            f"{labels.dtype}; map class names to 0..C-1 first")
    present = np.unique(np.concatenate([y.ravel(), y_test.ravel()]))
    if present.size == 0:
        raise DataError(f"{path}: there are no labels")
    if present[0] < 0:
        raise DataError(f"{path}: labels must be class indices 0..C-1, got {present[0]}")
    n_classes = int(present[-1]) + 1
    unused = n_classes - present.size
    if unused > max(present.size, MAX_UNUSED_CLASS_IDS):
        raise DataError(
            f"{path}: labels use {present.size} distinct values but reach {present[-1]} "
            f"(a {n_classes:,}-way model, {unused:,} classes never seen); renumber them to "
            "0..C-1 with np.unique(y, return_inverse=True), or list class_names in meta")
    if y.size and y_test.size and y_test.max() > y.max():
        # The class count would come from the test labels alone: outputs never trained.
        unseen = np.unique(y_test[y_test > y.max()])
        raise DataError(
            f"{path}: y_test has labels {unseen[:5].tolist()} that never occur in the training "
            f"labels y (0..{y.max()}), so the model would get {n_classes} outputs, "
            f"{n_classes - int(y.max()) - 1} of them never trained; fix the labels, or give "
            f"the class count: meta with class_names (Dataset(..., class_names=[...]).save)")
    return [str(c) for c in range(n_classes)]
