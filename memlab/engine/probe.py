"""A user's model, tried before training: one engine step, and one-line errors after it.

``train_population`` checks a model on a dry batch (shape, distinct initializations) and
then, for a model that is not memlab's own, :func:`probe_training`: the engine itself
(``loop.train_chunk``) trains 2 models on 2 examples for one step and evaluates them, on
the CPU. What cannot work under stacking (``.item()`` or Python branches on a tensor's
value in forward, random functions without a per-model stream, in-place changes of shared
tensors...) fails there, before any worker starts, as one line naming the problem and the
fix. :func:`user_model_errors` does the same for a model that raises later, in training
(in this process or a worker: a ConfigError crosses the process boundary by value).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import sysconfig
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

import memlab
from memlab.data import Dataset
from memlab.engine.modelspec import ModelSpec
from memlab.engine.usermodel import SUPPORTED, frozen_parameters
from memlab.errors import ConfigError, DivergenceError, MemlabError
from memlab.models import class_path

# What vmap's errors mean for a model, and the fix (matched against the message).
_HINTS = (
    (".item()", "forward calls .item() (or float()/int()) on a tensor: under stacking a "
                "tensor holds every model's values, so there is no one number; keep the "
                "computation in tensor operations (e.g. torch.clamp instead of max(.., "
                "t.item()))"),
    ("data-dependent control flow", "forward branches in Python on a tensor's value (if/while "
                                    "on a tensor, bool(t)): under stacking each model may take "
                                    "another branch; compute both and select with "
                                    "torch.where"),
    ("randomness error mode", "forward draws random numbers with a function memlab cannot "
                              "give each model its own stream for; use one of "
                              f"{', '.join(SUPPORTED)}"),
    ("inplace arithmetic", "forward writes per-model values in place into a tensor that "
                           "is not per model (made in forward, e.g. torch.empty(n).normal_() "
                           "or filling a tensor shaped like the inputs, which evaluation "
                           "shares between the models); compute a new tensor instead "
                           "(torch.randn_like(h), x = x + y)"),
    ("accessing `data`", "forward uses .data (e.g. to change a parameter): a model's "
                         "parameters are slices of stacked tensors and must not be changed "
                         "in forward; constrain them with torch.nn.utils.parametrize"),
    ("Batching rule not implemented", "torch has no stacked (vmap) form of this operation "
                                      "(e.g. nn.LSTM, nn.GRU); build the layer from "
                                      "operations that have one (an LSTM cell from "
                                      "nn.Linear layers and a loop over time steps)"),
    ("doesn't have storage", "forward leaves torch (.numpy(), .tolist(), a C extension): "
                             "under stacking a tensor is a view of every model's values; "
                             "keep forward in torch operations"),
    ("inplace operation", "forward (or its backward) changes in place a tensor autograd "
                          "needs; compute a new tensor instead (x = x + y, not x += y)"),
)


def is_memlab_model(spec: ModelSpec, module: torch.nn.Module | None = None) -> bool:
    """Whether the model is memlab's own code (built-in and language models)."""
    target = module if module is not None else spec.template
    path = class_path(target) if target is not None else class_path(spec.factory)
    return path.startswith("memlab.") or path.startswith("memlab:")


def check_output_type(label: str, out: Any) -> None:
    """A model's forward must return one tensor (its logits)."""
    if not isinstance(out, torch.Tensor):
        parts = (f" of {len(out)}: ({', '.join(type(o).__name__ for o in out)})"
                 if isinstance(out, tuple | list) else "")
        raise ConfigError(f"the model {label!r} returned a {type(out).__name__}{parts}, not a "
                          "tensor: memlab trains on the logits a model's forward returns; "
                          "return only them (e.g. a wrapper module whose forward returns "
                          "out[0])")


