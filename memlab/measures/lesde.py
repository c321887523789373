"""Locally elastic SDEs (Zhang, Wang & Su, NeurIPS 2021): features that evolve by the impact
a gradient step at one example has on every other example.

Example i (class c_i, n examples, K classes) has a feature vector h_i ∈ R^d, read out by a
linear head z_i = W h_i + b (W: K × d; the default is the identity, d = K: the features are
the logits, as in the paper's experiments). A step on example j's loss moves h_j by −g_j,
g_j = ∂ℓ(h_j, c_j)/∂h_j = Wᵀ(softmax(z_j) − e_{c_j}); local elasticity says it moves h_i
by the strength E[c_i, c_j] times that. Summed over the training set (time in units of
passes over the data):

    dh_i = −Σ_{c'} E[c_i, c'] ḡ_{c'} dt + σ dB_i,     ḡ_{c'} = (1/n) Σ_{j: c_j = c'} g_j

E is the K × K strength matrix (intra-class α on the diagonal, inter-class β off it:
:func:`strength_matrix`); B_i are independent Brownian motions in R^d. ``drift="linear"``
replaces g_j by its linearization −P_{c_j} h_j (the projection of h_j on its class's
margin direction v_c = Wᵀ(e_c − 1/K), unit length), the LE-ODE the paper's code integrates
by forward Euler for 3 classes: for logit features the class means then grow along the
simplex direction at rate (α − β)/K and in the directions that sum to zero at rate
(α + β/(K − 1))/K (:func:`linear_mode_rates`).

Why the transition sits at α = β: with balanced classes and features near 0, every g_j ≈
−Wᵀ(e_{c_j} − 1/K), so the drift of class c is (α − β)/K times its own margin direction:
the margins grow when α > β and shrink when α < β. At α = β every example gets the same
drift (E[c_i, ·] does not depend on i), so h_i − h_j moves by noise alone and features that
start unseparated stay so. The drift is the same for every example of a class, so the
spread within a class is the initial one plus noise: neural collapse (NC1 → 0) happens by
the class means moving apart, not by the within-class spread shrinking.

Everything here is numpy, vectorized over R independent runs and the n examples: arrays
are (R, n, d). Simulation: :func:`euler_maruyama` (generic) and :func:`simulate` (the
LE-SDE). Measures: :func:`head_stats` (loss, accuracy, margins), :func:`nc_stats` (NC1,
ETF deviation, norms), :func:`linear_separability` (the hard margin of the best linear
classifier, by linear programming). Fitting: :func:`estimate_strengths` (least squares of
the feature increments on the class gradients).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from memlab.errors import ConfigError, DataError

DRIFTS = ("ce", "linear")
Head = tuple[np.ndarray, np.ndarray]  # (W (K, d), b (K,))


# ------------------------------------------------------------------ the integrator


def euler_maruyama(drift: Callable[[np.ndarray, float], np.ndarray],
                   diffusion: float | Callable[[np.ndarray, float], np.ndarray],
                   x0: np.ndarray, dt: float, n_steps: int, seed: int | None = 0,
                   increments: np.ndarray | None = None, record_every: int = 1
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Integrate dX = a(X, t) dt + b(X, t) dB by Euler–Maruyama.

    x0: initial state, any shape S (e.g. (R, n, d)); drift(x, t) -> shape S; diffusion a
    number σ (additive noise) or b(x, t) -> shape S (diagonal, elementwise noise: b ⊙ dB).
    increments: the Brownian increments (n_steps, *S) to use instead of drawing them from
    ``seed`` (to compare step sizes on one path). Returns (times (m,), states (m, *S)) at
    t = 0 and every ``record_every`` steps (m = n_steps // record_every + 1).
    Strong order 1/2 in general, 1 for additive noise.
    """
    if not dt > 0 or n_steps < 0 or record_every < 1:
        raise ConfigError(f"need dt > 0, n_steps >= 0, record_every >= 1; got dt={dt}, "
                          f"n_steps={n_steps}, record_every={record_every}")
    x = np.array(x0, dtype=np.float64)
    if increments is not None and increments.shape != (n_steps, *x.shape):
        raise DataError(f"increments must have shape {(n_steps, *x.shape)}, got "
                        f"{increments.shape}")
    rng = np.random.default_rng(seed)
    sqrt_dt = np.sqrt(dt)
    times, states = [0.0], [x.copy()]
    for step in range(n_steps):
        t = step * dt
        db = increments[step] if increments is not None else sqrt_dt * rng.standard_normal(
            x.shape)
        b = diffusion(x, t) if callable(diffusion) else diffusion
        x = x + drift(x, t) * dt + b * db
        if (step + 1) % record_every == 0:
            times.append((step + 1) * dt)
            states.append(x.copy())
    return np.array(times), np.stack(states)


