"""Errors before work, all at once (issue 30): a study checks its whole configuration
before it starts and names every problem in one line; a method that cannot handle the
model is refused before training; an option of a method not asked for is reported; the
long attribution methods show progress."""

from __future__ import annotations

import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn

from memlab import validate
from memlab.cli import main
from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.measures.attribution import methods as am
from memlab.studies.attribute.config import AttributeConfig


def _error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("memlab: error: ")
    return err[0]


# ------------------------------------------------------------------ the mechanism


def test_all_problems_gathers_checks_and_stops_where_told():
    with pytest.raises(validate.ConfigProblems) as caught:
        with validate.all_problems("demo settings"):
            with validate.check():
                validate.integer(0, "n", minimum=1)
            validate.problem("b is wrong")
            with validate.all_problems("inner"):  # nested: joins the outer one
                with validate.check():
                    validate.real(float("nan"), "lr")
            validate.stop_if_problems()
            validate.problem("never reached")
    assert caught.value.problems == ["n must be a positive integer, got 0", "b is wrong",
                                     "lr must be a finite number, got nan"]
    assert str(caught.value).startswith("3 problems with the demo settings: (1) n must")


def test_a_crash_after_a_problem_reports_the_problems():
    with pytest.raises(ConfigError, match="^a is wrong$"):
        with validate.all_problems():
            validate.problem("a is wrong")
            None.attribute  # noqa: B018  (a later check crashing on the invalid value)


def test_outside_all_problems_the_first_error_is_raised():
    with pytest.raises(ConfigError, match="first"):
        validate.problem("first")
    with pytest.raises(ConfigError, match="n must"), validate.check():
        validate.integer(0, "n", minimum=1)


def test_population_config_names_every_problem():
    with pytest.raises(ConfigError) as caught:
        PopulationConfig(lr=-1, epochs=0, optimizer="nope")
    message = str(caught.value)
    assert message.startswith("3 problems with the population settings")
    assert "lr" in message and "epochs" in message and "optimizer" in message


# ------------------------------------------------------------------ three mistakes at once


def test_attribute_three_mistakes_one_message(capsys, tmp_path):
    line = _error_line(capsys, ["attribute", "--quick", "--targets", "0", "--heldout", "2",
                                "--lr", "-1", "--out", str(tmp_path / "out")])
    assert "3 problems with the attribute settings" in line
    for flag in ("--targets", "--heldout", "--lr"):
        assert flag in line
    assert not (tmp_path / "out" / "population").exists()


def test_audit_three_mistakes_one_message(capsys, tmp_path):
    line = _error_line(capsys, ["audit", "--quick", "--attacks", "loss,nope",
                                "--vulnerability-fpr", "2", "--bootstrap", "-1",
                                "--out", str(tmp_path / "out")])
    assert "3 problems with the audit settings" in line
    assert "nope" in line and "--vulnerability-fpr" in line and "--bootstrap" in line


def test_memorize_three_mistakes_one_message(capsys, tmp_path):
    line = _error_line(capsys, ["memorize", "--quick", "--threshold", "2", "--target-se",
                                "0", "--epochs", "abc", "--out", str(tmp_path / "out")])
    assert "3 problems with the memorize settings" in line
    assert "--threshold" in line and "--target-se" in line and "--epochs" in line


def test_python_api_reports_every_problem():
    config = AttributeConfig.quick(n_targets=0, n_heldout=1, methods=("nope",))
    with pytest.raises(ConfigError, match="^3 problems with the attribute settings"):
        config.validate()


# ------------------------------------------------------------------ options of other methods


def test_an_unselected_methods_invalid_option_is_no_error():
    AttributeConfig.quick(methods=("grad_dot",), cg_iter=0, knn_k=0,
                          removal_seeds=0).validate()
    with pytest.raises(ConfigError, match="cg_iter"):
        AttributeConfig.quick(methods=("grad_dot", "if_cg"), cg_iter=0).validate()


def test_an_option_given_for_an_unselected_method_is_reported(capsys, tmp_path):
    line = _error_line(capsys, ["attribute", "--quick", "--methods", "grad_dot",
                                "--cg-iter", "5", "--knn-k", "3", "--targets", "0",
                                "--out", str(tmp_path / "out")])
    assert "2 problems" in line
    assert "--cg-iter (if_cg is not among --methods)" in line
    assert "--knn-k (knn is not among --methods)" in line


# ------------------------------------------------------------------ the model, before training

CNN = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


def resnet(input_shape, n_classes, width=4):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        Block(width), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.1),
        nn.Linear(width * 4, n_classes))
'''


def test_ekfac_refuses_a_batchnorm_conv_model_before_training(capsys, tmp_path, monkeypatch):
    (tmp_path / "usercnn_issue30.py").write_text(textwrap.dedent(CNN))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    started = time.perf_counter()
    line = _error_line(capsys, ["attribute", "--data", "digits", "--model",
                                "usercnn_issue30:resnet", "--methods", "grad_dot,if_ekfac",
                                "--models", "40", "--heldout", "10", "--validation", "10",
                                "--epochs", "2", "--quiet", "--out", str(out)])
    assert time.perf_counter() - started < 60
    assert "if_ekfac needs every parameter in a Linear layer" in line
    assert "BatchNorm2d" in line and "Conv2d" in line
    assert not (out / "population").exists()
    assert not list(out.rglob("chunk*"))
    sys.modules.pop("usercnn_issue30", None)


def test_refusal_from_layer_types():
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                        nn.Linear(2 * 36, 3))
    assert am.refusal("if_ekfac", mlp) is None
    assert "Conv2d" in am.refusal("if_ekfac", cnn)
    assert am.refusal("grad_dot", cnn) is None
    assert "Linear" in am.refusal("knn", nn.Sequential(nn.Conv2d(1, 3, 8), nn.Flatten()))


# ------------------------------------------------------------------ progress


def _tiny_problem() -> am.Problem:
    torch.manual_seed(0)
    template = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    params = {name: t.detach()[None].clone() for name, t in template.named_parameters()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 4)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    return am.Problem(template, params, x, y, x[:4], y[:4])


def test_if_cg_shows_progress_on_stderr(capsys):
    problem = _tiny_problem()
    with am.progress(True):
        scores = am.influence(problem, solver="cg", damping=[0.1, 1.0], cg_iter=5)
    err = capsys.readouterr().err
    assert "if_cg" in err and "damping" in err
    assert set(scores) == {0.1, 1.0}
    am.influence(problem, solver="cg", damping=0.1, cg_iter=5)  # outside progress(): silent
    assert "if_cg" not in capsys.readouterr().err


def test_ekfac_progress(capsys):
    with am.progress(True):
        am.influence(_tiny_problem(), solver="ekfac", damping=[0.1])
    assert "if_ekfac" in capsys.readouterr().err


def test_interrupt_in_a_method_exits_130(capsys, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    import memlab.studies.attribute.study as study

    monkeypatch.setattr(study, "open_or_train", interrupted)
    assert main(["attribute", "--quick", "--quiet", "--out", str(tmp_path / "out")]) == 130
    assert "interrupted" in capsys.readouterr().err
