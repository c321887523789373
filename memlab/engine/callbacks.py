"""Callbacks: measurements (and batch changes) inside the one training loop.

A callback is any object with

- ``name``: a string; its arrays become records ``{name}_{key}``;
- ``epochs``: the epochs at which it is called (0 = the initial weights, e = after epoch
  e), a tuple, a callable ``epochs(config) -> tuple``, or None for every epoch 1..E;
- ``__call__(state) -> dict[str, array]``: arrays with the chunk's model axis first,
  (K, ...); stacked over calls they are stored as (K, len(epochs), ...) chunk records,
  which resume, consolidate and verify like every record;
- optionally ``before_step(state, x, y) -> (x, y)``: change the stacked batch before the
  step (adversarial training): x (K, b, ...), y (K, b);
- optionally ``describe() -> dict``: its settings, recorded in the manifest (a run made
  with other callback settings refuses to resume).

Callbacks must draw any randomness from the models' own streams (``state.replicates``),
never torch's global RNG, so that a model stays the same bits in any chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from memlab.engine.config import PopulationConfig


@dataclass
class TrainState:
    """What a callback sees. ``params``/``buffers``: name -> stacked (K, ...) tensors (live:
    do not modify them); ``tensors``: the task's data per split, on the device."""

    epoch: int
    step: int
    models: range
    replicates: list[int]
    config: PopulationConfig
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    template: torch.nn.Module
    task: Any
    data: Any
    tensors: dict[str, tuple]
    _eval_forward: Callable | None = field(default=None, repr=False)
    _train_forward: Callable | None = field(default=None, repr=False)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode outputs (K, b, ...) of every model on shared inputs x (b, ...)."""
        with torch.no_grad():
            return self._eval_forward(x)

    def train_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Train-mode outputs (K, b, ...) on stacked inputs x (K, b, ...), differentiable
        with respect to x (for adversarial examples); parameters receive no gradient."""
        return self._train_forward(x)

    def evaluate(self, split: str) -> dict[str, torch.Tensor]:
        """The task's per-example records of every model on a split (K, N)."""
        return self.task.evaluate(self.forward, self.tensors[split], self.n_models,
                                  self.task.outputs(self.data))


def callback_epochs(callback: Any, config: PopulationConfig) -> tuple[int, ...]:
    epochs = getattr(callback, "epochs", None)
    if epochs is None:
        return tuple(range(1, config.epochs + 1))
    if callable(epochs):
        epochs = epochs(config)
    return tuple(int(e) for e in epochs if 0 <= int(e) <= config.epochs)


def describe_callback(callback: Any) -> dict[str, Any]:
    from memlab.models import class_path

    described = {"name": callback.name, "class": class_path(callback)}
    if hasattr(callback, "describe"):
        described["settings"] = callback.describe()
    return described


class EpochRecords:
    """Correctness and loss of every example after every epoch (``record_epochs``):
    records ``epoch_{split}_correct`` (n_models, epochs, n) bool and ``epoch_{split}_loss``
    float16 (nats)."""

    name = "epoch"
    epochs = None

    def __call__(self, state: TrainState) -> dict[str, np.ndarray]:
        out = {}
        for split in ("train", "test"):
            result = state.evaluate(split)
            score = state.task.score_record
            out[f"{split}_{score}"] = result[score]
            out[f"{split}_loss"] = result["loss"].to(torch.float16)
        return out
