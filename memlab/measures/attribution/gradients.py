"""Per-example gradients of a classifier's output or loss, vectorized with ``torch.func``
over examples and over a stack of models.

Two scalar functions of one model and one example (x, y), with logits z = model(x):

- ``"logodds"``: f = z_y - log sum_{y' != y} exp z_y' = log p_y / (1 - p_y), the output the
  population records as ``{split}_logodds`` and whose change attribution predicts;
- ``"loss"``: the cross-entropy l = log sum_y' exp z_y' - z_y.

Parameters travel as a dict name -> (K, ...) stacked tensor (a population's weights, or one
model's with K = 1); a gradient is flattened over the parameters in the dict's order, so one
example's gradient is a (p,) vector and a batch of them a (K, b, p) tensor. Buffers (BatchNorm's
running statistics) travel beside them in a second dict of the same layout
(:func:`buffers_from_weights`): every forward goes through :func:`forward`, which evaluates
each model with its own trained buffers, and nothing is differentiated, counted or projected
with respect to them. A model without buffers has an empty dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from memlab.errors import ConfigError

OUTPUTS = ("logodds", "loss")


def stack_params(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """name -> (K, ...) float32 stacked parameters of K models of one architecture."""
    names = [name for name, _ in models[0].named_parameters()]
    return {name: torch.stack([dict(m.named_parameters())[name].detach().float()
                               for m in models]) for name in names}


def params_from_weights(template: nn.Module, weights: Mapping[str, np.ndarray]
                        ) -> dict[str, torch.Tensor]:
    """The trainable parameters (not buffers) of a ``run.weights(...)`` dict as tensors."""
    names = [name for name, _ in template.named_parameters()]
    missing = [name for name in names if name not in weights]
    if missing:
        raise ConfigError(f"weights lack parameters {missing}; is this the model's run?")
    return {name: torch.as_tensor(np.asarray(weights[name]), dtype=torch.float32)
            for name in names}


def buffers_from_weights(template: nn.Module, weights: Mapping[str, np.ndarray]
                         ) -> dict[str, torch.Tensor]:
    """The buffers (BatchNorm's running statistics ...) of a ``run.weights(...)`` dict as
    (K, ...) tensors of the template's buffer dtypes: each model's own trained values, which
    an eval-mode forward reads. Buffers not saved in a state_dict (non-persistent) keep the
    template's values. Empty for a model without buffers (an MLP)."""
    saved = template.state_dict()
    names = [name for name, _ in template.named_buffers() if name in saved]
    missing = [name for name in names if name not in weights]
    if missing:
        raise ConfigError(f"weights lack buffers {missing}; is this the model's run?")
    return {name: torch.as_tensor(np.asarray(weights[name]), dtype=saved[name].dtype)
            for name in names}


def forward(template: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
            buffers: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The template's output on x with parameters ``params`` and buffers ``buffers`` of one
    model (unstacked, or one slice of a stack under vmap): the one place the attribution
    methods call the model. Floating buffers follow the parameters' dtype (float64 for the
    exact Hessian)."""
    if not buffers:
        return functional_call(template, dict(params), (x,))
    dtype = next(iter(params.values())).dtype
    state = {name: b.to(dtype) if b.is_floating_point() else b for name, b in buffers.items()}
    return functional_call(template, {**params, **state}, (x,))


def model_buffers(buffers: Mapping[str, torch.Tensor] | None, k: int
                  ) -> dict[str, torch.Tensor]:
    """Model k's buffers of a stacked dict, as a stack of one (empty for None)."""
    return {name: t[k:k + 1] for name, t in (buffers or {}).items()}


def unstack(stacked: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The only model of a stack of one (params or buffers), without its model axis."""
    return {name: t[0] for name, t in (stacked or {}).items()}


def n_params(params: Mapping[str, torch.Tensor]) -> int:
    """Parameters per model of a stacked dict."""
    return sum(t[0].numel() for t in params.values())


def scalar_output(logits: torch.Tensor, y: torch.Tensor, output: str) -> torch.Tensor:
    """The scalar ``output`` ("logodds" or "loss") of logits (C,) for label y ()."""
    is_true = torch.arange(logits.shape[0], device=logits.device) == y
    true_logit = (logits * is_true).sum()  # vmap-safe logits[y]
    if output == "loss":
        return torch.logsumexp(logits, 0) - true_logit
    if output == "logodds":
        others = logits.masked_fill(is_true, float("-inf"))
        return true_logit - torch.logsumexp(others, 0)
    raise ConfigError(f"output must be one of {OUTPUTS}, got {output!r}")


def _one_example_fn(template: nn.Module, output: str):
    def f(params, buffers, x, y):
        logits = forward(template, params, x.unsqueeze(0), buffers)[0]
        return scalar_output(logits, y, output)
    return f


def per_example_grads(template: nn.Module, params: Mapping[str, torch.Tensor],
                      x: torch.Tensor, y: torch.Tensor, output: str = "logodds",
                      buffers: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """(K, b, p) gradients of ``output`` for every model of the stack and every example of
    the batch x (b, *input_shape), y (b,): ``vmap`` over models of ``vmap`` over examples of
    ``grad`` (with respect to the parameters; ``buffers``: the stacked buffers, held fixed).
    The template must be in eval mode (no dropout)."""
    if output not in OUTPUTS:
        raise ConfigError(f"output must be one of {OUTPUTS}, got {output!r}")
    template.eval()
    per_example = vmap(grad(_one_example_fn(template, output)), in_dims=(None, None, 0, 0))
    per_model = vmap(per_example, in_dims=(0, 0, None, None))
    grads = per_model(dict(params), dict(buffers or {}), x, y)
    return torch.cat([g.flatten(2) for g in grads.values()], dim=2)


def iter_grads(template: nn.Module, params: Mapping[str, torch.Tensor],
               x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
               output: str = "logodds", batch_size: int | None = None,
               buffers: Mapping[str, torch.Tensor] | None = None
               ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, (K, b, p) gradients) over batches of the examples, keeping about
    256 MiB of gradients in memory at a time."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    k, p = next(iter(params.values())).shape[0], n_params(params)
    batch_size = batch_size or max(1, min(len(y), (256 * 2**20) // (4 * k * p)))
    for start in range(0, len(y), batch_size):
        rows = slice(start, min(start + batch_size, len(y)))
        yield rows, per_example_grads(template, params, x[rows], y[rows], output, buffers)


def all_grads(template: nn.Module, params: Mapping[str, torch.Tensor], x, y,
              output: str = "logodds", buffers: Mapping[str, torch.Tensor] | None = None
              ) -> torch.Tensor:
    """(K, n, p) gradients of every example (for small models: memory grows as K n p)."""
    return torch.cat([g for _, g in iter_grads(template, params, x, y, output,
                                               buffers=buffers)], dim=1)


def logits_of(template: nn.Module, params: Mapping[str, torch.Tensor], x, batch_size: int = 2048,
              buffers: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """(K, n, C) logits of every model of the stack on x (eval mode, no gradients), model k
    with its stacked ``buffers`` (its trained running statistics)."""
    template.eval()
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    batched = vmap(lambda p, b, xb: forward(template, p, xb, b), in_dims=(0, 0, None))
    with torch.no_grad():
        return torch.cat([batched(dict(params), dict(buffers or {}), x[s:s + batch_size])
                          for s in range(0, len(x), batch_size)], dim=1)
