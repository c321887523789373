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


# ------------------------------------------------------------------ user models under stacking
# (tests/test_bad_models.py: what a user model may and may not do in memlab's engine)


class TiedWeights(nn.Module):
    """Two layers sharing one weight (like an embedding tied to the output layer): the
    same Parameter registered under two names, ``first.weight`` and ``second.weight``."""

    def __init__(self, input_shape, n_classes, width: int = 16):
        super().__init__()
        self.inp = nn.Linear(int(np.prod(input_shape)), width)
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, width)
        self.second.weight = self.first.weight  # tied
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        h = torch.relu(self.inp(x.flatten(1)))
        h = torch.relu(self.second(torch.relu(self.first(h))))
        return self.head(h)


class NoisyForward(nn.Module):
    """Adds Gaussian noise to its hidden layer in training (torch.randn_like in forward)."""

    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.hidden = nn.Linear(int(np.prod(input_shape)), 16)
        self.out = nn.Linear(16, n_classes)

    def forward(self, x):
        h = torch.relu(self.hidden(x.flatten(1)))
        if self.training:
            h = h + 0.1 * torch.randn_like(h) + 0.01 * torch.rand(h.shape[-1])
        return self.out(h)


class CallsItem(nn.Module):
    """Calls .item() in forward (a Python number from a tensor: not per model)."""

    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.linear = nn.Linear(int(np.prod(input_shape)), n_classes)

    def forward(self, x):
        out = self.linear(x.flatten(1))
        return out / max(1.0, out.abs().max().item())


class DataDependentBranch(nn.Module):
    """Branches in Python on a tensor's value."""

    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.linear = nn.Linear(int(np.prod(input_shape)), n_classes)

    def forward(self, x):
        out = self.linear(x.flatten(1))
        if out.mean() > 0:
            return out
        return -out


class ReturnsTuple(nn.Module):
    """Returns (logits, features), as some library models do."""

    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.linear = nn.Linear(int(np.prod(input_shape)), n_classes)

    def forward(self, x):
        features = x.flatten(1)
        return self.linear(features), features


class RaisesMidTraining(nn.Module):
    """Trains for two steps, then raises on its third training-mode forward (a bug deep in
    a user's model; counted per instance, so in every chunk and every worker process)."""

    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.linear = nn.Linear(int(np.prod(input_shape)), n_classes)
        self.training_calls = 0

    def forward(self, x):
        if self.training:
            self.training_calls += 1
            if self.training_calls == 3:
                raise RuntimeError("user bug on the third training step")
        return self.linear(x.flatten(1))


def frozen_factory(input_shape, n_classes):
    """Every parameter has requires_grad=False: nothing to train."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), n_classes))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def partly_frozen_factory(input_shape, n_classes):
    """A frozen random feature layer and a trained head."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 16), nn.ReLU(),
                          nn.Linear(16, n_classes))
    model[1].requires_grad_(False)
    return model


class GroupNormCNN(nn.Module):
    """A user's CNN for DP-SGD: GroupNorm where TinyCNN has BatchNorm."""

    def __init__(self, input_shape, n_classes, width: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, padding=1), nn.GroupNorm(2, width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(width * ((input_shape[1] + 1) // 2) ** 2, n_classes)

    def forward(self, x):
        return self.head(self.features(x))
