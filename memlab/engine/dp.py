"""DP-SGD for a population: Poisson batches, per-example clipping and Gaussian noise, per model.

A DP model's step (Abadi et al. 2016, as Opacus does it): every member of the model's subset
enters the step's batch independently with probability q = batch_size / m (Poisson
sampling, which the accountant's analysis assumes); each example's gradient is clipped to
L2 norm C; the clipped gradients are summed, Gaussian noise of standard deviation σ·C is
added, and the sum is divided by the *expected* batch size q·m. Then the optimizer steps as
usual (post-processing). ε comes from :mod:`memlab.engine.accountant`.

Everything random comes from the model's own streams (``DP_SAMPLE``, ``DP_NOISE``), so a DP
model is the same bits in a chunk of any size, on any worker, after any resume. Poisson
batches differ in size between models and steps: every model's batch is padded to a width
that depends only on (m, q) — never on the chunk — and padded rows carry weight 0. A step in
which some model's batch is wider takes extra passes of the same width for the whole chunk
(about one step in a thousand per model): the other models' extra rows are all padding, whose
clipped gradients are exact zeros, so adding them changes no bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from memlab.engine import accountant
from memlab.engine.config import PopulationConfig, model_rng, model_seed
from memlab.errors import ConfigError
from memlab.streams import DP_NOISE, DP_SAMPLE, GRADIENT_CANARY, GRADIENT_CANARY_COORDINATES

# Rows of a pass: the mean batch plus this many standard deviations (a wider batch, about
# 0.1% of a model's steps, takes another pass). Padding costs compute; extra passes too.
PAD_SIGMAS = 3.0
CLIP_EPS = 1e-6  # the clip factor is C / (norm + CLIP_EPS), as in Opacus
# A gradient canary's gradient has this many times C as its norm: a correct step clips it to
# C, a step that skips clipping lets all of it through (and the white-box audit sees it).
GRADIENT_CANARY_NORM = 10.0


@dataclass(frozen=True)
class DPPlan:
    """What a DP population's models do at every step, and what it buys."""

    noise_multiplier: float  # σ: noise std is σ·C
    max_grad_norm: float  # C: every example's gradient is clipped to this L2 norm
    sampling_rate: float  # q: each member's chance to be in a step's batch
    expected_batch: float  # q·m: the clipped sum plus noise is divided by it
    padded_batch: int  # rows of one pass of a step (padded rows weigh 0)
    steps: int  # steps of the whole run (epochs × steps per epoch)
    delta: float
    epsilon: float  # the accountant's ε for the whole run (RDP)

    def as_dict(self) -> dict[str, float | int]:
        return {f"dp_{name}": getattr(self, name) for name in self.__dataclass_fields__}


def steps_per_epoch(n_members: int, batch_size: int) -> int:
    """Steps of one epoch: as many as the shuffled batches of a non-DP run."""
    return -(-n_members // batch_size)


def padded_batch_size(n_members: int, rate: float) -> int:
    """Rows of one pass: the mean batch plus PAD_SIGMAS standard deviations."""
    mean, sd = n_members * rate, math.sqrt(n_members * rate * (1 - rate))
    return int(min(n_members, math.ceil(mean + PAD_SIGMAS * sd) + 1))


def plan(config: PopulationConfig, n_members: int, n_canaries: int = 0) -> DPPlan | None:
    """The DP plan of ``config`` for models of ``n_members`` examples (None without DP).
    A target ε is met by solving for σ (one-line error when σ would exceed 50). Privacy
    canaries (``n_canaries``, each model drawing its own) are sampled at the same rate: they
    widen the padded batch, not q or ε."""
    if not config.dp:
        return None
    accountant.check_dp_settings(
        config.dp_noise_multiplier or None, config.dp_max_grad_norm, config.dp_delta,
        n_members, config.dp_epsilon or None)
    rate = min(1.0, config.batch_size / n_members)
    steps = config.epochs * steps_per_epoch(n_members, config.batch_size)
    sigma, epsilon = _account(config.dp_noise_multiplier, config.dp_epsilon, config.dp_delta,
                              rate, steps)
    return DPPlan(sigma, config.dp_max_grad_norm, rate, rate * n_members,
                  padded_batch_size(n_members + n_canaries, rate), steps, config.dp_delta,
                  epsilon)


@functools.lru_cache(maxsize=64)
def _account(sigma: float, target: float, delta: float, rate: float,
             steps: int) -> tuple[float, float]:
    """(σ, ε): σ solved for the ``target`` ε when one is given. Cached: every chunk of a
    run asks again in its worker, and solving for σ takes 0.3–0.8 s."""
    if target:
        sigma = accountant.noise_multiplier_for(target, delta, rate, steps)
    return sigma, accountant.epsilon(sigma, rate, steps, delta)


def check_model(template: torch.nn.Module) -> None:
    """Refuse what per-example clipping cannot bound, in one line."""
    for name, module in template.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"DP-SGD cannot train BatchNorm ({name or 'the model'}: its statistics mix "
                "the examples of a batch, so no example's gradient is its own): use GroupNorm "
                "or LayerNorm instead")


