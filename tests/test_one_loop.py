"""One training loop: nothing outside memlab/engine/ trains a model.

Only measures that take one gradient step by definition may compute gradients themselves:
LASS critical samples and loss sensitivity (a gradient with respect to the *input*),
elasticity's one-step probes, and EK-FAC's sampled-label Fisher in attribution.
"""

import ast
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parents[1] / "memlab"
ALLOWED = {
    "measures/critical.py",          # LASS / loss sensitivity: d loss / d input
    "measures/elasticity.py",        # S_rel / S_ker: one SGD step by definition
    "measures/attribution/methods.py",  # EK-FAC: Fisher from sampled labels (no training)
}


def training_calls(source: str) -> list[str]:
    """`.backward(`, `torch.autograd.grad(` and `<optimizer>.step()` calls in a module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            target = ast.unparse(node.func.value)
            if name == "backward" or (name == "grad" and target.endswith("autograd")):
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}")
            elif name == "step" and not node.args and "optim" in target.lower():
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}")
    return found


def test_the_scanner_finds_each_kind_of_call():
    code = "loss.backward()\ntorch.autograd.grad(y, x)\noptimizer.step()\nself.step(3)\n"
    assert len(training_calls(code)) == 3


def test_the_one_loop_is_in_the_engine():
    loop = (PACKAGE / "engine" / "loop.py").read_text()
    assert "def train_chunk(" in loop and training_calls(loop)


def test_nothing_outside_the_engine_trains():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("engine/") or relative in ALLOWED:
            continue
        calls = training_calls(path.read_text())
        if calls:
            offenders[relative] = calls
    assert not offenders, f"training loops outside memlab/engine/: {offenders}"


def test_engine_leaves_the_callers_rng_untouched(tmp_path):
    from memlab.population import train_population
    from tests.conftest import make_blobs

    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_population(make_blobs(), model="mlp", model_kwargs={"hidden": [8], "dropout": 0.2},
                     n_models=2, epochs=1, progress=False, n_workers=1, out=tmp_path / "r")
    assert torch.equal(before, torch.get_rng_state())
