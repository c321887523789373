"""The one training loop: a chunk of K models at once, each on its own subset.

Weights are *stacked*: every parameter gets a leading model axis (K, ...). A training step
gathers a different batch for every model, (K, batch, ...), runs all K models in batched
matrix products, and updates all weights with one optimizer call. Because model k's loss
depends only on model k's weights and batch, the gradient of the summed loss is, slice by
slice, each model's own gradient; elementwise optimizers (SGD, Adam) then update each
model exactly as if it were trained alone.

What is learned and recorded comes from the task (``task.py``), the recipe's parts from
``recipe.py`` (schedules, augmentation, stream dropout, clipping, parameter groups),
measurements during training from callbacks (``callbacks.py``), the precision from
``precision.py``. Two implementations of the step share everything else:

- ``_MLPStep``: hand-written forward/backward for ReLU/linear MLPs in feature-major layout,
  (K, features, batch), so that bias, softmax and ReLU passes are cheap. The hot path.
- ``_GenericStep``: autograd through ``stacked_forward``: batched-matmul convolutions for
  the MNIST-1D CNN, and ``torch.func.functional_call`` under ``vmap`` for any other
  ``nn.Module`` (user models: their linear, convolution, BatchNorm and pooling layers run
  fused over the chunk, ``fused.py``; dropout from per-model streams).

Every random draw about model k comes from its replicate's streams (``config.py``), so model
k is the same bits in a chunk of 1 or 64, on any worker, after a resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from memlab.engine import dp, products, recipe
from memlab.engine.callbacks import EpochRecords, TrainState, callback_epochs
from memlab.engine.config import STREAM_SHUFFLE, PopulationConfig, model_rng
from memlab.engine.modelspec import ModelSpec
from memlab.engine.precision import autocast, dtype_name, resolve_compute_dtype
from memlab.engine.stackable import use_float32_norms, use_fused_layers
from memlab.engine.task import ClassificationTask, eval_models_per_pass
from memlab.engine.usermodel import frozen_parameters, stacking_names, use_stream_randomness
from memlab.errors import ConfigError, DivergenceError
from memlab.models import MLP, CNN1d, layer_profile


@dataclass
class ChunkResult:
    """Records of models [start, stop), model axis first (names: ``memlab.population.store``)."""

    arrays: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] | None
    seconds: float
    model_example_steps: int
    compute_dtype: str = "float32"  # the precision the step ran in ("auto" resolved)
    # (K,) bool: the models that diverged (on_diverge="record"; with "error" none finish)
    diverged: np.ndarray | None = None
    # where it was trained (host, CPU, device, versions), set by the process that trained
    # it: memlab.population.provenance
    provenance: dict | None = None


def uses_fast_path(template: torch.nn.Module, task: Any,
                   dtype: torch.dtype = torch.float32) -> bool:
    # float16 needs loss scaling, which the generic path's autograd step has
    return (type(task) is ClassificationTask and type(template) is MLP
            and template.activation in ("relu", "linear") and template.dropout == 0
            and dtype != torch.float16 and not frozen_parameters(template))


ROW_ALIGN = 128  # floats per model row of a stacked parameter: a multiple of every SIMD width


class StackedParameters:
    """The models' parameters, each stored as the rows of a padded (K, m_pad) leaf tensor.

    Why padded: torch's fused CPU optimizers process a tensor in SIMD blocks with a scalar
    tail that rounds differently, so with (K, *shape) tensors a model's update depended on
    how many models shared the tensor (measured: 1 ulp after a few Adam steps). With each
    model's row padded to a multiple of ``ROW_ALIGN`` floats, every model's elements fall in
    the same SIMD lanes for any K and there is no tail: fused optimizers, bit-invariant.

    ``values``: name -> live (K, *shape) views without grad (read by evaluation, callbacks,
    weights); ``grads``: the matching views of the gradients; ``leaves``: what the optimizer
    updates; ``tracked()``: views with autograd (for a differentiable forward).
    """

    def __init__(self, params: dict[str, torch.Tensor]):
        self.shapes = {name: tuple(t.shape[1:]) for name, t in params.items()}
        self.leaves, self.values, self.grads = {}, {}, {}
        for name, tensor in params.items():
            size = tensor[0].numel()
            leaf = torch.zeros(tensor.shape[0], -(-size // ROW_ALIGN) * ROW_ALIGN,
                               dtype=tensor.dtype, device=tensor.device)
            leaf[:, :size] = tensor.flatten(1)
            leaf.requires_grad_(True)
            leaf.grad = torch.zeros_like(leaf)
            self.leaves[name] = leaf
            self.values[name] = self._view(leaf.detach(), name)
            self.grads[name] = self._view(leaf.grad, name)

    def _view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        shape = self.shapes[name]
        return flat[:, :math.prod(shape)].view(flat.shape[0], *shape)

    def tracked(self) -> dict[str, torch.Tensor]:
        return {name: self._view(leaf, name) for name, leaf in self.leaves.items()}

    def zero_grad(self) -> None:
        for leaf in self.leaves.values():
            leaf.grad.zero_()


class _MLPStep:
    """One SGD step of K ReLU MLPs, forward and backward by hand (no autograd graph).

    In bfloat16 the matrix products, hidden activations and their gradients are bfloat16
    (each GEMM accumulates in float32 inside oneDNN / cuBLAS); the weights are rounded
    from the float32 masters every step; logits, softmax, loss and every gradient handed
    to the optimizer are float32.
    """

    def __init__(self, stacked: StackedParameters, template: MLP, label_smoothing: float,
                 dtype: torch.dtype = torch.float32):
        # (the MLP fast path is used for built-in ReLU/linear MLPs without dropout only)
        n_layers = len(template.layers)
        params, grads = stacked.values, stacked.grads
        self.weights = [params[f"layers.{i}.weight"] for i in range(n_layers)]  # (K, out, in)
        self.biases = [params[f"layers.{i}.bias"] for i in range(n_layers)]  # (K, out)
        self.weight_grads = [grads[f"layers.{i}.weight"] for i in range(n_layers)]
        self.bias_grads = [grads[f"layers.{i}.bias"] for i in range(n_layers)]
        self.relu = template.activation == "relu"
        self.label_smoothing = label_smoothing
        self.dtype = dtype

    def __call__(self, x: torch.Tensor, y: torch.Tensor, dp_weight: torch.Tensor | None = None,
                 max_grad_norm: float = 0.0, accumulate: bool = False) -> torch.Tensor:
        """x: (K, b, d) inputs, y: (K, b) labels. Writes every parameter's gradient and
        returns the (K,) mean training loss of the batch. With ``dp_weight`` (K, b) (DP-SGD:
        1 on real rows, 0 on padding) the gradients are each model's *sum* of per-example
        gradients clipped to ``max_grad_norm`` (added to them if ``accumulate``; noise and
        scaling: dp.privatize), and it returns the (K,) *sum* of the real rows' losses."""
        low = self.dtype != torch.float32
        weights = [w.to(self.dtype) for w in self.weights] if low else self.weights
        biases = [b.to(self.dtype) for b in self.biases] if low else self.biases
        activations = [x.transpose(1, 2).to(self.dtype)]  # (K, d, b): batch contiguous
        for weight, bias in zip(weights[:-1], biases[:-1]):
            hidden = products.baddbmm(bias.unsqueeze(2), weight, activations[-1])
            activations.append(hidden.relu_() if self.relu else hidden)
        logits = products.baddbmm(biases[-1].unsqueeze(2), weights[-1], activations[-1])
        logits = logits.float()  # (K, C, b): softmax and loss in float32

        batch = y.shape[1]
        log_probs = torch.log_softmax(logits, dim=1)  # (K, C, b); softmax over classes
        true_log_prob = log_probs.gather(1, y.unsqueeze(1)).squeeze(1)  # (K, b)
        eps = self.label_smoothing
        loss = -true_log_prob.mean(1)
        if eps:  # smoothed CE = (1 - eps) CE + eps * mean over classes of -log p
            loss = (1 - eps) * loss - eps * log_probs.mean(1).mean(1)
        # d(mean CE)/d(logits) = (softmax - target) / b, target = smoothed one-hot.
        grad = log_probs.exp_()
        if eps:
            grad.sub_(eps / logits.shape[1])
        grad.scatter_add_(1, y.unsqueeze(1), torch.full_like(true_log_prob, eps - 1).unsqueeze(1))
        if dp_weight is not None:  # DP-SGD: each example's gradient, clipped, summed
            per_example = -true_log_prob
            if eps:
                per_example = (1 - eps) * per_example - eps * log_probs.mean(1)
            self._clipped_backward(grad, activations, weights, dp_weight, max_grad_norm,
                                   accumulate)
            return (per_example * dp_weight).sum(1)
        grad.div_(batch)

        for layer in range(len(weights) - 1, -1, -1):
            inputs = activations[layer]
            # In float32 the products are written straight into the padded gradient rows
            # (out=, no copy pass). A bfloat16 gradient's bias sum is taken in bfloat16
            # (float32 accumulation, one rounding, like its weight gradient): summing it
            # with dtype=float32 first made a float32 copy of the whole gradient.
            if grad.dtype == torch.float32:
                torch.sum(grad, 2, dtype=torch.float32, out=self.bias_grads[layer])
            else:
                self.bias_grads[layer].copy_(grad.sum(2))
            if low:
                grad = grad.to(self.dtype)
                self.weight_grads[layer].copy_(products.bmm(grad, inputs.transpose(1, 2)))
            else:
                products.bmm(grad, inputs.transpose(1, 2), out=self.weight_grads[layer])
            if layer > 0:
                grad = products.bmm(weights[layer].transpose(1, 2), grad)
                if self.relu:
                    # in place (the product above is a fresh tensor): no allocation
                    torch.ops.aten.threshold_backward.grad_input(grad, inputs, 0.0,
                                                                 grad_input=grad)
        return loss


    def _clipped_backward(self, grad: torch.Tensor, activations: list[torch.Tensor],
                          weights: list[torch.Tensor], dp_weight: torch.Tensor,
                          max_grad_norm: float, accumulate: bool) -> None:
        """Per-example clipping without per-example gradients: a linear layer's gradient
        for example i is the outer product of its output gradient δ_i and its input a_i, so
        its squared norm is |δ_i|²·(|a_i|² + 1) (with the bias), and scaling δ_i by the clip
        factor scales every layer's gradient of example i. grad: (K, C, b) d loss_i/d logits."""
        deltas = [grad]  # (K, out, b) per layer, last layer first
        for layer in range(len(weights) - 1, 0, -1):
            back = products.bmm(weights[layer].transpose(1, 2), deltas[-1])
            if self.relu:
                torch.ops.aten.threshold_backward.grad_input(back, activations[layer], 0.0,
                                                             grad_input=back)
            deltas.append(back)
        deltas.reverse()  # first layer first
        squared = sum(torch.linalg.vecdot(d, d, dim=1) * (torch.linalg.vecdot(a, a, dim=1) + 1)
                      for d, a in zip(deltas, activations))  # (K, b)
        factor = dp.clip_factors(squared, dp_weight, max_grad_norm).unsqueeze(1)
        for layer, (delta, inputs) in enumerate(zip(deltas, activations)):
            clipped = delta * factor
            if accumulate:  # another pass of the step (dp.PoissonBatches)
                self.bias_grads[layer].add_(clipped.sum(2))
                self.weight_grads[layer].add_(products.bmm(clipped, inputs.transpose(1, 2)))
            else:
                torch.sum(clipped, 2, out=self.bias_grads[layer])
                products.bmm(clipped, inputs.transpose(1, 2), out=self.weight_grads[layer])


