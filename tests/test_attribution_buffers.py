"""The attribution methods evaluate each model with its own trained buffers (BatchNorm's
running statistics), not the template's untrained ones, and differentiate with respect to
the trainable parameters only."""

import numpy as np
import pytest
import torch

from memlab.measures.attribution import methods as am
from memlab.measures.attribution.gradients import (
    buffers_from_weights,
    logits_of,
    params_from_weights,
    per_example_grads,
    scalar_output,
)
from tests.user_models import TinyCNN


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    from memlab.data import load
    from memlab.population import train_population

    return train_population(load("digits"), model=TinyCNN, n_models=3, subset_fraction=0.5,
                            epochs=1, n_workers=1, progress=False,
                            out=tmp_path_factory.mktemp("bn") / "run")


def _setup(run, models=(0, 1, 2)):
    ds = run.dataset
    template = TinyCNN(ds.input_shape, ds.n_classes).eval()
    weights = run.weights(list(models))
    return template, params_from_weights(template, weights), buffers_from_weights(template,
                                                                                  weights)


def scalar_logodds(logits: torch.Tensor, y) -> np.ndarray:
    return np.array([float(scalar_output(row, torch.tensor(int(label)), "logodds"))
                     for row, label in zip(logits, y)])


def test_logits_use_each_models_trained_running_statistics(bn_run):
    template, params, buffers = _setup(bn_run)
    assert {"features.1.running_mean", "features.1.running_var",
            "features.1.num_batches_tracked"} <= set(buffers)
    assert not set(buffers) & set(params)  # buffers are never differentiated or counted
    assert buffers["features.1.num_batches_tracked"].dtype == torch.long
    x = torch.as_tensor(bn_run.dataset.x_test[:16])
    ours = logits_of(template, params, x, buffers=buffers)
    untrained_stats = logits_of(template, params, x)  # the template's 0/1 statistics
    for k in range(3):
        with torch.no_grad():
            expected = bn_run.model(k, model=TinyCNN)(x)
        np.testing.assert_allclose(ours[k].numpy(), expected.numpy(), rtol=0, atol=1e-5)
        # Without the buffers (the old behaviour) it is another function.
        assert (untrained_stats[k] - expected).abs().max() > 1e-2
        assert not torch.equal(buffers["features.1.running_mean"][k],
                               torch.zeros_like(buffers["features.1.running_mean"][k]))


def test_gradients_are_those_of_the_trained_model_in_eval_mode(bn_run):
    template, params, buffers = _setup(bn_run)
    ds = bn_run.dataset
    x, y = torch.as_tensor(ds.x_test[:3]), torch.as_tensor(ds.y_test[:3], dtype=torch.long)
    grads = per_example_grads(template, params, x, y, "logodds", buffers=buffers)
    assert grads.shape == (3, 3, sum(t[0].numel() for t in params.values()))
    model = bn_run.model(1, model=TinyCNN)
    for i in range(3):
        model.zero_grad()
        scalar_output(model(x[i:i + 1])[0], y[i], "logodds").backward()
        expected = torch.cat([p.grad.flatten() for _, p in model.named_parameters()])
        np.testing.assert_allclose(grads[1, i].numpy(), expected.numpy(), rtol=0, atol=1e-5)


def test_methods_run_with_buffers_through_the_problem(bn_run):
    """Every method path (float64 Hessian included) takes the models' buffers."""
    template, params, buffers = _setup(bn_run, models=(0, 1))
    ds = bn_run.dataset
    problem = am.Problem(template, params, ds.x_train[:40], ds.y_train[:40], ds.x_test[:3],
                         ds.y_test[:3], buffers=buffers)
    assert problem.model_buffers(1)["features.1.running_var"].shape[0] == 1
    for name, options in [("grad_dot", {}), ("trak", {"proj_dim": 16}),
                          ("if_exact", {"hessian_examples": 8}),
                          ("if_cg", {"cg_iter": 2, "hessian_examples": 8}), ("representer", {})]:
        scores = am.compute(name, problem, **options)
        assert scores.shape == (40, 3) and np.isfinite(scores).all(), name
    # The log-odds TRAK weights by are the trained model's.
    one = am.Problem(template, problem.model(0), ds.x_train[:40], ds.y_train[:40],
                     ds.x_test[:3], ds.y_test[:3], buffers=problem.model_buffers(0))
    with torch.no_grad():
        expected = bn_run.model(0, model=TinyCNN)(torch.as_tensor(ds.x_train[:40]))
    np.testing.assert_allclose(am._logodds(template, one.params, ds.x_train[:40],
                                           ds.y_train[:40], one.buffers).numpy(),
                               scalar_logodds(expected, ds.y_train[:40]), atol=1e-5)


def test_the_exact_hessian_in_blocks_equals_the_one_pass_hessian(bn_run):
    """A convolution's exact Hessian is built in batches of examples and blocks of columns
    when p tangents through every example would not fit in memory (an if_exact on a small
    CNN took 24 GB): the same matrix as torch.func.hessian's one pass."""
    template, params, buffers = _setup(bn_run, models=(0,))
    one = {name: t[0].double() for name, t in params.items()}
    b_one = {name: t[0] for name, t in buffers.items()}
    ds = bn_run.dataset
    x, y = ds.x_train[:12], ds.y_train[:12]
    whole = am.exact_hessian(am._mean_loss_fn(template, x, y, b_one), one)
    per_pair = 32 * am._activation_numel(template, torch.as_tensor(x[:1], dtype=torch.float64),
                                         one, b_one)
    p = whole.shape[0]
    assert per_pair * len(y) * p > per_pair * 4 * 64  # the budget below forces blocks
    blocks = am.exact_mean_hessian(template, one, x, y, b_one, budget=per_pair * 4 * 64)
    torch.testing.assert_close(blocks, whole, rtol=1e-9, atol=1e-12)
    assert torch.equal(am.exact_mean_hessian(template, one, x, y, b_one, budget=2**40), whole)
