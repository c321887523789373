"""The engine's two paths for the built-in CNN1d train the same models.

``loop.stacked_forward`` runs the MNIST-1D CNN as batched-matmul convolutions over its own
im2col (``_Im2col``, ``_stacked_cnn1d``); any other module goes through
``torch.func.functional_call`` under ``vmap`` with its convolutions swapped for the fused
grouped convolutions (``engine/fused.py``). The same architecture under another class name
(a subclass: the fast path is chosen by ``type(template) is CNN1d``) takes the generic
path, from the same initial weights (the factory is called under the same seed). The two
paths' products are different kernels (an im2col GEMM, a grouped oneDNN convolution), so
they agree to float32 rounding, not bit for bit (they did while the generic path was an
im2col GEMM too).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memlab.engine import loop
from memlab.engine.config import PopulationConfig, membership_mask
from memlab.models import CNN1d
from tests.conftest import chunk_of, initial_state, make_blobs


class GenericCNN1d(CNN1d):
    """CNN1d itself, under a class the im2col path does not recognize."""


def _count_im2col(monkeypatch) -> list[int]:
    calls = [0]
    real = loop._stacked_cnn1d

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_stacked_cnn1d", counted)
    return calls


@pytest.mark.parametrize("recipe", [
    {"record_epochs": True},
    {"optimizer": "adam", "lr": 3e-3, "clip_grad_norm": 1.0, "weight_decay": 1e-3},
], ids=["sgd-epoch-records", "adam-clipped"])
def test_cnn1d_im2col_and_generic_paths_give_identical_records(recipe, monkeypatch):
    data = make_blobs(n_features=40)  # signals of length 40, like MNIST-1D
    config = PopulationConfig(model="cnn1d", model_kwargs={"channels": 4}, n_models=3,
                              epochs=3, batch_size=32, **recipe)
    mask = membership_mask(config, data.n_train)
    for name, tensor in initial_state(config, data, 1).items():
        assert torch.equal(tensor, initial_state(config, data, 1, model=GenericCNN1d)[name])

    calls = _count_im2col(monkeypatch)
    fast = chunk_of(data, config, range(3), mask, model="cnn1d")
    assert calls[0] > 0  # the im2col path trained and evaluated CNN1d
    calls[0] = 0
    generic = chunk_of(data, config, range(3), mask, model=GenericCNN1d)
    assert calls[0] == 0  # the subclass went through vmap and MatmulConv1d

    assert sorted(fast.arrays) == sorted(generic.arrays)
    for name in fast.arrays:
        a, b = fast.arrays[name], generic.arrays[name]
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=name)
        else:  # correctness, predictions: the same but for near-ties
            assert np.mean(a == b) > 0.99, name
    for name in fast.weights:
        np.testing.assert_allclose(fast.weights[name], generic.weights[name], rtol=1e-3,
                                   atol=1e-5, err_msg=name)
