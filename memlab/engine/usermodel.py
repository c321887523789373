"""What a user's model may do under stacking, and what the engine does to support it.

The generic path trains K copies of a module at once through ``functional_call`` under
``vmap`` (``loop.stacked_forward``). Three things a plain PyTorch model may do need care:

- **tied weights** (one Parameter registered under two names, e.g. an embedding shared
  with the output layer): the engine stacks it once, under its first name
  (``named_parameters()``'s order), and ``functional_call`` (``tie_weights=True``) gives it
  to every name; weights are saved under that name only, and
  :func:`with_tied_aliases` restores the other names before ``load_state_dict``.
- **frozen parameters** (``requires_grad=False``): stacked like buffers (model k keeps its
  own values, saved with its weights) and never updated; a model with no trainable
  parameter is refused before training (``memlab.engine.probe``).
- **randomness in forward** (``torch.randn_like``, ``torch.rand``, ``F.dropout``...): under
  ``vmap`` torch's RNG would draw one tensor for the whole chunk, so model k's draws would
  depend on its chunk. :func:`use_stream_randomness` instead gives a model that draws
  random numbers a :class:`StreamRandom` mode, which answers the supported random functions
  from the model's own dropout stream (``recipe.stream_uniform``: a hash of the model's
  key, the training step and a per-forward draw counter). Model k's noise is then the same
  bits in a chunk of 1 or 64, and the same for the same seed. Other random functions are
  refused by ``vmap`` (``randomness="error"``) and reported in one line.
"""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from memlab.engine import recipe
from memlab.errors import ConfigError

# ------------------------------------------------------------------ tied and frozen weights


def stacking_names(template: nn.Module) -> tuple[list[str], list[str]]:
    """(trained, fixed): the names of the template's state the engine stacks and trains
    (parameters with requires_grad, each tied parameter once), and those it stacks and
    passes along unchanged (frozen parameters, buffers)."""
    trained, fixed = [], []
    for name, parameter in template.named_parameters():  # (tied: the first name only)
        (trained if parameter.requires_grad else fixed).append(name)
    fixed += [name for name, _ in template.named_buffers()]
    return trained, fixed


def tied_aliases(module: nn.Module) -> dict[str, str]:
    """alias -> name: the state-dict names that hold the same tensor as an earlier name
    (tied weights; a submodule registered twice)."""
    first: dict[int, str] = {}
    aliases = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        seen = first.setdefault(id(tensor), name)
        if seen != name:
            aliases[name] = seen
    return aliases


