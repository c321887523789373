"""Train a chunk of K models at once, each on its own subset, and record how each one does.

Weights are *stacked*: every parameter gets a leading model axis (K, ...). A training step
gathers a different batch for every model, (K, batch, ...), runs all K models in batched
matrix products, and updates all weights with one optimizer call. Because model k's loss
depends only on model k's weights and batch, the gradient of the summed loss is, slice by
slice, each model's own gradient; elementwise optimizers (SGD, Adam) then update each
model exactly as if it were trained alone.

Two implementations of the step share everything else:

- ``_MLPStep``: hand-written forward/backward for ReLU/linear MLPs in feature-major layout,
  (K, features, batch), so that bias, softmax and ReLU passes are cheap. This is the hot path.
- ``_GenericStep``: autograd through ``stacked_forward``: batched-matmul convolutions for
  the MNIST-1D CNN, and ``torch.func.functional_call`` under ``vmap`` for any other
  ``nn.Module`` (dropout, 2-D CNNs, user models).

A dataset that brings its own ``train_chunk`` (``memlab.text.Documents``) trains its
chunks itself, reusing the pieces below; the run store and executors stay the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from memlab.data import Dataset
from memlab.errors import ConfigError
from memlab.models import MLP, CNN1d, build_model, layer_profile
from memlab.population.config import (
    STREAM_DROPOUT,
    STREAM_SHUFFLE,
    PopulationConfig,
    initial_state,
    model_rng,
    model_seed,
)

EVAL_BATCH = 2048  # examples per evaluation pass at most
EVAL_MEMORY_BYTES = 256 * 2**20  # activations of one evaluation pass, all models of a chunk


def eval_batch_size(n_models: int, activation_values: int) -> int:
    """Examples per evaluation pass so that K models' activations stay within budget."""
    per_example = 2 * 4 * n_models * max(activation_values, 1)  # float32, with temporaries
    return int(min(EVAL_BATCH, max(1, EVAL_MEMORY_BYTES // per_example)))


@dataclass
class ChunkResult:
    """Records of models [start, stop), model axis first (see store.py for the names)."""

    arrays: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] | None
    seconds: float
    model_example_steps: int


def stack_initial_weights(template: torch.nn.Module, config: PopulationConfig,
                          models: range, device: torch.device) -> dict[str, torch.Tensor]:
    """name -> (K, ...) float32 tensor of the models' initial weights."""
    states = [initial_state(template, config.seed, k) for k in models]
    return {name: torch.stack([s[name] for s in states]).to(device) for name in states[0]}


def make_optimizer(params: list[torch.Tensor], config: PopulationConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, fused=True)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                fused=True)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def uses_fast_path(template: torch.nn.Module) -> bool:
    return (isinstance(template, MLP) and template.activation in ("relu", "linear")
            and template.dropout == 0)


class _MLPStep:
    """One SGD step of K ReLU MLPs, forward and backward by hand (no autograd graph)."""

    def __init__(self, params: dict[str, torch.Tensor], template: MLP, label_smoothing: float):
        n_layers = len(template.layers)
        self.weights = [params[f"layers.{i}.weight"] for i in range(n_layers)]  # (K, out, in)
        self.biases = [params[f"layers.{i}.bias"] for i in range(n_layers)]  # (K, out)
        self.relu = template.activation == "relu"
        self.label_smoothing = label_smoothing

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (K, b, d) inputs, y: (K, b) labels. Sets .grad on every parameter and
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
            self.weights[layer].grad = torch.bmm(grad, inputs.transpose(1, 2))
            self.biases[layer].grad = grad.sum(2)
            if layer > 0:
                grad = torch.bmm(self.weights[layer].transpose(1, 2), grad)
                if self.relu:
                    grad = torch.ops.aten.threshold_backward(grad, inputs, 0.0)
        return loss


class _GenericStep:
    """One step of K copies of any nn.Module through ``stacked_forward``, autograd backward."""

    def __init__(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 template: torch.nn.Module, label_smoothing: float):
        for tensor in params.values():
            tensor.requires_grad_(True)
        self.params, self.buffers = params, buffers
        self.forward = stacked_forward(template, train=True)
        self.label_smoothing = label_smoothing

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.forward(self.params, self.buffers, x)  # (K, b, C)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none",
                                 label_smoothing=self.label_smoothing).view(y.shape)
        for tensor in self.params.values():
            tensor.grad = None
        # Each model's mean loss; summing over models keeps their gradients separate.
        losses.mean(1).sum().backward()
        return losses.detach().mean(1)


