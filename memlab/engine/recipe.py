"""The training recipe's parts, each drawing randomness only from a model's own streams.

- optimizers with parameter groups (no weight decay on biases and norms) and Nesterov;
- learning-rate schedules, closed forms evaluated at every optimizer step;
- per-model gradient clipping on stacked gradients;
- augmentations: parameters drawn per model from ``SeedSequence([seed, replicate,
  STREAM_AUGMENT, epoch])``, applied to the stacked batch at once;
- dropout whose masks come from a counter-based hash of (model key, layer, step, position),
  so model k's masks are the same in a chunk of 1 or of 64 (vmap's own randomness is not).

A plain one-model PyTorch loop reproduces an engine model exactly by calling the same
functions (tests/test_engine.py does, against torch.optim and torch.optim.lr_scheduler).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from memlab.engine.config import (
    STREAM_AUGMENT,
    STREAM_DROPOUT,
    PopulationConfig,
    model_seed,
)
from memlab.errors import ConfigError

# ------------------------------------------------------------------ optimizer and schedule


def parameter_groups(params: dict[str, torch.Tensor], config: PopulationConfig,
                     model_dims: dict[str, int]) -> list[dict]:
    """One group, or (with ``decay_bias_and_norm=False``) a second group without weight
    decay for every parameter with one dimension per model (biases, norm weights).
    ``model_dims``: name -> dimensions of one model's parameter."""
    if config.decay_bias_and_norm or config.weight_decay == 0:
        return [{"params": list(params.values())}]
    decay = [t for n, t in params.items() if model_dims[n] > 1]
    no_decay = [t for n, t in params.items() if model_dims[n] <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class FusedOptimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over the stacked leaves, calling the fused
    kernels that ``torch.optim``'s ``fused=True`` optimizers call (``torch._fused_sgd_``,
    ``_fused_adam_``, ``_fused_adamw_``), with their defaults: the same updates bit for bit
    (tests/test_engine.py compares against torch.optim).

    Why not torch.optim itself: constructing any torch.optim optimizer imports
    ``torch._dynamo`` (measured 1.4 s), once in every worker process. The engine trains
    a chunk from scratch and never saves optimizer state, so the optimizer needs no
    ``state_dict``. ``param_groups`` is a list of dicts with ``params`` and ``lr`` like
    torch's, so schedules and ``torch.amp.GradScaler`` work unchanged.
    """

    def __init__(self, groups: list[dict], config: PopulationConfig):
        self.kind = config.optimizer
        if self.kind == "sgd" and config.nesterov and config.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0")
        self.momentum, self.nesterov = config.momentum, config.nesterov
        self.betas, self.eps = (0.9, 0.999), 1e-8  # torch.optim.Adam/AdamW defaults
        self.param_groups = [{"lr": config.lr, "weight_decay": config.weight_decay, **group}
                             for group in groups]
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        self.first_step = True

    def _buffers(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state.get(id(param))
        if state is None:
            if self.kind == "sgd":  # the momentum buffer: the first step copies the gradient
                state = {"momentum": torch.empty_like(param)}
            else:
                state = {"exp_avg": torch.zeros_like(param),
                         "exp_avg_sq": torch.zeros_like(param),
                         "step": torch.zeros((), dtype=torch.float32, device=param.device)}
            self.state[id(param)] = state
        return state

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self._buffers(p) for p in params]
            if self.kind == "sgd":
                torch._fused_sgd_(
                    params, grads, [s["momentum"] for s in states] if self.momentum else [],
                    weight_decay=group["weight_decay"], momentum=self.momentum,
                    lr=group["lr"], dampening=0.0, nesterov=self.nesterov, maximize=False,
                    is_first_step=self.first_step and self.momentum != 0,
                    grad_scale=None, found_inf=None)
                continue
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            fused = torch._fused_adam_ if self.kind == "adam" else torch._fused_adamw_
            fused(params, grads, [s["exp_avg"] for s in states],
                  [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False,
                  lr=group["lr"], beta1=self.betas[0], beta2=self.betas[1],
                  weight_decay=group["weight_decay"], eps=self.eps, maximize=False,
                  grad_scale=None, found_inf=None)
        self.first_step = False


def make_optimizer(params: dict[str, torch.Tensor], config: PopulationConfig,
                   model_dims: dict[str, int], fused: bool = True
                   ) -> FusedOptimizer | torch.optim.Optimizer:
    """The recipe's optimizer (SGD with momentum / Nesterov, Adam or AdamW) over the
    engine's stacked parameter leaves (see engine.StackedParameters: fused kernels are
    bit-invariant to the number of models only on its padded rows). ``fused=False``: the
    torch.optim optimizer with its default (for-each) kernels, for reference loops."""
    groups = parameter_groups(params, config, model_dims)
    if fused:
        return FusedOptimizer(groups, config)
    options = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        if config.nesterov and config.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0")
        return torch.optim.SGD(groups, momentum=config.momentum, nesterov=config.nesterov,
                               **options)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, **options)
    return torch.optim.AdamW(groups, **options)


def lr_factor(config: PopulationConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based) as a fraction of ``config.lr``."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":
        return config.lr_gamma ** (step // (config.lr_step_epochs * steps_per_epoch))
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / total))
    if config.schedule in ("warmup_cosine", "warmup_linear"):
        warmup = max(1, int(round(config.warmup_epochs * steps_per_epoch)))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if config.schedule == "warmup_linear":
            return max(0.0, 1 - progress)
        return 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "onecycle":
        # torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, total_steps, pct_start=0.3,
        # anneal_strategy="cos", div_factor=25, final_div_factor=1e4), as a closed form.
        initial, final = 1 / 25, 1 / 25 / 1e4
        up_end = float(0.3 * total) - 1
        if step <= up_end:
            pct, start, end = step / up_end, initial, 1.0
        else:
            pct, start, end = (step - up_end) / (total - 1 - up_end), 1.0, final
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)
    raise ConfigError(f"unknown schedule {config.schedule!r}")


def set_lr(optimizer: torch.optim.Optimizer, config: PopulationConfig, step: int,
           steps_per_epoch: int) -> None:
    lr = config.lr * lr_factor(config, step, steps_per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def clip_stacked_gradients(params: list[torch.Tensor], max_norm: float) -> None:
    """Scale each model's gradient (slice k of every stacked parameter) to L2 norm at most
    ``max_norm``, with ``torch.nn.utils.clip_grad_norm_``'s formula per model."""
    grads = [p.grad for p in params if p.grad is not None]
    squares = sum(g.pow(2).flatten(1).sum(1) for g in grads)  # (K,)
    coef = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))


