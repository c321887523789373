"""Where memlab's documentation lives: the one home of the links that messages, reports and
the README's table of studies print. A pip user has no ``docs/`` folder, so they are URLs of
the documentation site (built from ``docs/`` by ``mkdocs build``)."""

from __future__ import annotations

DOCS_URL = "https://memlab.readthedocs.io/en/latest/"


def docs_page(page: str, anchor: str = "") -> str:
    """URL of a documentation page: ``docs_page("memorization", "results")`` ->
    ``https://memlab.readthedocs.io/en/latest/memorization/#results``. ``page`` is the
    file's stem in ``docs/`` (``"docs/audit.md"`` is accepted too)."""
    stem = page.removeprefix("docs/").removesuffix(".md")
    url = DOCS_URL if stem in ("", "index") else f"{DOCS_URL}{stem}/"
    return f"{url}#{anchor}" if anchor else url
