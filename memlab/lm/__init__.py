"""Populations of small language models and their counterfactual memorization.

    from memlab.data.text import load_documents
    from memlab.lm import train_lm_population, open_lm_run
    docs = load_documents("synthetic")
    run = train_lm_population(docs, n_models=64, out="runs/lm")
    run.records("train_acc")          # (64, n_train) float32 per-token accuracy
    documents = lm_documents(run)     # the exact documents trained on

This is memlab's population engine (``memlab.population.train_population``): the same run
directory, chunks, executors, resumption, per-model seeds and training loop as
classification, through the language-model task (``memlab.population.task``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memlab.data.text import Documents
from memlab.population import Run, open_run, train_population

__all__ = ["LM_DEFAULTS", "lm_documents", "open_lm_run", "train_lm_population"]

# The paper trains each model on a random 25% of the documents; Adam suits transformers.
LM_DEFAULTS: dict[str, Any] = dict(model="transformer", subset_fraction=0.25, epochs=40,
                                   batch_size=32, optimizer="adam", lr=3e-3, momentum=0.0,
                                   chunk_size=16)


def train_lm_population(documents: Documents, out: str | Path | None = None,
                        **settings: Any) -> Run:
    """Train a population of language models on ``documents``, model k on its own random
    subset (default 25%). ``settings`` are ``train_population``'s, over ``LM_DEFAULTS``;
    ``model_kwargs`` go to the model (e.g. ``{"d_model": 64, "n_layers": 2}``)."""
    return train_population(documents, out=out, **{**LM_DEFAULTS, **settings})


def lm_documents(run: Run) -> Documents:
    """The documents a language-model run was trained on (its saved copy)."""
    return Documents.load(run.path / "dataset.npz")


def open_lm_run(path: str | Path) -> tuple[Run, Documents]:
    """Open a finished language-model run and its documents."""
    run = open_run(path)
    if run.manifest["dataset"].get("task") != "lm":
        from memlab.errors import RunError

        raise RunError(f"{path} is not a language-model run (train one with memlab "
                       "lm-memorize)")
    return run, lm_documents(run)
