"""Known answers for local elasticity: the η → 0 NTK limit, the linear closed form, and
vectorized rows equal to one SGD step at a time."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memlab.errors import ConfigError, DataError
from memlab.measures.elasticity import (
    intra_inter_ratio,
    ntk_gram,
    one_step_similarities,
    symmetrize,
)
from memlab.models import build_model
from tests.conftest import make_blobs


def _model(n_outputs: int, hidden=(16,), activation="relu", seed=0, n_features=6):
    torch.manual_seed(seed)
    return build_model("mlp", (n_features,), n_outputs, hidden=list(hidden),
                       activation=activation)


def _data(n=12, n_features=6, n_classes=3, seed=0):
    data = make_blobs(n_train=n, n_test=2, n_features=n_features, n_classes=n_classes, seed=seed)
    return data.x_train, data.y_train


def _one_at_a_time(model, x, y, lr):
    """Reference: copy the model, take a real optimizer step on one example, re-evaluate."""
    binary = model.layers[-1].out_features == 1
    model = copy.deepcopy(model).double().eval()
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y)
    with torch.no_grad():
        before = model(x)
    delta = np.zeros((len(x), len(x)))
    for i in range(len(x)):
        stepped = copy.deepcopy(model)
        optimizer = torch.optim.SGD(stepped.parameters(), lr=lr)
        logits = stepped(x[i:i + 1])
        if binary:
            loss = F.binary_cross_entropy_with_logits(logits[0, 0], y[i].double())
        else:
            loss = F.cross_entropy(logits, y[i:i + 1])
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            column = 0 if binary else int(y[i])
            delta[i] = (stepped(x) - before)[:, column].numpy()
    return delta


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_vectorized_rows_equal_one_step_at_a_time(n_outputs):
    x, y = _data()
    y = (y == 0).astype(np.int64) if n_outputs == 1 else y
    model = _model(n_outputs)
    result = one_step_similarities(model, x, y, lr=0.3, chunk_size=5)  # 5: several chunks
    reference = _one_at_a_time(model, x, y, lr=0.3)
    np.testing.assert_allclose(result.delta, reference, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.self_delta, np.diag(reference), rtol=1e-9, atol=1e-12)
    expected_s_rel = np.abs(reference) / np.abs(np.diag(reference))[:, None]
    np.testing.assert_allclose(result.s_rel, expected_s_rel, rtol=1e-9)
    assert result.output == ("binary" if n_outputs == 1 else "true_class")


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_s_ker_tends_to_the_ntk_gram(n_outputs):
    x, y = _data(n=20)
    y = (y == 0).astype(np.int64) if n_outputs == 1 else y
    model = _model(n_outputs, hidden=(32, 32))
    gram = ntk_gram(model, x, y)
    errors = []
    for lr in (1e-1, 1e-3, 1e-5):
        s_ker = one_step_similarities(model, x, y, lr=lr).s_ker
        errors.append(np.abs(s_ker - gram).max() / np.abs(gram).max())
        correlation = np.corrcoef(s_ker.ravel(), gram.ravel())[0, 1]
    assert correlation > 0.99
    assert errors[-1] < 1e-4 and errors[0] > errors[1] > errors[2]  # first-order convergence


def test_binary_ntk_is_the_gradient_gram():
    x, y = _data(n=8)
    y = (y == 1).astype(np.int64)
    model = _model(1).double()
    rows = []
    for xi in torch.as_tensor(x).double():
        model.zero_grad()
        model(xi[None])[0, 0].backward()
        rows.append(torch.cat([p.grad.ravel() for p in model.parameters()]).clone())
    jacobian = torch.stack(rows)
    expected = (jacobian @ jacobian.T).numpy()
    np.testing.assert_allclose(ntk_gram(model, x, y, kind="limit"), expected, rtol=1e-10)
    np.testing.assert_allclose(ntk_gram(model, x, y, kind="logit"), expected, rtol=1e-10)


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_linear_model_s_ker_is_the_input_gram_plus_one(n_outputs):
    # f(x) = wᵀx + b is linear in (w, b): S_ker = ⟨(x, 1), (x', 1)⟩ = xᵀx' + 1 exactly, for
    # any step size (the bias adds the known scalar 1); S_rel = |xᵀx' + 1| / (|x|² + 1).
    x, y = _data(n=10)
    y = (y == 2).astype(np.int64) if n_outputs == 1 else y
    model = _model(n_outputs, hidden=())
    result = one_step_similarities(model, x, y, lr=0.7)
    gram = x.astype(np.float64) @ x.T.astype(np.float64) + 1
    np.testing.assert_allclose(result.s_ker, gram, rtol=1e-9)
    np.testing.assert_allclose(result.s_rel, np.abs(gram) / np.diag(gram)[:, None], rtol=1e-9)


def test_probes_and_model_unchanged():
    x, y = _data(n=10)
    model = _model(3)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    result = one_step_similarities(model, x[:4], y[:4], lr=0.1, probes=x)
    assert result.s_rel.shape == (4, 10) and result.s_ker.shape == (4, 10)
    assert model.training  # restored
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    full = one_step_similarities(model, x, y, lr=0.1)
    np.testing.assert_allclose(result.s_ker, full.s_ker[:4], rtol=1e-12)


def test_summaries():
    s = np.array([[1.0, 0.8, 0.1], [0.6, 1.0, 0.3], [0.1, 0.1, 1.0]])
    sym = symmetrize(s)
    np.testing.assert_allclose(sym, sym.T)
    assert sym[0, 1] == pytest.approx(0.7)
    # intra pairs: (0,1),(1,0) = 0.7; inter: (0,2),(2,0),(1,2),(2,1) = 0.1, 0.1, 0.2, 0.2
    assert intra_inter_ratio(sym, np.array([0, 0, 1])) == pytest.approx(0.7 / 0.15)
    with pytest.raises(ConfigError):
        symmetrize(s[:2])


def test_bad_input_is_named():
    x, y = _data(n=6)
    with pytest.raises(DataError, match="labels 0 or 1"):
        one_step_similarities(_model(1), x, y + 1)
    with pytest.raises(DataError, match="labels must lie"):
        one_step_similarities(_model(3), x, y + 3)
    with pytest.raises(ConfigError, match="positive"):
        one_step_similarities(_model(3), x, y, lr=0)
    with pytest.raises(DataError, match="probes"):
        one_step_similarities(_model(3), x, y, probes=np.zeros((2, 5), np.float32))
