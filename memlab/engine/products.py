"""Per-model matrix products that give a model the same bits in a chunk of any size.

Every model of a chunk computes its products as its own GEMM of one batched call
(``torch.bmm``): with a batch of 2 or more, each batch item runs the same kernel whatever
the batch size, so model k's products do not depend on how many models share the chunk.
A batch of exactly 1 does not: torch hands it to the single-matrix GEMM (``mm``), whose
kernel rounds differently at real sizes (measured on this project's CPU: up to 7e-5 on a
(256, 784) @ (784, 64) product, and records of a chunk of 1 that differed by up to 4.8e-7
from a chunk of 4). The functions here run a chunk of one model as a batch of two (the
same operands as a stride-0 view: no copy; the second result is discarded), so that the
batched kernel computes every chunk size. Every per-model product of the engine goes
through them.
"""

from __future__ import annotations

import torch


def _two(t: torch.Tensor) -> torch.Tensor:
    """(1, ...) -> (2, ...): the operand twice, as a real copy laid out like ``t`` (its
    inner strides' order). Not a stride-0 view: measured, bfloat16 bmm took another kernel
    for one (a 1-ulp difference on (72, 1568) @ (1568, 16))."""
    inner = sorted(range(1, t.dim()), key=lambda d: t.stride(d), reverse=True)
    buffer = t.new_empty((2, *[t.shape[d] for d in inner]))
    two = buffer.permute(0, *[inner.index(d) + 1 for d in range(1, t.dim())])
    return two.copy_(t.expand(2, *t.shape[1:]))


def bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """torch.bmm(a, b) (K, n, m) @ (K, m, p), computed by the batched kernel for any K."""
    if a.shape[0] != 1:
        return torch.bmm(a, b) if out is None else torch.bmm(a, b, out=out)
    result = torch.bmm(_two(a), _two(b))[:1]
    return result if out is None else out.copy_(result)


def baddbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.baddbmm(bias, a, b), computed by the batched kernel for any K. ``bias``
    broadcasts against (K, n, p) with a leading model axis of K (or 1 for all)."""
    if a.shape[0] != 1:
        return torch.baddbmm(bias, a, b)
    # The bias repeated along the batch only (its gradient then sums over the same rows as
    # in a bigger chunk, and adds the discarded copy's exact zero).
    return torch.baddbmm(bias.expand(2, *bias.shape[1:]), _two(a), _two(b))[:1]
