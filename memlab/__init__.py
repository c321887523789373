"""memlab: measure what neural networks memorize and why."""

__version__ = "0.1.0"