class _GenericStep:
    """One step of K copies of any nn.Module through ``stacked_forward``, autograd backward.

    In bfloat16/float16 the forward runs under autocast (matrix products and convolutions
    in low precision, softmax and losses in float32; the gradients reach the float32
    leaves in float32). float16 scales the loss (``scaler``) so small gradients survive.
    """

    def __init__(self, stacked: StackedParameters, buffers: dict[str, torch.Tensor],
                 template: torch.nn.Module, task: Any, label_smoothing: float,
                 device: torch.device | None = None, dtype: torch.dtype = torch.float32,
                 scaler: Any = None):
        self.stacked, self.buffers = stacked, buffers
        self.forward = stacked_forward(template, train=True)
        self.task, self.label_smoothing = task, label_smoothing
        self.device = device if device is not None else torch.device("cpu")
        self.dtype, self.scaler = dtype, scaler

    def __call__(self, x: torch.Tensor, y: Any) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            out = self.forward(self.stacked.tracked(), self.buffers, x)  # (K, b, ...)
            losses = self.task.loss(out.float(), y, self.label_smoothing)  # (K,)
        self.stacked.zero_grad()
        # Each model's mean loss; summing over models keeps their gradients separate.
        total = losses.sum()
        (self.scaler.scale(total) if self.scaler is not None else total).backward()
        return losses.detach()