def probe_training(task: Any, dataset: Any, config: Any, spec: ModelSpec,
                   module: torch.nn.Module) -> None:
    """Refuse, in one line, a model the engine cannot train: no trainable parameter, or
    one training step of 2 models on 2 examples (the engine's own step, on the CPU)
    failing. ``config``: the recipe of the sweep value ``spec`` and ``module`` belong to."""
    if not any(p.requires_grad for p in module.parameters()):
        frozen = frozen_parameters(module)
        raise ConfigError(
            f"the model {spec.label!r} has no trainable parameters "
            + (f"(all {len(frozen)} have requires_grad=False)" if frozen else "(it has none)")
            + ": training would change nothing; leave requires_grad=True on the parameters "
            "to train (frozen ones stay at each model's initial values)")
    if is_memlab_model(spec, module) or not isinstance(dataset, Dataset):
        return
    from memlab.engine.loop import train_chunk

    tiny = copy.copy(dataset)  # the first 2 training and test examples
    for name in ("x_train", "y_train", "x_test", "y_test"):
        setattr(tiny, name, getattr(dataset, name)[:2])
    probe = dataclasses.replace(
        config, sweep={}, n_models=2, epochs=1, batch_size=2, chunk_size=2,
        record_epochs=False, save_weights=False, augment=(), input_noise=0.0,
        input_dropout=0.0, compute_dtype="float32", on_diverge="record", subsets="random")
    try:
        train_chunk(task, tiny, probe, spec, range(2), np.ones((2, 2), dtype=bool), "cpu")
    except DivergenceError:
        return  # a recipe problem, which training reports in its own words
    except MemlabError:
        raise
    except Exception as error:  # the user's model: one line, the problem and the fix
        raise ConfigError(f"the model {spec.label!r} cannot be trained by memlab's engine "
                          f"(2 models stacked, one step on 2 examples): "
                          f"{describe(error)}") from None


@contextmanager
def user_model_errors(spec: ModelSpec, models: range):
    """Turn an exception a user's model raises while a chunk trains (in its forward or
    backward) into a one-line ConfigError naming the model, the exception and where."""
    try:
        yield
    except MemlabError:
        raise
    except Exception as error:
        if is_memlab_model(spec) or not _raised_by_model(error):
            raise
        raise ConfigError(f"the model {spec.label!r} raised {describe(error)} while training "
                          f"models {models.start}..{models.stop - 1}") from None


def describe(error: BaseException) -> str:
    """``Type: message (at file:line in function)``, on one line, with a fix for the
    errors stacking causes."""
    message = " ".join(str(error).split())
    hint = next((hint for pattern, hint in _HINTS if pattern in message), None)
    if hint is not None:  # vmap's own words: their first sentence is enough
        message = message.split(". ")[0].rstrip(".")
    if len(message) > 300:
        message = message[:297] + "..."
    where = _user_frame(error)
    text = f"{type(error).__name__}: {message}"
    if where is not None:
        text += f" (at {where.filename}:{where.lineno} in {where.name})"
    return text if hint is None else f"{text}; {hint}"


_LIBRARY_DIRS = tuple({str(Path(p).resolve()) for p in (
    Path(memlab.__file__).parent, Path(torch.__file__).parent, sysconfig.get_paths()["stdlib"],
    sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], sys.prefix)})


def _is_user_file(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return False
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):
        return True  # "<stdin>", a notebook cell: the user's
    return not any(path == d or path.startswith(d + os.sep) for d in _LIBRARY_DIRS)


def _user_frame(error: BaseException) -> traceback.FrameSummary | None:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if _is_user_file(f.filename)]
    return frames[-1] if frames else None


def _raised_by_model(error: BaseException) -> bool:
    """Whether the error came out of the user's code, or out of the model's forward
    (torch.func.functional_call), rather than memlab's own."""
    for frame in traceback.extract_tb(error.__traceback__):
        if _is_user_file(frame.filename) or frame.filename.endswith(
                ("stateless.py", "functional_call.py")):
            return True
    return False