# ------------------------------------------------------------------ augmentation


def augment_rng(config: PopulationConfig, replicate: int, epoch: int) -> np.random.Generator:
    """Model (replicate)'s augmentation stream for one epoch."""
    return np.random.default_rng([config.seed, replicate, STREAM_AUGMENT, epoch])


def has_augmentation(config: PopulationConfig) -> bool:
    return bool(config.augment) or config.input_noise > 0 or config.input_dropout > 0


BUILTIN_AUGMENTATIONS = ("crop", "flip", "shift")


def load_transform(spec: str) -> Callable:
    """The user function named ``package.module:function`` in ``augment``."""
    from memlab.models import resolve_factory

    try:
        return resolve_factory(spec)
    except ConfigError as error:
        raise ConfigError(f"unknown augmentation {spec!r}: use crop:P, flip, shift:S, "
                          f"package.module:function, or pass transforms={{{spec!r}: fn}} "
                          f"({error})") from None


def resolve_transforms(config: PopulationConfig,
                       given: dict[str, Callable] | None) -> dict[str, Callable]:
    """Every user augmentation of the config, from ``given`` or imported (fails early)."""
    resolved = dict(given or {})
    for spec in config.augment:
        if spec.partition(":")[0] not in BUILTIN_AUGMENTATIONS and spec not in resolved:
            resolved[spec] = load_transform(spec)
    return resolved


