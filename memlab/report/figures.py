"""One figure style, one saver, and the plots several studies share.

    from memlab.report import style, save_figure, plot_reliability
    with style():
        fig, ax = plt.subplots()
        ...
    save_figure(fig, "docs/figures/memorization_overview.png")   # also .svg

Every PNG memlab writes goes through :func:`save_figure` (atomic, ``PNG_DPI``, tight
bounding box) so that figures in a paper, the docs and a report look alike.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are drawn headless; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memlab.io import atomic_write_bytes  # noqa: E402

PNG_DPI = 150  # one resolution for every PNG (reports inline SVG or PNG at this dpi)

# A qualitative palette readable in greyscale and by colour-blind readers (blue/orange
# first, as in the papers' two-condition plots).
COLORS = {"blue": "#3b6ea8", "orange": "#e08a2c", "red": "#c0392b", "grey": "#8c8c8c",
          "green": "#3a8a4f", "purple": "#7b4f9d", "black": "#222222"}

_RC = {"font.size": 8.5, "axes.titlesize": 9, "axes.titleweight": "bold", "axes.labelsize": 8.5,
       "xtick.labelsize": 7.5, "ytick.labelsize": 7.5, "legend.fontsize": 7.5,
       "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
       "axes.linewidth": 0.8, "savefig.dpi": PNG_DPI, "svg.fonttype": "none",
       "axes.prop_cycle": matplotlib.cycler(color=list(COLORS.values()))}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """memlab's figure style (fonts, spines, palette) for the figures drawn inside."""
    with plt.rc_context(_RC):
        yield


def figure_bytes(fig: plt.Figure, fmt: str = "png", close: bool = True) -> bytes:
    """The figure encoded as PNG (at ``PNG_DPI``) or SVG (closed unless ``close=False``)."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"figure format must be 'png' or 'svg', got {fmt!r}")
    buffer = io.BytesIO()
    # The same figure gives the same bytes (a study's outputs are checksummed and a
    # repaired report must match): SVG without its date, with ids from a fixed salt.
    with plt.rc_context({"svg.hashsalt": "memlab"}):
        fig.savefig(buffer, format=fmt, dpi=PNG_DPI, bbox_inches="tight",
                    metadata={"Date": None} if fmt == "svg" else None)
    if close:
        plt.close(fig)
    return buffer.getvalue()


def save_figure(fig: plt.Figure, path: str | Path, svg: bool = False) -> Path:
    """Write ``fig`` atomically as PNG at ``path`` (and as SVG beside it if ``svg``); the
    figure is closed. Returns the PNG's path."""
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    if svg:
        atomic_write_bytes(path.with_suffix(".svg"), figure_bytes(fig, "svg", close=False))
    atomic_write_bytes(path, figure_bytes(fig, "png"))
    return path


# ------------------------------------------------------------------ shared plots


def input_kind(shape: tuple[int, ...], is_text: bool = False) -> str:
    """How an input of this shape is drawn: 'text', 'image' (C×H×W with 1 or 3 channels,
    or H×W), 'signal' (a 1-D curve) or 'vector' (other feature vectors, drawn as bars)."""
    if is_text:
        return "text"
    if (len(shape) == 3 and shape[0] in (1, 3)) or (len(shape) == 2 and min(shape) > 1):
        return "image"
    if len(shape) == 1 and shape[0] >= 16:
        return "signal"
    return "vector"


def draw_input(ax, x, kind: str, vertical: bool = False, color: str = "k") -> None:
    """Draw one input as the data is: an image as an image, a 1-D signal as a curve
    (``vertical``: value across, position down, as MNIST-1D's authors draw it), a short
    feature vector as bars, a text as (wrapped, truncated) text."""
    if kind == "text":
        import textwrap

        text = textwrap.shorten(str(x), 160, placeholder=" …")
        ax.text(0.02, 0.98, textwrap.fill(text, 28), va="top", ha="left", fontsize=6,
                family="monospace", transform=ax.transAxes)
    else:
        x = np.asarray(x, np.float32)
        if kind == "image":
            image = x[0] if x.ndim == 3 and x.shape[0] == 1 else x
            if image.ndim == 3:  # C×H×W colour -> H×W×C in [0, 1]
                image = np.moveaxis(image, 0, -1)
                image = (image - image.min()) / max(float(np.ptp(image)), 1e-12)
                ax.imshow(image, interpolation="nearest")
            else:
                ax.imshow(image, cmap="gray_r", interpolation="nearest")
        elif kind == "signal":
            signal = x.ravel()
            position = np.arange(len(signal))
            if vertical:
                ax.plot(signal, position, color=color, lw=1.2)
                ax.set_ylim(len(signal) - 1, 0)
            else:
                ax.plot(position, signal, color=color, lw=1.2)
        else:
            values = x.ravel()
            ax.bar(np.arange(len(values)), values, color=color, width=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(kind != "image")
        spine.set_color("#bbbbbb")


def plot_reliability(curve: pd.DataFrame, ax=None, label: str | None = None,
                     what: str = "scores"):
    """Split-half reliability against population size: the Spearman correlation between
    the ``what`` of two disjoint halves of the models (``curve``: columns ``n_models``,
    ``spearman``, ``spearman_sd``, as ``memlab.measures.memorization.reliability_curve``
    returns). Draws into ``ax`` if given; returns the figure."""
    with style():
        if ax is None:
            fig, ax = plt.subplots(figsize=(4.2, 3.0), constrained_layout=True)
        else:
            fig = ax.figure
        ax.errorbar(curve.n_models, curve.spearman, yerr=curve.spearman_sd, marker="o", ms=3.5,
                    color=COLORS["blue"], lw=1.2, capsize=2, label=label)
        for row in curve.itertuples():
            ax.annotate(f"{row.spearman:.2f}", (row.n_models, row.spearman),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=6.5,
                        color="#333333")
        ax.set_xscale("log", base=2)
        ticks = curve.n_models.to_numpy()
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_ylim(min(0.0, float(np.nanmin(curve.spearman)) - 0.05), 1.02)
        ax.set_xlabel("models in the population (split into two halves)")
        ax.set_ylabel(f"Spearman ρ between halves' {what}")
        ax.grid(axis="y", color="#eeeeee", lw=0.6)
    return fig
