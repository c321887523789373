"""The exposure study: how exposed (and how memorized) a population is as its training knobs
change — epochs, weight decay, MLP width — each value its own population of
``exposure_models`` models, audited like the main one.

Epochs are checkpoints of one run (a :class:`~memlab.measures.callbacks.checkpoints.
CheckpointRecords` callback: with a constant learning rate the model after e epochs of a
longer run is the e-epoch model); weight decay and width are one run each with the engine's
per-model ``sweep`` (every value shares the subsets, initial weights and data order of its
replicates). The recipe varied is ``config.population`` (random subsets), or that of the
run audited when the audit opened one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError, RunError
from memlab.measures.audit import exposure_metrics, is_lm
from memlab.measures.callbacks.checkpoints import CheckpointRecords
from memlab.studies.audit.config import AuditConfig
from memlab.studies.base import Execution

ATTACKS = ("lira_online", "lira_offline_fixed", "loss")


@dataclass
class ExposureGroup:
    """One knob value: its models' membership mask and records, model axis first."""

    knob: str
    value: float
    mask: np.ndarray  # (k, n) bool
    logodds: np.ndarray  # (k, n) float32
    train_correct: np.ndarray  # (k, n) bool
    test_acc: float
    train_acc_in: float


def base_recipe(config: AuditConfig, base_run: Any = None) -> PopulationConfig:
    """The recipe the knobs vary around: the audited run's (when the audit opened one),
    else ``config.population``; random subsets, no sweep."""
    if config.run_dir is None:
        return config.population
    if base_run is None or is_lm(base_run):
        raise ConfigError("the exposure study trains classifier populations; audit a "
                          "classification run or train one here (no RUN)")
    base_run.require_trust(purpose="train the exposure study with its recipe")
    return dataclasses.replace(base_run.config, sweep={}, subsets="random")


def exposure_populations(config: AuditConfig, recipe: PopulationConfig, dataset: Any,
                         out: Path, execution: Execution) -> list[ExposureGroup]:
    """Three runs of ``exposure_models`` models in ``out``: ``epochs`` (checkpoints of one
    run), ``weight_decay`` and ``width`` (one sweep run each)."""
    from memlab.population import train_population

    recipe = dataclasses.replace(recipe, n_models=config.exposure_models)
    hidden = recipe.model_kwargs.get("hidden")
    depth = len(hidden) if hidden else 2
    groups: list[ExposureGroup] = []

    epochs = tuple(sorted(set(int(e) for e in config.exposure_epochs)))
    if epochs:
        run_ = train_population(
            dataset, dataclasses.replace(recipe, epochs=max(epochs)),
            callbacks=[CheckpointRecords(epochs)], out=out / "epochs", **execution.training())
        mask = run_.membership_mask
        logodds = run_.records("audit_train_logodds")
        correct = run_.records("audit_train_correct")
        test = run_.records("audit_test_correct")
        for j, e in enumerate(epochs):
            c = np.asarray(correct[:, j])
            groups.append(ExposureGroup("epochs", e, mask, np.asarray(logodds[:, j]), c,
                                        float(np.asarray(test[:, j]).mean()),
                                        float(c[mask].mean())))
    sweeps = [("weight_decay", [float(v) for v in config.exposure_weight_decay],
               "weight_decay"),
              ("width", [[int(v)] * depth for v in config.exposure_width], "hidden")]
    for knob, values, key in sweeps:
        if not values:
            continue
        run_ = train_population(dataset, dataclasses.replace(recipe, sweep={key: values}),
                                out=out / knob, **execution.training())
        table = run_.models_table()
        column = table[f"sweep_{key}"]
        for value in values:
            rows = np.flatnonzero([_sweep_value(v) == value for v in column])
            if len(rows) < 2:
                raise RunError(f"{out / knob}: found {len(rows)} models for {key}={value}; "
                               "delete that directory and run the exposure study again")
            label = value[0] if isinstance(value, list) else value
            groups.append(ExposureGroup(
                knob, label, run_.membership_mask[rows],
                np.asarray(run_.records("train_logodds")[rows]),
                np.asarray(run_.records("train_correct")[rows]),
                float(table["test_acc"].iloc[rows].mean()),
                float(table["train_acc_in"].iloc[rows].mean())))
    return groups


def _sweep_value(stored: Any) -> Any:
    """A sweep value as the models table stores it (list-valued ones as JSON text or
    arrays) back as a Python value."""
    if isinstance(stored, str):
        return json.loads(stored)
    if isinstance(stored, np.ndarray):
        return stored.tolist()
    return stored.item() if isinstance(stored, np.generic) else stored


def exposure_table(config: AuditConfig, out: Path, execution: Execution, dataset: Any,
                   base_run: Any = None) -> pd.DataFrame:
    """Per knob value: LiRA online, LiRA offline (fixed variance) and the loss threshold
    (AUC, TPR at 0.1% and 1% FPR, bootstrap intervals), memorization and accuracy. The
    attacks and bootstraps are seeded by the recipe's seed (the audited run's, with RUN)."""
    recipe = base_recipe(config, base_run)
    if config.run_dir is not None:
        dataset = base_run.dataset
    rows = []
    for group in exposure_populations(config, recipe, dataset, out, execution):
        row = {"knob": group.knob, "value": float(group.value), "n_models": len(group.mask),
               "test_acc": group.test_acc, "train_acc_in": group.train_acc_in}
        row.update(exposure_metrics(
            group.mask, group.logodds, group.train_correct, attacks=ATTACKS,
            n_bootstrap=config.n_bootstrap, seed=recipe.seed,
            fpr=config.vulnerability_fpr, rmia_a=config.rmia_a, rmia_gamma=config.rmia_gamma))
        rows.append(row)
    return pd.DataFrame(rows)
