"""Self-contained HTML reports: figures inlined as SVG/PNG, tables as HTML, no external files.

Every study writes its report through :class:`Report` so that all reports look alike and
open anywhere (no network, no JavaScript needed).

    report = Report("Memorization on mnist1d")
    report.text("2,000 models, 70% subsets.")
    report.figure(fig, caption="Histogram of memorization scores")
    report.table(df.head(20), caption="Most memorized examples")
    report.save("runs/demo/report.html")
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written headless; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.io import atomic_write_bytes  # noqa: E402
from memlab.report.figures import figure_bytes  # noqa: E402

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { margin: 1.5em 0; text-align: center; }
figure img, figure svg { max-width: 100%; height: auto; }
figcaption { font-size: .9em; color: #555; margin-top: .4em; }
table { border-collapse: collapse; font-size: .85em; margin: 1em auto; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; }
caption { caption-side: top; font-size: .9em; color: #555; padding: .3em; }
.note { background: #f7f7f2; border-left: 4px solid #c9b458; padding: .5em 1em; }
code, pre { background: #f4f4f4; padding: 0 .3em; }
"""


class Report:
    """An HTML page assembled from headings, paragraphs, figures and tables, in order."""

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str, note: bool = False) -> None:
        """A paragraph of plain text (escaped); ``note=True`` draws it as a highlighted box."""
        cls = ' class="note"' if note else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def code(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def figure(self, fig: plt.Figure, caption: str = "", fmt: str = "svg") -> None:
        """Inline a matplotlib figure (closed afterwards). ``fmt`` is ``"svg"`` or ``"png"``;
        PNG is smaller for figures with many points or images."""
        if fmt not in ("svg", "png"):
            raise ValueError(f"figure format must be 'svg' or 'png', got {fmt!r}")
        encoded = figure_bytes(fig, fmt)
        if fmt == "svg":
            svg = encoded.decode("utf-8")
            body = svg[svg.find("<svg") :]  # drop the XML prolog: invalid inside HTML
        elif fmt == "png":
            data = base64.b64encode(encoded).decode("ascii")
            body = f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f"<figure>{body}{cap}</figure>")

    def table(self, frame: pd.DataFrame, caption: str = "", float_format: str = "{:.4g}") -> None:
        formatters = {
            col: float_format.format for col in frame.columns if frame[col].dtype.kind == "f"
        }
        table_html = frame.to_html(
            index=False, border=0, formatters=formatters, escape=True, na_rep="–"
        )
        if caption:
            table_html = table_html.replace(
                ">", f"><caption>{html.escape(caption)}</caption>", 1
            )
        self._parts.append(table_html)

    def html(self) -> str:
        body = "\n".join(self._parts)
        title = html.escape(self.title)
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{title}</h1>\n{body}\n</body></html>\n"
        )

    def save(self, path: str | Path) -> Path:
        """Write the page atomically and return its path."""
        path = Path(path)
        atomic_write_bytes(path, self.html().encode("utf-8"))
        return path
