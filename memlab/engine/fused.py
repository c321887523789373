"""Convolutions, BatchNorm, pooling and linear layers of K stacked models as one computation.

The generic path trains a user's module as K copies through ``functional_call`` under
``vmap``. vmap's own rules for these layers were slow on a CPU (measured on a small CNN with
BatchNorm on MNIST: ``F.unfold`` under vmap made its im2col one example at a time, half the
step; BatchNorm moved the model axis into the channels and back, a copy each way) and not
chunk-size invariant (a linear layer's K products folded into one GEMM whose rounding
depends on K). The layers here give vmap a rule of their own (``autograd.Function.vmap``),
which receives all K models' tensors at once:

- **Per-channel layers** (Conv1d/Conv2d with zero padding, BatchNorm1d/2d, max and average
  pooling) see K models' channels side by side, the *grouped* view (b, K * C, *spatial),
  held channels-last in memory (b, *spatial, K, C), and run as torch's own kernel on it: a
  convolution with ``groups = K * groups`` (one oneDNN call instead of K), a BatchNorm of
  K * C channels (every model its own statistics, computed as per-model products; weights
  and running statistics are views of the stacked buffers, updated in place), a pooling
  of K * C channels. Consecutive layers
  pass the grouped layout on without a copy. Measured on this project's CPU, forward and
  backward, in float32 and bfloat16: every model's result is the same bits for any K >= 2
  (the kernels treat each group alike), but a single model (K = 1) takes torch's ungrouped
  kernels, which round differently; so a chunk of one model runs as two (itself twice,
  the copy's results discarded).
- **Linear layers** as one per-model product (``products``).

Under mixed precision (autocast to bfloat16) convolutions and products run in bfloat16 and
BatchNorm in float32, as ``stackable._Float32Norm``. Outside vmap (a single model, a
probe's forward, ``torch.func.grad``) every layer is torch's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch._C._functorch import is_batchedtensor

from memlab.engine import products


def _batched(*tensors: torch.Tensor | None) -> bool:
    return any(t is not None and is_batchedtensor(t) for t in tensors)


def _model_axis_first(tensor: torch.Tensor | None, dim: int | None, n_models: int
                      ) -> torch.Tensor | None:
    """The vmap rule's operand with the model axis first (a view; shared ones expanded)."""
    if tensor is None:
        return None
    if dim is None:
        return tensor.expand(n_models, *tensor.shape)
    return tensor.movedim(dim, 0)


