"""Critical samples and loss sensitivity (Arpit et al. 2017, section 4; docs/science.md §3).

An input x is *critical* for a classifier if some x̂ with ||x̂ − x||_∞ ≤ r gets a different
predicted class: a decision boundary passes within r of x. The critical sample ratio (CSR)
is the fraction of critical points in a set. Networks that memorize noise carve many small
regions around their training points, so more points lie near a boundary: CSR is higher for
nets fit to noise and rises as they memorize.

Critical points are found with LASS (Langevin adversarial sample search): from x̂ = x,

    x̂ ← clip_{||x̂ − x||_∞ ≤ r}( x̂ + α·sign(∇_x̂ L(x̂, k)) + β·N(0, I) )

where k is the class predicted at x and L the cross-entropy (so the step *leaves* class k),
until the prediction changes (x is critical) or ``max_iter`` steps were taken (not found).
LASS is a search: "not found" is not a proof that no x̂ exists, so CSR is a lower bound.

Everything is batched over examples *and* over models: a ``forward`` maps
(K, b, *input_shape) inputs to (K, b, n_classes) logits, K models at once (see
:func:`population_forward`; :func:`module_forward` wraps one nn.Module as K = 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from memlab.errors import ConfigError

Forward = Callable[[torch.Tensor], torch.Tensor]

# Arpit et al.'s LASS settings, on pixel values in [0, 255].
PAPER_ALPHA, PAPER_BETA, PAPER_RADIUS, PAPER_RANGE = 0.25, 0.2, 0.3, 255.0


@dataclass(frozen=True)
class LassSettings:
    """Step size ``alpha``, Langevin noise scale ``beta`` and box radius ``radius`` (all in
    input units), and the iteration cap."""

    alpha: float
    beta: float
    radius: float
    max_iter: int = 20

    def __post_init__(self) -> None:
        if not (self.alpha >= 0 and self.beta >= 0 and self.radius > 0 and self.max_iter >= 1):
            raise ConfigError(f"LASS needs alpha, beta >= 0, radius > 0 and max_iter >= 1, "
                              f"got {self}")

    @classmethod
    def scaled(cls, data_range: float, scale: float = 1.0, max_iter: int = 20) -> LassSettings:
        """The paper's α = 0.25, β = 0.2, r = 0.3 (for 0–255 pixels) rescaled to data whose
        values span ``data_range``, times ``scale`` (scale=1 is the paper's setting)."""
        unit = scale * data_range / PAPER_RANGE
        return cls(PAPER_ALPHA * unit, PAPER_BETA * unit, PAPER_RADIUS * unit, max_iter)


@dataclass
class LassResult:
    """critical (K, n) bool; iterations (K, n) int: steps until the flip (max_iter + 1 if
    none); x_adv (K, n, *input_shape): the flipped input where found, else the last one."""

    critical: np.ndarray
    iterations: np.ndarray
    x_adv: torch.Tensor

    @property
    def ratio(self) -> np.ndarray:
        """(K,) critical sample ratio of each model."""
        return self.critical.mean(axis=1)


def module_forward(model: torch.nn.Module) -> Forward:
    """One nn.Module as a forward over (1, b, ...) inputs (eval mode)."""
    model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(x.flatten(0, 1)).view(x.shape[0], x.shape[1], -1)

    return forward


def population_forward(models: Sequence[torch.nn.Module]) -> Forward:
    """K modules of one architecture as a single vectorized forward over (K, b, ...) inputs
    (eval mode; weights are copied, later changes to the modules are not seen)."""
    for model in models:
        model.eval()
    params, buffers = stack_module_state(list(models))
    params = {name: tensor.detach() for name, tensor in params.items()}
    template = models[0]

    def one_model(p, b, x):
        return functional_call(template, (p, b), (x,))

    batched = vmap(one_model, in_dims=(0, 0, 0))
    return lambda x: batched(params, buffers, x)


def _per_model(x: torch.Tensor, n_models: int, per_model: bool) -> torch.Tensor:
    """(n, ...) shared by all models -> (K, n, ...); with ``per_model`` x already is."""
    x = x.detach().float()
    if not per_model:
        x = x.unsqueeze(0).expand(n_models, *x.shape)
    elif x.shape[0] != n_models:
        raise ConfigError(f"per-model inputs need a leading axis of {n_models} models, "
                          f"got shape {tuple(x.shape)}")
    return x.contiguous()


def lass(forward: Forward, x: torch.Tensor, settings: LassSettings, n_models: int = 1,
         seed: int | Sequence[int] = 0, per_model: bool = False,
         model_scale: torch.Tensor | None = None) -> LassResult:
    """Search for a prediction flip within ``settings.radius`` of every input, for every model.

    x: (n, *input_shape), shared by the K = ``n_models`` models, or (K, n, *input_shape)
    with ``per_model=True``. ``model_scale`` (K,) multiplies α, β and r per model (used to
    train models with different adversarial radii at once). Deterministic for a ``seed``:
    one integer for all models, or K integers, one per model, so that model k's Langevin
    noise does not depend on which other models are searched with it.
    """
    x = _per_model(x, n_models, per_model)
    scale = torch.ones(n_models) if model_scale is None else model_scale.float()
    scale = scale.to(x.device).view(n_models, *([1] * (x.dim() - 1)))
    alpha, beta, radius = settings.alpha * scale, settings.beta * scale, settings.radius * scale
    draw = _noise_source(seed, x, n_models)
    with torch.no_grad():
        original = forward(x).argmax(-1)  # (K, n)
    x_adv = x.clone()
    critical = torch.zeros_like(original, dtype=torch.bool)
    iterations = torch.full(original.shape, settings.max_iter + 1, dtype=torch.long)
    lower, upper = x - radius, x + radius
    for step in range(1, settings.max_iter + 1):
        active = ~critical
        if not active.any():
            break
        probe = x_adv.clone().requires_grad_(True)
        logits = forward(probe)
        # Per-example losses are independent, so one backward of their sum gives each one's
        # input gradient.
        loss = F.cross_entropy(logits.flatten(0, 1), original.flatten(), reduction="sum")
        (gradient,) = torch.autograd.grad(loss, probe)
        noise = draw()
        moved = x_adv + alpha * gradient.sign() + beta * noise
        moved = torch.maximum(torch.minimum(moved, upper), lower)
        keep_moving = active.view(*active.shape, *([1] * (x.dim() - 2)))
        x_adv = torch.where(keep_moving, moved, x_adv)
        with torch.no_grad():
            flipped = (forward(x_adv).argmax(-1) != original) & active
        critical |= flipped
        iterations[flipped.cpu()] = step
    return LassResult(critical.cpu().numpy(), iterations.numpy(), x_adv.detach())


def _noise_source(seed: int | Sequence[int], x: torch.Tensor, n_models: int
                  ) -> Callable[[], torch.Tensor]:
    """A function drawing the next N(0, I) noise of x's shape (K, n, ...): from one
    generator, or from one generator per model (``seed`` a sequence of K integers)."""
    if isinstance(seed, int | np.integer):
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
        return lambda: torch.randn(x.shape, generator=generator, device=x.device,
                                   dtype=x.dtype)
    seeds = [int(s) for s in seed]
    if len(seeds) != n_models:
        raise ConfigError(f"lass needs one seed or {n_models} seeds (one per model), "
                          f"got {len(seeds)}")
    generators = [torch.Generator(device=x.device).manual_seed(s) for s in seeds]
    return lambda: torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device,
                                            dtype=x.dtype) for g in generators])


