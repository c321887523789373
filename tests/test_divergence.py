"""Divergence is caught (issue 30): a model whose loss, final margins or weights become NaN
or infinite stops training with a one-line error (``on_diverge="error"``, the default), or
is recorded as diverged, left out of the estimates with a warning that counts it, and
counted (``on_diverge="record"``). A finished run holds no NaN except in diverged models'
records, and the check changes no model that did not diverge."""

import functools
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from memlab.cli import main
from memlab.errors import ConfigError, DivergenceError, RunError
from memlab.measures.audit import attack_inputs
from memlab.measures.memorization import influence, memorization
from memlab.population import open_run, train_population
from tests.conftest import make_blobs

# One update per epoch: 60 training examples, subsets of 30, batches of 128.
SMALL = dict(n_models=4, epochs=1, batch_size=128, subset_fraction=0.5, chunk_size=4,
             progress=False, n_workers=1)
CLI = ["--models", "4", "--epochs", "1", "--batch-size", "128", "--subset", "0.5",
       "--quiet", "--workers", "1"]


def user_mlp(input_shape, n_classes):
    """A user's model (not memlab's MLP): trained by the generic (vmap) path."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 16), nn.ReLU(),
                         nn.Linear(16, n_classes))


class BlowUpInEpoch:
    """Callback: in epoch ``epoch`` (1-based), multiply the inputs of the chunk's models
    ``rows`` by 1e38 (their loss overflows; the other models' batches are untouched)."""

    name = "blowup"
    epochs = ()

    def __init__(self, epoch: int, rows: tuple[int, ...] = (1,)):
        self.epoch, self.rows = epoch, rows

    def describe(self):
        return {"epoch": self.epoch, "rows": list(self.rows)}

    def __call__(self, state):
        return {}

    def before_step(self, state, x, y):
        if state.epoch != self.epoch - 1:  # (state.epoch: epochs finished so far)
            return x, y
        x = x.clone()
        x[list(self.rows)] *= 1e38
        return x, y


def blobs(scale: float = 1.0):
    data = make_blobs(n_train=60, n_test=20)
    data.x_train *= np.float32(scale)
    data.x_test *= np.float32(scale)
    return data


def save_npz(path, data):
    np.savez(path, x=data.x_train, y=data.y_train, x_test=data.x_test, y_test=data.y_test)
    return str(path)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("memlab: error: training diverged: "), err
    return err


def assert_no_nan_outside_diverged(run):
    """Every record array of a finished run: NaN only in the rows of diverged models."""
    diverged = run.diverged
    assert diverged.shape == (run.n_models,) and diverged.dtype == bool
    for name in run.record_names:
        values = np.asarray(run.records(name))
        if values.dtype.kind != "f":
            continue
        nan_rows = np.isnan(values.reshape(len(values), -1)).any(1)
        assert not (nan_rows & ~diverged).any(), name
    table = run.models_table()
    assert table["diverged"].to_numpy().tolist() == diverged.tolist()


@pytest.mark.parametrize("model", ["mlp", "tests.test_divergence:user_mlp"])
def test_a_huge_learning_rate_is_a_one_line_error(tmp_path, capsys, model):
    """--lr 1e30 with one update per epoch: the loss before the update is finite; the
    final evaluation's margins are not (the fast MLP path and the generic path)."""
    data = save_npz(tmp_path / "d.npz", blobs())
    code = main(["train", "--data", data, *CLI, "--lr", "1e30", "--model", model,
                 "--out", str(tmp_path / "r")])
    assert code == 2
    err = one_line_error(capsys)
    assert "model(s) [0, 1, 2, 3]" in err and "after epoch 1 of 1" in err
    assert "lower the learning rate (lr=1e+30)" in err and "--on-diverge record" in err
    assert "normalize the features" in err


def test_huge_features_are_a_one_line_error(tmp_path, capsys):
    """Features of 1e37 with an ordinary learning rate."""
    data = save_npz(tmp_path / "d.npz", blobs(1e37))
    assert main(["train", "--data", data, *CLI, "--out", str(tmp_path / "r")]) == 2
    err = one_line_error(capsys)
    assert "(lr=0.05)" in err and "normalize the features" in err


def test_divergence_in_epoch_5_of_10_names_the_model_and_epoch(tmp_path, capsys,
                                                                monkeypatch):
    """Model 1 blows up in epoch 5 of 10 (a callback scales its inputs): the command
    stops there with one line naming model 1, the epoch and the loss."""
    import memlab.population

    monkeypatch.setattr(memlab.population, "train_population", functools.partial(
        train_population, callbacks=[BlowUpInEpoch(5)]))
    data = save_npz(tmp_path / "d.npz", blobs())
    words = ["train", "--data", data, *CLI, "--epochs", "10", "--out", str(tmp_path / "r")]
    assert main(words) == 2
    err = one_line_error(capsys)
    assert "the training loss of model(s) [1] became" in err and "in epoch 5 of 10" in err


def test_divergence_is_a_config_error_in_python(tmp_path):
    with pytest.raises(ConfigError, match="training diverged") as raised:
        train_population(blobs(), **SMALL, lr=1e30)
    assert isinstance(raised.value, DivergenceError)


@pytest.mark.filterwarnings("ignore:.*no IN or no OUT model")
def test_record_mode_marks_excludes_and_counts_the_diverged_model(tmp_path, capsys):
    """on_diverge="record": model 1 (diverged in epoch 5 of 10) is marked in the models
    table and Run.diverged, counted in the summary, its NaN records are its own, and the
    estimates are those of the other models, with a warning that counts it. The other
    models are the same bits as in a run where nothing diverged."""
    settings = {**SMALL, "epochs": 10, "record_epochs": True}
    run = train_population(blobs(), **settings, on_diverge="record",
                           callbacks=[BlowUpInEpoch(5)], out=tmp_path / "r")
    assert "1 of 4 models diverged" in capsys.readouterr().err
    assert run.diverged.tolist() == [False, True, False, False]
    assert run.models_table()["diverged"].tolist() == [False, True, False, False]
    assert run.manifest["summary"]["n_diverged"] == 1
    assert np.isnan(run.records("epoch_train_loss_mean")[1, 4:]).all()
    assert_no_nan_outside_diverged(run)

    plain = train_population(blobs(), **settings, out=tmp_path / "plain")
    kept = [0, 2, 3]
    for name in plain.record_names:
        np.testing.assert_array_equal(np.asarray(run.records(name))[kept],
                                      np.asarray(plain.records(name))[kept], err_msg=name)
    for name, values in run.weights(kept).items():
        np.testing.assert_array_equal(values, plain.weights(kept)[name], err_msg=name)
    assert run.manifest["summary"]["test_acc_mean"] == pytest.approx(
        plain.models_table()["test_acc"][kept].mean())

    with pytest.warns(UserWarning, match="1 of 4 models diverged and are left out of the "
                                         "estimates"):
        frame = memorization(run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the diverged model not asked for: no warning
        warnings.filterwarnings("ignore", ".*no IN or no OUT model")  # (4 models)
        expected = memorization(run, models=kept)
    np.testing.assert_array_equal(frame["mem"], expected["mem"])
    assert frame["n_in"].sum() + frame["n_out"].sum() == 3 * 60
    with pytest.warns(UserWarning, match="1 of 4 models diverged"):
        matrix = influence(run)
    assert np.isfinite(matrix.values).any()
    with pytest.warns(UserWarning, match="1 of 4 models diverged"):
        inputs = attack_inputs(run)
    assert inputs.mask.shape == (3, 60)
    assert open_run(run.path).diverged.tolist() == run.diverged.tolist()


def test_record_mode_from_the_command_line_counts_every_model(tmp_path, capsys):
    data = save_npz(tmp_path / "d.npz", blobs())
    out = tmp_path / "r"
    assert main(["train", "--data", data, *CLI, "--lr", "1e30", "--on-diverge", "record",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "4 of 4 models diverged" in captured.err
    assert '"n_diverged": 4' in captured.out
    assert main(["info", str(out)]) == 0
    assert "diverged: 4 of 4 models, left out of the estimates: 0, 1, 2, 3" in \
        capsys.readouterr().out
    run = open_run(out)
    assert run.diverged.all()
    assert_no_nan_outside_diverged(run)
    with pytest.raises(RunError, match="all 4 models .* diverged"):
        memorization(run)


def test_an_ordinary_run_has_no_nan_and_no_diverged_model(tmp_path):
    run = train_population(make_blobs(), **{**SMALL, "epochs": 3, "chunk_size": 2},
                           record_epochs=True, out=tmp_path / "r")
    assert not run.diverged.any() and run.manifest["summary"]["n_diverged"] == 0
    assert_no_nan_outside_diverged(run)
    for name in run.record_names:
        values = np.asarray(run.records(name))
        if values.dtype.kind == "f":
            assert np.isfinite(values).all(), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", ".*no IN or no OUT model")  # (4 models)
        memorization(run)


def test_a_failed_run_resumes_with_on_diverge_record(tmp_path):
    """The error's fix works on the same directory: on_diverge changes no model that did
    not diverge, so a run may resume with the other value."""
    out = tmp_path / "r"
    with pytest.raises(DivergenceError):
        train_population(blobs(), **SMALL, lr=1e30, out=out)
    run = train_population(blobs(), **SMALL, lr=1e30, on_diverge="record", out=out)
    assert run.diverged.all() and run.config.on_diverge == "record"


def test_language_models_diverge_with_the_same_error():
    from tests.test_lm import TINY_MLP, tiny_corpus

    with pytest.raises(DivergenceError, match="training loss of model"):
        train_population(tiny_corpus(), **{**SMALL, "epochs": 2, "batch_size": 8},
                         lr=1e30, **TINY_MLP)


def test_float16_freeze_zeroes_only_the_diverged_rows():
    """(float16 on a GPU) the gradients of diverged models are zeroed, so that their NaN
    does not make the loss scaler skip every later step of the chunk."""
    from memlab.engine.config import PopulationConfig
    from memlab.engine.loop import StackedParameters, _Divergence

    stacked = StackedParameters({"w": torch.ones(3, 2, 2)})
    for leaf in stacked.leaves.values():
        leaf.grad.fill_(float("nan"))
    divergence = _Divergence(range(3), PopulationConfig(on_diverge="record"))
    divergence.check(np.array([False, True, False]), "the training loss", "in epoch 1")
    divergence.freeze(stacked)
    grad = stacked.grads["w"]
    assert (grad[1] == 0).all() and grad[[0, 2]].isnan().all()