def _low_precision(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type``, or None."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


# ------------------------------------------------------------------ the grouped view


def _grouped_order(dims: int) -> tuple[tuple[int, ...], list[int]]:
    """For a (K, b, C, *spatial) tensor of ``dims`` dimensions: the permutation to the
    grouped memory order (b, *spatial, K, C), and its inverse."""
    order = (1, *range(3, dims), 0, 2)
    return order, [order.index(d) for d in range(dims)]


def _grouped(x: torch.Tensor) -> torch.Tensor:
    """(K, b, C, *spatial) -> (b, K * C, *spatial), laid out (b, *spatial, K, C) in memory:
    a view when x is already so (the output of the layers here), else one copy. K = 1 gives
    the model twice (K = 2: see the module's docstring)."""
    if x.shape[0] == 1:
        x = x.expand(2, *x.shape[1:])
    n_models, batch, channels, *spatial = x.shape
    order, back = _grouped_order(x.dim())
    physical = x.permute(order)
    if not physical.is_contiguous():
        physical = physical.contiguous()
    return physical.permute(back).transpose(0, 1).reshape(batch, n_models * channels,
                                                          *spatial)


class _Ungroup(torch.autograd.Function):
    """(b, K' * C, *spatial) -> (K, b, C, *spatial) (K' = 2 for K = 1), whose backward
    hands the grouped layer its gradient in the grouped layout (b, *spatial, K', C).

    Why a Function: autograd's own backward of these views (a slice) made a zero tensor in
    the default layout, and a grouped layer's backward given a gradient in another layout
    than its input's takes torch's generic kernels (measured: torch's BatchNorm backward ten
    times slower) and may round otherwise, so a model's bits would depend on its chunk."""

    @staticmethod
    def forward(ctx, y, n_models):
        stacked = max(n_models, 2)
        ctx.n_models, ctx.stacked = n_models, stacked
        return y.unflatten(1, (stacked, y.shape[1] // stacked)).transpose(0, 1)[:n_models]

    @staticmethod
    def backward(ctx, grad):
        n_models, stacked = ctx.n_models, ctx.stacked
        order, back = _grouped_order(grad.dim())
        physical = grad.permute(order)
        if n_models == stacked and physical.is_contiguous():
            buffer = physical
        else:
            shape = list(physical.shape)
            shape[-2] = stacked
            buffer = grad.new_zeros(shape)
            buffer[..., :n_models, :] = physical
        full = buffer.permute(back)  # (K', b, C, *spatial)
        return full.transpose(0, 1).flatten(1, 2), None


def _ungrouped(y: torch.Tensor, n_models: int) -> torch.Tensor:
    """(b, K' * C, *spatial) -> (K, b, C, *spatial), a view (K' = 2 for K = 1)."""
    return _Ungroup.apply(y, n_models)


def _stacked_parameter(t: torch.Tensor | None, dim: int | None, n_models: int
                       ) -> torch.Tensor | None:
    """A per-model parameter (K, C, ...) as the grouped layer's (K' * C, ...)."""
    t = _model_axis_first(t, dim, n_models)
    if t is None:
        return None
    if n_models == 1:
        t = t.expand(2, *t.shape[1:])
    return t.reshape(-1, *t.shape[2:])


# ------------------------------------------------------------------ convolutions


class _Conv(torch.autograd.Function):
    """F.conv1d / F.conv2d whose vmap rule is one grouped convolution over the models."""

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):
        conv = F.conv2d if x.dim() in (3, 4) and weight.dim() == 4 else F.conv1d
        return conv(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight)
        ctx.options = (stride, padding, dilation, groups, bias is not None)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.options
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]] if has_bias else None, stride, padding,
            dilation, False, [0] * len(stride), groups,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias])
        return grad_x, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, stride, padding, dilation, groups):
        n_models = info.batch_size
        low = _low_precision(x.device.type)
        if low is not None:  # products in low precision, cast once here
            x, weight = x.to(low), weight.to(low)
            bias = None if bias is None else bias.to(low)
        grouped = _grouped(_model_axis_first(x, in_dims[0], n_models))
        weight = _stacked_parameter(weight, in_dims[1], n_models)
        bias = _stacked_parameter(bias, in_dims[2], n_models)
        conv = F.conv2d if weight.dim() == 4 else F.conv1d
        with torch.autocast(x.device.type, enabled=False):
            out = conv(grouped, weight, bias, stride, padding, dilation,
                       groups * max(n_models, 2))
        return _ungrouped(out, n_models), 0


