"""Convolutions that give each model the same bits whatever the number of stacked models.

Under ``vmap``, K convolutions become one grouped convolution whose algorithm (and so its
rounding) depends on K: measured, a model's gradient differed by up to 3e-3 between a
chunk of 1 and of 4. Written as im2col (``F.unfold`` in 2-D, strided slices in 1-D) and
one matrix product per model over the whole batch, the stacked convolution becomes a
batched GEMM, which computes every model's product on its own.
``use_stackable_convolutions`` swaps them into the engine's working copy of a model; the
parameters keep their names and shapes, so state dicts are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv2d_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      stride, padding, dilation, groups: int) -> torch.Tensor:
    """F.conv2d(x, weight, bias, ...) for x (b, C, H, W) as unfold + matmul."""
    batch, _, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    columns = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    # One product per group over the whole batch, (O/g, C/g * kh * kw) x (.., b * L): a
    # product per example (b tiny GEMMs, ~10 output positions each) ran at a tenth of it.
    # columns: (b, C * kh * kw, L) -> (g, C/g * kh * kw, b * L)
    length = out_h * out_w
    columns = columns.view(batch, groups, -1, length).permute(1, 2, 0, 3)
    columns = columns.reshape(groups, -1, batch * length)
    return _grouped_product(columns, weight, bias, batch, (out_h, out_w))


def _grouped_product(columns: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     batch: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """columns (g, C/g * taps, b * L), rows ordered like weight.view(O, -1) -> the
    convolution's output (b, O, *spatial), bias added in the product's precision."""
    groups, out_channels = columns.shape[0], weight.shape[0]
    w = weight.view(groups, out_channels // groups, -1)  # (g, O/g, C/g * taps)
    out = torch.matmul(w, columns)  # (g, O/g, b * L)
    out = out.view(out_channels, batch, *spatial).transpose(0, 1)
    if bias is not None:  # (in the product's precision: bfloat16 under autocast)
        out = out + bias.view(1, -1, *[1] * len(spatial)).to(out.dtype)
    return out


class MatmulConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv2d_as_matmul(x, self.weight, self.bias, self.stride, self.padding,
                                 self.dilation, self.groups)


def _conv1d_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      stride: int, padding: int, groups: int) -> torch.Tensor:
    """F.conv1d(x, weight, bias, ...) for x (b, C, L), no dilation, as k strided slices
    + matmul. Why not F.unfold: under vmap its im2col and col2im kernels loop over the
    K * b signals one at a time (a CNN step spent most of its time there)."""
    batch, kernel = x.shape[0], weight.shape[2]
    padded = F.pad(x, (padding, padding)).transpose(0, 1)  # (C, b, L + 2 * padding)
    length = (padded.shape[2] - kernel) // stride + 1
    # One strided slice per tap, stacked as (C, k, b, L_out): rows ordered (channel, tap)
    # like weight.view(O, -1). (Tensor.unfold's backward was a third of the step.)
    columns = torch.stack([padded[..., tap:tap + stride * (length - 1) + 1:stride]
                           for tap in range(kernel)], dim=1)
    columns = columns.view(groups, -1, batch * length)  # (g, C/g * k, b * L_out)
    return _grouped_product(columns, weight, bias, batch, (length,))


class MatmulConv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dilation[0] == 1:
            return _conv1d_as_matmul(x, self.weight, self.bias, self.stride[0],
                                     self.padding[0], self.groups)
        out = _conv2d_as_matmul(x.unsqueeze(2), self.weight.unsqueeze(2), self.bias,
                                (1, self.stride[0]), (0, self.padding[0]),
                                (1, self.dilation[0]), self.groups)
        return out.squeeze(2)


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


def use_stackable_convolutions(module: nn.Module) -> int:
    """Swap (in place) every zero-padded Conv1d/Conv2d with numeric padding for its
    matmul form; returns how many were swapped. Others keep torch's kernels."""
    def replacement_for(child: nn.Module):
        kind = {nn.Conv2d: MatmulConv2d, nn.Conv1d: MatmulConv1d}.get(type(child))
        if kind is None or child.padding_mode != "zeros" or isinstance(child.padding, str):
            return None
        return kind

    return _swap_classes(module, replacement_for)


class BiasAfterLinear(nn.Linear):
    """nn.Linear whose bias is added after the product, in the product's precision.

    Why: under ``vmap``, autocast leaves ``F.linear`` *with* a bias in float32 (torch 2.13;
    without one it runs in bfloat16), so a vmapped model's linear layers silently trained
    in float32 under ``compute_dtype="bfloat16"``. Swapped in for low precision only: in
    float32, adding the bias after the product could round differently."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight)
        return out if self.bias is None else out + self.bias.to(out.dtype)


def use_low_precision_linears(module: nn.Module) -> int:
    """Swap (in place) every nn.Linear for :class:`BiasAfterLinear`; returns how many."""
    return _swap_classes(module, lambda child: BiasAfterLinear
                         if type(child) is nn.Linear else None)


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
