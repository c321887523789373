"""memlab: measure what neural networks memorize and why."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # memlab.memorize(...) without importing torch and pandas on every `import memlab`.
    if name == "memorize":
        from memlab.studies.memorize import memorize

        return memorize
    raise AttributeError(f"module 'memlab' has no attribute {name!r}")