class _FusedConv:
    """Mixin for nn.Conv1d / nn.Conv2d: the stacked form (under vmap) is one grouped
    convolution; a single model's call is torch's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _batched(x, self.weight, self.bias):
            return super().forward(x)
        return _Conv.apply(x, self.weight, self.bias, self.stride, self.padding,
                           self.dilation, self.groups)


class FusedConv1d(_FusedConv, nn.Conv1d):
    pass


class FusedConv2d(_FusedConv, nn.Conv2d):
    pass


# ------------------------------------------------------------------ BatchNorm


def _channel_sums(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """(K, n, C) -> (K, C): sum_n a (or sum_n a * b) per model and channel, as per-model
    products (the diagonal of (C, n) @ (n, C) for a * b): each model its own GEMM, so the
    sum's rounding does not depend on where a model's channels sit among the K * C (torch's
    per-channel reductions round otherwise in a vector's lanes than in its tail)."""
    if b is None:
        return products.bmm(a.new_ones(a.shape[0], 1, a.shape[1]), a).squeeze(1)
    return products.bmm(a.transpose(1, 2), b).diagonal(dim1=1, dim2=2)


class _StackedBatchNorm(torch.autograd.Function):
    """K BatchNorms on rows (K, n, C) (any strides): returns the normalized rows and the
    batch mean and biased variance (K, C) (or the given running ones in eval)."""

    @staticmethod
    def forward(ctx, rows, weight, bias, running_mean, running_var, use_batch_stats, eps):
        n = rows.shape[1]
        if not use_batch_stats:  # eval: an affine map of the rows, one pass
            invstd = torch.rsqrt(running_var + eps)
            scale = invstd if weight is None else invstd * weight
            shift = -running_mean * scale if bias is None else bias - running_mean * scale
            ctx.save_for_backward(rows, running_mean, invstd, scale)
            ctx.options = (False, weight is not None, bias is not None)
            mean, var = running_mean.clone(), running_var.clone()
            ctx.mark_non_differentiable(mean, var)
            return torch.addcmul(shift.unsqueeze(1), rows, scale.unsqueeze(1)), mean, var
        mean = _channel_sums(rows) / n
        centered = rows - mean.unsqueeze(1)
        var = _channel_sums(centered, centered) / n
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        out = centered * scale.unsqueeze(1) if bias is None else torch.addcmul(
            bias.unsqueeze(1), centered, scale.unsqueeze(1))
        ctx.save_for_backward(centered, None, invstd, scale)
        ctx.options = (True, weight is not None, bias is not None)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        centered, running_mean, invstd, scale = ctx.saved_tensors
        use_batch_stats, has_weight, has_bias = ctx.options
        if not use_batch_stats:  # (saved: the rows and the running mean)
            centered = centered - running_mean.unsqueeze(1)
        n = centered.shape[1]
        grad_sum = _channel_sums(grad)  # (K, C)
        grad_dot_xhat = _channel_sums(grad, centered) * invstd  # sum_n dy * xhat
        grad_rows = None
        if ctx.needs_input_grad[0]:
            if use_batch_stats:
                # dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = centered
                # * invstd, as dy * scale + centered * a + c: two passes over the rows.
                a = -scale * invstd * grad_dot_xhat / n
                c = -scale * grad_sum / n
                grad_rows = torch.addcmul(c.unsqueeze(1), grad, scale.unsqueeze(1))
                grad_rows.addcmul_(centered, a.unsqueeze(1))
            else:
                grad_rows = grad * scale.unsqueeze(1)
        grad_weight = grad_dot_xhat if has_weight and ctx.needs_input_grad[1] else None
        grad_bias = grad_sum if has_bias and ctx.needs_input_grad[2] else None
        return grad_rows, grad_weight, grad_bias, None, None, None, None


class _BatchNorm(torch.autograd.Function):
    """F.batch_norm whose vmap rule normalizes all models' channels at once, in float32,
    on the grouped layout (:class:`_StackedBatchNorm`)."""

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, use_batch_stats, momentum, eps):
        return F.batch_norm(x, running_mean, running_var, weight, bias, use_batch_stats,
                            momentum, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError  # (never differentiated outside vmap: see _FusedBatchNorm)

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, running_mean, running_var, use_batch_stats,
             momentum, eps):
        n_models = info.batch_size
        x = _model_axis_first(x, in_dims[0], n_models)
        low = x.dtype in (torch.bfloat16, torch.float16)
        grouped = _grouped(x.float() if low else x)  # (statistics in float32)
        stacked, channels = max(n_models, 2), x.shape[2]
        # rows (K', n, C) of the grouped layout (b, *spatial, K', C): a view
        last = grouped.movedim(1, -1)
        rows = last.reshape(-1, stacked, channels).transpose(0, 1)
        weight, bias, mean, var = (
            None if t is None else _stacked_parameter(t, d, n_models).view(stacked, channels)
            for t, d in zip((weight, bias, running_mean, running_var), in_dims[1:5]))
        with torch.autocast(x.device.type, enabled=False):
            out, batch_mean, batch_var = _StackedBatchNorm.apply(
                rows, weight, bias, mean, var, use_batch_stats, eps)
        if use_batch_stats and running_mean is not None:  # each model's own, in place
            n = rows.shape[1]
            for buffer, value in ((running_mean, batch_mean), (running_var,
                                                               batch_var * n / max(n - 1, 1))):
                buffer = _model_axis_first(buffer, in_dims[3], n_models)
                buffer.mul_(1 - momentum).add_(value[:n_models], alpha=momentum)
        grouped_out = out.transpose(0, 1).reshape(last.shape).movedim(-1, 1)
        return _ungrouped(grouped_out, n_models), 0


