"""The generic path's fused layers (engine/fused.py) and per-model products (products.py).

Known answers: stacked under vmap as the engine runs them, FusedConv2d, FusedBatchNorm1d/2d
and FusedLinear give every model what torch's own layer gives it alone (outputs, every
gradient, running statistics; in float64 to 1e-10); and a model is the same bits in a chunk
of 1, 2 or 5 — for each fused layer type, for its gradients, and, through the whole engine,
for its weights and *every* record, at sizes where a chunk of one model used to take
torch's single-matrix GEMM (which rounds differently: the 4.8e-7 records of issue 32).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from memlab.data import Dataset, load
from memlab.engine import products
from memlab.engine.config import PopulationConfig, membership_mask
from memlab.engine.fused import (
    FusedBatchNorm1d,
    FusedBatchNorm2d,
    FusedConv2d,
    FusedLinear,
)
from memlab.engine.stackable import use_fused_layers
from tests.conftest import assert_same_models_in_every_chunk, chunk_of


def _fused_copy(layer: nn.Module, kind: type) -> nn.Module:
    fused = kind.__new__(kind)
    fused.__dict__ = copy.deepcopy(layer).__dict__
    return fused


def _stacked(layer: nn.Module, n_models: int, seed: int = 0) -> tuple[dict, dict]:
    """Per-model parameters (random, distinct) and buffers for ``layer``."""
    generator = torch.Generator().manual_seed(seed)
    params = {n: torch.randn(n_models, *p.shape, generator=generator, dtype=p.dtype) * 0.5
              + (1.0 if n.endswith("weight") and p.dim() == 1 else 0.0)
              for n, p in layer.named_parameters()}
    buffers = {n: torch.stack([b.clone() for _ in range(n_models)])
               for n, b in layer.named_buffers()}
    return params, buffers


def _run(layer, params, buffers, x, train=True):
    """Stacked forward under vmap with gradients of a fixed random loss."""
    params = {n: p.clone().requires_grad_() for n, p in params.items()}
    x = x.clone().requires_grad_()
    layer.train(train)
    out = vmap(lambda p, b, i: functional_call(layer, (p, b), (i,)))(params, buffers, x)
    weights = torch.linspace(-1, 1, out[0].numel(), dtype=out.dtype).view(out[0].shape)
    (out * weights).sum().backward()
    return out, x.grad, {n: p.grad for n, p in params.items()}


LAYERS = {
    "conv 3x3 stride 2 pad 1": (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False),
                                FusedConv2d, (4, 3, 9, 8)),
    "conv 2x3 pad (1, 0) bias": (lambda: nn.Conv2d(2, 4, (2, 3), padding=(1, 0)),
                                 FusedConv2d, (3, 2, 7, 6)),
    "conv dilated, stride 3": (lambda: nn.Conv2d(2, 3, 3, stride=3, padding=2, dilation=2),
                               FusedConv2d, (2, 2, 11, 10)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(4), FusedBatchNorm2d, (6, 4, 5, 3)),
    "batchnorm2d no affine": (lambda: nn.BatchNorm2d(4, affine=False), FusedBatchNorm2d,
                              (6, 4, 5, 3)),
    "batchnorm2d no running stats": (lambda: nn.BatchNorm2d(3, track_running_stats=False),
                                     FusedBatchNorm2d, (5, 3, 4, 4)),
    "batchnorm1d features": (lambda: nn.BatchNorm1d(7, momentum=0.3), FusedBatchNorm1d,
                             (9, 7)),
    "batchnorm1d sequence": (lambda: nn.BatchNorm1d(3), FusedBatchNorm1d, (5, 3, 6)),
    "linear": (lambda: nn.Linear(6, 4), FusedLinear, (5, 6)),
    "linear on a sequence, no bias": (lambda: nn.Linear(6, 4, bias=False), FusedLinear,
                                      (5, 2, 6)),
}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_fused_layer_matches_torch_model_by_model(name, train):
    build, kind, shape = LAYERS[name]
    torch.manual_seed(0)
    layer = build().double()
    n_models = 3
    params, buffers = _stacked(layer, n_models)
    if "running_var" in buffers:  # eval reads running statistics: make them non-trivial
        buffers["running_mean"].normal_(0, 0.3)
        buffers["running_var"].uniform_(0.5, 2)
    x = torch.randn(n_models, *shape, dtype=torch.float64)
    fused = _fused_copy(layer, kind)
    fused_buffers = {n: b.clone() for n, b in buffers.items()}
    out, grad_x, grads = _run(fused, params, fused_buffers, x, train)
    for k in range(n_models):
        alone = copy.deepcopy(layer).train(train)
        with torch.no_grad():
            for n, p in alone.named_parameters():
                p.copy_(params[n][k])
            for n, b in alone.named_buffers():
                b.copy_(buffers[n][k])
        xk = x[k].clone().requires_grad_()
        expected = alone(xk)
        weights = torch.linspace(-1, 1, expected.numel(), dtype=expected.dtype)
        (expected * weights.view(expected.shape)).sum().backward()
        torch.testing.assert_close(out[k], expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad_x[k], xk.grad, rtol=1e-9, atol=1e-10)
        for n, p in alone.named_parameters():
            torch.testing.assert_close(grads[n][k], p.grad, rtol=1e-9, atol=1e-10, msg=n)
        for n, b in alone.named_buffers():  # running statistics, num_batches_tracked
            torch.testing.assert_close(fused_buffers[n][k], b, rtol=1e-10, atol=1e-10,
                                       msg=n)


@pytest.mark.parametrize("name", list(LAYERS))
def test_fused_layer_is_the_same_bits_in_a_chunk_of_1_2_and_5(name):
    build, kind, shape = LAYERS[name]
    torch.manual_seed(1)
    layer = _fused_copy(build(), kind)
    params, buffers = _stacked(layer, 5, seed=1)
    x = torch.randn(5, *shape)
    full = _run(layer, params, {n: b.clone() for n, b in buffers.items()}, x)
    for models in (slice(0, 1), slice(3, 5), slice(4, 5)):
        part = _run(layer, {n: p[models] for n, p in params.items()},
                    {n: b[models].clone() for n, b in buffers.items()}, x[models])
        assert torch.equal(part[0], full[0][models]), models
        assert torch.equal(part[1], full[1][models]), models
        for n in params:
            assert torch.equal(part[2][n], full[2][n][models]), (n, models)


def test_per_model_products_do_not_depend_on_the_chunk_size(monkeypatch):
    # (256, 784) @ (784, 64) on two threads: a batch of one took the single-matrix GEMM,
    # which splits one product over the threads and rounded differently (7e-5 here)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _check_products()
    finally:
        torch.set_num_threads(previous)


def _check_products():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(5, 256, 784, generator=generator)
    b = torch.randn(5, 784, 64, generator=generator)
    bias = torch.randn(5, 1, 64, generator=generator)
    full, full_add = products.bmm(a, b), products.baddbmm(bias, a, b)
    for k in (0, 4):
        assert torch.equal(products.bmm(a[k:k + 1], b[k:k + 1])[0], full[k])
        assert torch.equal(products.baddbmm(bias[k:k + 1], a[k:k + 1], b[k:k + 1])[0],
                           full_add[k])
        out = torch.empty(1, 256, 64)
        products.bmm(a[k:k + 1], b[k:k + 1], out=out)
        assert torch.equal(out[0], full[k])


class WideUserNet(nn.Module):
    """A user's model with every fused layer type at sizes where a chunk of one model took
    torch's single-matrix GEMM: Conv2d + BatchNorm2d, a residual add, max pooling,
    Linear 784 -> 64 + BatchNorm1d, dropout."""

    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 14 * 14, 64),
                                  nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(64, n_classes))

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.head(torch.relu(y + self.conv2(y)))


class SmallBatchNormCNN(nn.Module):
    """A user's small CNN with BatchNorm (benchmarks' UserCNN2d): Conv2d 1->8 stride 2 + BN
    + ReLU, Conv2d 8->16 stride 2 + BN + ReLU, Linear 784 -> classes."""

    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
            nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, n_classes))

    def forward(self, x):
        return self.body(x)


def _digit_images(n_train: int = 160, n_test: int = 40) -> Dataset:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n_train + n_test)
    x = rng.normal(0, 1, (n_train + n_test, 1, 28, 28)).astype(np.float32)
    x[:, 0, :, :] += (y[:, None, None] - 1).astype(np.float32)  # learnable
    return Dataset("digits28", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   ["a", "b", "c"])


@pytest.mark.parametrize("model", [WideUserNet, SmallBatchNormCNN])
@pytest.mark.parametrize("compute_dtype,eval_budget", [("float32", None), ("bfloat16", None),
                                                       ("float32", 2 * 2**20)])
def test_user_model_weights_and_every_record_are_the_same_bits_in_any_chunk(
        model, compute_dtype, eval_budget, monkeypatch):
    # (One thread, as every engine worker trains: tests/conftest.py. SmallBatchNormCNN at
    # batch 32: a chunk of one once took another bfloat16 kernel for
    # its second convolution's weight gradient, and summed its linear bias gradient over
    # twice the rows)
    # (a small evaluation budget: bigger chunks are evaluated in passes of fewer models,
    # never on smaller batches, whose products would round differently)
    if eval_budget:
        monkeypatch.setattr("memlab.engine.task.EVAL_MEMORY_BYTES", eval_budget)
    data = _digit_images() if model is WideUserNet else load("mnist").subset(range(300))
    config = PopulationConfig(model="x", n_models=5, subset_fraction=0.5, epochs=2,
                              batch_size=32, lr=0.05, compute_dtype=compute_dtype)
    mask = membership_mask(config, data.n_train)
    assert_same_models_in_every_chunk(data, config, mask,
                                      (range(0, 1), range(3, 5), range(4, 5)), model=model)


def test_mlp_fast_path_is_the_same_bits_in_a_chunk_of_one_at_real_sizes():
    data = _digit_images()
    data = Dataset("flat", data.x_train.reshape(len(data.x_train), -1), data.y_train,
                   data.x_test.reshape(len(data.x_test), -1), data.y_test, data.class_names)
    config = PopulationConfig(model="mlp", model_kwargs={"hidden": [64]}, n_models=3,
                              subset_fraction=0.5, epochs=2, batch_size=32)
    mask = membership_mask(config, data.n_train)
    full = chunk_of(data, config, range(3), mask)
    alone = chunk_of(data, config, range(2, 3), mask[2:3])
    for name, array in alone.weights.items():
        np.testing.assert_array_equal(array, full.weights[name][2:3], err_msg=name)
    for name, array in alone.arrays.items():
        np.testing.assert_array_equal(array, full.arrays[name][2:3], err_msg=name)


def test_the_engine_swaps_in_every_fused_layer_and_leaves_others_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3, groups=2),
                          nn.Conv2d(2, 2, 3, padding="same"), nn.BatchNorm2d(2),
                          nn.BatchNorm1d(2), nn.Linear(2, 2), nn.LayerNorm(2))
    assert use_fused_layers(model) == 5  # convs with numeric padding, BN x2, linear
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["FusedConv2d", "FusedConv2d", "Conv2d", "FusedBatchNorm2d",
                     "FusedBatchNorm1d", "FusedLinear", "LayerNorm"]
    assert set(model.state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias",
                                       "2.weight", "2.bias", "3.weight", "3.bias",
                                       "3.running_mean", "3.running_var",
                                       "3.num_batches_tracked", "4.weight", "4.bias",
                                       "4.running_mean", "4.running_var",
                                       "4.num_batches_tracked", "5.weight", "5.bias",
                                       "6.weight", "6.bias"}
