"""Runs from strangers run nothing (issue 30): a run's manifest names its model factory as
``package.module:factory``, and whoever edits the manifest chooses that name (its checksum
is re-stamped as easily). Opening, reading, verifying, auditing and attributing such a run
import no module it names unless the caller trusts the run (``open_run(path,
trust_code=True)``, ``run.model(k, trust_code=True)``, ``--trust-run``) or passes the
model itself; with trust, everything works as before.

The module the run names makes a marker directory when it is imported, so an import is
seen even in another process; the command-line cases run in subprocesses (an import in
this process would be cached in sys.modules and hide a second one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from memlab.errors import RunError
from memlab.population import open_run, store

REPO = Path(__file__).resolve().parents[1]

MODULE = '''
import pathlib

from torch import nn

(pathlib.Path(__file__).parent / "{marker}").mkdir(exist_ok=True)  # the side effect


def factory(input_shape, n_classes, width=8):
    n_inputs = 1
    for d in input_shape:
        n_inputs *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, width), nn.ReLU(),
                         nn.Linear(width, n_classes))


def augment(x, rng):
    return x
'''


def same_architecture(input_shape, n_classes, width=8):
    """What the caller passes instead of trusting the run: the factory's architecture."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width),
                         nn.ReLU(), nn.Linear(width, n_classes))


def memlab(*args: str, code: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m memlab ARGS`` with ``code`` on PYTHONPATH (so an import would succeed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "memlab", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def python(script: str, code: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), str(REPO)])}
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory):
    """(run directory, code directory): 16 tiny models of ``markermod:factory`` on digits,
    trained by their author (who named the module); the marker their import left is
    removed, as is any module the tests import."""
    root = tmp_path_factory.mktemp("stranger")
    code = root / "code"
    code.mkdir()
    (code / "markermod.py").write_text(MODULE.format(marker="marker"))
    (code / "evilmod.py").write_text(MODULE.format(marker="evil_marker"))
    run = root / "run"
    trained = memlab("train", "--data", "digits", "--n-train", "200", "--models", "16",
                     "--epochs", "1", "--model", "markermod:factory", "--workers", "1",
                     "--quiet", "--out", str(run), code=code)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (code / "marker").is_dir()  # the author's own training imported it
    (code / "marker").rmdir()
    yield run, code
    for name in ("markermod", "evilmod"):
        sys.modules.pop(name, None)


def imported(code: Path, marker: str = "marker") -> bool:
    return (code / marker).exists()


@pytest.fixture
def on_path(stranger, monkeypatch):
    """The code directory on sys.path, as for a user who has the module: only trust may
    import it."""
    run, code = stranger
    monkeypatch.syspath_prepend(str(code))
    yield run, code
    for name in ("markermod", "evilmod"):
        sys.modules.pop(name, None)
    for marker in ("marker", "evil_marker"):
        if (code / marker).exists():
            (code / marker).rmdir()


def test_opening_reading_and_rebuilding_untrusted_imports_nothing(on_path):
    run_dir, code = on_path
    run = open_run(run_dir)  # verify=True: every checksum
    repr(run)
    assert run.records("train_correct").shape[0] == 16
    assert set(run.weights([0, 3])) and len(run.models_table()) == 16
    assert run.dataset.n_train == 200 and run.membership_mask.shape == (16, 200)
    assert run.code_modules == ["markermod"] and run.trust_code is False
    with pytest.raises(RunError) as error:
        run.model(0)
    message = str(error.value)
    assert "\n" not in message and "'markermod'" in message
    assert "--trust-run" in message and "trust_code=True" in message and "model=" in message
    with pytest.raises(RunError, match="'markermod'"):
        run.model(0, trust_code=False)
    with pytest.raises(RunError, match="'markermod'"):
        open_run(run_dir, verify="lazy").model(1)
    # The caller's own model needs no trust.
    model = run.model(0, model=same_architecture)
    assert isinstance(model, nn.Sequential)
    assert not imported(code) and "markermod" not in sys.modules


def test_trusted_in_python_imports_and_rebuilds(stranger):
    run, code = stranger
    script = (f"from memlab.population import open_run\n"
              f"run = open_run({str(run)!r})\n"
              "import sys; assert 'markermod' not in sys.modules\n"
              "print(type(run.model(0, trust_code=True)).__name__)\n"
              f"print(type(open_run({str(run)!r}, trust_code=True).model(1)).__name__)\n")
    result = python(script, code)
    try:
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.split() == ["Sequential", "Sequential"]
        assert imported(code)  # the import happened: trust is what allowed it
    finally:
        if imported(code):
            (code / "marker").rmdir()