class _FusedBatchNorm:
    """Mixin for nn.BatchNorm1d / 2d: the stacked form (under vmap) is one BatchNorm of all
    models' channels; a single model's call is torch's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _batched(x, self.weight, self.running_mean) or self.momentum is None:
            return super().forward(x)
        use_batch_stats = self.training or self.running_mean is None
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        # (running statistics None: no tracking; in training they are updated, in eval read)
        return _BatchNorm.apply(x, self.weight, self.bias, self.running_mean,
                                self.running_var, use_batch_stats, self.momentum, self.eps)


class FusedBatchNorm1d(_FusedBatchNorm, nn.BatchNorm1d):
    pass


class FusedBatchNorm2d(_FusedBatchNorm, nn.BatchNorm2d):
    pass


# ------------------------------------------------------------------ pooling


class _Pool(torch.autograd.Function):
    """A per-channel 2-D pooling ``pool(x, *options)`` whose vmap rule pools the grouped
    view of all models' channels."""

    @staticmethod
    def forward(x, pool, options):
        return pool(x, *options)

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError  # (never differentiated outside vmap: see _FusedPool)

    @staticmethod
    def vmap(info, in_dims, x, pool, options):
        n_models = info.batch_size
        return _ungrouped(pool(_grouped(_model_axis_first(x, in_dims[0], n_models)),
                               *options), n_models), 0


class _FusedPool:
    """Mixin for 2-D pooling layers: under vmap, one pooling of all models' channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _batched(x) or x.dim() != 4:
            return super().forward(x)
        return _Pool.apply(x, *self._pool())


class FusedMaxPool2d(_FusedPool, nn.MaxPool2d):
    def _pool(self):
        return F.max_pool2d, (self.kernel_size, self.stride, self.padding, self.dilation,
                              self.ceil_mode)


class FusedAvgPool2d(_FusedPool, nn.AvgPool2d):
    def _pool(self):
        return F.avg_pool2d, (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                              self.count_include_pad, self.divisor_override)


class FusedAdaptiveAvgPool2d(_FusedPool, nn.AdaptiveAvgPool2d):
    def _pool(self):
        return F.adaptive_avg_pool2d, (self.output_size,)


# ------------------------------------------------------------------ Linear and matmul


class _Linear(torch.autograd.Function):
    """F.linear whose vmap rule is one per-model product (``products.baddbmm``). vmap's own
    rule for a linear layer turned a shared input's K products into one GEMM over all
    models' rows, and a chunk of one model into the single-matrix GEMM: both round
    differently from a chunk of another size."""

    @staticmethod
    def forward(x, weight, bias):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = (grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1])
                       if ctx.needs_input_grad[1] else None)
        grad_bias = (grad.reshape(-1, grad.shape[-1]).sum(0)
                     if ctx.has_bias and ctx.needs_input_grad[2] else None)
        return grad_x, grad_weight, grad_bias

    @staticmethod
    def vmap(info, in_dims, x, weight, bias):
        n_models = info.batch_size
        low = _low_precision(x.device.type)
        if low is not None:  # (autocast left a vmapped linear with a bias in float32)
            x, weight = x.to(low), weight.to(low)
            bias = None if bias is None else bias.to(low)
        x = _model_axis_first(x, in_dims[0], n_models)
        weight = _model_axis_first(weight, in_dims[1], n_models)
        bias = _model_axis_first(bias, in_dims[2], n_models)
        rows = x.reshape(n_models, -1, x.shape[-1])
        with torch.autocast(x.device.type, enabled=False):
            if bias is None:
                out = products.bmm(rows, weight.transpose(1, 2))
            else:
                out = products.baddbmm(bias.unsqueeze(1), rows, weight.transpose(1, 2))
        return out.view(*x.shape[:-1], weight.shape[1]), 0


class FusedLinear(nn.Linear):
    """nn.Linear whose stacked form (under vmap) is one per-model product."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _batched(x, self.weight, self.bias):
            return super().forward(x)
        return _Linear.apply(x, self.weight, self.bias)


# ------------------------------------------------------------------ the swap


_SIMPLE = {nn.BatchNorm1d: FusedBatchNorm1d, nn.BatchNorm2d: FusedBatchNorm2d,
           nn.MaxPool2d: FusedMaxPool2d, nn.AvgPool2d: FusedAvgPool2d,
           nn.AdaptiveAvgPool2d: FusedAdaptiveAvgPool2d, nn.Linear: FusedLinear}


def fused_replacement(child: nn.Module) -> type | None:
    """The fused class for ``child`` (an exact Linear, BatchNorm1d/2d, 2-D pooling, or a
    zero-padded Conv1d / Conv2d with numeric padding), or None."""
    kind = type(child)
    if kind in (nn.Conv1d, nn.Conv2d):
        supported = child.padding_mode == "zeros" and not isinstance(child.padding, str)
        return (FusedConv1d if kind is nn.Conv1d else FusedConv2d) if supported else None
    return _SIMPLE.get(kind)
