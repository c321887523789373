"""The model registry: names and ``package.module:factory`` paths to model factories.

``register_model(name, factory)`` makes a factory trainable by name; ``build_model`` and
``resolve_factory`` turn a name back into a model; ``class_path`` / ``importable`` say
where an object lives and whether it can be imported again later (what a manifest records).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from memlab.errors import ConfigError
from memlab.models.builtin import MLP, CNN1d, CNN2d

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


# Modules whose classes are recorded under their public home: a manifest stores a model's
# class path and hashes it into the model's fingerprint, and the built-in architectures
# were recorded as memlab.models:MLP before they moved to memlab/models/builtin.py.
PUBLIC_HOMES = {"memlab.models.builtin": "memlab.models"}


def class_path(obj: Any) -> str:
    """``package.module:QualName`` of an object's class (or of a function); memlab's
    built-in models under their public home (``memlab.models:MLP``)."""
    target = obj if callable(obj) and not isinstance(obj, nn.Module) else type(obj)
    module = getattr(target, "__module__", "?")
    return f"{PUBLIC_HOMES.get(module, module)}:{getattr(target, '__qualname__', '?')}"


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