def with_tied_aliases(module: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (saved by the engine: each tied tensor under its first name) with every
    alias of ``module`` filled in, ready for ``module.load_state_dict(state)``."""
    state = dict(state)
    for alias, name in tied_aliases(module).items():
        if alias not in state and name in state:
            state[alias] = state[name]
    return state


def frozen_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters with requires_grad=False (the engine never updates them)."""
    return [name for name, p in module.named_parameters() if not p.requires_grad]


# ------------------------------------------------------------------ randomness in forward

HOLDER = "_memlab_stream_random"  # the submodule holding a random model's key and step
DRAW_LAYERS = 1 << 20  # stream_uniform "layers" of forward draws: after StreamDropout's


class StreamRandomness(recipe.StreamDropout):
    """Holds a model's key (a per-model buffer, like StreamDropout's) and the training step
    for :class:`StreamRandom`. A StreamDropout with p > 0 so that the loop sets its step
    as it does every dropout layer's; as a module it is the identity (a root
    ``nn.Sequential`` calls every child)."""

    def __init__(self):
        super().__init__(p=1.0, layer=DRAW_LAYERS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class StreamRandom(TorchFunctionMode):
    """While active, the supported random functions draw from ``key``'s stream at ``step``
    (the n-th draw of a forward from layer ``DRAW_LAYERS + n``); under vmap ``key`` is each
    model's own. Uniforms have 24 random bits; normals come from two uniforms
    (Box-Muller), so they never exceed about 5.8 standard deviations."""

    def __init__(self, key: torch.Tensor, step: int):
        super().__init__()
        self.key, self.step, self.draws = key, step, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        draw = _DRAWS.get(func)
        if draw is None:
            return func(*args, **kwargs)
        if kwargs.get("generator") is not None:
            raise ConfigError(f"the model calls {_name(func)} with its own generator=, which "
                              "would give every model of a chunk the same stream; leave "
                              "generator= out (memlab draws from each model's own stream)")
        kwargs.pop("generator", None)
        return draw(self, *args, **kwargs)

    def uniform(self, shape, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        self.draws += 1
        device = self.key.device if device is None else torch.device(device)
        u = recipe.stream_uniform(self.key, DRAW_LAYERS + self.draws, self.step,
                                  tuple(int(s) for s in shape), device)
        return u.to(dtype or torch.get_default_dtype())

    def normal(self, shape, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        radius = torch.sqrt(-2 * torch.log1p(-self.uniform(shape, torch.float32, device)))
        angle = 2 * math.pi * self.uniform(shape, torch.float32, device)
        return (radius * torch.cos(angle)).to(dtype or torch.get_default_dtype())


def _size(args: tuple, kwargs: dict) -> tuple[int, ...]:
    size = kwargs.pop("size", None)
    if size is None:
        size = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
    return tuple(size)


def _factory(kind: str) -> Callable:
    def draw(mode: StreamRandom, *args, dtype=None, device=None, requires_grad=False,
             **kwargs):
        shape = _size(args, kwargs)
        out = getattr(mode, kind)(shape, dtype, device)
        return out.requires_grad_() if requires_grad else out
    return draw


def _like(kind: str) -> Callable:
    def draw(mode: StreamRandom, input: torch.Tensor, dtype=None, device=None,
             requires_grad=False, **kwargs):
        out = getattr(mode, kind)(input.shape, dtype or input.dtype, device or input.device)
        return out.requires_grad_() if requires_grad else out
    return draw


def _normal(mode: StreamRandom, mean=0.0, std=1.0, size=None, *, out=None, dtype=None,
            device=None, **kwargs):
    tensors = [t for t in (mean, std) if isinstance(t, torch.Tensor)]
    shape = tuple(size) if size is not None else torch.broadcast_shapes(
        *[t.shape for t in tensors])
    dtype = dtype or (tensors[0].dtype if tensors else None)
    device = device or (tensors[0].device if tensors else None)
    return mean + std * mode.normal(shape, dtype, device)


def _bernoulli(mode: StreamRandom, input: torch.Tensor, p=None, **kwargs):
    p = input if p is None else p
    return (mode.uniform(input.shape, torch.float32, input.device) < p).to(input.dtype)


def _normal_(mode: StreamRandom, self: torch.Tensor, mean=0.0, std=1.0, **kwargs):
    return self.copy_(mean + std * mode.normal(self.shape, self.dtype, self.device))


def _uniform_(mode: StreamRandom, self: torch.Tensor, a=0.0, b=1.0, **kwargs):
    a, b = kwargs.pop("from", a), kwargs.pop("to", b)
    return self.copy_(a + (b - a) * mode.uniform(self.shape, self.dtype, self.device))


def _bernoulli_(mode: StreamRandom, self: torch.Tensor, p=0.5, **kwargs):
    return self.copy_(_bernoulli(mode, self, p))


def _dropout(mode: StreamRandom, input: torch.Tensor, p: float = 0.5, training: bool = True,
             inplace: bool = False):
    if not training or p == 0:
        return input
    keep = (mode.uniform(input.shape, torch.float32, input.device) >= p).to(input.dtype)
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return input.mul_(keep * scale) if inplace else input * keep * scale


_DRAWS: dict[Any, Callable] = {
    torch.rand: _factory("uniform"), torch.randn: _factory("normal"),
    torch.rand_like: _like("uniform"), torch.randn_like: _like("normal"),
    torch.normal: _normal, torch.bernoulli: _bernoulli,
    torch.Tensor.normal_: _normal_, torch.Tensor.uniform_: _uniform_,
    torch.Tensor.bernoulli_: _bernoulli_, F.dropout: _dropout,
}
SUPPORTED = ("torch.rand", "torch.randn", "torch.rand_like", "torch.randn_like",
             "torch.normal", "torch.bernoulli", "Tensor.normal_", "Tensor.uniform_",
             "Tensor.bernoulli_", "F.dropout", "nn.Dropout")


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


class _Recorder(TorchFunctionMode):
    """Notes whether a forward calls one of the supported random functions."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen = self.seen or func in _DRAWS
        return func(*args, **(kwargs or {}))


def draws_randomness(template: nn.Module, sample: torch.Tensor) -> bool:
    """Whether a training-mode forward of (a copy of) ``template`` on ``sample`` calls a
    supported random function (False when the forward fails: the step reports that)."""
    module = copy.deepcopy(template).train()
    recorder = _Recorder()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), recorder:
            module(sample)
    except Exception:
        return False
    return recorder.seen


def _forward_from_streams(self: nn.Module, *args, **kwargs):
    holder = self._modules[HOLDER]
    with StreamRandom(holder.key, holder.step):
        return type(self).forward(self, *args, **kwargs)


def use_stream_randomness(template: nn.Module, task: Any, data: Any) -> list[str]:
    """If ``template`` (a user's model) draws random numbers in forward, make (in place)
    its draws come from each model's own stream; returns the key buffer's name to fill
    with the models' keys (as ``recipe.use_stream_dropout`` does), or []."""
    if type(template).__module__.startswith("memlab.") or HOLDER in template._modules:
        return []
    try:
        x, _ = task.batch(task.tensors(data, torch.device("cpu"))["train"],
                          torch.arange(2).view(1, 2))
    except Exception:
        return []
    if not draws_randomness(template, x[0]):
        return []
    template.add_module(HOLDER, StreamRandomness())
    # An instance attribute: nn.Module.__call__ (and so functional_call) calls it, a deep
    # copy of the template rebinds it to the copy.
    template.forward = types.MethodType(_forward_from_streams, template)
    return [f"{HOLDER}.key"]
