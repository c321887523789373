"""The built-in architectures: ordinary ``nn.Module``s, trainable one at a time or as a population.

- ``mlp``: fully connected, ReLU (MNIST-1D default: 40-100-100-10).
- ``cnn1d``: the MNIST-1D paper's 1-D CNN (3 conv layers of 25 channels, stride 2).
- ``cnn2d``: a small 2-D CNN for image data (digits, MNIST).

Every model takes inputs of shape (batch, *input_shape) and returns logits (batch, n_classes).

Their public home is :mod:`memlab.models`: a run's manifest records a model's class path
as ``memlab.models:MLP`` (``registry.class_path``), as it did before they moved here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from memlab.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "linear": nn.Identity, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Flatten, then Linear layers with an activation between them (none after the last).

    ``activation="linear"`` gives the *linear twin* used as a control in elasticity studies.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int,
                 hidden: tuple[int, ...] = (100, 100), activation: str = "relu",
                 dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout}")
        self.activation = activation
        self.dropout = dropout
        widths = [math.prod(input_shape), *hidden, n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.drop(self.act(layer(x)))
        return self.layers[-1](x)


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class CNN1d(nn.Module):
    """The MNIST-1D paper's ConvBase: Conv1d(1→c, 5, stride 2) and two Conv1d(c→c, 3, stride 2),
    ReLU after each, then a Linear read-out. Inputs (batch, length) or (batch, 1, length)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, channels: int = 25,
                 dropout: float = 0.0):
        super().__init__()
        length = input_shape[-1]
        in_channels = input_shape[0] if len(input_shape) == 2 else 1
        self.conv1 = nn.Conv1d(in_channels, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        for kernel in (5, 3, 3):
            length = _conv_out(length, kernel, 2, 1)
        if length < 1:
            raise ConfigError(f"inputs of shape {input_shape} are too short for CNN1d")
        self.linear = nn.Linear(channels * length, n_classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.drop(torch.relu(self.conv3(x)))
        return self.linear(x.flatten(1))


class CNN2d(nn.Module):
    """A small image CNN: Conv2d(c→16, 3), Conv2d(16→32, 3, stride 2), ReLU after each,
    then a Linear read-out. Inputs (batch, channels, height, width)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, channels: int = 16,
                 dropout: float = 0.0):
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(
                f"cnn2d needs image inputs of shape (channels, height, width), got {input_shape}"
            )
        in_channels, height, width = input_shape
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1)
        out_h, out_w = _conv_out(height, 3, 2, 1), _conv_out(width, 3, 2, 1)
        self.linear = nn.Linear(2 * channels * out_h * out_w, n_classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.drop(torch.relu(self.conv2(x)))
        return self.linear(x.flatten(1))