def stacked_forward(template: torch.nn.Module, train: bool, shared_input: bool = False):
    """f(params, buffers, x) -> logits (K, b, C) for stacked params (K, ...).

    x is (K, b, *input_shape), or (b, *input_shape) shared by all models if ``shared_input``.
    The MNIST-1D CNN (without dropout) gets batched-matmul convolutions, which are faster
    on a CPU than vmap's grouped convolutions; any other module goes through vmap.
    """
    if isinstance(template, CNN1d) and (template.drop.p == 0 or not train):
        def cnn1d(params, buffers, x):
            if shared_input:
                x = x.expand(next(iter(params.values())).shape[0], *x.shape)
            return _stacked_cnn1d(template, params, x)
        return cnn1d

    base = template.train(train)

    def one_model(params, buffers, x):
        return functional_call(base, (params, buffers), (x,))

    in_dims = (0, 0, None if shared_input else 0)
    return vmap(one_model, in_dims=in_dims, randomness="different" if train else "error")


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


@torch.no_grad()
def evaluate(template: torch.nn.Module, params: dict[str, torch.Tensor],
             buffers: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
             ) -> dict[str, torch.Tensor]:
    """Per-model, per-example records on (x, y) shared by all models.

    Returns correct (K, N) bool, margin (K, N) float32 (true-class logit minus the largest
    other logit; > 0 iff correct), loss (K, N) float32 (cross-entropy, nats), pred (K, N),
    logodds (K, N) float32: log p_y / (1 - p_y) = z_y - log sum_{y' != y} exp z_y', the
    logit-scaled confidence of LiRA and the "margin" of TRAK / datamodels, computed from the
    logits (never from a rounded loss, which loses it for confident examples).
    """
    if uses_fast_path(template):
        forward = _mlp_shared_forward(template, params)
    else:
        plain = {name: tensor.detach() for name, tensor in params.items()}
        vmapped = stacked_forward(template, train=False, shared_input=True)

        def forward(batch):
            return vmapped(plain, buffers, batch)
    n_models = next(iter(params.values())).shape[0]
    batch = eval_batch_size(n_models, layer_profile(template, tuple(x.shape[1:]))[1])
    outputs = {"correct": [], "margin": [], "loss": [], "pred": [], "logodds": []}
    for start in range(0, len(y), batch):
        # Class-major (K, C, b): reductions over a short last axis are slow on CPU.
        logits = forward(x[start:start + batch]).transpose(1, 2).contiguous()
        labels = y[start:start + batch].expand(logits.shape[0], -1).unsqueeze(1)
        true_logit = logits.gather(1, labels).squeeze(1)
        others = logits.scatter(1, labels, float("-inf"))
        pred = _argmax_over_classes(logits)
        top = logits.amax(1, keepdim=True)
        log_partition = top.squeeze(1) + (logits - top).exp_().sum(1).log_()
        outputs["correct"].append(pred == labels.squeeze(1))
        outputs["margin"].append(true_logit - others.amax(1))
        outputs["loss"].append(log_partition - true_logit)
        outputs["pred"].append(pred.to(torch.int16))
        other_top = others.amax(1, keepdim=True)
        log_others = other_top.squeeze(1) + (others - other_top).exp_().sum(1).log_()
        outputs["logodds"].append(true_logit - log_others)
    return {name: torch.cat(parts, dim=1) for name, parts in outputs.items()}


def _argmax_over_classes(logits: torch.Tensor) -> torch.Tensor:
    """argmax over axis 1 of (K, C, b), first index on ties, like torch.argmax; a pass per
    class is ~10x faster on CPU than argmax's reduction over a non-contiguous axis."""
    best = logits[:, 0].clone()
    pred = torch.zeros_like(best, dtype=torch.long)
    for c in range(1, logits.shape[1]):
        better = logits[:, c] > best
        pred.masked_fill_(better, c)
        torch.maximum(best, logits[:, c], out=best)
    return pred


def _mlp_shared_forward(template: MLP, params: dict[str, torch.Tensor]):
    n_layers = len(template.layers)
    relu = template.activation == "relu"

    def forward(x: torch.Tensor) -> torch.Tensor:
        hidden = x.flatten(1).T  # (d, b), shared: the first layer is one GEMM for all models
        for i in range(n_layers):
            weight, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            if i == 0:
                hidden = torch.matmul(weight, hidden).add_(bias.unsqueeze(2))  # (K, out, b)
            else:
                hidden = torch.baddbmm(bias.unsqueeze(2), weight, hidden)
            if relu and i < n_layers - 1:
                hidden.relu_()
        return hidden.transpose(1, 2)  # (K, b, C)

    return forward


