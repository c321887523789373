"""Small image data for the engine tests (importable by their subprocesses)."""

import numpy as np

from memlab.data import Dataset


def make_images(n_train: int = 96, n_test: int = 32, size: int = 8, seed: int = 0) -> Dataset:
    """3 classes of 1 x size x size images: a bright row, column or diagonal, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n_train + n_test)
    x = rng.normal(0, 0.3, (len(y), 1, size, size)).astype(np.float32)
    for i, label in enumerate(y):
        pos = rng.integers(1, size - 1)
        if label == 0:
            x[i, 0, pos, :] += 1
        elif label == 1:
            x[i, 0, :, pos] += 1
        else:
            x[i, 0] += np.eye(size, dtype=np.float32)
    return Dataset("images", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   ["row", "column", "diagonal"])


def images() -> Dataset:
    return make_images(n_train=48, n_test=16)
