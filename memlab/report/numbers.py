"""Numbers as a report prints them: no more digits than their uncertainty supports.

A value with a standard error or an interval is rounded where its uncertainty's second
significant digit falls (0.6087 ± 0.0312 prints as ``0.609 ± 0.031``; with the interval
[0.5474, 0.6699], half-width 0.061, as ``0.609 [0.547, 0.670]``); a value without one gets at most
:data:`PLAIN_DIGITS` significant digits. The full numbers stay in the downloadable tables
and summary.json; the page shows what a reader can use.
"""

from __future__ import annotations

import math

import numpy as np

PLAIN_DIGITS = 4  # significant digits of a number printed without its uncertainty
MISSING = "–"  # what a missing or undefined number prints as


def _finite(value: object) -> bool:
    try:
        return value is not None and math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def decimals_for(uncertainty: float, significant: int = 2) -> int:
    """Decimal places that show ``significant`` significant digits of ``uncertainty``
    (never negative: 1234 ± 56 prints as 1234 ± 56, not 1.2e3)."""
    if not _finite(uncertainty) or uncertainty <= 0:
        return PLAIN_DIGITS - 1
    return max(0, significant - 1 - math.floor(math.log10(abs(uncertainty))))


def fmt(value: object, digits: int = PLAIN_DIGITS) -> str:
    """A number with at most ``digits`` significant digits (integers print whole, with
    thousands separators); :data:`MISSING` for None/NaN, text unchanged."""
    if value is None or isinstance(value, str):
        return MISSING if value is None else value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if not _finite(value):
        return MISSING
    text = f"{float(value):.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def fmt_se(value: object, se: object) -> str:
    """``value ± se``, both rounded to se's second significant digit."""
    if not _finite(value):
        return MISSING
    if not _finite(se) or float(se) <= 0:  # type: ignore[arg-type]
        return fmt(value)
    places = decimals_for(float(se))  # type: ignore[arg-type]
    return f"{float(value):.{places}f} ± {float(se):.{places}f}"  # type: ignore[arg-type]


def fmt_interval(value: object, low: object, high: object) -> str:
    """``value [low, high]`` rounded to the interval's half-width's second significant
    digit; the value alone (4 digits) when the interval is missing."""
    if not _finite(value):
        return MISSING
    if not (_finite(low) and _finite(high)):
        return fmt(value)
    half = (float(high) - float(low)) / 2  # type: ignore[arg-type]
    places = decimals_for(half)
    return (f"{float(value):.{places}f} "  # type: ignore[arg-type]
            f"[{float(low):.{places}f}, {float(high):.{places}f}]")  # type: ignore[arg-type]


def fmt_pct(value: object, digits: int = 1) -> str:
    """A fraction as a percentage with ``digits`` decimals."""
    return f"{100 * float(value):.{digits}f}%" if _finite(value) else MISSING  # type: ignore[arg-type]
