"""The one training loop: a chunk of K models at once, each on its own subset.

Weights are *stacked*: every parameter gets a leading model axis (K, ...). A training step
gathers a different batch for every model, (K, batch, ...), runs all K models in batched
matrix products, and updates all weights with one optimizer call. Because model k's loss
depends only on model k's weights and batch, the gradient of the summed loss is, slice by
slice, each model's own gradient; elementwise optimizers (SGD, Adam) then update each
model exactly as if it were trained alone.

What is learned and recorded comes from the task (``task.py``), the recipe's parts from
``recipe.py`` (schedules, augmentation, stream dropout, clipping, parameter groups),
measurements during training from callbacks (``callbacks.py``). Two implementations of
the step share everything else:

- ``_MLPStep``: hand-written forward/backward for ReLU/linear MLPs in feature-major layout,
  (K, features, batch), so that bias, softmax and ReLU passes are cheap. The hot path.
- ``_GenericStep``: autograd through ``stacked_forward``: batched-matmul convolutions for
  the MNIST-1D CNN, and ``torch.func.functional_call`` under ``vmap`` for any other
  ``nn.Module`` (BatchNorm with per-model running statistics, dropout, user models).

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
import torch.nn.functional as F
from torch.func import functional_call, vmap

from memlab.errors import ConfigError
from memlab.models import MLP, CNN1d, layer_profile
from memlab.population import recipe
from memlab.population.callbacks import EpochRecords, TrainState, callback_epochs
from memlab.population.config import STREAM_SHUFFLE, PopulationConfig, model_rng
from memlab.population.modelspec import ModelSpec
from memlab.population.stackable import use_stackable_convolutions
from memlab.population.task import ClassificationTask


@dataclass
class ChunkResult:
    """Records of models [start, stop), model axis first (see store.py for the names)."""

    arrays: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] | None
    seconds: float
    model_example_steps: int


def uses_fast_path(template: torch.nn.Module, task: Any) -> bool:
    return (type(task) is ClassificationTask and type(template) is MLP
            and template.activation in ("relu", "linear") and template.dropout == 0)


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
    """One SGD step of K ReLU MLPs, forward and backward by hand (no autograd graph)."""

    def __init__(self, stacked: StackedParameters, template: MLP, label_smoothing: float):
        # (the MLP fast path is used for built-in ReLU/linear MLPs without dropout only)
        n_layers = len(template.layers)
        params, grads = stacked.values, stacked.grads
        self.weights = [params[f"layers.{i}.weight"] for i in range(n_layers)]  # (K, out, in)
        self.biases = [params[f"layers.{i}.bias"] for i in range(n_layers)]  # (K, out)
        self.weight_grads = [grads[f"layers.{i}.weight"] for i in range(n_layers)]
        self.bias_grads = [grads[f"layers.{i}.bias"] for i in range(n_layers)]
        self.relu = template.activation == "relu"
        self.label_smoothing = label_smoothing

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (K, b, d) inputs, y: (K, b) labels. Writes every parameter's gradient and
        returns the (K,) mean training loss of the batch."""
        activations = [x.transpose(1, 2)]  # (K, d, b): features first, batch contiguous
        for weight, bias in zip(self.weights[:-1], self.biases[:-1]):
            hidden = torch.baddbmm(bias.unsqueeze(2), weight, activations[-1])
            activations.append(hidden.relu_() if self.relu else hidden)
        logits = torch.baddbmm(self.biases[-1].unsqueeze(2), self.weights[-1], activations[-1])

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
        grad.div_(batch)

        for layer in range(len(self.weights) - 1, -1, -1):
            inputs = activations[layer]
            self.weight_grads[layer].copy_(torch.bmm(grad, inputs.transpose(1, 2)))
            self.bias_grads[layer].copy_(grad.sum(2))
            if layer > 0:
                grad = torch.bmm(self.weights[layer].transpose(1, 2), grad)
                if self.relu:
                    grad = torch.ops.aten.threshold_backward(grad, inputs, 0.0)
        return loss


