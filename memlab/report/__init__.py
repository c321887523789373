"""Reports and figures: the one place memlab draws.

``Report`` (``page.py``) assembles a self-contained HTML page; ``figures.py`` holds the one
figure style, the one PNG/SVG saver and the plots several studies share (reliability
against the number of models, inputs drawn as what they are: images, signals, vectors,
text). A study's own figures live in ``memlab/studies/<name>/figures.py`` and use these.
"""

from memlab.report.figures import (
    COLORS,
    PNG_DPI,
    draw_input,
    input_kind,
    plot_reliability,
    save_figure,
    style,
)
from memlab.report.page import Report

__all__ = ["COLORS", "PNG_DPI", "Report", "draw_input", "input_kind", "plot_reliability",
           "save_figure", "style"]
