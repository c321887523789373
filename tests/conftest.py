import numpy as np
import pytest
import torch

from memlab.data import Dataset

torch.set_num_threads(1)


def make_blobs(n_train: int = 240, n_test: int = 60, n_features: int = 10, n_classes: int = 3,
               seed: int = 0, spread: float = 1.0) -> Dataset:
    """Gaussian blobs around random class centres: learnable, tiny, deterministic."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, n_features)) * 2
    y = rng.integers(0, n_classes, n_train + n_test)
    x = (centres[y] + spread * rng.normal(size=(len(y), n_features))).astype(np.float32)
    return Dataset(name="blobs", x_train=x[:n_train], y_train=y[:n_train],
                   x_test=x[n_train:], y_test=y[n_train:],
                   class_names=[f"c{i}" for i in range(n_classes)])


@pytest.fixture
def blobs() -> Dataset:
    return make_blobs()


@pytest.fixture(autouse=True)
def _one_thread_per_test():
    # Every test starts on one thread, as the engine's workers train: a command run
    # in-process (main([...])) sets the count its rule chooses and keeps it, as a command
    # would, and the next test would otherwise inherit it.
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Generated datasets are cached once per test session, outside the user's cache.
    monkeypatch.setenv("MEMLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def chunk_of(data, config, models: range, membership, model=None, **options):
    """Train one chunk with the engine's own loop (``train_chunk``), as a worker would."""
    from memlab.engine.loop import train_chunk
    from memlab.engine.modelspec import ModelSpec
    from memlab.engine.task import task_for

    task = task_for(data, config.task)
    spec = ModelSpec.resolve(model if model is not None else config.model,
                             config.model_kwargs if not isinstance(model, torch.nn.Module)
                             else None, task)
    return train_chunk(task, data, config, spec, models, membership, **options)


def assert_same_models_in_every_chunk(data, config, mask, chunks, model=None) -> None:
    """Model k's weights and every record are the same bits trained in each of ``chunks``
    (ranges of model indices) as in one chunk of all ``config.n_models`` models."""
    full = chunk_of(data, config, range(config.n_models), mask, model=model)
    for models in chunks:
        part = chunk_of(data, config, models, mask[models.start:models.stop], model=model)
        for kind in ("weights", "arrays"):
            for name, array in getattr(part, kind).items():
                np.testing.assert_array_equal(
                    array, getattr(full, kind)[name][models.start:models.stop],
                    err_msg=f"{name} {models}")


def initial_state(config, data, replicate: int, model=None) -> dict:
    """Model (replicate)'s initial state dict, as the engine builds it."""
    from memlab.engine.modelspec import ModelSpec
    from memlab.engine.task import task_for

    task = task_for(data, config.task)
    spec = ModelSpec.resolve(model if model is not None else config.model,
                             config.model_kwargs if not isinstance(model, torch.nn.Module)
                             else None, task)
    return spec.initial_state(config, task.input_shape(data), task.outputs(data), replicate)

