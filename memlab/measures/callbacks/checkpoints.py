"""What every model was at chosen epochs, for any population: :class:`Checkpoints` keeps
the parameters (TracIn reads them instead of re-training), :class:`CheckpointRecords` the
training examples' log-odds and correctness and the test correctness (with a constant
learning rate, the model after e epochs of a longer run is the e-epoch model, so one run
gives a population per epoch).

    run = train_population(data, config, callbacks=[Checkpoints((5, 10, 20))])
    run.records("ckpt_layers__0__weight")     # (n_models, 3, ...) the parameters
    run = train_population(data, config, callbacks=[CheckpointRecords((3, 10, 30))])
    run.records("audit_train_logodds")        # (n_models, 3, n_train) float32
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class Checkpoints:
    """Every model's parameters at ``epochs``: records ``ckpt_<parameter name with dots as
    __>`` of shape (n_models, len(epochs), ...)."""

    name = "ckpt"

    def __init__(self, epochs: tuple[int, ...]):
        self.epochs = tuple(int(e) for e in epochs)

    def describe(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs)}

    def __call__(self, state) -> dict[str, np.ndarray]:
        return {name.replace(".", "__"): tensor.detach().cpu().numpy().copy()
                for name, tensor in state.params.items()}


@dataclass(frozen=True)
class CheckpointRecords:
    """Every model's train log-odds and correctness and its test correctness after each
    epoch in ``epochs``: records ``<name>_train_logodds`` (n_models, len(epochs), n_train)
    float32, ``<name>_train_correct`` and ``<name>_test_correct`` (bool)."""

    epochs: tuple[int, ...]
    name: str = "audit"

    def __call__(self, state) -> dict[str, np.ndarray]:
        train, test = state.evaluate("train"), state.evaluate("test")
        return {"train_logodds": train["logodds"].float().cpu().numpy(),
                "train_correct": train["correct"].cpu().numpy(),
                "test_correct": test["correct"].cpu().numpy()}

    def describe(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs)}