@torch.random.fork_rng(devices=[])  # dropout reseeds torch's CPU RNG: leave the caller's intact
def train_chunk(dataset: Dataset, config: PopulationConfig, models: range,
                membership: np.ndarray, device: str | torch.device = "cpu",
                on_epoch: Callable[[int], None] | None = None) -> ChunkResult:
    """Train models ``models`` (a range of model indices) and record their behaviour.

    membership: (K, n_train) bool rows of the population's membership mask for these models.
    on_epoch: called with K after every epoch (for progress bars).

    A dataset that brings its own trainer, ``dataset.train_chunk(config, models, membership,
    device, on_epoch) -> ChunkResult`` (language models: memlab.text.Documents), is trained
    by it; the executors, run store and resumption stay the same for every task.
    """
    own_trainer = getattr(dataset, "train_chunk", None)
    if own_trainer is not None:
        return own_trainer(config, models, membership, device=device, on_epoch=on_epoch)
    started = time.perf_counter()
    device = torch.device(device)
    template = build_model(config.model, dataset.input_shape, dataset.n_classes,
                           **config.model_kwargs)
    params = stack_initial_weights(template, config, models, device)
    buffers = {name: tensor.to(device) for name, tensor in template.named_buffers()}
    buffers = {name: tensor.expand(len(models), *tensor.shape).clone()
               for name, tensor in buffers.items()}
    for name in buffers:
        params.pop(name, None)

    splits = _splits(dataset, device)  # moved to the device once, for training and records
    x_train, y_train = splits["train"]
    fast = uses_fast_path(template)
    step = (_MLPStep(params, template, config.label_smoothing) if fast
            else _GenericStep(params, buffers, template, config.label_smoothing))
    x_steps = x_train.flatten(1) if fast else x_train
    optimizer = make_optimizer(list(params.values()), config)

    members = np.stack([np.flatnonzero(row) for row in membership])  # (K, m), sorted
    shufflers = [model_rng(config.seed, k, STREAM_SHUFFLE) for k in models]
    n_members = members.shape[1]
    records: dict[str, list] = {"epoch_train_loss_mean": []}
    epoch_records: dict[str, list] = {}
    # Dropout masks come from torch's global RNG: seed it per chunk for repeatability.
    torch.manual_seed(model_seed(config.seed, models.start, STREAM_DROPOUT))

    for epoch in range(config.epochs):
        order = np.stack([row[rng.permutation(n_members)] for row, rng in zip(members, shufflers)])
        order = torch.as_tensor(order, device=device)
        loss_sum = torch.zeros(len(models), device=device)
        for start in range(0, n_members, config.batch_size):
            batch_index = order[:, start:start + config.batch_size]  # (K, b)
            flat_index = batch_index.flatten()  # index_select is much cheaper than x[2-D index]
            x_batch = x_steps.index_select(0, flat_index).view(
                *batch_index.shape, *x_steps.shape[1:])
            y_batch = y_train.index_select(0, flat_index).view(batch_index.shape)
            batch_loss = step(x_batch, y_batch)
            optimizer.step()
            loss_sum += batch_loss * batch_index.shape[1]
        epoch_loss = (loss_sum / n_members).cpu()
        if not torch.isfinite(epoch_loss).all():
            diverged = [models[i] for i in np.flatnonzero(~torch.isfinite(epoch_loss).numpy())]
            raise ConfigError(
                f"training diverged: the loss of model(s) {diverged[:5]} became "
                f"{epoch_loss[~torch.isfinite(epoch_loss)][0].item()} in epoch {epoch + 1}; "
                f"lower the learning rate (lr={config.lr}) or use --optimizer adam"
            )
        records["epoch_train_loss_mean"].append(epoch_loss)
        if config.record_epochs:
            for split, (x, y) in splits.items():
                result = evaluate(template, params, buffers, x, y)
                epoch_records.setdefault(f"epoch_{split}_correct", []).append(result["correct"])
                epoch_records.setdefault(f"epoch_{split}_loss", []).append(
                    result["loss"].to(torch.float16))
        if on_epoch is not None:
            on_epoch(len(models))

    arrays = {"epoch_train_loss_mean": torch.stack(records["epoch_train_loss_mean"], 1)}
    for name, parts in epoch_records.items():
        arrays[name] = torch.stack(parts, dim=1)  # (K, epochs, N)
    for split, (x, y) in splits.items():
        for name, values in evaluate(template, params, buffers, x, y).items():
            arrays[f"{split}_{name}"] = values
    arrays = {name: value.cpu().numpy() for name, value in arrays.items()}
    weights = None
    if config.save_weights:
        weights = {name: t.detach().cpu().numpy() for name, t in {**params, **buffers}.items()}
    return ChunkResult(arrays, weights, time.perf_counter() - started,
                       len(models) * n_members * config.epochs)


def _splits(dataset: Dataset, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        "train": (torch.as_tensor(dataset.x_train, device=device),
                  torch.as_tensor(dataset.y_train, device=device)),
        "test": (torch.as_tensor(dataset.x_test, device=device),
                 torch.as_tensor(dataset.y_test, device=device)),
    }