class _GenericDPStep:
    """One DP-SGD step of K copies of any nn.Module: per-example gradients under vmap
    (torch.func.grad over each example, vmapped over the batch and over the models), each
    clipped to C and summed per model. Memory: K × batch × parameters floats."""

    def __init__(self, stacked: StackedParameters, buffers: dict[str, torch.Tensor],
                 template: torch.nn.Module, task: Any, label_smoothing: float,
                 max_grad_norm: float):
        self.stacked, self.buffers = stacked, buffers

        def example_loss(params, buffers, x, y):
            out = functional_call(template, (params, buffers), (x.unsqueeze(0),))
            return task.loss(out.unsqueeze(0).float(), y.view(1, 1), label_smoothing)[0]

        per_example = vmap(grad_and_value(example_loss), in_dims=(None, None, 0, 0))

        def one_model(params, buffers, x, y, weight):
            template.train(True)
            grads, losses = per_example(params, buffers, x, y)  # (b, ...) per parameter
            squared = sum(g.flatten(1).square().sum(1) for g in grads.values())  # (b,)
            factor = dp.clip_factors(squared, weight, max_grad_norm)
            summed = {name: torch.tensordot(factor, g, dims=1) for name, g in grads.items()}
            return summed, (losses * weight).sum()

        self.per_model = vmap(one_model, randomness="error")

    def __call__(self, x: torch.Tensor, y: Any, dp_weight: torch.Tensor,
                 max_grad_norm: float, accumulate: bool = False) -> torch.Tensor:
        """Each model's sum of clipped per-example gradients into its gradient (added to it
        if ``accumulate``); returns the (K,) sum of the real rows' losses."""
        inputs = (self.stacked.values, self.buffers, x, y, dp_weight)
        if x.shape[0] == 1:  # a chunk of one runs as two: vmap over one model takes other
            inputs = _twice(inputs)  # kernels, which round otherwise (products.py)
        summed, losses = self.per_model(*inputs)
        for name, value in summed.items():
            value = value[:1] if x.shape[0] == 1 else value
            if accumulate:
                self.stacked.grads[name].add_(value)
            else:
                self.stacked.grads[name].copy_(value)
        return losses[:x.shape[0]].detach()


