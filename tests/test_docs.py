"""The documentation: every page follows its template, the site builds with
`mkdocs build --strict` (broken links, anchors and API references fail), the tutorial
runs end to end and its output is in the site."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# A page about one measurement (a study, a measure, the engine's speed) has these sections,
# in this order, and no others at its second level; anything else is a ### below them.
STUDY_SECTIONS = ["What it measures", "Run it", "Results", "Known answers", "Limits",
                  "Reproduce"]
STUDY_PAGES = ["memorization", "longtail", "lm", "noise", "elasticity", "lesde", "spectra",
               "audit", "dp", "attribution", "atlas", "performance"]
# Guides (how to install, train, scale, extend; the science; the architecture) have their
# own sections; they share the rest of the template: one title, an opening paragraph, no
# skipped heading level.
GUIDE_PAGES = ["index", "install", "engine", "models", "studies", "scaling", "architecture",
               "science", "contributing", "changelog"]


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every Markdown heading outside fenced code."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#{1,6}) (.+?)\s*$", line)):
            found.append((len(m.group(1)), m.group(2)))
    return found


def test_every_page_is_a_study_page_or_a_guide():
    pages = {p.stem for p in DOCS.glob("*.md")} - {"tutorial"}
    assert pages == set(STUDY_PAGES) | set(GUIDE_PAGES), (
        f"pages of no template: {sorted(pages - set(STUDY_PAGES) - set(GUIDE_PAGES))}; "
        f"listed but missing: {sorted(set(STUDY_PAGES) | set(GUIDE_PAGES) - pages)}")


@pytest.mark.parametrize("page", STUDY_PAGES + GUIDE_PAGES)
def test_a_page_has_one_title_an_opening_paragraph_and_no_skipped_level(page):
    text = (DOCS / f"{page}.md").read_text()
    if page == "changelog":
        return  # the snippet of CHANGELOG.md, checked there
    found = headings(text)
    assert found and found[0][0] == 1 and text.startswith("# "), f"{page}.md: starts with # Title"
    assert [level for level, _ in found].count(1) == 1, f"{page}.md: one # title"
    opening = text.split("\n", 1)[1].lstrip("\n")
    assert opening and not opening.startswith("#"), f"{page}.md: an opening paragraph"
    for (before, _), (level, title) in zip(found, found[1:]):
        assert level <= before + 1, f"{page}.md: '{title}' skips a heading level"


@pytest.mark.parametrize("page", STUDY_PAGES)
def test_a_study_page_has_the_six_sections_in_order(page):
    sections = [title for level, title in headings((DOCS / f"{page}.md").read_text())
                if level == 2]
    assert sections == STUDY_SECTIONS, f"{page}.md has ## {sections}, not {STUDY_SECTIONS}"


def test_the_readme_is_short_and_its_links_work_on_a_package_index_page():
    """≤ 200 lines, and every link and image absolute: a package index shows the README
    without the repository, so a relative docs/*.md link would break there. Every docs URL
    names a page that exists."""
    from memlab.links import DOCS_URL

    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets and all(t.startswith(("https://", "http://")) for t in targets), [
        t for t in targets if not t.startswith("http")]
    for target in targets:
        if target.startswith(DOCS_URL):
            page = target[len(DOCS_URL):].split("#")[0].strip("/")
            if page.startswith("figures/"):
                assert (DOCS / page).is_file(), target
            else:
                assert (DOCS / f"{page or 'index'}.md").is_file(), target
    install = readme.split("## Install")[1].split("\n## ")[0]
    assert install.index("pip install memlab") < install.index("make test"), (
        "the pip path first, then the two repository commands")


# ------------------------------------------------------------------ the site and the tutorial


def test_the_api_reference_covers_every_function_the_readme_names():
    import ast
    import importlib

    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), re.M))
    readme = (ROOT / "README.md").read_text()
    named = set()
    for block in re.findall(r"```python\n(.*?)```", readme, re.S):
        tree = ast.parse(block)
        imported = {alias.asname or alias.name: f"{node.module}.{alias.name}"
                    for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and node.module.startswith("memlab") for alias in node.names}
        for name, qualified in imported.items():
            try:
                importlib.import_module(qualified)  # a module: the functions used from it
            except ImportError:
                named.add(qualified)
                continue
            named |= {f"{qualified}.{node.attr}" for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id == name}
    assert named, "the README names no memlab function"
    assert not named - documented, f"missing from docs/api: {sorted(named - documented)}"


@pytest.fixture(scope="module")
def executed_tutorial(tmp_path_factory):
    """docs/tutorial.md executed end to end with nbclient, in a fresh directory (its runs/
    go there): the notebook, with outputs."""
    import time

    import jupytext
    import nbclient

    work = tmp_path_factory.mktemp("tutorial")
    notebook = jupytext.read(DOCS / "tutorial.md")
    started = time.perf_counter()
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}}).execute()
    print(f"\ntutorial executed in {time.perf_counter() - started:.0f} s")
    return notebook


def test_the_tutorial_runs_end_to_end_and_finds_the_planted_labels(executed_tutorial):
    outputs = "\n".join(output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
                        for cell in executed_tutorial.cells if cell.cell_type == "code"
                        for output in cell.get("outputs", []))
    assert "error" not in {o.get("output_type") for c in executed_tutorial.cells
                           for o in c.get("outputs", [])}
    auroc = float(re.search(r"AUROC of mem for the flipped labels: ([\d.]+)", outputs).group(1))
    assert auroc > 0.9, outputs
    images = sum("image/png" in o.get("data", {}) for c in executed_tutorial.cells
                 for o in c.get("outputs", []))
    assert images >= 2, "the tutorial shows the memorized images and the atlas's matrix"


def test_the_site_builds_strict_with_the_executed_tutorial(executed_tutorial, tmp_path):
    """`mkdocs build --strict` (every link, anchor and API reference resolves) on a copy of
    the docs in which the tutorial is the executed notebook: its outputs are in the site."""
    import shutil
    import subprocess

    import nbformat

    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("runs", ".cache"))
    (docs / "tutorial.md").unlink()
    nbformat.write(executed_tutorial, docs / "tutorial.ipynb")
    for page in docs.rglob("*.md"):  # links to the tutorial: now to the executed notebook
        text = page.read_text()
        page.write_text(re.sub(r"\]\(((?:\.\./)?)tutorial\.md", r"](\1tutorial.ipynb", text))
    config = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("Tutorial: tutorial.md", "Tutorial: tutorial.ipynb")
    (tmp_path / "mkdocs.yml").write_text(config)
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path / "CHANGELOG.md")  # the changelog snippet
    env = {**__import__("os").environ, "MEMLAB_DOCS_EXECUTE": "false",
           "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                             str(tmp_path / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    page = (tmp_path / "site" / "tutorial" / "index.html").read_text()
    assert "AUROC of mem for the flipped labels" in page and "data:image/png;base64" in page
    api = (tmp_path / "site" / "api" / "population" / "index.html").read_text()
    assert "train_population" in api and "subset_fraction" in api
