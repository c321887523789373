"""The model registry: names and ``package.module:factory`` paths to model factories.

``register_model(name, factory)`` makes a factory trainable by name; ``build_model`` and
``resolve_factory`` turn a name back into a model; ``class_path`` / ``importable`` say
where an object lives and whether it can be imported again later (what a manifest records).
"""

from __future__ import annotations

import importlib
import traceback
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
        if not all(_dotted_name(part) for part in (module_name, attribute)):
            raise ConfigError(f"model {name!r} must look like package.module:factory (a module "
                              "path and a function or class in it, both dotted Python names)")
        module = _import_user_module(module_name, name)
        factory = module
        for part in attribute.split("."):
            factory = getattr(factory, part, None)
        if factory is None or not callable(factory):
            raise ConfigError(f"{module_name!r} has no callable {attribute!r} (model {name!r})")
        return factory
    raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}, "
                      "register one with memlab.models.register_model, or give "
                      "package.module:factory")


def code_module(name: str) -> str | None:
    """The module resolving model ``name`` would import and whose code it would run: None
    for a name that needs no import (registered in this process, ``MODELS``, or a task's
    own such as the language models) and for memlab's own modules (``memlab.models:MLP``:
    the code already installed as memlab); ``package.module`` of any other
    ``package.module:factory``. A run read from disk names its factory in its manifest,
    which anyone who can edit the file chooses: such a module is imported only for a run
    the caller trusts (``open_run(path, trust_code=True)``, ``--trust-run``)."""
    if not isinstance(name, str) or name in MODELS or ":" not in name:
        return None
    module = name.partition(":")[0]
    return None if module == "memlab" or module.startswith("memlab.") else module


def _dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _import_user_module(module_name: str, name: str) -> Any:
    """``import module_name`` for model ``name``; anything the user's module raises while it
    is imported (a SyntaxError, an exception at import time) becomes a one-line error."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import {module_name!r} for model {name!r} ({error}); "
                          "check the module is on PYTHONPATH") from None
    except SyntaxError as error:
        where = f"{error.filename}, line {error.lineno}" if error.filename else "?"
        raise ConfigError(f"cannot import {module_name!r} for model {name!r}: "
                          f"{type(error).__name__}: {error.msg} ({where})") from None
    except Exception as error:  # the user's module raised while it was imported
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if "importlib" not in f.filename]
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
        message = " ".join(str(error).split())[:300]
        raise ConfigError(f"importing {module_name!r} for model {name!r} raised "
                          f"{type(error).__name__}: {message}{where}; fix the module so that "
                          "it imports") from None


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