class _GenericStep:
    """One step of K copies of any nn.Module through ``stacked_forward``, autograd backward."""

    def __init__(self, stacked: StackedParameters, buffers: dict[str, torch.Tensor],
                 template: torch.nn.Module, task: Any, label_smoothing: float):
        self.stacked, self.buffers = stacked, buffers
        self.forward = stacked_forward(template, train=True)
        self.task, self.label_smoothing = task, label_smoothing

    def __call__(self, x: torch.Tensor, y: Any) -> torch.Tensor:
        out = self.forward(self.stacked.tracked(), self.buffers, x)  # (K, b, ...)
        losses = self.task.loss(out, y, self.label_smoothing)  # (K,)
        self.stacked.zero_grad()
        # Each model's mean loss; summing over models keeps their gradients separate.
        losses.sum().backward()
        return losses.detach()


def stacked_forward(template: torch.nn.Module, train: bool, shared_input: bool = False):
    """f(params, buffers, x) -> logits (K, b, C) for stacked params (K, ...).

    x is (K, b, *input_shape), or (b, *input_shape) shared by all models if ``shared_input``.
    The MNIST-1D CNN (without dropout) gets batched-matmul convolutions, which are faster
    on a CPU than vmap's grouped convolutions; any other module goes through vmap.
    """
    if type(template) is CNN1d and (template.drop.p == 0 or not train):
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