def critical_sample_ratio(forward: Forward, x: torch.Tensor, settings: LassSettings,
                          n_models: int = 1, seed: int = 0) -> np.ndarray:
    """(K,) fraction of the inputs x (n, ...) that LASS finds critical, per model."""
    return lass(forward, x, settings, n_models, seed).ratio


def critical_share(run, n_models: int, seed: int) -> np.ndarray:
    """Critical-sample status (Arpit et al.'s LASS at the paper's radius, rescaled to the
    data's range): per example, the share of the first ``n_models`` models for which an
    input within the radius flips the prediction."""
    k = min(n_models, run.n_models)
    x = torch.as_tensor(np.asarray(run.dataset.x_train), dtype=torch.float32)
    settings = LassSettings.scaled(float(x.max() - x.min()))
    found = lass(population_forward([run.model(i) for i in range(k)]), x, settings,
                 n_models=k, seed=seed)
    return found.critical.mean(0)


def loss_sensitivity(forward: Forward, x: torch.Tensor, y: torch.Tensor, n_models: int = 1,
                     per_model: bool = False) -> np.ndarray:
    """(K, n) ||∂L/∂x||_1 of the cross-entropy of every example, for every model.

    x: (n, ...) shared or (K, n, ...) with ``per_model``; y: (n,) or (K, n) labels.
    Units: nats per input unit.
    """
    x = _per_model(x, n_models, per_model).requires_grad_(True)
    y = y if y.dim() == 2 else y.unsqueeze(0).expand(n_models, -1)
    loss = F.cross_entropy(forward(x).flatten(0, 1), y.flatten(), reduction="sum")
    (gradient,) = torch.autograd.grad(loss, x)
    return gradient.abs().flatten(2).sum(-1).numpy()


def gini(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Gini coefficient of non-negative values along ``axis``: 0 when all are equal, (n-1)/n
    when one value holds everything. High Gini = a few examples carry most of the total."""
    values = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    values = np.moveaxis(values, axis, -1)
    if (values < 0).any():
        raise ValueError("gini needs non-negative values")
    n = values.shape[-1]
    rank = np.arange(1, n + 1)
    total = values.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = (2 * (values * rank).sum(-1) / (n * total)) - (n + 1) / n
    return np.where(total > 0, g, 0.0)
