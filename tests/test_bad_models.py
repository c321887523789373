"""The bad-input suite, for user models: what a model may do under stacking trains (tied
weights, randomness in forward, frozen parameters), and what it may not is refused in one
line (``memlab: error: ...`` on stderr, exit code 2, no traceback) before training starts,
or, for a model that raises later, in one line naming the model and its exception.

Each case runs the real command line in-process (``memlab.cli.main([...])``) with the
user's module on ``sys.path``, as a user would, or the Python API.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from memlab.data import load
from memlab.engine.usermodel import tied_aliases
from memlab.population import open_run, train_population
from tests import user_models
from tests.test_bad_inputs import assert_one_line_error, run_cli


def train_args(model: str, out, *extra) -> list:
    return ["train", "--data", "digits", "--models", "4", "--epochs", "1", "--quiet",
            "--model", model, "--out", out, *extra]


@pytest.fixture(scope="module")
def digits():
    return load("digits")


# ------------------------------------------------------------------ supported


def test_tied_weights_train_and_round_trip(tmp_path, capsys):
    code, out, err = run_cli(train_args("tests.user_models:TiedWeights", tmp_path / "run"),
                             capsys)
    assert code == 0, err
    run = open_run(tmp_path / "run")
    weights = run.weights([1])
    assert "first.weight" in weights and "second.weight" not in weights  # stored once
    model = run.model(1, model=user_models.TiedWeights)
    assert model.first.weight is model.second.weight  # still tied
    assert tied_aliases(model) == {"second.weight": "first.weight"}
    np.testing.assert_array_equal(model.first.weight.detach().numpy(),
                                  weights["first.weight"][0])
    x = torch.as_tensor(run.dataset.x_test[:5])
    logits = model(x).detach().numpy()
    assert np.isfinite(logits).all()
    # The model run.model gives predicts what the engine recorded for it.
    np.testing.assert_array_equal(logits.argmax(1), run.records("test_pred")[1, :5])


def _noisy_run(digits, tmp_path, name, **settings):
    return train_population(digits, model=user_models.NoisyForward, n_models=4, epochs=2,
                            out=tmp_path / name, progress=False, n_workers=1, **settings)


def test_randomness_in_forward_is_each_models_own_stream(digits, tmp_path):
    """torch.randn_like / torch.rand in forward: the same bits for the same seed, whatever
    the chunk size (each model's own stream), another draw for another seed."""
    first = _noisy_run(digits, tmp_path, "a", chunk_size=4).weights()
    again = _noisy_run(digits, tmp_path, "b", chunk_size=1).weights()
    other = _noisy_run(digits, tmp_path, "c", chunk_size=4, seed=1).weights()
    assert all(np.array_equal(first[n], again[n]) for n in first)
    assert not all(np.array_equal(first[n], other[n]) for n in first)


class _Quiet(user_models.NoisyForward):
    def forward(self, x):  # the same model without its noise
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def test_randomness_in_forward_is_drawn(digits, tmp_path):
    noisy = _noisy_run(digits, tmp_path, "noisy").weights()
    quiet = train_population(digits, model=_Quiet, n_models=4, epochs=2, progress=False,
                             out=tmp_path / "quiet", n_workers=1).weights()
    assert not np.array_equal(noisy["out.weight"], quiet["out.weight"])


def test_frozen_parameters_stay_at_their_initial_values(digits, tmp_path):
    from memlab.engine.modelspec import ModelSpec

    run = train_population(digits, model=user_models.partly_frozen_factory, n_models=2,
                           epochs=1, out=tmp_path / "run", progress=False, n_workers=1)
    weights = run.weights()
    spec = ModelSpec.resolve(user_models.partly_frozen_factory)
    for k in range(2):
        start = spec.initial_state(run.config, (64,), 10, k)
        np.testing.assert_array_equal(weights["1.weight"][k], start["1.weight"].numpy())
        assert not np.array_equal(weights["3.weight"][k], start["3.weight"].numpy())
    assert not np.array_equal(weights["1.weight"][0], weights["1.weight"][1])
    model = run.model(1, model=user_models.partly_frozen_factory)
    np.testing.assert_array_equal(model[3].weight.detach().numpy(), weights["3.weight"][1])


# ------------------------------------------------------------------ refused before training


@pytest.mark.parametrize("model, match", [
    ("CallsItem", r"CallsItem.*\.item\(\).*user_models\.py:\d+ in forward"),
    ("DataDependentBranch", r"branches in Python on a tensor's value.*torch\.where"),
    ("ReturnsTuple", r"returned a tuple of 2.*not a tensor"),
    ("frozen_factory", r"no trainable parameters \(all 2 have requires_grad=False\)"),
])
def test_model_refused_before_training(model, match, tmp_path, capsys):
    assert_one_line_error(train_args(f"tests.user_models:{model}", tmp_path / "run"), match,
                          capsys)
    assert not (tmp_path / "run" / "chunks").exists() or not any(
        (tmp_path / "run" / "chunks").iterdir())


def test_unsupported_random_function_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "dice_model.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def factory(input_shape, n_classes):
            return Dice(int(torch.tensor(input_shape).prod()), n_classes)

        class Dice(nn.Module):
            def __init__(self, d, n_classes):
                super().__init__()
                self.linear = nn.Linear(d, n_classes)

            def forward(self, x):
                keep = torch.randint(0, 2, x.flatten(1).shape).to(x.dtype)
                return self.linear(x.flatten(1) * keep)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert_one_line_error(train_args("dice_model:factory", tmp_path / "run"),
                          r"draws random numbers with a function.*torch\.randn_like", capsys)


# ------------------------------------------------------------------ raising in training


@pytest.mark.parametrize("workers", ["1", "2"])
def test_model_raising_mid_training(workers, tmp_path, capsys):
    line = assert_one_line_error(
        train_args("tests.user_models:RaisesMidTraining", tmp_path / "run", "--workers",
                   workers, "--chunk-size", "2"),
        r"RaisesMidTraining' raised RuntimeError: user bug on the third training step "
        r"\(at .*user_models\.py:\d+ in forward\) while training models", capsys)
    assert "models 0..1" in line or "models 2..3" in line


# ------------------------------------------------------------------ --model modules


@pytest.mark.parametrize("source, match", [
    ("raise RuntimeError('no GPU here')\n",
     r"importing 'broken_at_import' for model .* raised RuntimeError: no GPU here "
     r"\(.*broken_at_import\.py, line 1\)"),
    ("def factory(input_shape, n_classes:\n    pass\n",
     r"cannot import 'broken_at_import' .*SyntaxError: .*broken_at_import\.py, line 1"),
])
def test_model_module_failing_at_import(source, match, tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_at_import.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert_one_line_error(train_args("broken_at_import:factory", tmp_path / "run"), match,
                          capsys)


@pytest.mark.parametrize("model", [":", "pkg:", ":f", "a b:f", "pkg:f-g", "pkg.:f"])
def test_malformed_model_path(model, tmp_path, capsys):
    assert_one_line_error(train_args(model, tmp_path / "run"),
                          r"must look like package\.module:factory", capsys)