def _twice(tree: Any) -> Any:
    """Every tensor in ``tree`` (dicts, tuples) concatenated with itself on its first axis."""
    if isinstance(tree, torch.Tensor):
        return torch.cat([tree, tree])
    if isinstance(tree, dict):
        return {key: _twice(value) for key, value in tree.items()}
    return type(tree)(_twice(value) for value in tree)


def stacked_forward(template: torch.nn.Module, train: bool, shared_input: bool = False):
    """f(params, buffers, x) -> logits (K, b, C) for stacked params (K, ...).

    x is (K, b, *input_shape), or (b, *input_shape) shared by all models if ``shared_input``.
    The MNIST-1D CNN (without dropout) gets batched-matmul convolutions over its own im2col
    (3x faster on a CPU than the fused grouped convolutions at its 25 channels); any other
    module goes through vmap, with the fused layers of ``stackable.use_fused_layers``.
    """
    if type(template) is CNN1d and (template.drop.p == 0 or not train) \
            and not frozen_parameters(template):
        def cnn1d(params, buffers, x):
            if shared_input:
                x = x.expand(next(iter(params.values())).shape[0], *x.shape)
            return _stacked_cnn1d(template, params, x)
        return cnn1d

    def one_model(params, buffers, x):
        template.train(train)
        return functional_call(template, (params, buffers), (x,))

    in_dims = (0, 0, None if shared_input else 0)
    # Dropout masks come from StreamDropout's hash (no RNG): any other randomness errors.
    return vmap(one_model, in_dims=in_dims, randomness="error")


class _Im2col(torch.autograd.Function):
    """Patches of K channel-major signals for a strided 1-D convolution, with a backward
    of ``kernel`` strided additions (torch's unfold backward was a fifth of a CNN1d step).

    x: (K, C, b, L) -> columns (K, C * kernel, b * L_out), rows ordered (channel, tap).
    Each input gradient element sums its taps in the fixed order 0..kernel-1, whatever K.
    """

    @staticmethod
    def forward(ctx, x, kernel: int, stride: int, padding: int):
        n_models, channels, batch, length = x.shape
        out_length = (length + 2 * padding - kernel) // stride + 1
        ctx.shape, ctx.kernel, ctx.stride, ctx.padding = x.shape, kernel, stride, padding
        ctx.out_length = out_length
        # One strided copy per tap into the (K, C, k, b, Lo) columns; zeros where a tap
        # falls in the padding (a permuted copy of unfold's windows ran at ~1.5 GB/s).
        columns = x.new_empty(n_models, channels, kernel, batch, out_length)
        for tap, (first, last, start) in enumerate(_tap_ranges(length, kernel, stride,
                                                                padding, out_length)):
            columns[:, :, tap, :, :first].zero_()  # (zero_: assigning 0 was a slow copy)
            columns[:, :, tap, :, last:].zero_()
            if last > first:
                columns[:, :, tap, :, first:last] = \
                    x[..., start:start + stride * (last - first - 1) + 1:stride]
        return columns.view(n_models, channels * kernel, batch * out_length)

    @staticmethod
    def backward(ctx, grad):
        n_models, channels, batch, length = ctx.shape
        kernel, stride, padding, out_length = (ctx.kernel, ctx.stride, ctx.padding,
                                               ctx.out_length)
        grad = grad.view(n_models, channels, kernel, batch, out_length)
        # Written straight into a contiguous input-sized gradient (not a padded buffer cut
        # afterwards): the ReLU backward that reads it was 3x slower on the strided slice.
        out = grad.new_zeros(n_models, channels, batch, length)
        for tap, (first, last, start) in enumerate(_tap_ranges(length, kernel, stride,
                                                                padding, out_length)):
            if last > first:
                out[..., start:start + stride * (last - first - 1) + 1:stride] += \
                    grad[:, :, tap, :, first:last]
        return out, None, None, None