# ------------------------------------------------------------------ the LE-SDE


def strength_matrix(n_classes: int, intra: float, inter: float) -> np.ndarray:
    """The K × K strength matrix with ``intra`` (α) on the diagonal and ``inter`` (β) off it."""
    if n_classes < 2:
        raise ConfigError(f"need at least 2 classes, got {n_classes}")
    return np.full((n_classes, n_classes), float(inter)) + (intra - inter) * np.eye(n_classes)


def linear_mode_rates(intra: float, inter: float, n_classes: int) -> tuple[float, float]:
    """Growth rates of the class means under the linear drift with logit features:
    ((α − β)/K along the symmetric simplex mode, (α + β/(K − 1))/K for the modes whose
    coefficients sum to zero)."""
    k = n_classes
    return (intra - inter) / k, (intra + inter / (k - 1)) / k


def identity_head(n_classes: int) -> Head:
    return np.eye(n_classes), np.zeros(n_classes)


def logits(h: np.ndarray, head: Head) -> np.ndarray:
    """z = W h + b for features h (..., n, d) -> (..., n, K)."""
    w, b = head
    return h @ w.T + b


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def loss_gradients(h: np.ndarray, labels: np.ndarray, head: Head) -> np.ndarray:
    """g_i = ∂ cross-entropy / ∂h_i = Wᵀ(softmax(z_i) − e_{c_i}): (..., n, d)."""
    w, _ = head
    p = softmax(logits(h, head))
    p[..., np.arange(len(labels)), labels] -= 1.0
    return p @ w


