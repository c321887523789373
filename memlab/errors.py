"""Errors memlab raises for bad input: each message names the problem and the fix."""


class MemlabError(Exception):
    """Base class: the CLI prints these as one-line messages instead of tracebacks."""


class DataError(MemlabError, ValueError):
    """A dataset is malformed: wrong shapes, NaNs, labels out of range, unknown name."""


class ConfigError(MemlabError, ValueError):
    """A requested setting is invalid (e.g. a subset fraction outside (0, 1))."""


class DivergenceError(ConfigError):
    """Training diverged: a model's loss, margins or weights became NaN or infinite (the
    fix is in the recipe: a lower learning rate, normalized features, or
    ``on_diverge="record"`` to keep the run with those models marked diverged)."""


class RunError(MemlabError):
    """A run directory is corrupted, incomplete, or was made with a different config."""


class CheckpointError(MemlabError):
    """A weights file cannot be read safely."""
