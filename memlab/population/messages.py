"""The one-line notes a run prints while it trains, shards or consolidates (standard error,
prefixed ``memlab:`` like the command line's errors, so they read as one voice)."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """Print ``memlab: message`` on standard error."""
    print(f"memlab: {message}", file=sys.stderr)
