"""The built-in architectures: ordinary ``nn.Module``s, trainable one at a time or as a population.

- ``mlp``: fully connected, ReLU (MNIST-1D default: 40-100-100-10).
- ``cnn1d``: the MNIST-1D paper's 1-D CNN (3 conv layers of 25 channels, stride 2).
- ``cnn2d``: a small 2-D CNN for image data (digits, MNIST).

Every model takes inputs of shape (batch, *input_shape) and returns logits (batch, n_classes).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from memlab.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "linear": nn.Identity, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Flatten, then Linear layers with an activation between them (none after the last).

    ``activation="linear"`` gives the *linear twin* used as a control in elasticity studies.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int,
                 hidden: tuple[int, ...] = (100, 100), activation: str = "relu",
                 dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout}")
        self.activation = activation
        self.dropout = dropout
        widths = [math.prod(input_shape), *hidden, n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.drop(self.act(layer(x)))
        return self.layers[-1](x)


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class CNN1d(nn.Module):
    """The MNIST-1D paper's ConvBase: Conv1d(1→c, 5, stride 2) and two Conv1d(c→c, 3, stride 2),
    ReLU after each, then a Linear read-out. Inputs (batch, length) or (batch, 1, length)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, channels: int = 25,
                 dropout: float = 0.0):
        super().__init__()
        length = input_shape[-1]
        in_channels = input_shape[0] if len(input_shape) == 2 else 1
        self.conv1 = nn.Conv1d(in_channels, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        for kernel in (5, 3, 3):
            length = _conv_out(length, kernel, 2, 1)
        if length < 1:
            raise ConfigError(f"inputs of shape {input_shape} are too short for CNN1d")
        self.linear = nn.Linear(channels * length, n_classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.drop(torch.relu(self.conv3(x)))
        return self.linear(x.flatten(1))


class CNN2d(nn.Module):
    """A small image CNN: Conv2d(c→16, 3), Conv2d(16→32, 3, stride 2), ReLU after each,
    then a Linear read-out. Inputs (batch, channels, height, width)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, channels: int = 16,
                 dropout: float = 0.0):
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(
                f"cnn2d needs image inputs of shape (channels, height, width), got {input_shape}"
            )
        in_channels, height, width = input_shape
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1)
        out_h, out_w = _conv_out(height, 3, 2, 1), _conv_out(width, 3, 2, 1)
        self.linear = nn.Linear(2 * channels * out_h * out_w, n_classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.drop(torch.relu(self.conv2(x)))
        return self.linear(x.flatten(1))


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


# name -> factory(input_shape, n_classes, **kwargs) -> nn.Module
MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "cnn1d": CNN1d, "cnn2d": CNN2d}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory(input_shape, n_classes, **kwargs) -> nn.Module`` trainable by name
    (``train_population(data, model=name)``, ``memlab train --model name``). Worker
    processes get the factory by value, so a factory defined in a notebook works too; a run
    rebuilt later (``run.model(k)``) needs the name registered again, or pass the factory."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigError(f"a model name must be a non-empty string without ':', got {name!r}")
    if not callable(factory):
        raise ConfigError(f"register_model({name!r}, ...) needs a callable factory, "
                          f"got {type(factory).__name__}")
    MODELS[name] = factory


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int, **kwargs) -> nn.Module:
    """Instantiate a registered architecture by name (or ``package.module:factory``), with
    PyTorch's default initialization drawn from a fork of torch's global RNG: building a
    model (a template whose weights are replaced, a model rebuilt from a run) leaves the
    caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        return call_factory(resolve_factory(name), name, input_shape, n_classes, kwargs)


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    """A registered name, or ``package.module:attribute`` imported (the CLI's ``--model``)."""
    if name in MODELS:
        return MODELS[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigError(f"cannot import {module_name!r} for model {name!r} ({error}); "
                              "check the module is on PYTHONPATH") from None
        factory = module
        for part in attribute.split("."):
            factory = getattr(factory, part, None)
        if factory is None or not callable(factory):
            raise ConfigError(f"{module_name!r} has no callable {attribute!r} (model {name!r})")
        return factory
    raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}, "
                      "register one with memlab.models.register_model, or give "
                      "package.module:factory")


def call_factory(factory: Callable[..., nn.Module], label: str, input_shape: tuple[int, ...],
                 n_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    """``factory(input_shape, n_classes, **kwargs)``, with a one-line error if it fails."""
    try:
        module = factory(tuple(input_shape), n_classes, **kwargs)
    except ConfigError:
        raise
    except Exception as error:  # the user's code: report it in one line, not a traceback
        raise ConfigError(f"model factory {label!r} raised {type(error).__name__}: {error} "
                          f"(called as factory(input_shape={tuple(input_shape)}, "
                          f"n_classes={n_classes}, **{kwargs}))") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model factory {label!r} returned {type(module).__name__}, "
                          "not an nn.Module")
    return module


def class_path(obj: Any) -> str:
    """``package.module:QualName`` of an object's class (or of a function)."""
    target = obj if callable(obj) and not isinstance(obj, nn.Module) else type(obj)
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"


def importable(path: str) -> bool:
    """Whether ``package.module:QualName`` can be imported again later (not ``__main__``,
    not a function's local, not a notebook cell)."""
    module_name, _, qualname = path.partition(":")
    if module_name in ("__main__", "__mp_main__", "?") or "<locals>" in qualname:
        return False
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return False
    return True
