"""What defines a population: the training recipe, and the random streams derived from its seed.

Every random choice about model k (its subset, its initialization, its shuffling) comes
from its own stream ``numpy.random.SeedSequence([seed, k, stream])``, so model k is the
same whether it is trained alone, in a chunk of 64, on another worker, or after a resume.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from memlab.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")

# Stream identifiers: never reuse one for another purpose, or old runs stop resuming.
STREAM_SUBSET, STREAM_INIT, STREAM_SHUFFLE, STREAM_DROPOUT = 0, 1, 2, 3


@dataclass(frozen=True)
class PopulationConfig:
    """The recipe shared by all models of a population (everything that changes results).

    subset_fraction: each model trains on round(subset_fraction * n_train) examples drawn
        without replacement (Feldman & Zhang use 0.7).
    lr: learning rate; momentum is used by ``sgd`` only.
    record_epochs: also record correctness and loss of every example after every epoch.
    chunk_size: models trained together in one vectorized chunk, the unit of work,
        storage and resumption. Memory grows with it, not with n_models.
    compact_records: store correctness as bits and margins/losses as float16 (about 6
        instead of 11 bytes per model and example), for large runs.
    """

    model: str = "mlp"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    n_models: int = 100
    subset_fraction: float = 0.5
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    record_epochs: bool = False
    save_weights: bool = True
    chunk_size: int = 32
    compact_records: bool = False

    def __post_init__(self) -> None:
        if not (0 < self.subset_fraction < 1):
            raise ConfigError(
                f"subset_fraction must lie strictly between 0 and 1, got {self.subset_fraction}: "
                "each model needs some examples in and some out of its subset (papers use 0.7)"
            )
        for name in ("n_models", "epochs", "batch_size", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("weight_decay must be >= 0 and momentum in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")

    def subset_size(self, n_train: int) -> int:
        size = int(round(self.subset_fraction * n_train))
        if not 1 <= size < n_train:
            raise ConfigError(
                f"subset_fraction {self.subset_fraction} of {n_train} examples gives subsets of "
                f"{size}; choose a fraction that leaves at least one example in and one out"
            )
        return size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PopulationConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown population settings: {sorted(unknown)}")
        return cls(**values)


def model_rng(seed: int, model_index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, model_index, stream])


def model_seed(seed: int, model_index: int, stream: int) -> int:
    """A 63-bit integer seed for torch generators, from the model's own stream."""
    state = np.random.SeedSequence([seed, model_index, stream]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def membership_mask(config: PopulationConfig, n_train: int,
                    models: range | None = None) -> np.ndarray:
    """(n_models, n_train) bool: row k marks the examples model k trains on."""
    models = range(config.n_models) if models is None else models
    size = config.subset_size(n_train)
    mask = np.zeros((len(models), n_train), dtype=bool)
    for row, k in enumerate(models):
        mask[row, model_rng(config.seed, k, STREAM_SUBSET).choice(n_train, size, replace=False)] = 1
    return mask


def initial_state(template: torch.nn.Module, seed: int,
                  model_index: int) -> dict[str, torch.Tensor]:
    """Model k's initial weights: the architecture's own default init, under k's own seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed(seed, model_index, STREAM_INIT))
        for module in template.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return {name: tensor.detach().clone() for name, tensor in template.state_dict().items()}
