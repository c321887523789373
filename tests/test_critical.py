"""LASS, loss sensitivity and Gini on models and values with known answers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memlab.measures.critical import (
    LassSettings,
    critical_sample_ratio,
    gini,
    lass,
    loss_sensitivity,
    module_forward,
    population_forward,
)


def linear_classifier(offset: float = 0.0) -> nn.Module:
    """Two classes, decision boundary the hyperplane x_0 = offset (class 0 on the right)."""
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        model.bias.copy_(torch.tensor([-offset, offset]))
    return model


SETTINGS = LassSettings(alpha=0.05, beta=0.02, radius=0.1, max_iter=20)


def test_lass_flips_next_to_the_boundary_and_not_far_from_it():
    x = torch.tensor([[0.05, 0.0], [-0.03, 1.0], [1.0, 0.0], [-2.0, 3.0]])
    result = lass(module_forward(linear_classifier()), x, SETTINGS, seed=0)
    np.testing.assert_array_equal(result.critical, [[True, True, False, False]])
    assert (result.iterations[0, :2] <= 2).all()
    assert (result.iterations[0, 2:] == SETTINGS.max_iter + 1).all()
    # Every searched point stays in the box of radius r around its input.
    assert (result.x_adv[0] - x).abs().max() <= SETTINGS.radius + 1e-6
    flipped = result.x_adv[0, :2, 0]
    assert (torch.sign(flipped) != torch.sign(x[:2, 0])).all()


def test_lass_is_batched_over_models():
    # Same inputs, two models whose boundaries sit at 0 and at 0.5.
    x = torch.tensor([[0.05, 0.0], [0.45, 0.0], [0.25, 0.0]])
    forward = population_forward([linear_classifier(0.0), linear_classifier(0.5)])
    result = lass(forward, x, SETTINGS, n_models=2, seed=0)
    np.testing.assert_array_equal(result.critical, [[True, False, False], [False, True, False]])
    np.testing.assert_allclose(critical_sample_ratio(forward, x, SETTINGS, 2), [1 / 3, 1 / 3])


def test_lass_is_deterministic():
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)) * 0.1
    forward = module_forward(linear_classifier())
    first, second = lass(forward, x, SETTINGS, seed=3), lass(forward, x, SETTINGS, seed=3)
    np.testing.assert_array_equal(first.critical, second.critical)
    assert torch.equal(first.x_adv, second.x_adv)


def test_paper_scaling():
    settings = LassSettings.scaled(data_range=255.0)
    assert (settings.alpha, settings.beta, settings.radius) == pytest.approx((0.25, 0.2, 0.3))
    unit = LassSettings.scaled(data_range=1.0, scale=2.0)
    assert unit.radius == pytest.approx(0.6 / 255)


def test_loss_sensitivity_matches_the_closed_form():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(7, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    # For logits W x + b: dL/dx = Wᵀ (softmax - onehot).
    residual = F.softmax(model(x), dim=1) - F.one_hot(y, 3).float()
    expected = (residual @ model.weight).abs().sum(1).detach().numpy()
    got = loss_sensitivity(module_forward(model), x, y)
    np.testing.assert_allclose(got[0], expected, rtol=1e-5)


def test_gini_known_values():
    assert gini(np.ones(4)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 1.0])) == pytest.approx(0.75)
    assert gini(np.array([4, 1, 3, 2.0])) == pytest.approx(0.25)
    np.testing.assert_allclose(gini(np.array([[1, 1.0], [0, 1.0]])), [0.0, 0.5])
