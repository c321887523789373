"""The architecture holds: layers follow the data flow, matplotlib stays in the drawing
layers (both import-linter contracts in pyproject.toml), and no module imports itself back
through another (no import cycle, even through function-level imports)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports() -> str:
    found = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(found).exists():
        pytest.fail("lint-imports is missing: install the test extra (pip install -e '.[test]')")
    return found


def test_import_linter_contracts_are_kept():
    result = subprocess.run([lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(edges) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_memlab():
    grimp = pytest.importorskip("grimp")  # installed with import-linter
    graph = grimp.build_graph("memlab", cache_dir=None, exclude_type_checking_imports=True)
    modules = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    assert import_cycles(edges) == []


def test_a_study_command_imports_no_science_until_it_runs():
    """Building the parser imports every study's face and config: none may load torch,
    pandas, scipy, matplotlib or the population layer (measured in a fresh interpreter,
    since import-linter also counts the imports inside functions)."""
    from memlab.studies.base import BUILTIN

    heavy = ("torch", "pandas", "scipy", "matplotlib", "sklearn", "memlab.population")
    code = ("import sys, memlab.options, memlab.studies.base as b\n"
            f"[__import__('memlab.studies.' + n) for n in {list(BUILTIN)!r}]\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"a study's face imports {result.stdout.strip()}"


def test_studies_orchestrate_and_the_epoch_loop_fits_on_a_screen():
    """Every study's study.py is orchestration (under 300 lines: measures live in
    memlab/measures/, captions in figures.py) and train_chunk's epoch loop is at most 60
    lines (its parts are named helpers)."""
    import ast

    long = {path.parent.name: n for path in sorted((ROOT / "memlab" / "studies").glob(
        "*/study.py")) if (n := len(path.read_text().splitlines())) >= 300}
    assert not long, f"study.py over 300 lines: {long}"
    tree = ast.parse((ROOT / "memlab" / "engine" / "loop.py").read_text())
    train_chunk = next(node for node in tree.body
                       if isinstance(node, ast.FunctionDef) and node.name == "train_chunk")
    loops = [node for node in ast.walk(train_chunk) if isinstance(node, ast.For)
             and isinstance(node.target, ast.Name) and node.target.id == "epoch"]
    assert len(loops) == 1, "train_chunk has one epoch loop"
    length = loops[0].end_lineno - loops[0].lineno + 1
    assert length <= 60, f"train_chunk's epoch loop is {length} lines"
