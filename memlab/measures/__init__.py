"""Measures computed from models and population runs: memorization, spectra, ..."""
