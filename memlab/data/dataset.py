"""The :class:`Dataset`: train and test arrays with their meaning, validated, with
corruptions that record exactly what they changed and subsets that renumber those records;
written to one ``.npz`` file, or to a directory of ``.npy`` files (``save_npy_dir``) when
its inputs are memory-mapped. Reading them back: :mod:`memlab.data.files`."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memlab import streams
from memlab.errors import ConfigError, DataError


@dataclass
class Dataset:
    """Train and test arrays with their meaning.

    x_train: (n_train, *input_shape) float32; y_train: (n_train,) int64 in [0, n_classes).
    ``corruption`` records every change made to the original data (see ``with_*`` methods):
    e.g. ``{"label_noise": {"fraction": 0.1, "seed": 0, "indices": [...],
    "original_labels": [...]}}``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    corruption: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    def __repr__(self) -> str:
        # One line: the shapes say what the arrays are; printing them helps nobody.
        changes = f", corruption={sorted(self.corruption)}" if self.corruption else ""
        return (f"Dataset({self.name!r}, {self.n_train:,} train / {self.n_test:,} test, "
                f"input {self.input_shape}, {self.n_classes} classes{changes})")

    def subset(self, indices: Any) -> Dataset:
        """The dataset with only the training examples ``indices`` (integer positions, in
        the order given, or a boolean mask of length n_train); the test split is kept.

        Corruption records are carried over with their indices renumbered to positions in
        the subset (entries whose example was left out are dropped), and
        ``provenance["subset"]`` records which original training examples were kept (as
        positions in the data the first ``subset`` was taken from)."""
        keep = _subset_indices(indices, self.n_train)
        # new_position[i] = where original example i lands in the subset (-1: left out).
        new_position = np.full(self.n_train, -1, np.int64)
        new_position[keep] = np.arange(len(keep))
        corruption = {kind: _renumber(kind, record, new_position)
                      for kind, record in self.corruption.items()}
        previous = self.provenance.get("subset")
        original = np.asarray(previous["indices"])[keep] if previous else keep
        provenance = {**self.provenance, "subset": {
            "n_train_before": int(previous["n_train_before"]) if previous else self.n_train,
            "indices": original.tolist()}}
        return dataclasses.replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep],
                                   provenance=provenance, corruption=corruption)

    @property
    def memory_mapped(self) -> bool:
        """Whether the inputs live on disk (``load_npy_dir``): read block by block."""
        return isinstance(self.x_train, np.memmap) or isinstance(self.x_test, np.memmap)

    def fingerprint(self) -> str:
        """SHA-256 over the arrays (after corruption): two runs on equal data share it.
        Read in blocks, so a memory-mapped dataset is never loaded whole."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(str((array.dtype.str, array.shape)).encode())
            for rows in row_blocks(array):
                digest.update(np.ascontiguousarray(array[rows]))  # no copy of a view
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for manifests (the arrays themselves are stored separately)."""
        return {
            "name": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "class_names": self.class_names,
            "fingerprint": self.fingerprint(),
            "provenance": self.provenance,
            "corruption": _jsonable(self.corruption),
        }

    # ---------------------------------------------------------------- corruptions

    def with_label_noise(self, fraction: float, seed: int = 0) -> Dataset:
        """Replace the labels of ``round(fraction * n_train)`` training examples, chosen at
        random, by a *different* random class. ``fraction=1`` is the randY condition (all
        labels wrong). Records the flipped indices and their original labels."""
        _check_fraction(fraction, "label noise fraction", allow_one=True)
        rng = np.random.default_rng([seed, streams.LABEL_NOISE])
        n_flip = int(round(fraction * self.n_train))
        indices = np.sort(rng.choice(self.n_train, n_flip, replace=False))
        original = self.y_train[indices]
        # Adding 1..C-1 modulo C guarantees the new label differs from the original.
        offsets = rng.integers(1, self.n_classes, size=n_flip)
        y_train = self.y_train.copy()
        y_train[indices] = (original + offsets) % self.n_classes
        record = {"fraction": fraction, "seed": seed, "indices": indices,
                  "original_labels": original}
        return self._replace(y_train=y_train, label_noise=record)

    def with_random_inputs(self, fraction: float = 1.0, seed: int = 0) -> Dataset:
        """Replace the inputs of a random ``fraction`` of training examples by Gaussian noise
        with the training data's per-feature mean and standard deviation (randX)."""
        _check_fraction(fraction, "random input fraction", allow_one=True)
        rng = np.random.default_rng([seed, streams.RANDOM_INPUTS])
        n_replace = int(round(fraction * self.n_train))
        indices = np.sort(rng.choice(self.n_train, n_replace, replace=False))
        x_train = self.x_train.copy()
        x_train[indices] = self._noise_inputs(n_replace, rng)
        record = {"fraction": fraction, "seed": seed, "indices": indices}
        return self._replace(x_train=x_train, random_inputs=record)

    def with_duplicates(self, n_examples: int, copies: int, seed: int = 0) -> Dataset:
        """Append ``copies`` exact copies of each of ``n_examples`` random training examples.
        Records which originals were copied and where the copies landed."""
        if n_examples < 1 or copies < 1 or n_examples > self.n_train:
            raise ConfigError(
                f"duplicates need 1 <= n_examples <= {self.n_train} and copies >= 1, "
                f"got n_examples={n_examples}, copies={copies}"
            )
        rng = np.random.default_rng([seed, streams.DUPLICATES])
        originals = np.sort(rng.choice(self.n_train, n_examples, replace=False))
        source = np.repeat(originals, copies)
        copy_indices = np.arange(self.n_train, self.n_train + len(source))
        record = {"n_examples": n_examples, "copies": copies, "seed": seed,
                  "originals": originals, "copy_indices": copy_indices, "copy_of": source}
        return self._replace(
            x_train=np.concatenate([self.x_train, self.x_train[source]]),
            y_train=np.concatenate([self.y_train, self.y_train[source]]),
            duplicates=record,
        )

    def with_privacy_canaries(self, n_canaries: int, seed: int = 0) -> Dataset:
        """Append ``n_canaries`` privacy canaries for a DP audit: Gaussian-noise inputs with
        the training data's per-feature mean and standard deviation, each with a uniformly
        random label — examples unlike any other, which a model can only fit by memorizing
        them. (Not the planted mislabeled examples the membership audit calls canaries.)
        Records where they landed."""
        if isinstance(n_canaries, bool) or not isinstance(n_canaries, int | np.integer) \
                or n_canaries < 1:
            raise ConfigError(f"privacy canaries need a count >= 1, got {n_canaries!r}")
        rng = np.random.default_rng([seed, streams.PRIVACY_CANARIES])
        inputs = self._noise_inputs(n_canaries, rng)
        labels = rng.integers(0, self.n_classes, n_canaries)
        indices = np.arange(self.n_train, self.n_train + n_canaries)
        return self._replace(
            x_train=np.concatenate([self.x_train, inputs]),
            y_train=np.concatenate([self.y_train, labels.astype(self.y_train.dtype)]),
            privacy_canaries={"n": int(n_canaries), "seed": seed, "indices": indices})

    def _noise_inputs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` Gaussian-noise inputs with the training data's per-feature mean and
        standard deviation, in its dtype (randX inputs, privacy canaries)."""
        mean, std = self.x_train.mean(axis=0), self.x_train.std(axis=0)
        noise = rng.standard_normal((n, *self.input_shape)) * std + mean
        return noise.astype(self.x_train.dtype)

    def _replace(self, **changes: Any) -> Dataset:
        arrays = {k: v for k, v in changes.items() if k in ("x_train", "y_train")}
        records = {k: v for k, v in changes.items() if k not in arrays}
        for key in records:
            if key in self.corruption:
                raise ConfigError(f"dataset already has a {key!r} corruption; apply it once")
        return dataclasses.replace(self, **arrays, corruption={**self.corruption, **records})

    # ---------------------------------------------------------------- storage

    def save(self, path: str | Path) -> None:
        """Write the dataset (arrays and metadata) to one ``.npz`` file, atomically; a
        memory-mapped dataset to a directory of ``.npy`` files instead (``path`` without
        its suffix), streamed block by block."""
        import io
        import json

        from memlab.io import atomic_write_bytes

        if self.memory_mapped:
            save_npy_dir(self, Path(path).with_suffix(""))
            return
        buffer = io.BytesIO()
        meta = {"name": self.name, "class_names": self.class_names,
                "provenance": self.provenance, "corruption": _jsonable(self.corruption)}
        np.savez(buffer, x=self.x_train, y=self.y_train, x_test=self.x_test,
                 y_test=self.y_test, meta=np.array(json.dumps(meta)))
        atomic_write_bytes(path, buffer.getvalue())


def _check_fraction(fraction: float, what: str, allow_one: bool = False) -> None:
    upper_ok = fraction <= 1 if allow_one else fraction < 1
    if not (0 < fraction and upper_ok) or not np.isfinite(fraction):
        interval = "(0, 1]" if allow_one else "(0, 1)"
        raise ConfigError(f"{what} must lie in {interval}, got {fraction}")


def _subset_indices(indices: Any, n_train: int) -> np.ndarray:
    """(k,) int64 positions from integer indices or a boolean mask; refused: empty,
    out of range, repeated (use ``with_duplicates`` for copies), or not integers."""
    array = np.asarray(indices)
    if array.dtype == bool:
        if array.shape != (n_train,):
            raise ConfigError(f"a boolean subset mask needs shape ({n_train},), got "
                              f"{array.shape}")
        array = np.flatnonzero(array)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ConfigError(f"subset indices must be a 1-D sequence of integers or a boolean "
                          f"mask, got dtype {array.dtype} and shape {array.shape}")
    if array.size == 0:
        raise ConfigError("subset indices are empty; keep at least one training example")
    if array.min() < 0 or array.max() >= n_train:
        raise ConfigError(f"subset indices must lie in [0, {n_train}), got values in "
                          f"[{array.min()}, {array.max()}]")
    if len(np.unique(array)) != len(array):
        raise ConfigError("subset indices repeat an example; give each once (copies: "
                          "with_duplicates)")
    return array.astype(np.int64)


# For each kind of corruption: its index arrays (positions in the training set) and the
# arrays aligned with them, which must be filtered alongside.
_INDEXED_RECORDS = {
    "label_noise": (("indices", ("original_labels",)),),
    "random_inputs": (("indices", ()),),
    "duplicates": (("originals", ()), ("copy_indices", ("copy_of",))),
}
_POSITION_VALUES = {("duplicates", "copy_of")}  # aligned arrays that are positions too


def _renumber(kind: str, record: dict[str, Any], new_position: np.ndarray) -> dict[str, Any]:
    if kind not in _INDEXED_RECORDS:
        raise ConfigError(f"cannot take a subset of data with a {kind!r} corruption; take "
                          "the subset first, then apply the corruption")
    record = dict(record)
    for key, aligned in _INDEXED_RECORDS[kind]:
        old = np.asarray(record[key], dtype=np.int64)
        moved = new_position[old]
        kept = moved >= 0
        record[key] = moved[kept]
        for name in aligned:
            values = np.asarray(record[name])[kept]
            # copy_of of a kept copy whose original was left out becomes -1.
            record[name] = new_position[values] if (kind, name) in _POSITION_VALUES else values
    return record


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ---------------------------------------------------------------- validation


def validate(dataset: Dataset) -> None:
    """Raise DataError naming the problem (and the fix) for malformed data."""
    name = dataset.name
    if not isinstance(dataset.class_names, list | tuple) or not all(
            isinstance(c, str) for c in dataset.class_names):
        raise DataError(f"{name}: class_names must be a list of strings, got "
                        f"{type(dataset.class_names).__name__}")
    for split in ("train", "test"):
        x = getattr(dataset, f"x_{split}")
        y = getattr(dataset, f"y_{split}")
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise DataError(f"{name}: x_{split} and y_{split} must be numpy arrays")
        if x.ndim < 2:
            raise DataError(
                f"{name}: x_{split} must have shape (n_examples, *input_shape), got {x.shape}; "
                "reshape a single feature to (n, 1)"
            )
        if y.ndim != 1:
            raise DataError(f"{name}: y_{split} must be 1-D class indices, got shape {y.shape}")
        if len(x) != len(y):
            raise DataError(
                f"{name}: x_{split} has {len(x)} examples but y_{split} has {len(y)} labels"
            )
        if len(x) == 0:
            raise DataError(f"{name}: the {split} split is empty")
        if 0 in x.shape[1:]:
            raise DataError(f"{name}: x_{split} has no features (input shape {x.shape[1:]}); "
                            "every example needs at least one value")
        if np.iscomplexobj(x):
            raise DataError(f"{name}: x_{split} is complex ({x.dtype}); give real features, "
                            "e.g. np.concatenate([x.real, x.imag], axis=1)")
        if x.dtype != np.float32:
            raise DataError(f"{name}: x_{split} must be float32, got {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{name}: y_{split} must hold integer class indices, got dtype {y.dtype}; "
                "map class names to 0..C-1 first"
            )
        finite = [bool(np.isfinite(x[rows]).all()) for rows in row_blocks(x)]
        if not all(finite):
            bad = np.concatenate([
                rows.start + np.flatnonzero(~np.isfinite(x[rows].reshape(
                    rows.stop - rows.start, -1)).all(axis=1)) for rows in row_blocks(x)])
            raise DataError(
                f"{name}: x_{split} contains NaN or infinite values in {len(bad)} examples "
                f"(first: {bad[:5].tolist()}); drop or impute them"
            )
        n_classes = len(dataset.class_names)
        if n_classes < 2:
            raise DataError(f"{name}: {n_classes} class ({dataset.class_names}); a classifier "
                            "needs at least 2 classes (margins and accuracy are meaningless "
                            "with one)")
        if y.min() < 0 or y.max() >= n_classes:
            raise DataError(
                f"{name}: y_{split} has labels in [{y.min()}, {y.max()}] but there are "
                f"{n_classes} classes; labels must lie in [0, {n_classes - 1}]"
            )
    if dataset.x_train.shape[1:] != dataset.x_test.shape[1:]:
        raise DataError(
            f"{name}: train inputs have shape {dataset.x_train.shape[1:]} but test inputs "
            f"{dataset.x_test.shape[1:]}; they must match"
        )


BLOCK_BYTES = 16 * 2**20  # rows of a memory-mapped array read at once


def row_blocks(array: np.ndarray) -> Iterator[slice]:
    """Slices of rows of about BLOCK_BYTES each (one slice for a small array). For a
    memory-mapped array, the pages read for a block are let go before the next block
    (``MADV_DONTNEED``): reading a dataset larger than memory from end to end (its
    fingerprint, a copy) never grows this process's resident memory by more than a block."""
    row_bytes = max(1, array[0].nbytes if len(array) else 1)
    step = max(1, BLOCK_BYTES // row_bytes)
    for start in range(0, max(len(array), 1), step):
        yield slice(start, min(start + step, len(array)))
        _release_pages(array)


def _release_pages(array: np.ndarray) -> None:
    """Drop a read-only memory map's resident pages from this process (they stay in the
    page cache, and are read again if touched); anything else is left alone."""
    import mmap

    while array is not None and not isinstance(getattr(array, "_mmap", None), mmap.mmap):
        array = getattr(array, "base", None)
    if array is None or getattr(array, "mode", None) != "r" \
            or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        array._mmap.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # closed, or a platform without it
        pass


NPY_FILES = ("x_train", "y_train", "x_test", "y_test")


def save_npy_dir(dataset: Dataset, directory: str | Path) -> None:
    """Write a dataset as ``x_train.npy``, ``y_train.npy``, ``x_test.npy``, ``y_test.npy``
    and ``meta.json`` (the layout ``load_npy_dir`` memory-maps), block by block, each file
    under a temporary name first."""
    import functools
    import json

    from memlab.io import atomic_write_json, write_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    def fill(array: np.ndarray, handle) -> None:
        # Plain writes, block by block: a full disk is an OSError (ENOSPC), where a write
        # through a memory map was a SIGBUS that killed the process without a word.
        np.lib.format.write_array_header_1_0(handle, {
            "descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
            "shape": array.shape})
        for rows in row_blocks(array):
            handle.write(np.ascontiguousarray(array[rows]).data)

    for name in NPY_FILES:
        array = getattr(dataset, name)
        write_file(directory / f"{name}.npy", functools.partial(fill, array))
    meta = {"name": dataset.name, "class_names": dataset.class_names,
            "provenance": dataset.provenance, "corruption": _jsonable(dataset.corruption)}
    atomic_write_json(directory / "meta.json", json.loads(json.dumps(meta)))
