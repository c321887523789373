"""Look at a report the way a reader does: rendered in headless Chromium at 1280 px.

:func:`inspect_page` renders a copy of the page with a small probe script added (reports
themselves carry no JavaScript), opens every collapsed section, and returns the problems a
reader would see:

- the page scrolls sideways (``scrollWidth > clientWidth``), or a table, figure, image or
  block of text sticks out of the page or needs its own horizontal scroll bar;
- a number printed with more than :data:`MAX_SIGNIFICANT` significant digits (a raw float
  where a rounded one belongs);
- the page's text holds a verbatim ``summary.json`` (the full numbers belong in the
  downloadable files).

:func:`screenshot` writes a PNG of the page for a person to look at. Both need a Chromium
binary (Debian: ``apt-get install chromium``); :func:`chromium` says whether there is one.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

WIDTH = 1280  # px: a laptop screen, and the width the conformance suite checks at
MAX_SIGNIFICANT = 12  # significant digits a printed number may have at most

_PROBE = """<script>
window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const root = document.documentElement, width = root.clientWidth;
  const name = el => el.tagName.toLowerCase() + (el.className && el.className.baseVal === undefined
      && el.className ? "." + el.className : "");
  const label = el => (el.querySelector && el.querySelector("caption, figcaption")
      || el).textContent.trim().slice(0, 60);
  const found = {width: width, scrollWidth: root.scrollWidth, outside: [], scrolls: []};
  for (const el of document.body.querySelectorAll("img, svg, figure, table, pre, p, h1, h2, div")) {
    if (el.closest("svg") && el.tagName.toLowerCase() !== "svg") continue;
    const box = el.getBoundingClientRect();
    if (box.right > width + 1 || box.left < -1)
      found.outside.push(name(el) + " " + Math.round(box.width) + " px: " + label(el));
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== "visible")
      found.scrolls.push(name(el) + " " + el.scrollWidth + " px in " + el.clientWidth + ": "
                         + label(el));
  }
  document.body.setAttribute("data-memlab-check", JSON.stringify(found));
});
</script>"""

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


def chromium() -> str | None:
    """The path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "headless_shell"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium binary; install it (Debian: apt-get install "
                                "chromium) to render reports")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout)


def significant_digits(number: str) -> int:
    """Significant digits of a printed number ("0.00120" -> 3, "1,234" -> 4)."""
    mantissa = re.split(r"[eE]", number.lstrip("+-"))[0].replace(",", "")
    digits = mantissa.replace(".", "").lstrip("0")
    return len(digits) if "." in mantissa else len(digits.rstrip("0") or "0")


def long_numbers(text: str) -> list[str]:
    """The numbers in ``text`` printed with more than :data:`MAX_SIGNIFICANT` digits."""
    return [m for m in _NUMBER.findall(text) if significant_digits(m) > MAX_SIGNIFICANT]


def visible_text(page: str) -> str:
    """The text a reader sees: tags, styles, scripts and inline figures removed."""
    page = re.sub(r"<(svg|style|script)\b.*?</\1>", " ", page, flags=re.S | re.I)
    page = re.sub(r"<[^>]+>", " ", page)
    return html.unescape(page)


def inspect_page(path: str | Path, width: int = WIDTH, timeout: float = 120) -> list[str]:
    """The problems a reader of the page at ``width`` px would see (empty: none)."""
    page = Path(path).read_text(encoding="utf-8")
    problems = []
    text = visible_text(page)
    numbers = long_numbers(text)
    if numbers:
        problems.append(f"{len(numbers)} numbers with more than {MAX_SIGNIFICANT} significant "
                        f"digits, e.g. {', '.join(numbers[:3])}")
    if re.search(r'\{\s*"[\w.-]+":', text):
        problems.append("the page prints JSON (a summary dumped verbatim)")
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "page.html"
        probed.write_text(page.replace("</body>", _PROBE + "</body>", 1), encoding="utf-8")
        done = _run(["--dump-dom", "--virtual-time-budget=10000",
                     f"--window-size={width},2000", probed.as_uri()], timeout)
    match = re.search(r'data-memlab-check="([^"]*)"', done.stdout)
    if done.returncode != 0 or match is None:
        return [*problems, f"Chromium did not render the page (exit {done.returncode}): "
                           f"{done.stderr.strip()[-300:]}"]
    found = json.loads(html.unescape(match.group(1)))
    if found["scrollWidth"] > found["width"]:
        problems.append(f"the page scrolls sideways: {found['scrollWidth']} px wide in "
                        f"{found['width']} px")
    problems += [f"sticks out of the page: {what}" for what in found["outside"]]
    problems += [f"needs a horizontal scroll bar: {what}" for what in found["scrolls"]]
    return problems


def screenshot(path: str | Path, png: str | Path, width: int = WIDTH, height: int = 4000,
               timeout: float = 120) -> Path:
    """A PNG of the page's first ``height`` px at ``width`` px (for a person to look at)."""
    png = Path(png).resolve()
    done = _run([f"--screenshot={png}", f"--window-size={width},{height}",
                 Path(path).resolve().as_uri()], timeout)
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"Chromium could not take the screenshot: {done.stderr[-300:]}")
    return png
