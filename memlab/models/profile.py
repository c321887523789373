"""Per-layer sizes of one example's forward pass (for plans, evaluation batches and FLOPs)."""

from __future__ import annotations

import torch


def layer_profile(model: torch.nn.Module, input_shape: tuple[int, ...],
                  device: str = "cpu") -> tuple[list[int], int]:
    """For one example: multiply-adds of each Linear/Conv layer in forward order, and the
    number of activation values those layers output. ``device="meta"`` for a model built
    on the meta device (no memory, as ``memlab plan`` does)."""
    macs: list[int] = []
    outputs = [0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            macs.append(module.in_features * module.out_features)
        elif isinstance(module, torch.nn.Conv1d | torch.nn.Conv2d):
            macs.append(output[0].numel() * module.weight[0].numel())
        else:
            return
        outputs[0] += output[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return macs, outputs[0]