def code_modules(model: str, augment: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The modules outside memlab that building a recipe's models would import and run:
    its model's ``package.module:factory`` and its ``package.module:function``
    augmentations, once each, in order. Empty for registered names, memlab's own code and
    the built-in augmentations (:func:`memlab.models.code_module`)."""
    from memlab.models import code_module

    names = [model, *(spec for spec in augment if isinstance(spec, str)
                      and spec.partition(":")[0] not in BUILTIN_AUGMENTATIONS)]
    return list(dict.fromkeys(m for m in map(code_module, names) if m))


def augment_batch(x: torch.Tensor, rngs: list[np.random.Generator], config: PopulationConfig,
                  transforms: dict[str, Callable] | None = None) -> torch.Tensor:
    """Augment a stacked batch x (K, b, *input_shape), model k's draws from ``rngs[k]``.

    Each model's draws are made in a fixed order (augmentations as listed, then input
    noise, then input dropout), so they do not depend on the other models of the chunk.
    ``transforms``: resolved user functions for ``package.module:function`` entries.
    """
    n_models, batch = x.shape[:2]
    shape = tuple(x.shape[2:])
    for spec in config.augment:
        name, _, arg = spec.partition(":")
        if name == "crop":
            x = _random_crop(x, int(arg), [r.integers(0, 2 * int(arg) + 1, (batch, 2))
                                           for r in rngs])
        elif name == "flip":
            if len(shape) < 2:
                raise ConfigError(f"'flip' needs image inputs (C, H, W), got shape {shape}")
            flips = torch.as_tensor(np.stack([r.random(batch) < 0.5 for r in rngs]),
                                    device=x.device)
            x = torch.where(flips.view(n_models, batch, *[1] * len(shape)), x.flip(-1), x)
        elif name == "shift":
            limit = int(arg)
            shifts = np.stack([r.integers(-limit, limit + 1, batch) for r in rngs])
            x = _circular_shift(x, torch.as_tensor(shifts, device=x.device))
        else:
            fn = (transforms or {}).get(spec) or load_transform(spec)
            x = torch.stack([_user_transform(fn, spec, x[k], rngs[k])
                             for k in range(n_models)])
    if config.input_noise > 0:
        noise = np.stack([r.standard_normal((batch, *shape), dtype=np.float32) for r in rngs])
        x = x + config.input_noise * torch.as_tensor(noise, device=x.device)
    if config.input_dropout > 0:
        keep = np.stack([r.random((batch, *shape), dtype=np.float32) for r in rngs])
        keep = torch.as_tensor(keep >= config.input_dropout, device=x.device)
        x = x * keep / (1 - config.input_dropout)
    return x


def _user_transform(fn: Callable, spec: str, x: torch.Tensor,
                    rng: np.random.Generator) -> torch.Tensor:
    try:
        out = fn(x, rng)
    except Exception as error:  # the user's code: one line
        raise ConfigError(f"augmentation {spec!r} raised {type(error).__name__}: {error}"
                          ) from None
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise ConfigError(f"augmentation {spec!r} must return a tensor of shape "
                          f"{tuple(x.shape)}, got {getattr(out, 'shape', type(out).__name__)}")
    return out


def _random_crop(x: torch.Tensor, pad: int, offsets: list[np.ndarray]) -> torch.Tensor:
    """x (K, b, C, H, W) zero-padded by ``pad``, cropped back at per-example offsets."""
    if x.dim() != 5:
        raise ConfigError(f"'crop' needs image inputs (C, H, W), got shape {tuple(x.shape[2:])}")
    n_models, batch, channels, height, width = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    off = torch.as_tensor(np.stack(offsets), device=x.device)  # (K, b, 2): (dy, dx)
    rows = off[..., 0, None] + torch.arange(height, device=x.device)  # (K, b, H)
    cols = off[..., 1, None] + torch.arange(width, device=x.device)  # (K, b, W)
    k = torch.arange(n_models, device=x.device).view(-1, 1, 1, 1)
    j = torch.arange(batch, device=x.device).view(1, -1, 1, 1)
    channels_last = padded.permute(0, 1, 3, 4, 2)  # (K, b, H+2p, W+2p, C)
    out = channels_last[k, j, rows[:, :, :, None], cols[:, :, None, :]]  # (K, b, H, W, C)
    return out.permute(0, 1, 4, 2, 3).contiguous()


def _circular_shift(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Roll the last axis of x (K, b, ..., L) by shifts (K, b) steps."""
    length = x.shape[-1]
    index = (torch.arange(length, device=x.device) - shifts[..., None]) % length  # (K, b, L)
    index = index.view(*shifts.shape, *[1] * (x.dim() - 3), length).expand(x.shape)
    return x.gather(-1, index)


