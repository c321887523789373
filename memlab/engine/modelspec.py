"""What ``train_population(model=...)`` was given, and how model k gets its initial weights.

``model`` may be a registered name (``"mlp"``), ``"package.module:factory"``, a factory
``f(input_shape, n_classes, **kwargs) -> nn.Module``, or an ``nn.Module`` template.

Initialization (``init``):

- ``seed``: model k is *built* under its own seed (the factory is called inside
  ``torch.manual_seed(model_seed(seed, replicate, STREAM_INIT))``), so a module that
  initializes itself in ``__init__`` still gets distinct, reproducible weights per model.
  A template object cannot be rebuilt, so its modules' ``reset_parameters`` are called
  under the seed instead; when they do not cover every parameter memlab says so.
- ``pretrained``: every model starts from the template's weights (Feldman & Zhang's
  last-layer experiment); modules named in ``reinit`` (e.g. ``"fc"``) are re-initialized
  under each model's seed.

The run directory records the model's class path, parameter shapes and a fingerprint,
never a pickle: ``run.model(k)`` rebuilds it from an importable factory (one outside
memlab only for a run the caller trusts, ``trust_code=True``) or one the caller passes.
Worker processes receive the spec by value (cloudpickle), so a model class defined in a
notebook or a script's ``__main__`` trains with worker processes and Ray.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memlab.engine.config import STREAM_INIT, PopulationConfig, model_seed
from memlab.errors import ConfigError
from memlab.models import call_factory, class_path, importable, resolve_factory


@dataclass
class ModelSpec:
    """How to build the population's models. ``label`` is what the config records."""

    label: str
    factory: Callable[..., nn.Module] | None = None
    template: nn.Module | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(cls, model: Any, kwargs: dict[str, Any] | None = None,
                task: Any = None) -> ModelSpec:
        """``task``: a task whose own models (language models) take precedence by name."""
        kwargs = dict(kwargs or {})
        if isinstance(model, str):
            own = task.factory(model) if task is not None else None
            return cls(model, own or resolve_factory(model), None, kwargs)
        if isinstance(model, nn.Module):
            if kwargs:
                raise ConfigError("model_kwargs apply to a factory or a name; a model object "
                                  "is already built")
            return cls(class_path(model), None, model, {})
        if callable(model):
            return cls(class_path(model), model, None, kwargs)
        raise ConfigError(f"model must be a registered name, 'package.module:factory', a "
                          f"factory f(input_shape, n_classes) or an nn.Module, got "
                          f"{type(model).__name__}")

    def with_kwargs(self, kwargs: dict[str, Any]) -> ModelSpec:
        """The same architecture with other keyword arguments (sweeps over width etc.)."""
        if kwargs and self.template is not None:
            raise ConfigError(f"cannot sweep model settings {sorted(kwargs)} of a model "
                              "object; pass a factory that takes them as keyword arguments")
        return ModelSpec(self.label, self.factory, self.template, dict(kwargs))

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        """An instance of the architecture (weights meaningless; for shapes and forward)."""
        if self.template is not None:
            return copy.deepcopy(self.template)
        with torch.random.fork_rng(devices=[]):  # building draws weights: not from the caller
            return call_factory(self.factory, self.label, input_shape, n_classes, self.kwargs)

    def initial_state(self, config: PopulationConfig, input_shape: tuple[int, ...],
                      n_classes: int, replicate: int) -> dict[str, torch.Tensor]:
        """Model (replicate)'s initial state dict (parameters and buffers)."""
        seed = model_seed(config.seed, replicate, STREAM_INIT)
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed also queues a seeding of every
            # accelerator, capturing a traceback each time (a millisecond per model).
            torch.default_generator.manual_seed(seed)
            if config.init == "pretrained":
                if self.template is None:
                    raise ConfigError("init='pretrained' needs a model object whose weights "
                                      "every model starts from")
                module = copy.deepcopy(self.template)
                _reset(module, config.reinit)
            elif self.template is not None:
                module = copy.deepcopy(self.template)
                _reset(module, None)
            else:
                module = call_factory(self.factory, self.label, input_shape, n_classes,
                                      self.kwargs)
        return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}

    def describe(self, module: nn.Module, config: PopulationConfig) -> dict[str, Any]:
        """JSON-ready record for the manifest: enough to refuse a different model on
        resume and to tell a reader what was trained; no code, no pickle."""
        shapes = {name: list(t.shape) for name, t in module.state_dict().items()}
        digest = hashlib.sha256(json.dumps([class_path(module), shapes]).encode())
        if config.init == "pretrained" and self.template is not None:
            for tensor in self.template.state_dict().values():  # the shared starting point
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        factory = self.label if self.template is None else None
        return {"label": self.label, "class": class_path(module), "factory": factory,
                "rebuildable": factory is not None and (":" not in factory
                                                        or importable(factory)),
                "parameter_shapes": shapes, "fingerprint": digest.hexdigest()}


def _reset(module: nn.Module, only: tuple[str, ...] | None) -> None:
    """Call reset_parameters on ``module``'s submodules (those named in ``only``, or all),
    in registration order; refuse when a parameter would keep the template's values."""
    names = dict(module.named_modules())
    if only is not None:
        missing = [n for n in only if n not in names]
        if missing:
            raise ConfigError(f"reinit names modules {missing} that the model does not have; "
                              f"it has {[n for n in names if n][:12]}...")
    selected = [m for n, m in names.items()
                if only is None or any(n == o or n.startswith(o + ".") for o in only)]
    uncovered = []
    for sub_name, sub in names.items():
        if sub not in selected:
            continue
        has_reset = callable(getattr(sub, "reset_parameters", None))
        if has_reset:
            sub.reset_parameters()
        elif any(True for _ in sub.parameters(recurse=False)):
            uncovered += [f"{sub_name}.{p}" if sub_name else p
                          for p, _ in sub.named_parameters(recurse=False)]
    if uncovered:
        raise ConfigError(
            f"parameters {uncovered[:4]} are not re-initialized by any reset_parameters(), "
            "so every model would start from the same values: pass a factory "
            "(a function building the model) instead of a model object, or "
            "init='pretrained' to start every model from the object's weights"
        )


def check_distinct_inits(spec: ModelSpec, config: PopulationConfig,
                         input_shape: tuple[int, ...], n_classes: int) -> None:
    """Models 0 and 1 must start from different weights (unless pretrained without reinit):
    a factory that seeds torch itself would silently give one model n times."""
    if config.init == "pretrained" and not config.reinit:
        return
    first = spec.initial_state(config, input_shape, n_classes, 0)
    second = spec.initial_state(config, input_shape, n_classes, 1)
    if all(torch.equal(first[n], second[n]) for n in first if first[n].is_floating_point()):
        raise ConfigError(f"model {spec.label!r} gives identical weights for different seeds "
                          "(does it call torch.manual_seed itself?): remove the seeding, so "
                          "that each model can get its own initialization")
