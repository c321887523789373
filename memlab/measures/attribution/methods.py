"""Cheap attribution methods, computed from one or a few trained models.

Every method returns scores (n_train, n_targets) float32 with one sign convention:
tau_i(z) > 0 means that training on example i raises target z's output f(z), the log-odds
log p_y / (1 - p_y) (see :mod:`memlab.measures.attribution.gradients`). Methods that use
several models average their scores over them (ensembling).

With g_z = grad f(z) and l_i the training loss of example i (one SGD step on i moves the
weights by -eta grad l_i, which changes f(z) by -eta g_z . grad l_i):

- ``grad_dot``: -g_z . grad l_i;  ``grad_cos``: the same with both gradients normalized;
- ``tracin``: TracIn-CP (Pruthi et al. 2020), sum over checkpoints t of
  eta_t (-g_z(w_t) . grad l_i(w_t)), eta_t the learning rate the recipe used over the steps
  checkpoint t stands for (:func:`checkpoint_learning_rates`);
- ``trak``: TRAK (Park et al. 2023): features phi = P^T grad f (random projection P to
  ``proj_dim`` dimensions), tau = phi_z^T (Phi^T Phi + lam I)^-1 phi_i (1 - p_i), where
  p_i = sigmoid(f_i) is the model's probability of i's label (the "Q" of TRAK);
- ``influence``: influence functions (Koh & Liang 2017), tau = -(1/n) g_z^T (H + lam I)^-1
  grad l_i with H the Hessian of the model's mean training loss, the change in f(z) when i is
  added with weight 1/n (the loss-change convention, flipped). H is exact for a linear
  (logistic-regression) model and for models with few parameters; ``"cg"`` and ``"lissa"``
  solve with Gauss-Newton-vector products instead, ``"ekfac"`` preconditions with an
  eigenvalue-corrected Kronecker factorization of the Fisher of every Linear layer;
- ``representer``: representer points (Yeh et al. 2018) in the penultimate features h:
  tau = (h_i . h_z) (e_{y_i} - p_i) . d f(z) / d logits;
- ``knn``: +cos(h_i, h_z) for the k nearest training examples of the same label as z,
  -cos for those of another label, 0 beyond the k nearest;
- ``random_scores``: independent Gaussian scores (a control: its LDS must be about 0).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import jvp, vjp, vmap

from memlab.errors import ConfigError
from memlab.measures.attribution.gradients import (
    all_grads,
    forward,
    iter_grads,
    logits_of,
    model_buffers,
    n_params,
    per_example_grads,
    unstack,
)

_PROJECTION_CACHE_BYTES = 512 * 2**20

_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "memlab_attribution_progress", default=False)


@contextlib.contextmanager
def progress(enabled: bool = True) -> Iterator[None]:
    """Inside, the methods that take long (the influence functions' solvers, EK-FAC's
    fitting, TRAK, TracIn's checkpoints, the gradient products) show a progress bar on
    standard error: model, damping, solver step (``Execution.progress`` turns it on)."""
    token = _PROGRESS.set(bool(enabled))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _steps(total: int, desc: str, unit: str = "step"):
    """A tqdm bar of ``total`` steps, shown only inside :func:`progress`."""
    import sys

    from memlab.progress import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not _PROGRESS.get(),
                dynamic_ncols=True, file=sys.stderr)


@dataclass
class Problem:
    """What a method attributes: K trained models of one architecture and the data.

    template: the architecture (an nn.Module; its own weights are not used).
    params: name -> (K, ...) stacked trainable parameters of the models.
    train_masks: (K, n_train) bool, the training subset of each model (its loss Hessian
        is taken over it); all ones when None.
    checkpoints: for TracIn, a list over models of lists of (params (1, ...), lr) pairs,
        lr the checkpoint's weight eta_t (:func:`checkpoint_learning_rates`), evaluated
        with the model's final buffers (checkpoints hold parameters only).
    buffers: name -> (K, ...) stacked buffers of the models (BatchNorm's running
        statistics, from ``gradients.buffers_from_weights``), with which every model is
        evaluated; never differentiated. Empty for models without buffers.
    """

    template: nn.Module
    params: dict[str, torch.Tensor]
    x_train: np.ndarray
    y_train: np.ndarray
    x_target: np.ndarray
    y_target: np.ndarray
    train_masks: np.ndarray | None = None
    checkpoints: list[list[tuple[dict[str, torch.Tensor], float]]] | None = None
    extra: dict = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_targets(self) -> int:
        return len(self.y_target)

    def model(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's parameters as a stack of one."""
        return {name: t[k:k + 1] for name, t in self.params.items()}

    def model_buffers(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's buffers as a stack of one (empty for a model without buffers)."""
        return model_buffers(self.buffers, k)

    def members(self, k: int) -> np.ndarray:
        if self.train_masks is None:
            return np.arange(self.n_train)
        return np.flatnonzero(self.train_masks[k])


def _loss_grad_dot(template, params_k, x_train, y_train, vectors: torch.Tensor,
                   normalize: bool = False, buffers_k=None) -> torch.Tensor:
    """(n_train, m) = -grad l_i . v_z for the m vectors (m, p), streamed over the
    training examples (the training gradients are never all in memory)."""
    out = torch.empty(len(y_train), vectors.shape[0])
    for rows, g in iter_grads(template, params_k, x_train, y_train, output="loss",
                              buffers=buffers_k):
        g = g[0]
        if normalize:
            g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out[rows] = -(g @ vectors.T)
    return out


def grad_dot(problem: Problem, cosine: bool = False) -> np.ndarray:
    """Gradient dot product (or cosine) of the target's output and the training loss,
    averaged over the problem's models."""
    total = torch.zeros(problem.n_train, problem.n_targets)
    with _steps(problem.n_models, "grad_cos" if cosine else "grad_dot", "model") as bar:
        for k in range(problem.n_models):
            pk, bk = problem.model(k), problem.model_buffers(k)
            g_target = all_grads(problem.template, pk, problem.x_target, problem.y_target,
                                 "logodds", buffers=bk)[0]
            if cosine:
                g_target = g_target / g_target.norm(dim=1, keepdim=True).clamp_min(1e-12)
            total += _loss_grad_dot(problem.template, pk, problem.x_train, problem.y_train,
                                    g_target, normalize=cosine, buffers_k=bk)
            bar.update()
    return (total / problem.n_models).numpy().astype(np.float32)


def grad_cos(problem: Problem) -> np.ndarray:
    return grad_dot(problem, cosine=True)


def checkpoint_learning_rates(lr_at_step: Callable[[int], float],
                              checkpoint_steps: Sequence[int]) -> list[float]:
    """TracIn's weight eta_t of each checkpoint: the mean learning rate over the optimizer
    steps the checkpoint stands for, from the step after the previous checkpoint (the first
    step, for the first checkpoint) to its own. ``lr_at_step(s)``: the learning rate the
    recipe used at step s (0-based; the training loop's own schedule, never a copy of it);
    ``checkpoint_steps``: the steps taken when each checkpoint was saved, increasing.

    With a constant learning rate every checkpoint gets it (TracIn as before schedules
    were read); under a decaying schedule (cosine, step) the late checkpoints, around which
    training moved the weights less, count less, as the sum over steps of
    eta_s (-g_z . grad l_i) that TracIn approximates weighs them."""
    rates, start = [], 0
    for position, end in enumerate(checkpoint_steps):
        if end == 0 and position == 0:  # the initial weights: they stand for the first step
            rates.append(float(lr_at_step(0)))
            continue
        if end <= start:
            raise ConfigError(f"checkpoint steps must increase, got {list(checkpoint_steps)}")
        steps = [float(lr_at_step(step)) for step in range(start, end)]
        # (a constant rate is returned as it is, not as a sum over n divided by n: the same
        # bits as the base rate)
        rates.append(steps[0] if min(steps) == max(steps) else math.fsum(steps) / len(steps))
        start = end
    return rates


def tracin(problem: Problem) -> np.ndarray:
    """TracIn-CP over ``problem.checkpoints`` (one list of (params, lr) per model): the mean
    over models of sum_t lr_t (-g_z(w_t) . grad l_i(w_t))."""
    if not problem.checkpoints:
        raise ConfigError("tracin needs checkpoints saved during training (problem.checkpoints)")
    total = torch.zeros(problem.n_train, problem.n_targets)
    with _steps(sum(map(len, problem.checkpoints)), "tracin", "checkpoint") as bar:
        for m, trajectory in enumerate(problem.checkpoints):
            bm = problem.model_buffers(m)
            for params_t, lr in trajectory:
                g_target = all_grads(problem.template, params_t, problem.x_target,
                                     problem.y_target, "logodds", buffers=bm)[0]
                total += lr * _loss_grad_dot(problem.template, params_t, problem.x_train,
                                             problem.y_train, g_target, buffers_k=bm)
                bar.update()
    return (total / len(problem.checkpoints)).numpy().astype(np.float32)


# ------------------------------------------------------------------ TRAK


class Projector:
    """A Gaussian random projection R^p -> R^k, P with entries N(0, 1/k), generated in
    blocks of parameter rows from ``seed`` (cached when it fits in 512 MiB), so that
    E[P P^T] = I and the same seed gives the same P."""

    def __init__(self, p: int, k: int, seed: int = 0, block: int = 4096):
        self.p, self.k, self.seed, self.block = p, k, seed, block
        self.cache = None
        if p * k * 4 <= _PROJECTION_CACHE_BYTES:
            self.cache = torch.cat([self._block(b) for b in range(0, p, block)])

    def _block(self, start: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + start)
        rows = min(self.block, self.p - start)
        return torch.randn(rows, self.k, generator=generator) / math.sqrt(self.k)

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """(b, p) -> (b, k)."""
        if self.cache is not None:
            return g @ self.cache
        out = torch.zeros(g.shape[0], self.k)
        for start in range(0, self.p, self.block):
            out += g[:, start:start + self.block] @ self._block(start)
        return out


def _features(problem: Problem, params_k, x, y, projector: Projector | None,
              buffers_k=None) -> torch.Tensor:
    parts = []
    for _, g in iter_grads(problem.template, params_k, x, y, output="logodds",
                           buffers=buffers_k):
        parts.append(g[0] if projector is None else projector(g[0]))
    return torch.cat(parts)


def _grid(damping) -> tuple[list[float], bool]:
    """(list of dampings, whether a sequence was given): methods given a sequence return
    {damping: scores}, so the curvature is computed once for the whole grid."""
    if isinstance(damping, int | float):
        return [float(damping)], False
    return [float(d) for d in damping], True


def _result(totals: dict[float, torch.Tensor], n_models: int, many: bool):
    scores = {d: (t / n_models).numpy().astype(np.float32) for d, t in totals.items()}
    return scores if many else next(iter(scores.values()))


def trak(problem: Problem, proj_dim: int | None = 512, damping: float | Sequence[float] = 1e-3,
         seed: int = 0) -> np.ndarray | dict[float, np.ndarray]:
    """TRAK scores averaged over the problem's models. ``proj_dim=None``: no projection (the
    exact after-kernel, p x p). ``damping``: lam = damping * trace(Phi^T Phi) / p, relative
    to the mean eigenvalue of the unprojected kernel so it does not change with proj_dim."""
    p = n_params(problem.params)
    dampings, many = _grid(damping)
    totals = {d: torch.zeros(problem.n_train, problem.n_targets, dtype=torch.float64)
              for d in dampings}
    bar = _steps(problem.n_models, "trak", "model")
    for k in range(problem.n_models):
        pk, bk = problem.model(k), problem.model_buffers(k)
        projector = None if proj_dim is None else Projector(p, proj_dim, seed=seed + 7919 * k)
        phi = _features(problem, pk, problem.x_train, problem.y_train, projector, bk).double()
        phi_target = _features(problem, pk, problem.x_target, problem.y_target, projector,
                               bk).double()
        f_train = _logodds(problem.template, pk, problem.x_train, problem.y_train, bk)
        q = torch.sigmoid(-f_train).double()  # 1 - p_i
        # phi_z^T (Phi^T Phi + lam)^-1 Phi^T = phi_z^T Phi^T (Phi Phi^T + lam)^-1: solve in
        # whichever of feature space (k x k) and sample space (n x n) is smaller.
        dual = phi.shape[1] > phi.shape[0]
        kernel = phi @ phi.T if dual else phi.T @ phi
        eye = torch.eye(kernel.shape[0], dtype=kernel.dtype)
        for d in dampings:
            lam = d * torch.trace(kernel) / p
            if dual:
                scores = torch.linalg.solve(kernel + lam * eye, phi @ phi_target.T)  # (n, m)
            else:
                scores = phi @ torch.linalg.solve(kernel + lam * eye, phi_target.T)
            totals[d] += scores * q[:, None]
        bar.update()
    bar.close()
    return _result(totals, problem.n_models, many)


def _logodds(template, params_k, x, y, buffers_k=None) -> torch.Tensor:
    """(n,) log-odds of model params_k (a stack of one) on (x, y)."""
    logits = logits_of(template, params_k, x, buffers=buffers_k)[0]
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    true_logit = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true_logit - torch.logsumexp(others, 1)


# ------------------------------------------------------------------ influence functions


def _flat(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in params.values()])


def _unflat(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for name, t in like.items():
        out[name] = vector[start:start + t.numel()].view_as(t)
        start += t.numel()
    return out


def single_linear(template: nn.Module) -> bool:
    """True for a model whose only parameters are one Linear layer (logistic regression)."""
    params = list(template.named_parameters())
    return len(params) == 2 and params[0][1].dim() == 2 and params[1][1].dim() == 1


EXACT_HESSIAN_MAX_PARAMS = 4000  # a p x p float64 Hessian by torch.func: 128 MB, minutes


def exact_hessian_applies(template: nn.Module) -> bool:
    """Whether ``solver="exact"`` works for this model: logistic regression (closed form)
    or at most EXACT_HESSIAN_MAX_PARAMS parameters."""
    n = sum(p.numel() for p in template.parameters())
    return single_linear(template) or n <= EXACT_HESSIAN_MAX_PARAMS


def linear_hessian(x: np.ndarray, probs: torch.Tensor) -> torch.Tensor:
    """The exact Hessian (p x p, float64) of the mean cross-entropy of a linear softmax model
    logits = W x + b at softmax outputs ``probs`` (n, C), parameters flattened as
    [W row-major, b]: H = mean_i (diag(p_i) - p_i p_i^T) kron x~_i x~_i^T, x~ = [x, 1],
    re-ordered to that layout. Cost C^2 n d^2 / 2 multiply-adds."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64).flatten(1)
    n, d = xt.shape
    xt = torch.cat([xt, torch.ones(n, 1, dtype=xt.dtype)], 1)
    probs = probs.double()
    c = probs.shape[1]
    blocks = torch.empty(c, c, d + 1, d + 1, dtype=torch.float64)
    for a in range(c):
        for b in range(a, c):
            weight = probs[:, a] * (float(a == b) - probs[:, b])
            blocks[a, b] = xt.T @ (weight[:, None] * xt) / n
            blocks[b, a] = blocks[a, b]
    # blocks[a, b, j, j'] indexes (class a, feature j); W is row-major (c, d), then b (c,).
    weight_part = blocks[:, :, :d, :d].permute(0, 2, 1, 3).reshape(c * d, c * d)
    cross = blocks[:, :, :d, d].permute(0, 2, 1).reshape(c * d, c)  # (W, b)
    bias_part = blocks[:, :, d, d]
    top = torch.cat([weight_part, cross], 1)
    bottom = torch.cat([cross.T, bias_part], 1)
    return torch.cat([top, bottom], 0)


def exact_hessian(loss: callable, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(p, p) Hessian of ``loss(params_dict) -> scalar`` by torch.func (small p only)."""
    like = {name: t.detach() for name, t in params.items()}
    flat = _flat(like).double()

    def f(vector):
        return loss(_unflat(vector, like))
    return torch.func.hessian(f)(flat)


HESSIAN_WORK_BYTES = 512 * 2**20  # working memory of the exact Hessian's passes


def _activation_numel(template: nn.Module, x_one: torch.Tensor, params: Mapping[str, torch.Tensor],
                      buffers_one=None) -> int:
    """Numbers one example's forward pass keeps (the input and every module's output): what
    each (example, tangent) pair of the Hessian's forward-over-reverse pass holds, about."""
    total = [x_one.numel()]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total.append(output.numel())
    hooks = [m.register_forward_hook(count) for m in template.modules()]
    try:
        with torch.no_grad():
            forward(template, params, x_one, buffers_one)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(total)


def exact_mean_hessian(template: nn.Module, params: Mapping[str, torch.Tensor], x, y,
                       buffers_one=None, budget: int = HESSIAN_WORK_BYTES) -> torch.Tensor:
    """(p, p) float64 Hessian of the mean cross-entropy over (x, y) at ``params`` (one
    model, float64). In one pass (:func:`exact_hessian`) when p tangents through all the
    examples fit in ``budget`` bytes; otherwise as a sum over batches of examples, each
    batch's Hessian built a block of columns at a time (forward-over-reverse
    Hessian-vector products), so a convolution's activations never exist p times at once:
    same matrix, bounded memory."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    like = {name: t.detach().double() for name, t in params.items()}
    flat = _flat(like)
    p, n = flat.numel(), len(y)
    per_pair = 32 * _activation_numel(template, x[:1], like, buffers_one)  # bytes, generous
    if per_pair * n * p <= budget:
        return exact_hessian(_mean_loss_fn(template, x, y, buffers_one), like)
    batch = int(min(n, max(1, budget // (per_pair * min(p, 64)))))
    block = int(min(p, max(1, budget // (per_pair * batch))))
    hessian = torch.zeros(p, p, dtype=torch.float64)
    basis = torch.eye(p, dtype=torch.float64)
    for start in range(0, n, batch):
        rows = slice(start, min(start + batch, n))
        loss = _mean_loss_fn(template, x[rows], y[rows], buffers_one)
        gradient = torch.func.grad(lambda v, loss=loss: loss(_unflat(v, like)))

        def column(v, gradient=gradient):
            return torch.func.jvp(gradient, (flat,), (v,))[1]
        weight = (rows.stop - rows.start) / n
        for first in range(0, p, block):
            cols = slice(first, min(first + block, p))
            hessian[:, cols] += weight * torch.func.vmap(column)(basis[cols]).T
    return hessian


def _mean_loss_fn(template, x, y, buffers_one=None):
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)

    def loss(params):
        logits = forward(template, params, x, buffers_one)
        return torch.nn.functional.cross_entropy(logits, y)
    return loss


def _ggn_product(template: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                 buffers_one=None):
    """v (p,) -> G v, G = mean_i J_i^T (diag(p_i) - p_i p_i^T) J_i, the Gauss-Newton
    matrix of the mean cross-entropy at params (equal to the Hessian for linear models)."""
    like = {name: t.detach() for name, t in params.items()}
    flat = _flat(like)

    def logits(vector):
        return forward(template, _unflat(vector, like), x, buffers_one)

    with torch.no_grad():
        probs = torch.softmax(logits(flat), 1)

    def product(v):
        _, jv = jvp(logits, (flat,), (v,))  # (b, C)
        a_jv = probs * jv - probs * (probs * jv).sum(1, keepdim=True)
        _, pullback = vjp(logits, flat)
        return pullback(a_jv)[0] / x.shape[0]
    return product


def _batched_cg(product, rhs: torch.Tensor, lam: float, n_iter: int, tol: float = 1e-6,
                on_step=None) -> torch.Tensor:
    """Solve (G + lam I) v = b for every row b of rhs (m, p) by conjugate gradients
    (``on_step(n)``: called with the iterations done, for a progress bar)."""
    def apply(v):
        return vmap(product)(v) + lam * v
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    d = r.clone()
    rr = (r * r).sum(1)
    start = rr.clone()
    for i in range(n_iter):
        ad = apply(d)
        alpha = rr / (d * ad).sum(1).clamp_min(1e-30)
        x += alpha[:, None] * d
        r -= alpha[:, None] * ad
        rr_new = (r * r).sum(1)
        if on_step is not None:
            on_step(1 if i < n_iter - 1 and not (rr_new <= tol**2 * start).all()
                    else n_iter - i)  # converged early: the rest of the steps at once
        if (rr_new <= tol**2 * start).all():
            break
        d = r + (rr_new / rr.clamp_min(1e-30))[:, None] * d
        rr = rr_new
    return x


def _lissa(product_on, x_train, members, rhs, lam: float, depth: int, batch: int, scale: float,
           seed: int, on_step=None) -> torch.Tensor:
    """LiSSA (Agarwal et al. 2017): v <- b + (1 - lam/s) v - G_batch v / s over ``depth``
    mini-batches; (G + lam I)^-1 b ~ v / s."""
    rng = np.random.default_rng(seed)
    v = rhs.clone()
    for _ in range(depth):
        rows = rng.choice(members, min(batch, len(members)), replace=False)
        product = product_on(torch.as_tensor(np.asarray(x_train[rows]), dtype=torch.float32))
        v = rhs + (1 - lam / scale) * v - vmap(product)(v) / scale
        if on_step is not None:
            on_step(1)
    return v / scale


def _power_max_eig(product, p: int, n_iter: int = 20, seed: int = 0) -> float:
    v = torch.randn(p, generator=torch.Generator().manual_seed(seed))
    v /= v.norm()
    value = 1.0
    for _ in range(n_iter):
        w = product(v)
        value = float(w.norm())
        v = w / max(value, 1e-30)
    return value


def influence(problem: Problem, solver: str = "auto", damping: float | Sequence[float] = 1e-3,
              hessian_examples: int | None = None, cg_iter: int = 50, lissa_depth: int = 200,
              lissa_batch: int = 256, seed: int = 0) -> np.ndarray:
    """Influence-function scores averaged over the problem's models.

    solver: "exact" (the full Hessian: closed form for logistic regression, torch.func for
        models with at most 4,000 parameters), "cg", "lissa", "ekfac", or "auto" (exact
        where it applies, else cg).
    damping: lam = damping * (mean eigenvalue of the curvature), i.e. trace / p.
    hessian_examples: training examples the curvature is averaged over (a random sample
        of the model's subset; all of it when None).
    """
    p = n_params(problem.params)
    if solver == "auto":
        solver = "exact" if exact_hessian_applies(problem.template) else "cg"
    if solver == "ekfac":
        return ekfac_influence(problem, damping=damping, hessian_examples=hessian_examples,
                               seed=seed)
    if solver not in ("exact", "cg", "lissa"):
        raise ConfigError(f"solver must be auto, exact, cg, lissa or ekfac, got {solver!r}")
    dampings, many = _grid(damping)
    totals = {d: torch.zeros(problem.n_train, problem.n_targets) for d in dampings}
    inner = {"exact": 1, "cg": cg_iter, "lissa": lissa_depth}[solver]
    # per model: the curvature, then per damping the solve's steps and the scores
    with _steps(problem.n_models * (1 + len(dampings) * (inner + 1)), f"if_{solver}") as bar:
        for k in range(problem.n_models):
            _influence_one(problem, k, solver, dampings, totals, hessian_examples, cg_iter,
                           lissa_depth, lissa_batch, seed, p, bar)
    return _result(totals, problem.n_models, many)


def _influence_one(problem: Problem, k: int, solver: str, dampings: list[float], totals: dict,
                   hessian_examples, cg_iter: int, lissa_depth: int, lissa_batch: int,
                   seed: int, p: int, bar) -> None:
    """Model k's influence scores, added to ``totals`` (damping -> scores)."""
    pk, bk = problem.model(k), problem.model_buffers(k)
    b_one = unstack(bk)
    members = problem.members(k)
    rng = np.random.default_rng([seed, k])
    if hessian_examples is not None and hessian_examples < len(members):
        members = np.sort(rng.choice(members, hessian_examples, replace=False))
    g_target = all_grads(problem.template, pk, problem.x_target, problem.y_target, "logodds",
                         buffers=bk)[0]
    one = {name: t[0] for name, t in pk.items()}
    if solver == "exact":
        if single_linear(problem.template) and not b_one:  # (closed form: logits = W x + b)
            logits = logits_of(problem.template, pk, problem.x_train[members])[0]
            probs = torch.softmax(logits, 1)
            hessian = linear_hessian(problem.x_train[members], probs)
        elif exact_hessian_applies(problem.template):
            hessian = exact_mean_hessian(problem.template,
                                         {n: t.double() for n, t in one.items()},
                                         problem.x_train[members], problem.y_train[members],
                                         b_one)
        else:
            raise ConfigError(f"the exact Hessian of {p} parameters is too large; use "
                              "solver='cg', 'lissa' or 'ekfac'")
        eye = torch.eye(p, dtype=hessian.dtype)
        mean_eig = float(torch.trace(hessian)) / p
        bar.update()
        solved = {}
        for d in dampings:
            solved[d] = torch.linalg.solve(hessian + d * mean_eig * eye,
                                           g_target.double().T).T.float()
            bar.update()
    else:
        x_members = torch.as_tensor(np.asarray(problem.x_train[members]), dtype=torch.float32)
        product = _ggn_product(problem.template, one, x_members, b_one)
        top = _power_max_eig(product, p, seed=seed)
        trace = ggn_trace(problem.template, one, x_members, buffers_one=b_one)
        bar.update()
        solved = {}
        for d in dampings:
            bar.set_postfix_str(f"model {k + 1}/{problem.n_models}, damping {d:g}")
            lam = d * trace / p
            if solver == "cg":
                solved[d] = _batched_cg(product, g_target, lam, cg_iter, on_step=bar.update)
            else:
                def product_on(xb, one=one):
                    return _ggn_product(problem.template, one, xb, b_one)
                solved[d] = _lissa(product_on, problem.x_train, problem.members(k), g_target,
                                   lam, lissa_depth, lissa_batch, scale=1.5 * (top + lam),
                                   seed=seed, on_step=bar.update)
    scale = 1.0 / len(problem.members(k))
    for d, vectors in solved.items():
        totals[d] += scale * _loss_grad_dot(problem.template, pk, problem.x_train,
                                            problem.y_train, vectors, buffers_k=bk)
        bar.update()


def ggn_trace(template: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
              batch: int = 64, buffers_one=None) -> float:
    """Exact trace of the Gauss-Newton matrix, mean_i tr(A_i J_i J_i^T), from per-example
    Jacobians of the logits (C backward passes per example), so that a damping relative to
    the mean eigenvalue means the same for every solver."""
    like = {name: t.detach() for name, t in params.items()}

    def logits_one(p, xi):
        return forward(template, p, xi.unsqueeze(0), buffers_one)[0]
    jacobian = vmap(torch.func.jacrev(logits_one), in_dims=(None, 0))
    total = 0.0
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        jac = torch.cat([j.flatten(2) for j in jacobian(like, xb).values()], 2)  # (b, C, p)
        gram = jac @ jac.transpose(1, 2)  # (b, C, C)
        with torch.no_grad():
            probs = torch.softmax(forward(template, like, xb, buffers_one), 1)
        a = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
        total += float((a * gram).sum())
    return total / len(x)


# ------------------------------------------------------------------ EK-FAC


def _linear_layers(template: nn.Module) -> list[tuple[str, nn.Linear]]:
    layers = [(name, m) for name, m in template.named_modules() if isinstance(m, nn.Linear)]
    covered = {f"{name}.{p}" for name, m in layers for p, _ in m.named_parameters()}
    names = {name for name, _ in template.named_parameters()}
    if covered != names:
        raise ConfigError("ekfac applies to models whose parameters are all in Linear layers; "
                          f"{sorted(names - covered)[:3]} are not")
    return layers


def _layer_inputs_and_output_grads(template, params_one, x, y_sampled, buffers_one=None):
    """Per-example inputs a (b, in) and loss gradients at the outputs g (b, out) of every
    Linear layer, for the loss at labels y_sampled."""
    inputs, outputs = {}, {}
    handles = []
    for name, module in _linear_layers(template):
        def hook(mod, args, out, name=name):
            inputs[name] = args[0].detach().flatten(1)
            out.retain_grad()
            outputs[name] = out
        handles.append(module.register_forward_hook(hook))
    try:
        logits = forward(template, params_one, x, buffers_one)
        # Summed (not mean) loss: each row of the output gradient is one example's.
        torch.nn.functional.cross_entropy(logits, y_sampled, reduction="sum").backward()
    finally:
        for handle in handles:
            handle.remove()
    return {name: (inputs[name], outputs[name].grad.detach()) for name in inputs}


def ekfac_factors(template: nn.Module, params_one: dict[str, torch.Tensor], x: np.ndarray,
                  seed: int = 0, batch: int = 512, buffers_one=None
                  ) -> dict[str, dict[str, torch.Tensor]]:
    """EK-FAC (George et al. 2018; Grosse et al. 2023) of every Linear layer, with labels
    sampled from the model (the true Fisher): eigenbases Q_A of A = E[a a^T] (a = [input, 1])
    and Q_S of S = E[g g^T], and the corrected eigenvalues
    Lambda_ij = E[(Q_S^T g)_i^2 (Q_A^T a)_j^2] of the per-example gradients g a^T."""
    template.eval()
    leaf = {name: t.detach().clone().requires_grad_(True) for name, t in params_one.items()}
    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    sums: dict[str, dict[str, torch.Tensor]] = {}
    batches = []
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        with torch.no_grad():
            probs = torch.softmax(forward(template, leaf, xb, buffers_one), 1)
        y_sampled = torch.multinomial(probs, 1, generator=generator)[:, 0]
        batches.append((xb, y_sampled))
        for name, (a, g) in _layer_inputs_and_output_grads(template, leaf, xb, y_sampled,
                                                            buffers_one).items():
            a = torch.cat([a, torch.ones(len(a), 1)], 1).double()
            g = g.double()
            entry = sums.setdefault(name, {"A": 0, "S": 0})
            entry["A"] = entry["A"] + a.T @ a
            entry["S"] = entry["S"] + g.T @ g
        for t in leaf.values():
            t.grad = None
    n = len(x)
    factors = {}
    for name, entry in sums.items():
        _, q_a = torch.linalg.eigh(entry["A"] / n)
        _, q_s = torch.linalg.eigh(entry["S"] / n)
        factors[name] = {"QA": q_a, "QS": q_s, "L": 0}
    for xb, y_sampled in batches:  # second pass: the eigenvalue correction
        for name, (a, g) in _layer_inputs_and_output_grads(template, leaf, xb, y_sampled,
                                                            buffers_one).items():
            a = torch.cat([a, torch.ones(len(a), 1)], 1).double()
            f = factors[name]
            factors[name]["L"] = f["L"] + ((g.double() @ f["QS"])**2).T @ ((a @ f["QA"])**2)
        for t in leaf.values():
            t.grad = None
    for f in factors.values():
        f["L"] = f["L"] / n
    return factors


def ekfac_precondition(template: nn.Module, params_one, factors, vectors: torch.Tensor,
                       damping: float) -> torch.Tensor:
    """(m, p) -> (m, p): every layer's block of the vectors (gradients laid out as
    [weight (out, in) row-major, bias (out)]) times (F_ekfac + lam I)^-1,
    lam = damping * mean corrected eigenvalue of the layer."""
    out = torch.zeros_like(vectors)
    offsets, start = {}, 0
    for name, t in params_one.items():
        offsets[name] = (start, t.numel(), t.shape)
        start += t.numel()
    for name, _module in _linear_layers(template):
        w0, w_n, w_shape = offsets[f"{name}.weight"]
        has_bias = f"{name}.bias" in offsets
        m = vectors.shape[0]
        v = vectors[:, w0:w0 + w_n].reshape(m, *w_shape)
        if has_bias:
            b0, b_n, _ = offsets[f"{name}.bias"]
            v = torch.cat([v, vectors[:, b0:b0 + b_n, None]], 2)
        f = factors[name]
        q_a = f["QA"] if has_bias else f["QA"][:-1, :-1]
        lam = damping * float(f["L"].mean())
        rotated = f["QS"].T @ v.double() @ q_a
        solved = f["QS"] @ (rotated / (f["L"] + lam)) @ q_a.T
        out[:, w0:w0 + w_n] = solved[:, :, :w_shape[1]].reshape(m, -1).float()
        if has_bias:
            out[:, b0:b0 + b_n] = solved[:, :, -1].float()
    return out


def ekfac_influence(problem: Problem, damping: float | Sequence[float] = 1e-3,
                    hessian_examples: int | None = None, seed: int = 0
                    ) -> np.ndarray | dict[float, np.ndarray]:
    """Influence functions with the EK-FAC curvature (every parameter in a Linear layer)."""
    dampings, many = _grid(damping)
    totals = {d: torch.zeros(problem.n_train, problem.n_targets) for d in dampings}
    bar = _steps(problem.n_models * (1 + len(dampings)), "if_ekfac")
    for k in range(problem.n_models):
        bar.set_postfix_str(f"model {k + 1}/{problem.n_models}: fitting the factors")
        pk, bk = problem.model(k), problem.model_buffers(k)
        one = {name: t[0] for name, t in pk.items()}
        members = problem.members(k)
        if hessian_examples is not None and hessian_examples < len(members):
            members = np.sort(np.random.default_rng([seed, k]).choice(
                members, hessian_examples, replace=False))
        factors = ekfac_factors(problem.template, one, problem.x_train[members], seed=seed + k,
                                buffers_one=unstack(bk))
        bar.update()
        g_target = all_grads(problem.template, pk, problem.x_target, problem.y_target, "logodds",
                             buffers=bk)[0]
        for d in dampings:
            bar.set_postfix_str(f"model {k + 1}/{problem.n_models}, damping {d:g}")
            vectors = ekfac_precondition(problem.template, one, factors, g_target, d)
            totals[d] += _loss_grad_dot(problem.template, pk, problem.x_train, problem.y_train,
                                        vectors, buffers_k=bk) / len(problem.members(k))
            bar.update()
    bar.close()
    return _result(totals, problem.n_models, many)


# ------------------------------------------------------------------ feature-space methods


def penultimate(template: nn.Module, params_k, x, buffers_k=None) -> torch.Tensor:
    """(n, h) inputs of the model's last Linear layer (for logistic regression: x)."""
    layers = [m for m in template.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ConfigError("representer points and k-NN need a model ending in a Linear layer")
    captured = []
    handle = layers[-1].register_forward_hook(lambda m, a, o: captured.append(a[0].detach()))
    one = {name: t[0] for name, t in params_k.items()}  # no vmap: the hook sees plain tensors
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    try:
        with torch.no_grad():
            for start in range(0, len(x), 2048):
                forward(template.eval(), one, x[start:start + 2048], unstack(buffers_k))
    finally:
        handle.remove()
    return torch.cat([c.reshape(-1, c.shape[-1]) for c in captured])


def _output_direction(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(m, C) d f / d logits of the log-odds: +1 at the label, -softmax over the others."""
    others = logits.scatter(1, y[:, None], float("-inf"))
    direction = -torch.softmax(others, 1)
    return direction.scatter(1, y[:, None], 1.0)


def representer(problem: Problem) -> np.ndarray:
    """Representer points: (h_i . h_z) (e_{y_i} - p_i) . d f(z)/d logits, averaged."""
    total = torch.zeros(problem.n_train, problem.n_targets)
    y_train = torch.as_tensor(problem.y_train, dtype=torch.long)
    y_target = torch.as_tensor(problem.y_target, dtype=torch.long)
    for k in range(problem.n_models):
        pk, bk = problem.model(k), problem.model_buffers(k)
        h_train = penultimate(problem.template, pk, problem.x_train, bk)
        h_target = penultimate(problem.template, pk, problem.x_target, bk)
        p_train = torch.softmax(logits_of(problem.template, pk, problem.x_train,
                                          buffers=bk)[0], 1)
        alpha = torch.nn.functional.one_hot(y_train, p_train.shape[1]) - p_train  # (n, C)
        direction = _output_direction(logits_of(problem.template, pk, problem.x_target,
                                                buffers=bk)[0], y_target)
        total += (h_train @ h_target.T) * (alpha @ direction.T)
    return (total / problem.n_models).numpy().astype(np.float32)


def knn(problem: Problem, k_neighbours: int = 50) -> np.ndarray:
    """k-NN in penultimate features: signed cosine similarity for the k nearest."""
    total = torch.zeros(problem.n_train, problem.n_targets)
    same = torch.as_tensor(problem.y_train[:, None] == problem.y_target[None, :])
    for k in range(problem.n_models):
        pk, bk = problem.model(k), problem.model_buffers(k)
        normalize = torch.nn.functional.normalize
        h_train = normalize(penultimate(problem.template, pk, problem.x_train, bk), dim=1)
        h_target = normalize(penultimate(problem.template, pk, problem.x_target, bk), dim=1)
        cos = h_train @ h_target.T
        keep = min(k_neighbours, problem.n_train)
        top = cos.topk(keep, dim=0).indices
        near = torch.zeros_like(cos, dtype=torch.bool).scatter(0, top, True)
        total += torch.where(near, torch.where(same, cos, -cos), 0.0)
    return (total / problem.n_models).numpy().astype(np.float32)


def random_scores(problem: Problem, seed: int = 0) -> np.ndarray:
    """Independent standard-normal scores: a control whose LDS must be about 0."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((problem.n_train, problem.n_targets)).astype(np.float32)


METHODS = {
    "grad_dot": grad_dot,
    "grad_cos": grad_cos,
    "tracin": tracin,
    "trak": trak,
    "if_exact": lambda problem, **kw: influence(problem, solver="exact", **kw),
    "if_cg": lambda problem, **kw: influence(problem, solver="cg", **kw),
    "if_lissa": lambda problem, **kw: influence(problem, solver="lissa", **kw),
    "if_ekfac": lambda problem, **kw: influence(problem, solver="ekfac", **kw),
    "representer": representer,
    "knn": knn,
    "random": random_scores,
}


def refusal(name: str, template: nn.Module) -> str | None:
    """Why method ``name`` cannot score models built like ``template`` (None: it can), from
    the model's layer types and size alone: cheap (one untrained instance), so that a study
    says so before training anything."""
    if name == "if_ekfac":
        linear = {f"{module}.{param}" for module, layer in template.named_modules()
                  if isinstance(layer, nn.Linear) for param, _ in layer.named_parameters()}
        outside = [n for n, _ in template.named_parameters() if n not in linear]
        if outside:
            owners = sorted({type(template.get_submodule(n.rpartition(".")[0])).__name__
                             if "." in n else type(template).__name__ for n in outside})
            return (f"if_ekfac needs every parameter in a Linear layer, and this model has "
                    f"{len(outside)} parameter tensors in other layers ({', '.join(owners)}); "
                    "use if_cg or if_lissa (the same influence functions, any layer)")
    if name == "if_exact" and not exact_hessian_applies(template):
        n = sum(p.numel() for p in template.parameters())
        return (f"if_exact needs the exact Hessian, and this model has {n} parameters (at "
                f"most {EXACT_HESSIAN_MAX_PARAMS}, or a linear model); if_cg and if_ekfac "
                "approximate it")
    if name in ("representer", "knn") and not any(
            isinstance(m, nn.Linear) for m in template.modules()):
        return f"{name} reads the inputs of the model's last Linear layer, and it has none"
    return None


def compute(name: str, problem: Problem, **options) -> np.ndarray:
    """Scores (n_train, n_targets) of method ``name`` (one of :data:`METHODS`)."""
    if name not in METHODS:
        raise ConfigError(f"unknown attribution method {name!r}: choose from "
                          f"{', '.join(METHODS)}")
    return METHODS[name](problem, **options)


def self_influence_problem(problem: Problem, rows: Sequence[int]) -> Problem:
    """The problem whose targets are training examples ``rows`` (for self-influence)."""
    rows = np.asarray(rows)
    return dataclasses.replace(problem, x_target=problem.x_train[rows],
                               y_target=problem.y_train[rows])


def per_example_output_grads(problem: Problem, x, y) -> torch.Tensor:
    """(K, n, p) gradients of the log-odds for every model of the problem (small models)."""
    return per_example_grads(problem.template, problem.params, torch.as_tensor(x),
                             torch.as_tensor(y), "logodds", buffers=problem.buffers)
