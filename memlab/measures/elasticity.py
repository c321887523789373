"""Local elasticity (He & Su 2020): how one SGD step on one example moves the others.

From weights w, one SGD step on the labeled example (x_i, y_i) gives
w⁺_i = w − η ∇_w L(f(x_i, w), y_i). For every probe x'_j we record the change of a scalar
output f and form (docs/science.md §4)

    S_rel(x_i, x'_j) = |f(x'_j, w⁺_i) − f(x'_j, w)| / |f(x_i, w⁺_i) − f(x_i, w)|
    S_ker(x_i, x'_j) =  (f(x'_j, w⁺_i) − f(x'_j, w)) / (−η ∂L/∂f at (x_i, y_i))

Every row restarts from the same w. The rows are computed together with ``torch.func``
(per-example gradients by ``vmap(grad(...))``, then the stepped networks evaluated by
``vmap(functional_call(...))``): the model is never copied or reloaded per example.

Which scalar f (inferred from the model's number of outputs):

- ``"binary"`` (one output): f is the single logit and L the logistic loss
  (``binary_cross_entropy_with_logits``) with y ∈ {0, 1}. Then S_ker → ⟨∇f(x), ∇f(x')⟩,
  the empirical neural tangent kernel, as η → 0.
- ``"true_class"`` (C > 1 outputs): the step is an ordinary cross-entropy step on (x_i, y_i)
  over all C logits, and f in row i is the logit of the *stepped example's* class y_i, read at
  x_i and at every probe. As η → 0, S_ker → ⟨∇_w L_i, ∇_w z_{y_i}(x')⟩ / (∂L_i/∂z_{y_i}):
  the tangent kernel of the true-class logit plus cross-class terms weighted by the softmax
  (``ntk_gram(kind="limit")`` computes it exactly; ``kind="logit"`` gives the plain
  ⟨∇z_{y_i}(x_i), ∇z_{y_i}(x')⟩).

Computations run in float64 by default so that small-η differences are not rounding noise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from memlab.errors import ConfigError, DataError


@dataclass
class Elasticity:
    """One-step similarities of ``n_steps`` stepped examples against ``n_probes`` probes.

    s_rel, s_ker, delta: (n_steps, n_probes); self_delta, loss_grad: (n_steps,).
    delta[i, j] = f(x'_j, w⁺_i) − f(x'_j, w) in logits; self_delta[i] is the same at x_i;
    loss_grad[i] = ∂L/∂f at (x_i, y_i). ``output`` is "binary" or "true_class" (module doc).
    """

    s_rel: np.ndarray
    s_ker: np.ndarray
    delta: np.ndarray
    self_delta: np.ndarray
    loss_grad: np.ndarray
    lr: float
    output: str


def output_kind(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """"binary" for a model with one output, "true_class" for several (see module doc)."""
    return "binary" if _n_outputs(model, torch.zeros((1, *input_shape))) == 1 else "true_class"


def one_step_similarities(model: nn.Module, x: np.ndarray | torch.Tensor,
                          y: np.ndarray | torch.Tensor, lr: float = 0.01,
                          probes: np.ndarray | torch.Tensor | None = None,
                          chunk_size: int = 64,
                          dtype: torch.dtype = torch.float64) -> Elasticity:
    """S_rel and S_ker for one SGD step (learning rate ``lr``) on each of the examples ``x``.

    x: (n_steps, *input_shape); y: (n_steps,) labels (0/1 for a one-output model, class
    indices otherwise); probes: (n_probes, *input_shape), default ``x`` itself (then the
    matrices are square and can be symmetrized). ``chunk_size`` rows are stepped at once
    (memory ≈ chunk_size × n_parameters). The model is evaluated in eval mode (no dropout)
    and left unchanged.
    """
    if not lr > 0:
        raise ConfigError(f"the step size lr must be positive, got {lr}")
    x, y, probes = _as_tensors(x, y, probes, dtype)
    output = output_kind(model, tuple(x.shape[1:]))
    _check_labels(y, output, model, x)
    params, buffers = _weights(model, dtype)

    def logits(p: dict, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, buffers), (inputs,))

    def example_loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return _loss(logits(p, xi[None])[0], yi, output)

    def outputs_after_step(p_step: dict, xi: torch.Tensor, pick: torch.Tensor):
        # The row's scalar f at all probes and at the stepped example, under stepped weights.
        return logits(p_step, probes) @ pick, logits(p_step, xi[None])[0] @ pick

    per_example_grads = vmap(grad(example_loss), in_dims=(None, 0, 0))
    stepped_outputs = vmap(outputs_after_step, in_dims=(0, 0, 0))
    # pick[i] selects row i's scalar from the logits: the only logit, or the logit of y_i.
    # (A one-hot product rather than indexing, so that vmap sees no data-dependent index.)
    pick = _scalar_selector(y, output, _n_outputs(model, x), dtype)
    deltas, self_deltas = [], []
    with _eval_mode(model), torch.no_grad():
        before_probes = logits(params, probes)  # (n_probes, C)
        before_self = (logits(params, x) * pick).sum(1)  # (n_steps,)
        for start in range(0, len(x), chunk_size):
            rows = slice(start, start + chunk_size)
            with torch.enable_grad():
                grads = per_example_grads(params, x[rows], y[rows])
            stepped = {k: params[k][None] - lr * grads[k] for k in params}
            after_probes, after_self = stepped_outputs(stepped, x[rows], pick[rows])
            deltas.append(after_probes - pick[rows] @ before_probes.T)
            self_deltas.append(after_self - before_self[rows])
        delta, self_delta = torch.cat(deltas), torch.cat(self_deltas)
        loss_grad = _loss_grad(logits(params, x), y, output)
    s_rel = delta.abs() / self_delta.abs()[:, None]
    s_ker = delta / (-lr * loss_grad)[:, None]
    return Elasticity(s_rel=s_rel.numpy(), s_ker=s_ker.numpy(), delta=delta.numpy(),
                      self_delta=self_delta.numpy(), loss_grad=loss_grad.numpy(),
                      lr=float(lr), output=output)


def ntk_gram(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
             probes: np.ndarray | torch.Tensor | None = None, kind: str = "limit",
             dtype: torch.dtype = torch.float64) -> np.ndarray:
    """The empirical tangent kernel that S_ker approaches as η → 0: (n_steps, n_probes).

    For a one-output model both kinds give the NTK Gram ⟨∇_w f(x_i), ∇_w f(x'_j)⟩. For a
    multi-class model, row i uses the logit of class y_i: ``kind="logit"`` is
    ⟨∇z_{y_i}(x_i), ∇z_{y_i}(x'_j)⟩; ``kind="limit"`` is the exact η → 0 limit of S_ker,
    ⟨∇_w L_i, ∇_w z_{y_i}(x'_j)⟩ / (∂L_i/∂z_{y_i}).
    """
    if kind not in ("limit", "logit"):
        raise ConfigError(f"kind must be 'limit' or 'logit', got {kind!r}")
    x, y, probes = _as_tensors(x, y, probes, dtype)
    output = output_kind(model, tuple(x.shape[1:]))
    _check_labels(y, output, model, x)
    params, buffers = _weights(model, dtype)

    def logits_one(p: dict, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, buffers), (xi[None],))[0]

    def flat(jac: dict) -> torch.Tensor:  # per-example gradients -> (n, n_parameters)
        return torch.cat([g.reshape(g.shape[0], -1) for g in jac.values()], dim=1)

    classes = [0] if output == "binary" else sorted(set(y.tolist()))
    gram = torch.zeros(len(x), len(probes), dtype=dtype)
    with _eval_mode(model):
        if kind == "limit":
            loss_grads = flat(vmap(grad(lambda p, xi, yi: _loss(logits_one(p, xi), yi, output)),
                                   in_dims=(None, 0, 0))(params, x, y))
            with torch.no_grad():
                loss_grad = _loss_grad(functional_call(model, (params, buffers), (x,)), y, output)
            row_grads = loss_grads / loss_grad[:, None]
        for cls in classes:
            rows = torch.arange(len(x)) if output == "binary" else torch.nonzero(y == cls)[:, 0]
            logit = jacrev(lambda p, xi, c=cls: logits_one(p, xi)[c])
            probe_grads = flat(vmap(logit, in_dims=(None, 0))(params, probes))
            if kind == "logit":
                row_grads_c = flat(vmap(logit, in_dims=(None, 0))(params, x[rows]))
            else:
                row_grads_c = row_grads[rows]
            gram[rows] = (row_grads_c @ probe_grads.T).detach()
    return gram.numpy()


# ---------------------------------------------------------------- summaries


def symmetrize(s: np.ndarray) -> np.ndarray:
    """(S + Sᵀ)/2 of a square similarity matrix (steps and probes the same examples)."""
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ConfigError(f"only a square similarity matrix can be symmetrized, got {s.shape}")
    return (s + s.T) / 2


def intra_inter_ratio(s: np.ndarray, classes: np.ndarray) -> float:
    """Mean of S over same-class pairs divided by its mean over different-class pairs.

    s: (n, n) similarities of n examples with class labels ``classes`` (n,); the diagonal
    (an example with itself) is left out. Above 1: steps move their own class more.
    """
    classes = np.asarray(classes)
    same = classes[:, None] == classes[None, :]
    off_diagonal = ~np.eye(len(classes), dtype=bool)
    intra, inter = s[same & off_diagonal], s[~same]
    if intra.size == 0 or inter.size == 0:
        raise ConfigError("the intra/inter ratio needs two classes with two examples in one")
    return float(intra.mean() / inter.mean())


def symmetric_accuracy(clusters: np.ndarray, classes: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of cluster ids to classes (clusters are
    unlabeled), (n,) and (n,) -> a fraction. For two clusters: max(acc, 1 − acc), the
    paper's symmetric accuracy."""
    from scipy.optimize import linear_sum_assignment

    cluster_ids, cluster_index = np.unique(clusters, return_inverse=True)
    class_ids, class_index = np.unique(classes, return_inverse=True)
    counts = np.zeros((len(cluster_ids), len(class_ids)))
    np.add.at(counts, (cluster_index, class_index), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(clusters))


def kernel_kmeans(kernel: np.ndarray, n_clusters: int, n_init: int = 10, max_iter: int = 100,
                  seed: int = 0) -> np.ndarray:
    """K-means in the feature space of a (symmetric) kernel matrix (n, n) → labels (n,).

    Squared distance of point i to the mean of cluster c:
    K_ii − 2·mean_{j∈c} K_ij + mean_{j,l∈c} K_jl. Best of ``n_init`` random starts (a
    generator seeded by ``seed``; no global RNG is touched).
    """
    n = len(kernel)
    rng = np.random.default_rng(seed)
    best_labels, best_objective = None, np.inf
    for _ in range(n_init):
        labels = rng.integers(0, n_clusters, n)
        for _ in range(max_iter):
            one_hot = np.eye(n_clusters)[labels]  # (n, k)
            sizes = np.maximum(one_hot.sum(0), 1)
            to_mean = kernel @ one_hot / sizes  # (n, k) mean similarity to each cluster
            within = np.einsum("jc,jl,lc->c", one_hot, kernel, one_hot) / sizes**2
            distance = np.diag(kernel)[:, None] - 2 * to_mean + within[None]
            distance[:, one_hot.sum(0) == 0] = np.inf  # an emptied cluster stays empty
            new_labels = distance.argmin(1)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
        objective = distance[np.arange(n), labels].sum()
        if objective < best_objective:
            best_labels, best_objective = labels, objective
    return best_labels


def cluster_by_similarity(s_rel: np.ndarray, s_ker: np.ndarray,
                          seed: int) -> dict[str, np.ndarray]:
    """Two clusters from a network's similarities (symmetrized, (n, n)): K-means on the rows
    of S_rel, spectral clustering with S_rel (clipped at 0) as affinity, kernel K-means on
    S_ker; method name -> labels (n,)."""
    from sklearn.cluster import KMeans, SpectralClustering

    spectral = SpectralClustering(2, affinity="precomputed", random_state=seed)
    return {
        "K-means on S_rel rows": KMeans(2, n_init=10, random_state=seed).fit_predict(s_rel),
        "spectral on S_rel": spectral.fit_predict(np.maximum(s_rel, 0)),
        "kernel K-means on S_ker": kernel_kmeans(s_ker, 2, seed=seed),
    }


def cluster_inputs(x: np.ndarray, pca_components: int, seed: int) -> dict[str, np.ndarray]:
    """The baselines: two clusters by K-means on the raw inputs (n, ...) and on their
    leading ``pca_components`` principal components; method name -> labels (n,)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    flat = x.reshape(len(x), -1)
    n_components = min(pca_components, *flat.shape)
    pca = PCA(n_components, random_state=seed).fit_transform(flat)
    return {
        "K-means on raw inputs": KMeans(2, n_init=10, random_state=seed).fit_predict(flat),
        f"K-means on PCA-{n_components}": KMeans(2, n_init=10,
                                                 random_state=seed).fit_predict(pca),
    }


def per_class_sample(y: np.ndarray, classes: np.ndarray, per_class: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``per_class`` random examples of each of ``classes`` (in that
    order), grouped by class, sorted within a class."""
    chosen = []
    for cls in classes:
        members = np.flatnonzero(y == cls)
        chosen.append(np.sort(rng.choice(members, min(per_class, len(members)), replace=False)))
    return np.concatenate(chosen)


def member_similarities(model: nn.Module, x: np.ndarray, y: np.ndarray, lr: float,
                        chunk_size: int = 64) -> dict[str, object]:
    """One model's symmetrized similarities on the probes (x, y), computed on one torch
    thread (the same bits on any machine), and their intra/inter ratios against the
    probes' labels: {"s_rel", "s_ker", "classes", "ratio_rel", "ratio_ker"}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sim = one_step_similarities(model, x, y, lr=lr, chunk_size=chunk_size)
    finally:
        torch.set_num_threads(threads)
    s_rel, s_ker = symmetrize(sim.s_rel), symmetrize(sim.s_ker)
    return {"s_rel": s_rel, "s_ker": s_ker, "classes": y,
            "ratio_rel": intra_inter_ratio(s_rel, y),
            "ratio_ker": intra_inter_ratio(np.abs(s_ker), y)}


def example_elasticity(run, n_models: int, n_examples: int, seed: int) -> pd.DataFrame:
    """Local elasticity per example (He & Su): for each of the first ``n_models`` models,
    the symmetrized one-step similarities among ``n_examples`` of its members drawn at
    random (seeded), and each drawn example's mean similarity to the others of its class
    (``elasticity_within``) and of other classes (``elasticity_between``), averaged over the
    models that drew it; NaN for examples no model drew."""
    dataset = run.dataset
    n = dataset.n_train
    within, between, count = np.zeros(n), np.zeros(n), np.zeros(n)
    rng = np.random.default_rng([seed, 1_5])
    for k in range(min(n_models, run.n_models)):
        members = np.flatnonzero(np.asarray(run.membership_mask[k], bool))
        drawn = np.sort(rng.choice(members, min(n_examples, len(members)), replace=False))
        x, y = dataset.x_train[drawn], np.asarray(dataset.y_train[drawn])
        s = member_similarities(run.model(k), x, y, lr=run.config.lr)["s_rel"]
        same = y[:, None] == y[None, :]
        np.fill_diagonal(same, False)
        other = y[:, None] != y[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            within[drawn] += np.where(same, s, 0).sum(1) / same.sum(1)
            between[drawn] += np.where(other, s, 0).sum(1) / other.sum(1)
        count[drawn] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({"elasticity_within": np.where(count > 0, within / count, np.nan),
                             "elasticity_between": np.where(count > 0, between / count,
                                                            np.nan)})


# ---------------------------------------------------------------- helpers


def _loss(z: torch.Tensor, y: torch.Tensor, output: str) -> torch.Tensor:
    """Training loss of one example from its logits z (C,) and label y (scalar)."""
    if output == "binary":
        return F.binary_cross_entropy_with_logits(z[0], y.to(z.dtype))
    return F.cross_entropy(z[None], y[None])


def _loss_grad(z: torch.Tensor, y: torch.Tensor, output: str) -> torch.Tensor:
    """∂L/∂f for the row's scalar f, from logits z (n, C): σ(f) − y, or p_y − 1."""
    if output == "binary":
        return torch.sigmoid(z[:, 0]) - y.to(z.dtype)
    return torch.softmax(z, dim=1).gather(1, y[:, None])[:, 0] - 1


def _as_tensors(x, y, probes, dtype: torch.dtype):
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(dtype)
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).long()
    probes = x if probes is None else torch.as_tensor(
        np.asarray(probes) if not torch.is_tensor(probes) else probes).to(dtype)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise DataError(f"need x (n, *input_shape) and y (n,) with n ≥ 1, got x {tuple(x.shape)}"
                        f" and y {tuple(y.shape)}")
    if probes.shape[1:] != x.shape[1:]:
        raise DataError(f"probes have shape {tuple(probes.shape[1:])} per example but x has "
                        f"{tuple(x.shape[1:])}; they must match")
    return x, y, probes


def _n_outputs(model: nn.Module, x: torch.Tensor) -> int:
    param = next(model.parameters())
    with torch.no_grad(), _eval_mode(model):
        return int(model(x[:1].to(param.dtype)).shape[-1])


def _scalar_selector(y: torch.Tensor, output: str, n_outputs: int,
                     dtype: torch.dtype) -> torch.Tensor:
    """(n, C) one-hot rows: f_i = z · pick[i] is the only logit, or the logit of class y_i."""
    cls = torch.zeros_like(y) if output == "binary" else y
    return F.one_hot(cls, n_outputs).to(dtype)


def _check_labels(y: torch.Tensor, output: str, model: nn.Module, x: torch.Tensor) -> None:
    if output == "binary" and not bool(((y == 0) | (y == 1)).all()):
        raise DataError("a one-output (binary) model needs labels 0 or 1; map the positive "
                        "class to 1 and the rest to 0")
    if output == "true_class":
        n_classes = _n_outputs(model, x)
        if int(y.min()) < 0 or int(y.max()) >= n_classes:
            raise DataError(f"labels must lie in [0, {n_classes - 1}] for a model with "
                            f"{n_classes} outputs, got [{int(y.min())}, {int(y.max())}]")


def _weights(model: nn.Module, dtype: torch.dtype) -> tuple[dict, dict]:
    params = {k: v.detach().to(dtype) for k, v in model.named_parameters()}
    buffers = {k: v.detach().to(dtype) if v.is_floating_point() else v
               for k, v in model.named_buffers()}
    return params, buffers


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate without dropout (a step must be a deterministic function of w and x)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