# ------------------------------------------------------------------ dropout from model streams

_MIX = (-7046029254386353131, -4658895280553007687, -7723592293110705685)  # SplitMix64


def _logical_shift(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def stream_uniform(key: torch.Tensor, layer: int, step: int, shape: tuple[int, ...],
                   device: torch.device | None = None) -> torch.Tensor:
    """Uniform [0, 1) float32 of ``shape`` from a hash of (key, layer, step, position):
    SplitMix64's finalizer over a counter. Works per model under vmap (``key`` batched)."""
    counter = torch.arange(1, math.prod(shape) + 1, dtype=torch.int64, device=device)
    mix = torch.tensor(_MIX, dtype=torch.int64, device=device)
    offset = torch.tensor(_wrap((layer * 1_000_003 + step) * _MIX[2]), dtype=torch.int64,
                          device=device)
    # SplitMix64: a state seeded by a hash of (key, layer, step), advanced by the golden
    # ratio increment once per position, each output passed through the finalizer.
    state = _finalize(key * mix[0] + offset, mix)
    z = _finalize(state + counter.view(shape) * mix[0], mix)
    return _logical_shift(z, 40).to(torch.float32) / float(1 << 24)


def _finalize(z: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    z = (z ^ _logical_shift(z, 30)) * mix[1]
    z = (z ^ _logical_shift(z, 27)) * mix[2]
    return z ^ _logical_shift(z, 31)


def _wrap(value: int) -> int:
    """A Python int as the signed 64-bit integer with the same low 64 bits."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


class StreamDropout(nn.Module):
    """nn.Dropout with masks from the model's own stream (see module docstring).

    ``key`` is a per-model buffer (not saved in state dicts); ``step`` is set by the
    training loop before each step, the same for every model.
    """

    def __init__(self, p: float, layer: int):
        super().__init__()
        self.p, self.layer, self.step = float(p), layer, 0
        self.register_buffer("key", torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = stream_uniform(self.key, self.layer, self.step, tuple(x.shape), x.device)
        return x * (keep >= self.p).to(x.dtype) / (1 - self.p)


def use_stream_dropout(module: nn.Module) -> list[str]:
    """Replace every nn.Dropout in ``module`` (in place) by a StreamDropout; returns the
    names of their key buffers. Other random modules (AlphaDropout, Dropout2d...) are
    refused: their masks would come from torch's global RNG."""
    names = []
    for index, (name, child) in enumerate(
            [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Dropout)]):
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, StreamDropout(child.p, index))
        names.append(f"{name}.key")
    for name, child in module.named_modules():
        if isinstance(child, nn.modules.dropout._DropoutNd) and not isinstance(
                child, nn.Dropout | StreamDropout):
            raise ConfigError(f"module {name} ({type(child).__name__}) draws from torch's "
                              "global RNG, which would make a model depend on its chunk; use "
                              "nn.Dropout")
    return names


def dropout_keys(config: PopulationConfig, replicates: list[int]) -> torch.Tensor:
    """(K,) int64 dropout keys of the models (from their STREAM_DROPOUT seeds)."""
    return torch.tensor([model_seed(config.seed, r, STREAM_DROPOUT) for r in replicates],
                        dtype=torch.int64)


def set_dropout_step(module: nn.Module, step: int) -> None:
    for child in module.modules():
        if isinstance(child, StreamDropout):
            child.step = step
