"""Example user code (models a user brings): importable as ``examples.<module>`` from the
repository root."""
