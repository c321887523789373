"""scripts/regenerate.py: every figure in docs/ has the command that makes it, every
command is one the CLI accepts, and the quick entries run (CI)."""

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def regenerate():
    spec = importlib.util.spec_from_file_location("regenerate", ROOT / "scripts" /
                                                  "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["regenerate"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_figure_in_the_docs_has_an_entry():
    entries = regenerate().ENTRIES
    prefixes = [p for entry in entries for p in entry.figures]
    orphans = [path.name for path in sorted((ROOT / "docs" / "figures").glob("*.png"))
               if not any(path.name.startswith(p) for p in prefixes)]
    assert not orphans, f"figures no entry of scripts/regenerate.py produces: {orphans}"


def test_every_figure_the_docs_show_exists():
    shown = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        shown |= set(re.findall(r"figures/([\w.-]+\.png)", page.read_text()))
    missing = sorted(name for name in shown if not (ROOT / "docs" / "figures" / name).exists())
    assert not missing, f"docs show figures that do not exist: {missing}"


def test_every_entry_is_a_command_the_cli_accepts():
    from memlab.cli import build_parser

    parser = build_parser()
    for entry in regenerate().ENTRIES:
        argv = shlex.split(entry.command.format(runs="/tmp/r", figures="/tmp/f"))
        if argv[0] == "python":
            assert (ROOT / argv[1]).is_file(), f"{entry.name}: {argv[1]} does not exist"
            continue
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{entry.name}: memlab {shlex.join(argv)} is not a valid command")


def test_every_study_has_an_entry():
    from memlab.studies.base import BUILTIN, get_study

    commands = {shlex.split(entry.command)[0] for entry in regenerate().ENTRIES}
    missing = [name for name in BUILTIN if get_study(name).command not in commands]
    assert not missing, f"studies no entry of scripts/regenerate.py runs: {missing}"


@pytest.mark.slow
def test_the_quick_entries_run(tmp_path):
    code = regenerate().main(["--quick", "--runs", str(tmp_path / "runs"),
                              "--figures", str(tmp_path / "figures")])
    assert code == 0