def class_gradients(g: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """ḡ_c = (1/n) Σ_{i: c_i = c} g_i: (..., n, d) -> (..., K, d)."""
    onehot = np.eye(n_classes)[labels]  # (n, K)
    return np.matmul(onehot.T, g) / len(labels)  # matmul broadcasts over runs (BLAS)


def margin_directions(head: Head) -> np.ndarray:
    """Unit feature directions v_c ∝ Wᵀ(e_c − 1/K) that raise class c's logit against the
    rest: (K, d)."""
    w, _ = head
    k = w.shape[0]
    v = (np.eye(k) - 1.0 / k) @ w
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def lesde_drift(h: np.ndarray, labels: np.ndarray, strengths: np.ndarray, head: Head,
                drift: str = "ce") -> np.ndarray:
    """The LE-SDE drift −Σ_{c'} E[c_i, c'] ḡ_{c'} for features h (R, n, d) (module doc)."""
    k = strengths.shape[0]
    if drift == "ce":
        g = loss_gradients(h, labels, head)
    elif drift == "linear":
        v = margin_directions(head)[labels]  # (n, d)
        g = -np.einsum("...nd,nd->...n", h, v)[..., None] * v
    else:
        raise ConfigError(f"drift must be one of {DRIFTS}, got {drift!r}")
    gbar = class_gradients(g, labels, k)  # (R, K, d)
    return -np.matmul(strengths[labels], gbar)


@dataclass
class Trajectory:
    """A simulated LE-SDE: ``times`` (T,) and ``features`` (T, R, n, d) for R runs;
    ``labels`` (n,); ``heads``: the head at each recorded time (a list of (W, b))."""

    times: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    heads: list[Head]


def simulate(labels: np.ndarray, strengths: np.ndarray, noise: float, t_end: float,
             dt: float = 0.01, n_runs: int = 1, x0: np.ndarray | None = None,
             init_scale: float = 1.0, dim: int | None = None,
             head: Head | Callable[[float], Head] | None = None, drift: str = "ce",
             n_records: int = 20, seed: int = 0) -> Trajectory:
    """Simulate the LE-SDE for examples with class ``labels`` (n,) and strengths (K, K).

    noise: σ; t_end: time in passes over the data; dt: Euler–Maruyama step.
    x0: initial features (n, d) shared by the runs or (R, n, d); default N(0, init_scale²)
    in d = ``dim`` dimensions (default K). head: (W, b), or a function of time giving it
    (a real network's read-out changing during training); default the identity (logits).
    Runs are independent (their noise and, without x0, their initial features) and
    reproducible from ``seed``. Records ``n_records`` + 1 equally spaced times.
    """
    labels = np.asarray(labels)
    k = strengths.shape[0]
    if strengths.shape != (k, k) or labels.min() < 0 or labels.max() >= k:
        raise DataError(f"strengths must be K × K and labels in [0, K); got strengths "
                        f"{strengths.shape} and labels in [{labels.min()}, {labels.max()}]")
    if not noise >= 0 or not t_end > 0:
        raise ConfigError(f"need noise >= 0 and t_end > 0, got noise={noise}, t_end={t_end}")
    rng = np.random.default_rng(seed)
    if x0 is None:
        d = dim if dim is not None else k
        x0 = init_scale * rng.standard_normal((n_runs, len(labels), d))
    else:
        x0 = np.asarray(x0, dtype=np.float64)
        x0 = np.broadcast_to(x0, (n_runs, *x0.shape[-2:])).copy() if x0.ndim == 2 else x0
    d = x0.shape[-1]
    if callable(head):
        head_at = head
    else:
        fixed = identity_head(k) if head is None else head

        def head_at(t: float) -> Head:
            return fixed

    if head_at(0.0)[0].shape != (k, d):
        raise DataError(f"the head must be K × d = {(k, d)}, got {head_at(0.0)[0].shape}")
    n_steps = max(int(round(t_end / dt)), 1)
    every = max(n_steps // n_records, 1)

    def a(x: np.ndarray, t: float) -> np.ndarray:
        return lesde_drift(x, labels, strengths, head_at(t), drift)

    times, states = euler_maruyama(a, float(noise), x0, t_end / n_steps, n_steps,
                                   seed=int(rng.integers(2**63)), record_every=every)
    return Trajectory(times, states, labels, [head_at(t) for t in times])


# ------------------------------------------------------------------ measures


def head_stats(h: np.ndarray, labels: np.ndarray, head: Head) -> dict[str, np.ndarray]:
    """Training loss (mean cross-entropy, nats), accuracy and the smallest logit margin
    z_c − max_{c' ≠ c} z_{c'} of features h (..., n, d): each (...,)."""
    z = logits(h, head)
    zmax = z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(axis=-1)) + zmax[..., 0]
    n = len(labels)
    own = z[..., np.arange(n), labels]
    others = z.copy()
    others[..., np.arange(n), labels] = -np.inf
    margin = own - others.max(axis=-1)
    return {"loss": (lse - own).mean(axis=-1), "accuracy": (margin > 0).mean(axis=-1),
            "min_margin": margin.min(axis=-1), "mean_margin": margin.mean(axis=-1)}


def nc_stats(h: np.ndarray, labels: np.ndarray, n_classes: int | None = None
             ) -> dict[str, np.ndarray]:
    """Neural-collapse statistics of features h (..., n, d) with class ``labels`` (n,).

    nc1: tr(Σ_W Σ_B⁺)/K (Papyan, Han & Donoho 2020), within-class over between-class
    variability, → 0 at collapse; etf_angle: mean over class pairs of |cos(μ_c − μ_G,
    μ_c' − μ_G) + 1/(K − 1)|, 0 for a simplex equiangular tight frame; etf_norm: std/mean
    of the centred class-mean norms (0: equinorm); feature_norm: mean ‖h_i‖; within_norm:
    root mean squared distance to the class mean. Each (...,).
    """
    k = int(n_classes if n_classes is not None else labels.max() + 1)
    onehot = np.eye(k)[labels]
    counts = onehot.sum(0)
    means = np.einsum("nk,...nd->...kd", onehot, h) / counts[:, None]  # (..., K, d)
    centred = means - means.mean(axis=-2, keepdims=True)
    within = h - means[..., labels, :]
    sigma_w = np.einsum("...nd,...ne->...de", within, within) / len(labels)
    sigma_b = np.einsum("...kd,...ke->...de", centred, centred) / k
    nc1 = np.trace(sigma_w @ np.linalg.pinv(sigma_b, hermitian=True), axis1=-2,
                   axis2=-1) / k
    norms = np.linalg.norm(centred, axis=-1)  # (..., K)
    unit = centred / np.maximum(norms[..., None], 1e-300)
    cos = unit @ np.swapaxes(unit, -1, -2)
    off = ~np.eye(k, dtype=bool)
    angle = np.abs(cos[..., off] + 1.0 / (k - 1)).mean(axis=-1)
    return {"nc1": nc1, "etf_angle": angle, "etf_norm": norms.std(-1) / norms.mean(-1),
            "feature_norm": np.linalg.norm(h, axis=-1).mean(-1),
            "within_norm": np.sqrt((within ** 2).sum(-1).mean(-1)),
            "between_norm": norms.mean(-1)}


def linear_separability(h: np.ndarray, labels: np.ndarray) -> float:
    """Hard margin of the best K-class linear classifier on features h (n, d), by LP.

    Maximizes t subject to (w_c − w_{c'})·h̃_i + b_c − b_{c'} ≥ t for every example i of
    class c and every c' ≠ c, with every weight and bias in [−1, 1] and t ≤ 1, where h̃ is
    h scaled to max |entry| 1. t > 0 iff the features are linearly separable (by *some*
    classifier, not necessarily the head). Returns t (≤ 0: not separable).
    """
    from scipy.optimize import linprog

    labels = np.asarray(labels)
    n, d = h.shape
    k = int(labels.max() + 1)
    x = np.hstack([h / max(np.abs(h).max(), 1e-300), np.ones((n, 1))])  # (n, d + 1)
    rows = []
    for other in range(k):
        keep = labels != other
        block = np.zeros((int(keep.sum()), k, d + 1))
        block[np.arange(len(block)), labels[keep]] = x[keep]
        block[:, other] -= x[keep]
        rows.append(block.reshape(len(block), -1))
    a = np.vstack(rows)
    # −(w_c − w_c')·x + t ≤ 0; variables [W (k·(d+1)), t]; minimize −t.
    a_ub = np.hstack([-a, np.ones((len(a), 1))])
    cost = np.zeros(a_ub.shape[1])
    cost[-1] = -1.0
    bounds = [(-1, 1)] * (a_ub.shape[1] - 1) + [(None, 1)]
    result = linprog(cost, A_ub=a_ub, b_ub=np.zeros(len(a)), bounds=bounds, method="highs")
    if result.status != 0:
        raise DataError(f"the separability LP failed: {result.message}")
    return float(-result.fun)


# ------------------------------------------------------------------ fitting strengths


@dataclass
class Strengths:
    """Strengths fitted from a trajectory. ``matrix`` (K, K) and its standard errors
    ``se`` (K, K) (ordinary least squares, valid when the residuals are independent, as
    the LE-SDE's noise is); ``noise``: σ̂ from the residuals (per √time unit);
    ``condition``: the largest condition number of the per-class design (large: the
    common part of a row, what adds equally to all its entries, is poorly identified);
    ``intra``/``inter``: the means of the diagonal and off-diagonal; ``r2``: fraction of the
    increments' variance explained."""

    matrix: np.ndarray
    se: np.ndarray
    noise: float
    condition: float
    r2: float

    @property
    def intra(self) -> float:
        return float(np.diag(self.matrix).mean())

    @property
    def inter(self) -> float:
        k = len(self.matrix)
        return float(self.matrix[~np.eye(k, dtype=bool)].mean())


def estimate_strengths(times: np.ndarray, features: np.ndarray, labels: np.ndarray,
                       gbar: np.ndarray, rule: str = "left") -> Strengths:
    """Fit E in h_i(t_{s+1}) − h_i(t_s) = −Δt_s Σ_{c'} E[c_i, c'] ḡ_{c'}(t_s) + noise.

    times: (T,); features: (T, n, d) one trajectory; labels: (n,); gbar: (T, K, d) the
    class gradients ḡ at each time (:func:`class_gradients`). rule: ``left`` uses ḡ at
    the start of each interval (exact for an Euler–Maruyama path), ``mid`` the average of
    both ends (better for coarse snapshots of continuous training). One least-squares
    problem per class c (its row of E), over its examples, intervals and coordinates.
    """
    if rule not in ("left", "mid"):
        raise ConfigError(f"rule must be 'left' or 'mid', got {rule!r}")
    times, features, gbar = (np.asarray(a, dtype=np.float64) for a in (times, features, gbar))
    labels = np.asarray(labels)
    t, n, d = features.shape
    k = gbar.shape[1]
    if gbar.shape != (t, k, d) or len(times) != t or t < 2:
        raise DataError(f"need times (T,), features (T, n, d), gbar (T, K, d) with T >= 2; "
                        f"got {times.shape}, {features.shape}, {gbar.shape}")
    dt = np.diff(times)  # (T-1,)
    g = gbar[:-1] if rule == "left" else (gbar[:-1] + gbar[1:]) / 2
    design = -(dt[:, None, None] * g)  # (T-1, K, d): the regressor of E[c, c'] per coord
    # Shared regressors: the class-c rows only enter through their class-mean increment.
    x = design.transpose(0, 2, 1).reshape(-1, k)  # ((T-1)·d, K)
    xtx = x.T @ x
    matrix, se = np.zeros((k, k)), np.zeros((k, k))
    rss, tss, n_obs, cond = 0.0, 0.0, 0, 0.0
    increments = np.diff(features, axis=0)  # (T-1, n, d)
    for c in range(k):
        members = labels == c
        m = int(members.sum())
        if m == 0:
            raise DataError(f"class {c} has no examples; labels must cover all K classes")
        mean_inc = increments[:, members].mean(axis=1).reshape(-1)  # ((T-1)·d,)
        coef, *_ = np.linalg.lstsq(x, mean_inc, rcond=None)
        matrix[c] = coef
        resid = increments[:, members] - (x @ coef).reshape(t - 1, 1, d)
        rss_c = float((resid ** 2).sum())
        rss += rss_c
        tss += float(((increments[:, members]) ** 2).sum())
        n_obs += resid.size
        # Each example's residual is independent noise: the class mean has variance s²/m.
        s2 = rss_c / max(resid.size - k, 1)
        se[c] = np.sqrt(np.clip(np.diag(np.linalg.pinv(xtx)) * s2 / m, 0, None))
        cond = max(cond, float(np.linalg.cond(x)))
    sigma = np.sqrt(rss / n_obs / np.mean(dt))
    return Strengths(matrix, se, float(sigma), cond, 1.0 - rss / tss if tss > 0 else 0.0)


# ------------------------------------------------------------------ summaries of trajectories

TRAJECTORY_STATS = ("loss", "accuracy", "nc1", "feature_norm", "within_norm", "between_norm")


def own_amplitude(features: np.ndarray, labels: np.ndarray, head: Head) -> np.ndarray:
    """Mean over examples of ⟨h_i, v_{c_i}⟩, the features' amplitude along their own class
    direction (:func:`margin_directions`): (..., n, d) -> (...,)."""
    v = margin_directions(head)[labels]
    return (features * v).sum(-1).mean(-1)


def linear_horizon(t_end: float, intra: float, inter: float, n_classes: int) -> float:
    """Simulated time of the linear drift: ``t_end``, but at most the time its fastest mode
    (:func:`linear_mode_rates`) takes to grow by e^15 (beyond that, float64 overflows)."""
    fastest = max(linear_mode_rates(intra, inter, n_classes))
    return t_end if fastest <= 0 else min(t_end, 15.0 / fastest)


def zero_crossing(x: np.ndarray, y: np.ndarray) -> float | None:
    """Where y(x) first changes sign, by linear interpolation between the two grid points
    around it (None when it does not change sign on the grid)."""
    x, y = np.asarray(x), np.asarray(y)
    change = np.nonzero(np.diff(np.sign(y)) != 0)[0]
    if not len(change):
        return None
    i = change[0]
    return float(x[i] - y[i] * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))


def trajectory_stats(features: np.ndarray, labels: np.ndarray, heads: list[Head],
                     n_classes: int) -> dict[str, np.ndarray]:
    """:data:`TRAJECTORY_STATS` over time of features (T, ..., n, d) with one head per time
    (:func:`head_stats`, :func:`nc_stats`): each (T, ...)."""
    out: dict[str, list] = {s: [] for s in TRAJECTORY_STATS}
    for f, head in zip(features, heads):
        hs, nc = head_stats(f, labels, head), nc_stats(f, labels, n_classes)
        for s in TRAJECTORY_STATS:
            out[s].append((hs if s in hs else nc)[s])
    return {s: np.array(v) for s, v in out.items()}