class PoissonBatches:
    """Each model's Poisson batches, padded: (index (K, P·n), weight (K, P·n)) per step, P
    the plan's ``padded_batch`` and n the passes the widest batch needs (almost always 1).

    members: each model's examples (K rows, lengths may differ). Model k draws from its own
    ``DP_SAMPLE`` stream, one uniform per member per step, in step order: the same batches
    in any chunk.
    """

    def __init__(self, members: Sequence[np.ndarray], seed: int, replicates: Sequence[int],
                 dp: DPPlan, device: torch.device):
        self.members, self.dp, self.device = members, dp, device
        self.rngs = [model_rng(seed, r, DP_SAMPLE) for r in replicates]

    def epoch(self, n_steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n_models, pass_rows = len(self.rngs), self.dp.padded_batch
        for _ in range(n_steps):
            chosen = [self.members[k][rng.random(len(self.members[k])) < self.dp.sampling_rate]
                      for k, rng in enumerate(self.rngs)]
            width = pass_rows * max(1, -(-max(len(c) for c in chosen) // pass_rows))
            index = np.zeros((n_models, width), dtype=np.int64)
            weight = np.zeros((n_models, width), dtype=np.float32)
            for k, rows in enumerate(chosen):
                index[k, :len(rows)] = rows
                weight[k, :len(rows)] = 1.0
            yield (torch.as_tensor(index, device=self.device),
                   torch.as_tensor(weight, device=self.device))


class GaussianNoise:
    """Each model's noise: a torch generator seeded from its ``DP_NOISE`` stream, drawn for
    its parameters in a fixed order every step (the same draws in any chunk)."""

    def __init__(self, seed: int, replicates: Sequence[int], device: torch.device):
        self.device = device
        self.generators = []
        for r in replicates:
            generator = torch.Generator(device=device)
            generator.manual_seed(model_seed(seed, r, DP_NOISE))
            self.generators.append(generator)

    def draw(self, k: int, numel: int) -> torch.Tensor:
        """Model k's next ``numel`` standard normal draws."""
        return torch.randn(numel, generator=self.generators[k], device=self.device)


def privatize(grads: dict[str, torch.Tensor], noise: GaussianNoise, dp: DPPlan) -> None:
    """In place: grads (K, ...) hold each model's sum of clipped per-example gradients; add
    σ·C noise (model k's draws, parameters in name order) and divide by the expected batch."""
    names = sorted(grads)
    sizes = [grads[name][0].numel() for name in names]
    # (K, parameters): model k's draws in row k, one add per parameter for all models
    draws = torch.stack([noise.draw(k, sum(sizes)) for k in range(len(noise.generators))])
    scale = dp.noise_multiplier * dp.max_grad_norm
    for name, part in zip(names, draws.split(sizes, dim=1)):
        flat = _rows(grads[name])  # each model's row of the padded gradient
        flat.add_(part, alpha=scale).div_(dp.expected_batch)


def clip_factors(squared_norms: torch.Tensor, weight: torch.Tensor,
                 max_grad_norm: float) -> torch.Tensor:
    """(K, B) per-example multipliers: min(1, C / (norm + 1e-6)) on real rows, 0 on padding."""
    return weight * (max_grad_norm / (squared_norms.sqrt() + CLIP_EPS)).clamp(max=1.0)


class GradientCanaries:
    """White-box canaries (Dirac gradients, Steinke, Nasr & Jagielski 2023): canary c is a
    gradient of norm GRADIENT_CANARY_NORM·C on one parameter coordinate (the same for every
    model, from the run's seed). Model k has canary c with probability 1/2, independently;
    a canary it has is sampled into each step with the examples' rate q and clipped like an
    example. The white-box score of (k, c) is the sum over steps of model k's noisy gradient
    at c's coordinate — what an auditor who sees every update reads.

    Random draws: the run's stream for the coordinates, model k's ``GRADIENT_CANARY`` stream
    for its canaries and their sampling: the same in any chunk.
    """

    def __init__(self, n_canaries: int, seed: int, replicates: Sequence[int],
                 shapes: dict[str, tuple[int, ...]], dp: DPPlan, device: torch.device):
        self.dp, self.n = dp, n_canaries
        names = sorted(shapes)
        sizes = [math.prod(shapes[name]) for name in names]
        if n_canaries > sum(sizes):
            raise ConfigError(f"{n_canaries} gradient canaries need as many parameters; the "
                              f"model has {sum(sizes)}: give a smaller --dp-canaries")
        flat = np.sort(np.random.default_rng([seed, GRADIENT_CANARY_COORDINATES]).choice(
            sum(sizes), n_canaries, replace=False))
        starts = np.cumsum([0, *sizes])
        # per parameter: (canary numbers, flat indices inside the parameter)
        self.where = {}
        for i, name in enumerate(names):
            inside = np.flatnonzero((flat >= starts[i]) & (flat < starts[i + 1]))
            if len(inside):
                self.where[name] = (torch.as_tensor(inside, device=device),
                                    torch.as_tensor(flat[inside] - starts[i], device=device))
        self.rngs = [model_rng(seed, r, GRADIENT_CANARY) for r in replicates]
        self.included = np.stack([rng.random(n_canaries) < 0.5 for rng in self.rngs])
        self.score = torch.zeros(len(replicates), n_canaries, dtype=torch.float64,
                                 device=device)
        # a canary's clipped size, through the examples' own clipping
        norm = torch.tensor([[GRADIENT_CANARY_NORM * dp.max_grad_norm]], device=device)
        self.size = float(clip_factors(norm.square(), torch.ones_like(norm),
                                       dp.max_grad_norm)[0, 0] * norm[0, 0])

    def insert(self, grads: dict[str, torch.Tensor]) -> None:
        """Add this step's sampled canaries to the models' sums of clipped gradients."""
        sampled = np.stack([rng.random(self.n) < self.dp.sampling_rate for rng in self.rngs])
        pushes = torch.as_tensor(sampled & self.included, dtype=torch.float32,
                                 device=self.score.device) * self.size  # (K, N)
        for name, (canaries, index) in self.where.items():
            _rows(grads[name]).index_add_(1, index, pushes[:, canaries])

    def observe(self, grads: dict[str, torch.Tensor]) -> None:
        """Accumulate each model's released (noisy) gradient at every canary's coordinate."""
        for name, (canaries, index) in self.where.items():
            self.score[:, canaries] += _rows(grads[name])[:, index].double()

    def records(self) -> dict[str, np.ndarray]:
        return {"dp_gradient_canary_score": self.score.cpu().numpy(),
                "dp_gradient_canary_in": self.included.copy()}


def _rows(grad: torch.Tensor) -> torch.Tensor:
    """(K, ...) -> (K, size): a view (``view`` raises where ``flatten`` would silently copy,
    and an in-place update of a copy would be lost)."""
    return grad.view(grad.shape[0], -1)