def test_verify_info_and_audit_need_no_trust_and_import_nothing(stranger, tmp_path):
    run, code = stranger
    verified = memlab("verify", str(run), code=code)
    assert verified.returncode == 0, verified.stderr
    out = verified.stdout
    assert "intact" in out
    assert "vouches for" in out and "bit rot" in out and "deliberate edits" in out
    assert "re-stamp" in out
    assert "'markermod'" in out and "--trust-run" in out and "imported nothing" in out
    info = memlab("info", str(run), code=code)
    assert info.returncode == 0, info.stderr
    assert "'markermod'" in info.stdout and "--trust-run" in info.stdout
    audited = memlab("audit", str(run), "--out", str(tmp_path / "audit"), "--bootstrap", "5",
                     "--shadow-caps", "1", "--attacks", "loss", "--curve-attacks", "loss",
                     "--curve-examples", "50", "--quiet", code=code)
    assert audited.returncode == 0, audited.stderr[-2000:]
    assert (tmp_path / "audit" / "summary.json").exists()
    assert not imported(code)
    # The exposure study retrains the run's recipe: that needs its code, so trust.
    exposed = memlab("audit", str(run), "--exposure", "--out", str(tmp_path / "exposure"),
                     "--quiet", code=code)
    assert exposed.returncode == 2
    assert exposed.stderr.count("\n") == 1 and "memlab: error:" in exposed.stderr
    assert "'markermod'" in exposed.stderr and "--trust-run" in exposed.stderr
    # Planning from a pilot builds its model (to count it): trust too.
    planned = memlab("plan", "--pilot", str(run), code=code)
    assert planned.returncode == 2 and "'markermod'" in planned.stderr
    assert not imported(code)


ATTRIBUTE = ("--targets", "5", "--heldout", "3", "--validation", "3", "--methods",
             "grad_dot,random", "--self-influence-methods", "grad_dot",
             "--self-influence-examples", "10", "--no-ceiling", "--workers", "1", "--quiet")


def test_attribute_needs_trust_and_works_with_it(stranger, tmp_path):
    run, code = stranger
    refused = memlab("attribute", str(run), "--out", str(tmp_path / "no"), *ATTRIBUTE,
                     code=code)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("memlab: error:")
    assert "'markermod'" in refused.stderr and "--trust-run" in refused.stderr
    assert not imported(code)
    trusted = memlab("attribute", str(run), "--trust-run", "--out", str(tmp_path / "yes"),
                     *ATTRIBUTE, code=code)
    try:
        assert trusted.returncode == 0, trusted.stderr[-2000:]
        assert (tmp_path / "yes" / "summary.json").exists()
        assert imported(code)
    finally:
        if imported(code):
            (code / "marker").rmdir()


def test_a_re_stamped_manifest_naming_another_module_imports_nothing(stranger, tmp_path):
    run, code = stranger
    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    manifest = json.loads((edited / store.MANIFEST).read_text())
    manifest["config"]["model"] = manifest["model"]["factory"] = "evilmod:factory"
    manifest["config"]["augment"] = ["evilmod:augment"]
    (edited / store.MANIFEST).write_text(json.dumps(store.with_checksum(manifest)))
    assert store.self_check(json.loads((edited / store.MANIFEST).read_text()))
    verified = memlab("verify", str(edited), code=code)
    # Intact as far as checksums go (the editor re-stamped them), and it says so.
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout and "'evilmod'" in verified.stdout
    assert "deliberate edits" in verified.stdout
    script = (f"from memlab.population import open_run\n"
              f"run = open_run({str(edited)!r})\n"
              "print(run.code_modules)\n"
              "try:\n    run.model(0)\nexcept Exception as error:\n    print('REFUSED', error)\n")
    opened = python(script, code)
    assert opened.returncode == 0, opened.stderr[-2000:]
    assert "['evilmod']" in opened.stdout and "REFUSED" in opened.stdout
    assert "'evilmod'" in opened.stdout
    refused = memlab("attribute", str(edited), "--out", str(tmp_path / "a"), *ATTRIBUTE,
                     code=code)
    assert refused.returncode == 2 and "'evilmod'" in refused.stderr
    # Training into it with another model lists the differences; it imports nothing the
    # manifest names to compare them.
    mixed = memlab("train", "--data", "digits", "--n-train", "200", "--models", "16",
                   "--epochs", "1", "--workers", "1", "--quiet", "--out", str(edited),
                   code=code)
    assert mixed.returncode == 2 and "different settings" in mixed.stderr, mixed.stderr
    assert not imported(code, "evil_marker") and not imported(code)


def test_names_that_import_nothing_need_no_trust():
    from memlab.engine.recipe import code_modules
    from memlab.models import code_module, register_model

    register_model("test_untrusted_local", same_architecture)
    for name in ("mlp", "cnn1d", "cnn2d", "transformer", "test_untrusted_local",
                 "memlab.models:MLP", "memlab.models.builtin:CNN1d"):
        assert code_module(name) is None, name
    assert code_module("evilpkg.mod:factory") == "evilpkg.mod"
    assert code_module("memlabx:factory") == "memlabx"
    assert code_modules("mlp", ("crop:4", "flip", "shift:2")) == []
    assert code_modules("pkg.a:f", ("pkg.b:g", "crop:2", "pkg.a:h")) == ["pkg.a", "pkg.b"]


def test_trust_run_goes_with_a_run(tmp_path, capsys):
    from memlab.cli import main

    assert main(["audit", "--quick", "--trust-run", "--out", str(tmp_path / "a")]) == 2
    assert "--trust-run trusts the run given" in capsys.readouterr().err
    assert main(["plan", "--data", "digits", "--trust-run"]) == 2
    assert "--trust-run goes with --pilot" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
