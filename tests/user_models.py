"""User-side code for the engine tests: models and callbacks defined outside memlab."""

import numpy as np
import torch
from torch import nn


class TinyCNN(nn.Module):
    """A user's CNN with BatchNorm and dropout (not a memlab model)."""

    def __init__(self, input_shape, n_classes, width: int = 4, dropout: float = 0.2):
        super().__init__()
        channels = input_shape[0]
        # No bias before BatchNorm: BN cancels it, so its gradient is pure rounding noise
        # (which Adam would blow up into steps, making runs disagree in the 5th digit).
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(8 * width, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


class SelfInitialized(nn.Module):
    """Initializes a raw parameter in __init__ (no reset_parameters covers it)."""

    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, int(np.prod(input_shape))))
        nn.init.orthogonal_(self.weight)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def seeding_factory(input_shape, n_classes):
    """A factory that (wrongly) seeds torch itself: every model would be the same."""
    torch.manual_seed(0)
    return nn.Linear(int(np.prod(input_shape)), n_classes)


class ProbeLogits:
    """Callback: logits of the first 5 test examples at epochs 0, 2 and the last."""

    name = "probe"

    def __init__(self, last: int):
        self.epochs = (0, 2, last)

    def describe(self):
        return {"epochs": list(self.epochs)}

    def __call__(self, state):
        x = state.tensors["test"][0][:5]
        return {"logits": state.forward(x)}


class LabelsToZero:
    """Callback that changes the batch: every training label becomes class 0."""

    name = "zero"
    epochs = ()

    def __call__(self, state):
        return {}

    def before_step(self, state, x, y):
        return x, torch.zeros_like(y)
