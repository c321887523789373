"""The engine's working copy of a model: layers swapped for forms that stack well.

The engine trains a copy of the user's template (never the user's object) in which some
layers get another class with the *same* parameters, buffers and settings, so names, shapes
and state dicts are unchanged:

- :func:`use_fused_layers`: Linear, Conv1d/Conv2d (zero padding), BatchNorm1d/2d and 2-D
  pooling for their fused forms (``engine/fused.py``), which compute all models of a chunk
  in one call and give a model the same bits in a chunk of any size. (vmap's own grouped
  convolution gave a model of a chunk of one other bits than in a chunk of four, up to 3e-3
  in a gradient: torch's ungrouped kernel; the fused forms run a chunk of one as two.)
- :func:`use_float32_norms`: under mixed precision, the other normalization layers compute
  in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from memlab.engine.fused import fused_replacement


def _swap_classes(module: nn.Module, replacement_for) -> int:
    """Give (in place) every submodule the class ``replacement_for(child)`` returns (None:
    keep it), sharing its parameters, buffers and settings, so names, shapes and state
    dicts are unchanged; returns how many were swapped."""
    swapped = 0
    for name, child in list(module.named_modules()):
        kind = replacement_for(child)
        if kind is None:
            continue
        replacement = kind.__new__(kind)
        replacement.__dict__ = child.__dict__  # same parameters, buffers, settings
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, replacement)
        swapped += 1
    return swapped


def use_fused_layers(module: nn.Module) -> int:
    """Swap (in place) every Conv2d and BatchNorm1d/2d that :mod:`memlab.engine.fused`
    supports for its fused form; returns how many were swapped."""
    return _swap_classes(module, fused_replacement)


class _Float32Norm:
    """Mixin: normalize in float32 when autocast hands the layer a low-precision input
    (batch statistics in bfloat16 lose most of their digits, and CPU batch_norm refuses
    bfloat16 inputs with float32 weights); the next layer casts back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.bfloat16, torch.float16):
            with torch.autocast(x.device.type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
          nn.InstanceNorm1d, nn.InstanceNorm2d)
_FLOAT32_NORMS = {kind: type(f"Float32{kind.__name__}", (_Float32Norm, kind), {})
                  for kind in _NORMS}


def use_float32_norms(module: nn.Module) -> int:
    """Swap (in place) every normalization layer for one that computes in float32 under
    mixed precision (identical in float32); returns how many were swapped."""
    return _swap_classes(module, lambda child: _FLOAT32_NORMS.get(type(child)))
