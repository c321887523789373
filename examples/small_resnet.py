"""A user's own model: a small ResNet-style CNN with BatchNorm and dropout, for 28x28 images.

    memlab memorize --data mnist --n-train 1000 --model examples.small_resnet:SmallResNet

(run from the repository root, or put this file on PYTHONPATH). memlab builds it as
``SmallResNet(input_shape, n_classes)`` and trains many copies at once; see docs/models.md
for what a model may and may not do.
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a skip connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class SmallResNet(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], n_classes: int, width: int = 8,
                 dropout: float = 0.2):
        super().__init__()
        channels = input_shape[0] if len(input_shape) == 3 else 1
        self.input_shape = tuple(input_shape)
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.block = Block(width)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(16 * width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flat pixels: back to (C, H, W)
            side = int(round((x.shape[1]) ** 0.5))
            x = x.view(len(x), 1, side, side)
        elif x.dim() == 3:  # (N, H, W)
            x = x.unsqueeze(1)
        return self.head(self.block(self.stem(x)))