def _stacked_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    conv: torch.nn.Conv1d) -> torch.Tensor:
    """K convolutions at once as one batched matmul over im2col patches.

    x: (K, C, b, L) channel-major; weight: (K, O, C, k); bias: (K, O) -> (K, O, b, L_out).
    """
    (kernel,), (stride,), (padding,) = conv.kernel_size, conv.stride, conv.padding
    n_models, channels, batch, _ = x.shape
    patches = F.pad(x, (padding, padding)).unfold(3, kernel, stride)  # (K, C, b, L_out, k)
    length = patches.shape[3]
    columns = patches.permute(0, 1, 4, 2, 3).reshape(n_models, channels * kernel,
                                                     batch * length)
    out = torch.baddbmm(bias.unsqueeze(2), weight.flatten(2), columns)  # (K, O, b * L_out)
    return out.view(n_models, -1, batch, length)


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
    return torch.baddbmm(params["linear.bias"].unsqueeze(1), features,
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
    use_stackable_convolutions(template)  # each model its own GEMMs: chunk-size invariant
    buffer_names = {name for name, _ in template.named_buffers()}
    stacked = StackedParameters({n: t for n, t in state.items() if n not in buffer_names})
    params = stacked.values
    buffers = {n: t for n, t in state.items() if n in buffer_names}
    keys = recipe.dropout_keys(config, replicates).to(device)
    for name in dropout_keys:
        buffers[name] = keys
    saved_buffers = [n for n in buffers if n not in dropout_keys]

    tensors = task.tensors(data, device)  # moved to the device once, for training and records
    fast = uses_fast_path(template, task)
    step = (_MLPStep(stacked, template, recipe_config.label_smoothing) if fast
            else _GenericStep(stacked, buffers, template, task, recipe_config.label_smoothing))
    optimizer = recipe.make_optimizer(stacked.leaves, recipe_config,
                                      model_dims={n: len(s) for n, s in stacked.shapes.items()})
    values_per_example = _values_per_example(template, task, data, input_shape)
    eval_forward = _eval_forward(template, task, params, buffers, fast)

    callbacks = list(callbacks)
    if config.record_epochs:
        callbacks.append(EpochRecords())
    schedule = {id(cb): set(callback_epochs(cb, recipe_config)) for cb in callbacks}
    before_step = [cb for cb in callbacks if hasattr(cb, "before_step")]
    collected: dict[str, list] = {}
    train_state = TrainState(0, 0, models, replicates, recipe_config, params, buffers,
                             template, task, data, tensors, eval_forward,
                             _train_forward(template, params, buffers))

    members = np.stack([np.flatnonzero(row) for row in membership])  # (K, m), sorted
    shufflers = [model_rng(config.seed, r, STREAM_SHUFFLE) for r in replicates]
    n_members = members.shape[1]
    batch_size = recipe_config.batch_size
    steps_per_epoch = -(-n_members // batch_size)
    augment = recipe.has_augmentation(recipe_config)
    epoch_losses = []
    global_step = 0

    def run_callbacks(epoch: int) -> None:
        train_state.epoch, train_state.step = epoch, global_step
        for cb in callbacks:
            if epoch in schedule[id(cb)]:
                for key, value in cb(train_state).items():
                    collected.setdefault(f"{cb.name}_{key}", []).append(_to_numpy(value))

    run_callbacks(0)
    for epoch in range(recipe_config.epochs):
        order = np.stack([row[rng.permutation(n_members)] for row, rng in zip(members, shufflers)])
        order = torch.as_tensor(order, device=device)
        rngs = [recipe.augment_rng(config, r, epoch) for r in replicates] if augment else None
        loss_sum = torch.zeros(n_models, device=device)
        for start in range(0, n_members, batch_size):
            index = order[:, start:start + batch_size]  # (K, b)
            x, y = task.batch(tensors["train"], index)
            if augment:
                x = recipe.augment_batch(x, rngs, recipe_config, transforms)
            train_state.step = global_step
            for cb in before_step:
                x, y = cb.before_step(train_state, x, y)
            recipe.set_lr(optimizer, recipe_config, global_step, steps_per_epoch)
            recipe.set_dropout_step(template, global_step)
            batch_loss = step(x.flatten(2) if fast else x, y)
            if recipe_config.clip_grad_norm > 0:
                recipe.clip_stacked_gradients(list(stacked.leaves.values()),
                                              recipe_config.clip_grad_norm)
            optimizer.step()
            global_step += 1
            loss_sum += batch_loss * index.shape[1]
        epoch_loss = (loss_sum / n_members).cpu()
        if not torch.isfinite(epoch_loss).all():
            diverged = [models[i] for i in np.flatnonzero(~torch.isfinite(epoch_loss).numpy())]
            raise ConfigError(
                f"training diverged: the loss of model(s) {diverged[:5]} became "
                f"{epoch_loss[~torch.isfinite(epoch_loss)][0].item()} in epoch {epoch + 1}; "
                f"lower the learning rate (lr={recipe_config.lr}) or use --optimizer adam"
            )
        epoch_losses.append(epoch_loss)
        run_callbacks(epoch + 1)
        if on_epoch is not None:
            on_epoch(n_models)

    arrays = {"epoch_train_loss_mean": torch.stack(epoch_losses, 1).numpy()}
    for name, parts in collected.items():
        arrays[name] = np.stack(parts, axis=1)  # (K, calls, ...)
    for split in ("train", "test"):
        for name, values in task.evaluate(eval_forward, tensors[split], n_models,
                                          values_per_example).items():
            if name == "token_correct" and split == "test":
                continue  # per-token records of the validation documents are not kept
            arrays[f"{split}_{name}"] = values.cpu().numpy()
    weights = None
    if config.save_weights:
        weights = {name: t.detach().cpu().numpy()
                   for name, t in {**params, **{n: buffers[n] for n in saved_buffers}}.items()}
    return ChunkResult(arrays, weights, time.perf_counter() - started,
                       n_models * n_members * recipe_config.epochs)


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


def _eval_forward(template: torch.nn.Module, task: Any, params: dict[str, torch.Tensor],
                  buffers: dict[str, torch.Tensor], fast: bool) -> Callable:
    """f(x shared (b, ...)) -> (K, b, ...) eval-mode outputs of the live weights."""
    if fast:
        return _mlp_shared_forward(template, params)
    vmapped = stacked_forward(template, train=False, shared_input=True)

    def forward(x: torch.Tensor) -> torch.Tensor:
        plain = {name: tensor.detach() for name, tensor in params.items()}
        return vmapped(plain, buffers, x)
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


def _mlp_shared_forward(template: MLP, params: dict[str, torch.Tensor]):
    n_layers = len(template.layers)
    relu = template.activation == "relu"

    def forward(x: torch.Tensor) -> torch.Tensor:
        n_models = params["layers.0.weight"].shape[0]
        # (K, d, b): the shared inputs as a batch, so that every model's products are its
        # own GEMMs (one GEMM over all models' rows rounds differently with K).
        hidden = x.flatten(1).T.unsqueeze(0).expand(n_models, -1, -1)
        for i in range(n_layers):
            weight, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            hidden = torch.baddbmm(bias.unsqueeze(2), weight, hidden)
            if relu and i < n_layers - 1:
                hidden.relu_()
        return hidden.transpose(1, 2)  # (K, b, C)

    return forward
