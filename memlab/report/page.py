"""Self-contained HTML reports: figures inlined as SVG/PNG, tables as HTML, no external files.

Every study writes its report through :class:`Report` so that all reports have one shape
and open anywhere (no network, no JavaScript):

1. the title, then **the finding**: two or three sentences with numbers and intervals, each
   computed from the data with its verdict (``finding``);
2. sections (``heading``), each a collapsible ``<details>`` block; secondary ones start
   collapsed (``collapsed=True``): figures with captions that say what to look at, then
   tables rounded to their uncertainty (``table(..., se=..., intervals=...)``; the full
   numbers are in the downloadable Parquet tables and summary.json, never dumped into the
   page);
3. last, a Reproduce section whose command wraps.

    report = Report("Memorization on mnist1d")
    report.finding("312 of 1,000 examples are memorized (31% [28%, 34%]).")
    report.heading("Scores")
    report.figure(fig, caption="Histogram of memorization scores")
    report.table(df.head(20), caption="Most memorized examples", se={"mem": "se"})
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
from memlab.report import numbers  # noqa: E402
from memlab.report.figures import figure_bytes  # noqa: E402

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45;
       overflow-wrap: break-word; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; overflow-wrap: anywhere; }
details { margin-top: 1.6em; }
summary { cursor: pointer; }
summary h2 { display: inline; font-size: 1.35em; }
section > details > summary { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
figure { margin: 1.5em 0; text-align: center; }
figure img, figure svg { max-width: 100%; height: auto; }
figcaption { font-size: .9em; color: #555; margin-top: .4em; text-align: left; }
.table { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; font-size: .85em; margin: 1em auto; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; overflow-wrap: anywhere; }
td { overflow-wrap: break-word; }  /* numbers stay whole: a table too wide is a defect */
caption { caption-side: top; font-size: .9em; color: #555; padding: .3em; }
.note { background: #f7f7f2; border-left: 4px solid #c9b458; padding: .5em 1em; }
.finding { background: #eef4fb; border-left: 4px solid #3a6ea5; padding: .6em 1em;
           font-size: 1.05em; }
.finding p { margin: .3em 0; }
code, pre { background: #f4f4f4; padding: 0 .3em; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; padding: .5em; }
"""


class Report:
    """An HTML page: the title, the finding, then sections of paragraphs, figures and
    tables in the order they were added."""

    def __init__(self, title: str):
        self.title = title
        self._finding: list[str] = []
        # (heading, collapsed, parts); the first, untitled section is the preamble
        self._sections: list[tuple[str | None, bool, list[str]]] = [(None, False, [])]

    @property
    def _parts(self) -> list[str]:
        return self._sections[-1][2]

    def finding(self, *sentences: str) -> None:
        """The report's finding: sentences shown first, under the title, each computed
        from the data (with its interval, or "cannot tell"). Called again, it adds."""
        self._finding.extend(s for s in sentences if s)

    def heading(self, text: str, collapsed: bool = False) -> None:
        """Start a section (a collapsible block; ``collapsed``: closed until clicked)."""
        self._sections.append((text, collapsed, []))

    def text(self, text: str, note: bool = False) -> None:
        """A paragraph of plain text (escaped); ``note=True`` draws it as a highlighted box."""
        cls = ' class="note"' if note else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def code(self, text: str) -> None:
        """Preformatted text (a command, a listing); long lines wrap."""
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

    def table(self, frame: pd.DataFrame, caption: str = "", float_format: str | None = None,
              se: dict[str, str] | None = None,
              intervals: dict[str, tuple[str, str]] | None = None) -> None:
        """A table. ``se``: column -> its standard-error column, shown as one column
        ``value ± se``; ``intervals``: column -> (low, high) columns, shown as ``value
        [low, high]``; both rounded to their uncertainty, the uncertainty columns dropped.
        Other float columns get ``float_format`` (default: 4 significant digits)."""
        frame = frame.copy()
        for column, error in (se or {}).items():
            frame[column] = [numbers.fmt_se(v, e) for v, e in zip(frame[column], frame[error])]
            frame = frame.drop(columns=[error])
        for column, (low, high) in (intervals or {}).items():
            frame[column] = [numbers.fmt_interval(v, lo, hi)
                             for v, lo, hi in zip(frame[column], frame[low], frame[high])]
            frame = frame.drop(columns=[low, high])
        plain = float_format.format if float_format else numbers.fmt
        formatters = {col: plain for col in frame.columns if frame[col].dtype.kind == "f"}
        table_html = frame.to_html(
            index=False, border=0, formatters=formatters, escape=True, na_rep=numbers.MISSING
        )
        if caption:
            table_html = table_html.replace(
                ">", f"><caption>{html.escape(caption)}</caption>", 1
            )
        self._parts.append(f'<div class="table">{table_html}</div>')

    def html(self) -> str:
        title = html.escape(self.title)
        body = []
        if self._finding:
            body.append('<div class="finding">' + "".join(
                f"<p>{html.escape(s)}</p>" for s in self._finding) + "</div>")
        for heading, collapsed, parts in self._sections:
            if heading is None:
                body.extend(parts)
                continue
            opened = "" if collapsed else " open"
            body.append(f"<section><details{opened}><summary><h2>{html.escape(heading)}"
                        "</h2></summary>\n" + "\n".join(parts) + "\n</details></section>")
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{title}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
        )

    def save(self, path: str | Path) -> Path:
        """Write the page atomically and return its path."""
        path = Path(path)
        atomic_write_bytes(path, self.html().encode("utf-8"))
        return path
