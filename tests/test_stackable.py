"""The engine's convolutions (engine/stackable.py) against torch's own.

Known answers: F.conv1d / F.conv2d (outputs and every gradient, for strides, paddings,
groups, with and without bias); and, stacked under vmap as the engine runs them, a model's
outputs and gradients are the same bits in a stack of 1 as in a stack of 5.
"""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from memlab.engine.stackable import MatmulConv1d, MatmulConv2d, use_stackable_convolutions

CASES_1D = [dict(kernel_size=5, stride=2, padding=2), dict(kernel_size=3, stride=1, padding=0),
            dict(kernel_size=3, stride=3, padding=1, groups=2),
            dict(kernel_size=4, stride=2, padding=1, bias=False),
            dict(kernel_size=3, stride=1, padding=2, dilation=2)]


@pytest.mark.parametrize("options", CASES_1D)
def test_conv1d_matches_torch_with_gradients(options):
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 6, **options).double()
    mine = MatmulConv1d.__new__(MatmulConv1d)
    mine.__dict__ = conv.__dict__
    x = torch.randn(7, 4, 23, dtype=torch.float64, requires_grad=True)
    expected, got = conv(x), mine(x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(expected)
    want = torch.autograd.grad(expected, [x, *conv.parameters()], upstream)
    have = torch.autograd.grad(got, [x, *conv.parameters()], upstream)
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options", [dict(kernel_size=3, padding=1),
                                     dict(kernel_size=3, stride=2, padding=1, groups=2)])
def test_conv2d_matches_torch_with_gradients(options):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, **options).double()
    mine = MatmulConv2d.__new__(MatmulConv2d)
    mine.__dict__ = conv.__dict__
    x = torch.randn(3, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(mine(x), conv(x), rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(conv(x))
    want = torch.autograd.grad(conv(x), [x, *conv.parameters()], upstream)
    have = torch.autograd.grad(mine(x), [x, *conv.parameters()], upstream)
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dims", [1, 2])
def test_stacked_model_is_the_same_bits_alone_and_in_a_stack(dims):
    torch.manual_seed(0)
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    model = nn.Sequential(conv(2, 8, 5, stride=2, padding=2), nn.ReLU(),
                          conv(8, 8, 3, stride=2, padding=1), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(5, 6, 2, *([24] if dims == 1 else [10, 10]))  # (models, batch, ...)
    model(x[0])  # materialize the lazy layer
    assert use_stackable_convolutions(model) == 2
    params = {n: torch.randn(5, *p.shape) * 0.3 for n, p in model.named_parameters()}

    def loss(p, inputs):
        return functional_call(model, p, (inputs,)).square().sum()

    stacked_out = vmap(lambda p, i: functional_call(model, p, (i,)))(params, x)
    stacked_grad = vmap(grad(loss))(params, x)
    for k in (0, 3):
        alone = {n: t[k:k + 1] for n, t in params.items()}
        out = vmap(lambda p, i: functional_call(model, p, (i,)))(alone, x[k:k + 1])
        assert torch.equal(out[0], stacked_out[k])
        grads = vmap(grad(loss))(alone, x[k:k + 1])
        for name in params:
            assert torch.equal(grads[name][0], stacked_grad[name][k]), name
