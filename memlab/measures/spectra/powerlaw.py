"""Power-law tail fits of eigenvalue spectra (Clauset, Shalizi & Newman 2009), vectorized.

For sorted eigenvalues λ_1 ≤ … ≤ λ_n and a candidate lower cut-off x_min = λ_i, the
continuous power law p(λ) ∝ λ^(-α) on [x_min, ∞) has the maximum-likelihood exponent

    α(x_min) = 1 + n_tail / Σ_{λ_j ≥ x_min} ln(λ_j / x_min),       n_tail = n − i,

and the Kolmogorov–Smirnov (KS) distance D(x_min) between the fitted CDF
1 − (λ/x_min)^(1−α) and the empirical CDF of the tail. Clauset's method picks the x_min
with the least D. Every candidate is evaluated at once (NumPy blocks of candidates × tail
points), never in a Python loop over candidates.

Two estimators share this code:

* ``mode="reference"`` reproduces WeightWatcher 0.7.7 exactly: every eigenvalue but the
  largest is a candidate; α is the plain MLE; the empirical CDF is the lower step
  ``k / n_tail`` only. Under 20 eigenvalues WeightWatcher's ``WWFit`` computes its
  small-sample objective (bias-corrected α, tails of ≥ 8 points, D − 0.868/√n_tail), but
  its constructor then re-selects x_min by the least plain D among those candidates, which
  overrides the objective; this mode reproduces what WeightWatcher reports (the re-selected
  fit), which is what made it differ by up to 0.34 on 16-eigenvalue EfficientNet layers.
* ``mode="robust"`` (memlab's default) differs where WeightWatcher goes wrong on
  finite matrices: the tail must hold at least ``min_tail`` eigenvalues (no fits on a
  handful of points, which is where absurd α of 8–15 come from) and span a factor of at
  least ``min_tail_span`` (no fits on a sliver of the axis, where α ≥ 1 + 1/ln(span) is
  forced by the width alone: 77 on a narrow random bulk), α is the
  small-sample-unbiased MLE ``1 + (n_tail − 1)/Σ ln(λ/x_min)``, and D is the true KS
  statistic (both sides of each empirical step).

A fit that cannot be made returns ``alpha = nan`` and a ``reason`` in plain words; never
a sentinel such as −1.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

# WeightWatcher drops eigenvalues at or below this before fitting (its EVALS_THRESH).
REFERENCE_EIGENVALUE_FLOOR = 1e-5
# Under this many eigenvalues WeightWatcher uses a different (small-N) objective.
REFERENCE_SMALL_N = 20
# Fewest tail points the robust fit accepts, and the smallest share of the spectrum.
DEFAULT_MIN_TAIL = 10
DEFAULT_MIN_TAIL_FRACTION = 0.02
# Least span λ_max / x_min of a robust tail. The unbiased MLE obeys α ≥ 1 + 1/ln(span)
# whatever the data (every ln(λ/x_min) ≤ ln span), so over a narrower tail the exponent
# measures the tail's width, not its shape: a random matrix with N ≫ M has an MP bulk only
# a few percent wide and got α ≈ 77. e^(1/5) ≈ 1.22 is the span at which that floor reaches
# 6, the random-like threshold (memlab.measures.spectra.phases.ALPHA_RANDOM_LIKE).
DEFAULT_MIN_TAIL_SPAN = math.exp(1 / 5)
# Elements per block of the (candidates × tail points) KS matrix: ~1 MB of float64, so a
# block's passes run in cache. Spectra up to _MAX_CACHED_N keep their KS targets cached.
_CACHE_ELEMENTS = 1 << 17
_MAX_CACHED_N = 1024


@dataclass(frozen=True)
class PowerLawFit:
    """The chosen power-law tail. ``alpha``, ``xmin`` and ``D`` are nan when no fit was made.

    alpha: density exponent (p(λ) ∝ λ^-α). xmin: lower cut-off, in the units of the
    eigenvalues. D: KS distance of the tail fit. n_tail: eigenvalues ≥ xmin.
    sigma: standard error of α, (α − 1)/√n_tail. reason: why no fit was made ("" if one was).
    """

    alpha: float
    xmin: float
    D: float
    n_tail: int
    sigma: float
    reason: str = ""
    truncation: float = float("nan")  # λ_cut of a truncated power law, if one was fitted

    @property
    def ok(self) -> bool:
        return not self.reason


def _failed(reason: str) -> PowerLawFit:
    nan = float("nan")
    return PowerLawFit(alpha=nan, xmin=nan, D=nan, n_tail=0, sigma=nan, reason=reason)


def candidate_scan(
    sorted_values: np.ndarray,
    *,
    unbiased: bool,
    two_sided_ks: bool,
    min_tail: int = 2,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """α and KS distance D for every candidate x_min = sorted_values[i], i = 0 … n−2.

    sorted_values: (n,) positive, ascending. Returns (alphas, Ds), each (n−1,); candidates
    whose tail has fewer than ``min_tail`` points, or whose α ≤ 1, get D = inf.
    """
    x = np.asarray(sorted_values, dtype=np.float64)
    n = x.size
    log_x = np.log(x)
    candidates = np.arange(n - 1)
    n_tail = (n - candidates).astype(np.float64)
    # Σ_{j ≥ i} ln x_j for every i, from one reversed cumulative sum.
    suffix_log_sum = np.cumsum(log_x[::-1])[::-1][: n - 1]
    log_ratio_sum = suffix_log_sum - n_tail * log_x[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        numerator = n_tail - 1.0 if unbiased else n_tail
        alphas = 1.0 + numerator / log_ratio_sum
    alphas = np.where(np.isfinite(alphas), alphas, np.nan)

    distances = np.full(n - 1, np.inf)
    usable = (n_tail >= min_tail) & (alphas > 1.0)
    rows_all = candidates[usable]
    if rows_all.size == 0:
        return alphas, distances
    # Torch rather than NumPy: its exp is about twice as fast on one CPU thread, and the
    # same code runs on a GPU. float64 throughout, so results match the loop to ~1e-15.
    log_x_t = torch.as_tensor(log_x, device=device)
    exponent = torch.as_tensor(1.0 - alphas, device=device)
    # Blocks of candidates small enough to stay in cache (~1 MB); each block computes
    # columns j ≥ its first candidate only, so little of the empty triangle j < i is done.
    block = max(16, _CACHE_ELEMENTS // max(n, 1))
    for start in range(0, rows_all.size, block):
        rows = torch.as_tensor(rows_all[start : start + block], device=device)
        first = int(rows[0])  # only columns j ≥ the smallest candidate can be in a tail
        targets = _cdf_targets(n, rows, first, two_sided_ks, device)
        # (λ_j/x_min)^(1−α) = 1 − F_fit(λ_j). Columns j < i get ln(λ_j/x_min) = 0 (clamp),
        # hence 1 − F = 1, and a target that makes their gap the one at j = i, already in
        # the maximum: no mask needed (masked_fill costs ten passes on one CPU thread).
        survival = (log_x_t[None, first:] - log_x_t[rows][:, None]).clamp_min_(0.0)
        survival = survival.mul_(exponent[rows][:, None]).exp_()
        worst = survival.sub_(targets).abs_().amax(dim=1)
        if two_sided_ks:
            worst += 0.5 / torch.as_tensor(n_tail, device=device)[rows]
        distances[rows.cpu().numpy()] = worst.cpu().numpy()
    return alphas, distances


def _cdf_targets(n: int, rows: torch.Tensor, first: int, two_sided: bool,
                 device: str | torch.device) -> torch.Tensor:
    """(len(rows), n − first) float64: for candidate x_min = λ_i (i in ``rows``) and column
    j ≥ ``first``, 1 − (k + c)/n_tail with k = max(j − i, 0) the rank of λ_j in the tail,
    n_tail = n − i, and c = ½ for the two-sided KS distance (max(|F − k/n|, |F − (k+1)/n|)
    = |F − (k + ½)/n| + ½/n: one pass, not two) or 0 for WeightWatcher's one-sided one.
    It depends on n only: small spectra reuse one cached (n − 1, n) matrix."""
    if n <= _MAX_CACHED_N:  # ≤ 8 MB each
        return _cdf_target_matrix(n, two_sided, str(device))[rows, first:]
    return _targets(rows.to(torch.float64), first, n, two_sided, device)


def _targets(i: torch.Tensor, first: int, n: int, two_sided: bool,
             device: str | torch.device) -> torch.Tensor:
    j = torch.arange(first, n, device=device, dtype=torch.float64)
    k = (j[None, :] - i[:, None]).clamp_min_(0.0)
    return k.add_(0.5 if two_sided else 0.0).div_((n - i)[:, None]).neg_().add_(1.0)


@functools.lru_cache(maxsize=4)
def _cdf_target_matrix(n: int, two_sided: bool, device: str) -> torch.Tensor:
    rows = torch.arange(n - 1, device=device, dtype=torch.float64)
    return _targets(rows, 0, n, two_sided, device)


def _reference_small_n(x: np.ndarray) -> PowerLawFit:
    """What WeightWatcher 0.7.7 reports under 20 eigenvalues: bias-corrected α over tails
    of ≥ 8 points, x_min = the candidate of least one-sided D (its ``fit_powerlaw_smallN``
    objective is overridden by ``WWFit.__init__``'s ``argmin(Ds)``; candidates it skipped
    keep D = 1)."""
    n = x.size
    alphas, distances = candidate_scan(x, unbiased=True, two_sided_ks=False, min_tail=8)
    if not np.isfinite(distances).any():
        return _failed(f"only {n} eigenvalues above the floor; too few for a tail fit")
    best = int(np.argmin(np.where(np.isfinite(distances), distances, 1.0)))
    n_tail = n - best
    alpha = float(alphas[best])
    return PowerLawFit(
        alpha=alpha, xmin=float(x[best]), D=float(distances[best]), n_tail=int(n_tail),
        sigma=(alpha - 1) / math.sqrt(n_tail),
    )


def fit_power_law(
    eigenvalues: np.ndarray,
    mode: str = "robust",
    min_tail: int = DEFAULT_MIN_TAIL,
    min_tail_fraction: float = DEFAULT_MIN_TAIL_FRACTION,
    min_tail_span: float = DEFAULT_MIN_TAIL_SPAN,
) -> PowerLawFit:
    """Fit a power-law tail to ``eigenvalues`` (any order, any units) by Clauset's method.

    mode: ``"robust"`` (default) or ``"reference"`` (WeightWatcher 0.7.7's estimator); see
    the module docstring. min_tail, min_tail_fraction, min_tail_span: robust mode only; the
    tail must hold at least max(min_tail, min_tail_fraction · n) eigenvalues and span
    λ_max / x_min ≥ min_tail_span.
    """
    if mode not in ("robust", "reference"):
        raise ValueError(f"mode must be 'robust' or 'reference', got {mode!r}")
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())
    values = values[np.isfinite(values)]
    # Zero eigenvalues (rank deficiency) carry no tail information and break ln(λ/x_min).
    floor = REFERENCE_EIGENVALUE_FLOOR if mode == "reference" else max(
        REFERENCE_EIGENVALUE_FLOOR, 1e-12 * (values[-1] if values.size else 0.0)
    )
    x = values[values > floor]
    n = x.size
    if mode == "reference":
        if n < 2:
            return _failed(f"only {n} eigenvalue(s) above {floor:g}; nothing to fit")
        if n < REFERENCE_SMALL_N:
            return _reference_small_n(x)
        alphas, distances = candidate_scan(x, unbiased=False, two_sided_ks=False)
        # WeightWatcher leaves D = 1 where α ≤ 1; argmin then takes the first least D.
        distances = np.where(np.isfinite(distances), distances, 1.0)
        best = int(np.argmin(distances))
    else:
        needed = max(min_tail, math.ceil(min_tail_fraction * n))
        if n < max(needed, 2):
            return _failed(
                f"only {n} nonzero eigenvalues; a tail fit needs at least {max(needed, 2)}"
            )
        span = x[-1] / x[0]
        if span < min_tail_span:
            return _failed(
                f"the nonzero eigenvalues span only a factor {span:.3g} (λ_max/λ_min < "
                f"{min_tail_span:.3g}): too narrow a tail to measure its exponent (a narrow "
                "random bulk, e.g. N ≫ M)")
        alphas, distances = candidate_scan(x, unbiased=True, two_sided_ks=True, min_tail=needed)
        distances[x[:-1] * min_tail_span > x[-1]] = np.inf  # tails narrower than the span
        if not np.isfinite(distances).any():
            return _failed("no candidate x_min gives a normalizable power law (α ≤ 1) over "
                           f"a tail of ≥ {needed} eigenvalues spanning ≥ {min_tail_span:.3g}×")
        best = int(np.argmin(distances))
    n_tail = n - best
    alpha = float(alphas[best])
    return PowerLawFit(
        alpha=alpha, xmin=float(x[best]), D=float(distances[best]), n_tail=int(n_tail),
        sigma=(alpha - 1) / math.sqrt(n_tail),
    )


def truncated_power_law_mle(tail: np.ndarray, start_alpha: float | None = None
                            ) -> tuple[float, float, float]:
    """Maximum-likelihood p(x) ∝ x^-α e^(-r x) on [1, ∞) for ``tail`` in units of x_min
    (every value ≥ 1). Returns (alpha, rate r, total log-likelihood of the tail).

    The normalizer Z(α, r) = ∫_0^∞ exp((1 − α)u − r e^u) du (x = e^u) is integrated on a
    grid reaching the point where the integrand has fallen by e^-60, so it stays accurate
    near the power law (r → 0) and for α near 1, where a fixed grid would cut it short; the
    same pass gives the exact gradient (−E[u], −r·E[e^u] under the fitted law). Two starts
    (the power law's α with no cut-off, and a cut-off at the mean) guard the nested
    likelihood-ratio test against a local optimum worse than the power law itself.
    """
    from scipy.optimize import minimize

    tail = np.asarray(tail, dtype=np.float64)
    n = tail.size
    mean_log, mean_value = np.log(tail).mean(), tail.mean()
    grid = np.linspace(0.0, 1.0, 1201)
    trapezoid = np.full(grid.size, 1.0)
    trapezoid[[0, -1]] = 0.5

    def negative_log_likelihood(params: np.ndarray) -> tuple[float, np.ndarray]:
        alpha, log_rate = params
        rate = math.exp(log_rate)
        reach = 1.2 * math.log1p(60.0 / rate)  # r e^u reaches 60 before the grid ends
        if alpha > 1.0:
            reach = min(reach, 60.0 / (alpha - 1.0))
        u = grid * reach
        growth = np.exp(u)
        log_integrand = (1.0 - alpha) * u - rate * growth
        top = log_integrand.max()  # log-sum-exp: the integral can underflow float64
        weights = np.exp(log_integrand - top) * trapezoid
        total = weights.sum()
        value = alpha * mean_log + rate * mean_value + top + math.log(total * (u[1] - u[0]))
        mean_u, mean_growth = (weights @ u) / total, (weights @ growth) / total
        return value, np.array([mean_log - mean_u, rate * (mean_value - mean_growth)])

    if start_alpha is None:
        start_alpha = 1.0 + 1.0 / max(mean_log, 1e-9)
    bounds = [(0.0, 20.0), (math.log(1e-8), math.log(1e3))]
    best = None
    for start in ((min(start_alpha, 19.0), math.log(1e-8)),
                  (min(start_alpha, 19.0), -math.log(max(mean_value, 1.0 + 1e-9)))):
        trial = minimize(negative_log_likelihood, x0=np.array(start), jac=True,
                         method="L-BFGS-B", bounds=bounds)
        if best is None or trial.fun < best.fun:
            best = trial
    alpha, log_rate = best.x
    return float(alpha), math.exp(log_rate), float(-best.fun * n)


def fit_truncated_power_law(eigenvalues: np.ndarray, xmin: float) -> tuple[float, float]:
    """Maximum-likelihood truncated power law p(λ) ∝ λ^-α e^(-λ/λ_cut) on [xmin, ∞).

    Returns (alpha, lambda_cut), lambda_cut in the units of the eigenvalues (inf = no
    truncation: the fit sits at the smallest rate allowed, 1e-8 / x_min).
    """
    tail = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    tail = tail[tail >= xmin] / xmin  # work in units of xmin: the tail starts at 1
    if tail.size < 3:
        return float("nan"), float("nan")
    alpha, rate, _ = truncated_power_law_mle(tail)
    lambda_cut = xmin / rate if rate > 1e-8 * (1 + 1e-6) else math.inf
    return float(alpha), float(lambda_cut)
