"""Progress bars: the one place memlab picks tqdm's flavour.

``tqdm.auto`` draws a notebook widget under Jupyter, but where ``ipywidgets`` is not installed
it warns ("IProgress not found") on every import; there, and outside notebooks, the text bar
is what it would fall back to anyway."""

from __future__ import annotations

import importlib.util
from typing import Any


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """A tqdm progress bar: the notebook widget where one can be drawn, else the text bar."""
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm as bar
    else:
        from tqdm import tqdm as bar
    return bar(*args, **kwargs)