def _tap_ranges(length: int, kernel: int, stride: int, padding: int, out_length: int):
    """For each tap of a strided 1-D convolution: the output positions [first, last) whose
    input position stride * j + tap - padding lies inside the signal, and that position for
    j = first."""
    for tap in range(kernel):
        first = min(out_length, max(0, -(-(padding - tap) // stride)))
        last = max(first, min(out_length, (length - 1 - tap + padding) // stride + 1))
        yield first, last, stride * first + tap - padding


def _stacked_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    conv: torch.nn.Conv1d) -> torch.Tensor:
    """K convolutions at once as one batched matmul over im2col patches.

    x: (K, C, b, L) channel-major; weight: (K, O, C, k); bias: (K, O) -> (K, O, b, L_out).
    """
    (kernel,), (stride,), (padding,) = conv.kernel_size, conv.stride, conv.padding
    n_models, _, batch, _ = x.shape
    columns = _Im2col.apply(x, kernel, stride, padding)  # (K, C * k, b * L_out)
    out = products.baddbmm(bias.unsqueeze(2), weight.flatten(2), columns)  # (autocast: bf16)
    return out.view(n_models, -1, batch, columns.shape[2] // batch)


def _stacked_cnn1d(template: CNN1d, params: dict[str, torch.Tensor],
                   x: torch.Tensor) -> torch.Tensor:
    """CNN1d.forward for K stacked models; x: (K, b, L) or (K, b, C, L) -> (K, b, classes)."""
    if x.dim() == 3:
        x = x.unsqueeze(2)
    hidden = x.transpose(1, 2)  # (K, C, b, L)
    for name in ("conv1", "conv2", "conv3"):
        hidden = torch.relu(_stacked_conv1d(hidden, params[f"{name}.weight"],
                                            params[f"{name}.bias"], getattr(template, name)))
    n_models, channels, batch, length = hidden.shape
    features = hidden.permute(0, 2, 1, 3).reshape(n_models, batch, channels * length)
    return products.baddbmm(params["linear.bias"].unsqueeze(1), features,
                         params["linear.weight"].transpose(1, 2))


def initial_weights(spec: ModelSpec, config: PopulationConfig, replicates: Sequence[int],
                    input_shape: tuple[int, ...], n_outputs: int, device: torch.device
                    ) -> dict[str, torch.Tensor]:
    """name -> (K, ...) initial parameters and buffers of the models, from their seeds."""
    states = [spec.initial_state(config, input_shape, n_outputs, r) for r in replicates]
    return {name: torch.stack([s[name] for s in states]).to(device) for name in states[0]}


def chunk_recipe(config: PopulationConfig, models: range) -> tuple[PopulationConfig, int]:
    """The recipe of a chunk's sweep combination (chunks never straddle combinations)."""
    value = config.model_key(models.start)[0]
    if config.model_key(models.stop - 1)[0] != value:
        raise ConfigError(f"chunk of models {models.start}..{models.stop - 1} straddles two "
                          "sweep values; plan chunks with store.plan_chunks")
    return config.for_value(value), value


@torch.random.fork_rng(devices=[])  # the caller's torch RNG state stays untouched
def train_chunk(task: Any, data: Any, config: PopulationConfig, spec: ModelSpec,
                models: range, membership: np.ndarray, device: str | torch.device = "cpu",
                callbacks: Sequence[Any] = (), on_epoch: Callable[[int], None] | None = None,
                transforms: dict[str, Callable] | None = None) -> ChunkResult:
    """Train models ``models`` (a range of model indices) and record their behaviour.

    config: the population's config (a sweep's combination is chosen from ``models``).
    membership: (K, n_train) bool rows of the membership mask for these models; every row
        has the same number of examples (``store.plan_chunks`` groups them so).
    callbacks: see callbacks.py; ``record_epochs`` adds :class:`EpochRecords`.
    on_epoch: called with K after every epoch (for progress bars).
    transforms: resolved user augmentation functions by their config entry.
    """
    started = time.perf_counter()
    device = torch.device(device)
    recipe_config, _ = chunk_recipe(config, models)
    spec = spec.with_kwargs(recipe_config.model_kwargs) if spec.template is None else spec
    replicates = [config.model_key(k)[1] for k in models]
    n_models = len(models)
    input_shape, n_outputs = task.input_shape(data), task.outputs(data)

    template = spec.build(input_shape, n_outputs)
    state = initial_weights(spec, recipe_config, replicates, input_shape, n_outputs, device)
    dropout_keys = recipe.use_stream_dropout(template)
    dropout_keys += use_stream_randomness(template, task, data)  # randn_like etc. in forward
    dropping = any(isinstance(m, recipe.StreamDropout) and m.p > 0 for m in template.modules())
    if recipe_config.dp:
        dp.check_model(template)
    else:
        # Linear, convolutions, BatchNorm, pooling: all K models in one call, and model k the
        # same bits in a chunk of any size. (DP-SGD's per-example gradients nest a vmap over
        # the examples, which the fused layers' rules do not handle: torch's own rules.)
        use_fused_layers(template)
    dtype = resolve_compute_dtype(recipe_config.compute_dtype, device)
    if dtype != torch.float32:
        use_float32_norms(template)  # batch statistics in float32 under autocast
    trained, fixed = stacking_names(template)  # (tied weights once, frozen ones fixed)
    stacked = StackedParameters({n: state[n] for n in trained})
    params = stacked.values
    buffers = {n: state[n] for n in fixed if n in state}
    keys = recipe.dropout_keys(config, replicates).to(device)
    for name in dropout_keys:
        buffers[name] = keys
    saved_buffers = [n for n in buffers if n not in dropout_keys]

    tensors = task.tensors(data, device)  # moved to the device once, for training and records
    fast = uses_fast_path(template, task, dtype)
    # float16 only: a dynamic loss scale (one per chunk; a step with an overflow in any
    # model is skipped for the chunk, so float16 chunks are not chunk-size invariant).
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    if fast:
        step = _MLPStep(stacked, template, recipe_config.label_smoothing, dtype)
    elif recipe_config.dp:
        step = _GenericDPStep(stacked, buffers, template, task, recipe_config.label_smoothing,
                              recipe_config.dp_max_grad_norm)
    else:
        step = _GenericStep(stacked, buffers, template, task, recipe_config.label_smoothing,
                            device, dtype, scaler)
    optimizer = recipe.make_optimizer(stacked.leaves, recipe_config,
                                      model_dims={n: len(s) for n, s in stacked.shapes.items()})
    values_per_example = _values_per_example(template, task, data, input_shape)
    eval_forward = _eval_forward(template, params, buffers, fast, device, dtype,
                                 values_per_example)

    callbacks = list(callbacks)
    if config.record_epochs:
        callbacks.append(EpochRecords())
    schedule = {id(cb): set(callback_epochs(cb, recipe_config)) for cb in callbacks}
    before_step = [cb for cb in callbacks if hasattr(cb, "before_step")]
    collected: dict[str, list] = {}
    train_state = TrainState(0, 0, models, replicates, recipe_config, params, buffers,
                             template, task, data, tensors, eval_forward,
                             _train_forward(template, params, buffers))

    batch_size = recipe_config.batch_size
    n_canaries = recipe_config.privacy_canaries()
    if recipe_config.dp:  # each model's own Poisson batches and noise; with privacy canaries
        # (each model its own independent draw of them) the rows differ in length
        ragged = [np.flatnonzero(row) for row in membership]
        n_members = int(membership[0, :recipe_config.base_examples(membership.shape[1])].sum())
        dp_plan = dp.plan(recipe_config, n_members, n_canaries)
        poisson = dp.PoissonBatches(ragged, config.seed, replicates, dp_plan, device)
        noise = dp.GaussianNoise(config.seed, replicates, device)
        gradient_canaries = (dp.GradientCanaries(n_canaries, config.seed, replicates,
                                                 stacked.shapes, dp_plan, device)
                             if n_canaries else None)
    else:
        dp_plan = gradient_canaries = None
        members = np.stack([np.flatnonzero(row) for row in membership])  # (K, m), sorted
        n_members = members.shape[1]
    shufflers = [model_rng(config.seed, r, STREAM_SHUFFLE) for r in replicates]
    steps_per_epoch = dp.steps_per_epoch(n_members, batch_size)
    augment = recipe.has_augmentation(recipe_config)
    batches_from = _batch_source(tensors["train"], data, dtype,
                                 low_precision_copy=fast and not augment and not before_step)
    epoch_losses = []
    global_step = 0
    divergence = _Divergence(models, recipe_config)

    def run_callbacks(epoch: int) -> None:
        train_state.epoch, train_state.step = epoch, global_step
        for cb in callbacks:
            if epoch in schedule[id(cb)]:
                for key, value in cb(train_state).items():
                    collected.setdefault(f"{cb.name}_{key}", []).append(_to_numpy(value))

    run_callbacks(0)
    for epoch in range(recipe_config.epochs):
        rngs = [recipe.augment_rng(config, r, epoch) for r in replicates] if augment else None
        loss_sum = torch.zeros(n_models, device=device)
        rows = torch.zeros(n_models, device=device)
        if dp_plan is None:  # (index (K, b), no weights): each model's shuffled batches
            order = _epoch_order(members, shufflers, device)
            batches = ((order[:, start:start + batch_size], None)
                       for start in range(0, n_members, batch_size))
        else:  # (index (K, B), weight (K, B)): padded Poisson batches
            batches = poisson.epoch(steps_per_epoch)
        for index, dp_weight in batches:
            x, y = task.batch(batches_from, index)
            if augment:
                x = recipe.augment_batch(x, rngs, recipe_config, transforms)
            train_state.step = global_step
            for cb in before_step:
                x, y = cb.before_step(train_state, x, y)
            recipe.set_lr(optimizer, recipe_config, global_step, steps_per_epoch)
            if dropping:  # (a walk over the modules: not for models without dropout)
                recipe.set_dropout_step(template, global_step)
            if dp_plan is None:  # the batch's mean loss, times its rows
                batch_rows = index.shape[1]
                batch_loss_sum = step(x.flatten(2) if fast else x, y) * batch_rows
            else:  # passes of dp_plan.padded_batch rows (almost always one); loss sums
                batch_loss_sum, rows_per_pass = 0.0, dp_plan.padded_batch
                for part in range(index.shape[1] // rows_per_pass):
                    cols = slice(part * rows_per_pass, (part + 1) * rows_per_pass)
                    batch_loss_sum = batch_loss_sum + step(
                        x[:, cols].flatten(2) if fast else x[:, cols], y[:, cols],
                        dp_weight[:, cols], dp_plan.max_grad_norm, accumulate=part > 0)
                if gradient_canaries is not None:  # white-box canaries, clipped like examples
                    gradient_canaries.insert(stacked.grads)
                dp.privatize(stacked.grads, noise, dp_plan)
                if gradient_canaries is not None:
                    gradient_canaries.observe(stacked.grads)
                batch_rows = dp_weight.sum(1)
            if scaler is not None and divergence.flags.any():
                divergence.freeze(stacked)  # (float16: or every step of the chunk is skipped)
            _update(optimizer, scaler, stacked, recipe_config.clip_grad_norm)
            global_step += 1
            loss_sum += batch_loss_sum
            rows += batch_rows
        epoch_loss = (loss_sum / rows.clamp(min=1)).cpu()
        divergence.check(~torch.isfinite(epoch_loss).numpy(), "the training loss",
                         f"in epoch {epoch + 1} of {recipe_config.epochs}", epoch_loss.numpy())
        epoch_losses.append(epoch_loss)
        run_callbacks(epoch + 1)
        if on_epoch is not None:
            on_epoch(n_models)

    arrays = _records(task, eval_forward, tensors, n_models, values_per_example, epoch_losses,
                      collected)
    if gradient_canaries is not None:
        arrays.update(gradient_canaries.records())
    final_state = {**params, **{n: buffers[n] for n in saved_buffers}}
    task_records = [name for name in arrays
                    if name != "epoch_train_loss_mean" and name not in collected]
    divergence.check_final(arrays, task_records, final_state)
    weights = None
    if config.save_weights:
        weights = {name: t.detach().cpu().numpy() for name, t in final_state.items()}
    return ChunkResult(arrays, weights, time.perf_counter() - started,
                       n_models * n_members * recipe_config.epochs, dtype_name(dtype),
                       divergence.flags)


def _batch_source(train: tuple, data: Any, dtype: torch.dtype,
                  low_precision_copy: bool) -> tuple:
    """The training tensors batches are gathered from. The bfloat16 step's first product
    rounds its inputs anyway: gathering batches from a bfloat16 copy (in memory: not for a
    memory-mapped dataset) moves half the bytes and skips a conversion per step; the same
    bits. ``low_precision_copy``: the MLP step, with no augmentation or batch callbacks."""
    if (low_precision_copy and dtype != torch.float32
            and not isinstance(getattr(data, "x_train", None), np.memmap)):
        return (train[0].to(dtype), *train[1:])
    return train


def _epoch_order(members: np.ndarray, shufflers: list[np.random.Generator],
                 device: torch.device) -> torch.Tensor:
    """(K, m) this epoch's order of every model's examples, from its own shuffle stream."""
    n_members = members.shape[1]
    order = np.stack([row[rng.permutation(n_members)] for row, rng in zip(members, shufflers)])
    return torch.as_tensor(order, device=device)


def _update(optimizer: torch.optim.Optimizer, scaler: Any, stacked: StackedParameters,
            clip_grad_norm: float) -> None:
    """The optimizer step after a backward: per-model gradient clipping, and float16's
    loss scale (unscaled first, so that clipping sees the true gradients)."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad_norm > 0:
        recipe.clip_stacked_gradients(list(stacked.leaves.values()), clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


class _Divergence:
    """Models whose training diverged: an epoch's training loss, a final record (loss,
    margin, log-odds, accuracy) or the final weights NaN or infinite. With
    ``on_diverge="error"`` a one-line :class:`DivergenceError` naming the models, when,
    the quantity and the fixes; with ``"record"`` the models' flags (``flags``, (K,) bool),
    their values kept as computed. It reads values the loop computed anyway and changes
    no computation (a chunk without divergence is the same bits)."""

    def __init__(self, models: range, config: PopulationConfig):
        self.models, self.config = models, config
        self.flags = np.zeros(len(models), dtype=bool)

    def check(self, bad: np.ndarray, quantity: str, when: str,
              values: np.ndarray | None = None) -> None:
        """``bad``: (K,) bool, the models whose ``quantity`` is not finite ``when``;
        ``values``: (K, ...) the quantity (its first non-finite value is named)."""
        new = np.asarray(bad, dtype=bool) & ~self.flags
        if not new.any():
            return
        if self.config.on_diverge == "record":
            self.flags |= new
            return
        rows = np.flatnonzero(new)
        named = [self.models[i] for i in rows[:5]]
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        what = "NaN or infinite"
        if values is not None:
            row = np.asarray(values[rows[0]], dtype=np.float64).ravel()
            what = str(row[~np.isfinite(row)][0])
        raise DivergenceError(
            f"training diverged: {quantity} of model(s) {named}{more} became {what} {when}; "
            f"lower the learning rate (lr={self.config.lr}), normalize the features, or "
            "give --on-diverge record (on_diverge='record') to keep the run with these "
            "models marked diverged and left out of the estimates")

    def check_final(self, arrays: dict[str, np.ndarray], task_records: list[str],
                    weights: dict[str, torch.Tensor]) -> None:
        """The final weights, then the task's final records (non-finite: diverged) and the
        per-epoch records (NaN: a float16 record may overflow to inf legitimately)."""
        when = f"after epoch {self.config.epochs} of {self.config.epochs}"
        bad = np.zeros(len(self.models), dtype=bool)
        for tensor in weights.values():  # (stacked: model axis first)
            if tensor.is_floating_point() and tensor.dim() and len(tensor) == len(bad):
                bad |= ~torch.isfinite(tensor.reshape(len(tensor), -1)).all(1).cpu().numpy()
        self.check(bad, "the weights", when)
        for name in task_records:
            if arrays[name].dtype.kind == "f":
                values = arrays[name]
                self.check(~np.isfinite(values.reshape(len(values), -1)).all(1),
                           f"the final {name.replace('_', ' ')}",
                           f"at the final evaluation {when}", values)
        for name, values in arrays.items():
            if name.startswith("epoch_") and name != "epoch_train_loss_mean" \
                    and values.dtype.kind == "f":
                self.check(np.isnan(values.reshape(len(values), -1)).any(1),
                           f"the per-epoch record {name}", "during training", values)

    def freeze(self, stacked: StackedParameters) -> None:
        """Zero the gradients of the diverged models (float16 only: their NaN gradients
        would make the loss scaler skip every later step of the whole chunk)."""
        rows = torch.as_tensor(np.flatnonzero(self.flags))
        for leaf in stacked.leaves.values():
            leaf.grad[rows.to(leaf.device)] = 0


def _records(task: Any, eval_forward: Callable, tensors: dict, n_models: int,
             values_per_example: int, epoch_losses: list[torch.Tensor],
             collected: dict[str, list]) -> dict[str, np.ndarray]:
    """The chunk's records: epoch losses, the callbacks' records (K, calls, ...) and the
    task's final per-example records of both splits."""
    arrays = {"epoch_train_loss_mean": torch.stack(epoch_losses, 1).numpy()}
    for name, parts in collected.items():
        arrays[name] = np.stack(parts, axis=1)  # (K, calls, ...)
    for split in ("train", "test"):
        for name, values in task.evaluate(eval_forward, tensors[split], n_models,
                                          values_per_example).items():
            if name == "token_correct" and split == "test":
                continue  # per-token records of the validation documents are not kept
            arrays[f"{split}_{name}"] = values.cpu().numpy()
    return arrays


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _values_per_example(template: torch.nn.Module, task: Any, data: Any,
                        input_shape: tuple[int, ...]) -> int:
    """Activation values of one example (sizes evaluation batches)."""
    if not isinstance(task, ClassificationTask):
        return task.outputs(data)
    try:
        return layer_profile(template, input_shape)[1] or task.outputs(data)
    except Exception:  # a user module the profiler cannot run alone: size by the outputs
        return 64 * task.outputs(data)


def _eval_forward(template: torch.nn.Module, params: dict[str, torch.Tensor],
                  buffers: dict[str, torch.Tensor], fast: bool, device: torch.device,
                  dtype: torch.dtype, values_per_example: int) -> Callable:
    """f(x shared (b, ...)) -> (K, b, ...) eval-mode float32 outputs of the live weights,
    computed in the precision the models train in (``dtype``): a bfloat16 population's
    records are those of its bfloat16 forward, and cost a quarter of float32's products."""
    if fast:
        one_pass = _mlp_shared_forward(template, dtype)
    else:
        vmapped = stacked_forward(template, train=False, shared_input=True)

        def one_pass(part: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            with autocast(device, dtype):
                out = vmapped({n: part[n] for n in params}, {n: part[n] for n in buffers}, x)
            return out.float() if out.is_floating_point() else out

    state = {**buffers, **params}
    per_pass = eval_models_per_pass(values_per_example)

    def forward(x: torch.Tensor) -> torch.Tensor:
        # Models in passes of a fixed size (the memory budget), so that a pass's batch does
        # not shrink with the chunk size (task.eval_batch_size).
        n_models = next(iter(params.values())).shape[0]
        return torch.cat([one_pass({n: t[start:start + per_pass].detach()
                                    for n, t in state.items()}, x)
                          for start in range(0, n_models, per_pass)])
    return forward


def _train_forward(template: torch.nn.Module, params: dict[str, torch.Tensor],
                   buffers: dict[str, torch.Tensor]) -> Callable:
    """f(x stacked (K, b, ...)) -> (K, b, ...) train-mode outputs, differentiable in x.
    Running statistics are not updated (a copy of the buffers is used)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        plain = {name: tensor.detach() for name, tensor in params.items()}
        scratch = {name: tensor.clone() for name, tensor in buffers.items()}
        return stacked_forward(template, train=True)(plain, scratch, x)
    return forward


def _mlp_shared_forward(template: MLP, dtype: torch.dtype = torch.float32):
    """f(stacked params of some models, shared x (b, ...)) -> (K', b, C) logits."""
    n_layers = len(template.layers)
    relu = template.activation == "relu"

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        n_models = params["layers.0.weight"].shape[0]
        # (K, d, b): the shared inputs as a batch, so that every model's products are its
        # own GEMMs (one GEMM over all models' rows rounds differently with K).
        hidden = x.flatten(1).T.to(dtype).unsqueeze(0).expand(n_models, -1, -1)
        for i in range(n_layers):
            weight, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            hidden = products.baddbmm(bias.to(dtype).unsqueeze(2), weight.to(dtype), hidden)
            if relu and i < n_layers - 1:
                hidden.relu_()
        return hidden.transpose(1, 2).float()  # (K, b, C)

    return forward
