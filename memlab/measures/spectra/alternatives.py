"""Is the tail a power law, or something else? Likelihood-ratio tests on the fitted tail.

For the tail x ≥ x_min of a fit (Clauset, Shalizi & Newman 2009, §5), each alternative is
fitted by maximum likelihood on the same points and compared with the power law:

* exponential p(x) = λ e^(-λ(x − x_min)) and log-normal truncated to [x_min, ∞): not
  nested in the power law, so the sign of the log-likelihood ratio R = Σ (ℓ_PL − ℓ_alt) is
  judged by Vuong's normalized statistic z = R / (s √n) (s = standard deviation of the
  pointwise differences) with two-sided p = erfc(|z| / √2);
* the truncated power law p(x) ∝ x^-α e^(-x/λ_cut): it contains the power law (λ_cut = ∞),
  so R ≤ 0 and p = P(χ²₁ > 2|R|), the nested likelihood-ratio test.

R > 0 favours the power law. p is the probability of an |R| this large if the two fit
equally well: a small p makes the sign of R significant. The power law's α here is its MLE
1 + n / Σ ln(x/x_min) (the maximized likelihood the tests compare), not the unbiased
estimate that memlab reports as ``alpha``. The conventions are those of the ``powerlaw``
package (Alstott et al. 2014), against which tests/test_spectra_stats.py checks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erfcx

from memlab.measures.spectra.powerlaw import truncated_power_law_mle


@dataclass(frozen=True)
class LikelihoodRatio:
    """R: log-likelihood ratio power law − alternative (> 0 favours the power law);
    p: its significance (small = the sign of R is not chance); z: Vuong's normalized
    statistic (nan for the nested test)."""

    R: float
    p: float
    z: float = float("nan")


def power_law_loglikelihoods(tail: np.ndarray, xmin: float) -> np.ndarray:
    """Pointwise log-likelihood of the MLE power law on [xmin, ∞). tail: (n,) ≥ xmin."""
    log_ratio = np.log(tail / xmin)
    alpha = 1.0 + tail.size / log_ratio.sum()
    return math.log(alpha - 1.0) - math.log(xmin) - alpha * log_ratio


def exponential_loglikelihoods(tail: np.ndarray, xmin: float) -> np.ndarray:
    """Pointwise log-likelihood of the MLE exponential on [xmin, ∞): λ = 1/mean(x − xmin)."""
    excess = tail - xmin
    rate = 1.0 / excess.mean()
    return math.log(rate) - rate * excess


def _half_gauss(beta: float, gamma: float) -> tuple[float, float, float]:
    """For q(t) ∝ exp(−βt − γt²) on [0, ∞), γ > 0: (ln Z, E[t], E[t²]).

    q is a normal with mean m = −β/(2γ) and sd s = 1/√(2γ), truncated below at 0, i.e.
    at a = β/√(2γ) in standard units; with the inverse Mills ratio λ = φ(a)/Q(a) and
    d = λ − a: E[t] = s·d, E[t²] = s²(1 − a·d). For large a (near the power-law limit)
    d and 1 − a·d lose all their digits to cancellation, so their asymptotic series are
    used there (relative error < 1e-9 for a > 60).
    """
    s = 1.0 / math.sqrt(2.0 * gamma)
    a = beta * s
    y = a / math.sqrt(2.0)
    log_erfcx = math.log(2.0) + y * y if y < -5.0 else math.log(float(erfcx(y)))
    log_z = 0.5 * math.log(math.pi / gamma) - math.log(2.0) + log_erfcx
    if a > 60.0:
        d = 1 / a - 2 / a**3 + 10 / a**5
        one_minus_ad = 2 / a**2 - 10 / a**4 + 74 / a**6
    else:
        d = math.sqrt(2.0 / math.pi) / float(erfcx(y)) - a
        one_minus_ad = 1.0 - a * d
    return log_z, s * d, s * s * one_minus_ad


def _newton(function, start: np.ndarray, bounds: np.ndarray, steps: int = 60
            ) -> tuple[np.ndarray, float]:
    """Minimize a smooth 2-D function (value, gradient) = function(x) inside box bounds
    by Newton steps on a finite-difference Hessian of the exact gradient, halving a step
    until the value falls. (scipy's L-BFGS-B costs ~15 ms a call in overhead alone; this
    needs ~10 iterations of 3 gradient evaluations.) Returns (x, value)."""
    x = np.clip(start, bounds[:, 0], bounds[:, 1]).astype(float)
    value, gradient = function(x)
    for _ in range(steps):
        hessian = np.empty((2, 2))
        for k in range(2):
            h = 1e-5 * max(1.0, abs(x[k]))
            shifted = x.copy()
            shifted[k] += h
            hessian[:, k] = (function(shifted)[1] - gradient) / h
        hessian = 0.5 * (hessian + hessian.T)
        try:
            step = -np.linalg.solve(hessian, gradient)
            if step @ gradient >= 0:  # not a descent direction: fall back to the gradient
                step = -gradient
        except np.linalg.LinAlgError:
            step = -gradient
        for _ in range(30):
            trial = np.clip(x + step, bounds[:, 0], bounds[:, 1])
            trial_value, trial_gradient = function(trial)
            if trial_value <= value:
                break
            step = step / 2
        else:
            break
        converged = value - trial_value < 1e-13 * max(1.0, abs(value))
        x, value, gradient = trial, trial_value, trial_gradient
        if converged:
            break
    return x, value


def lognormal_loglikelihoods(tail: np.ndarray, xmin: float) -> np.ndarray:
    """Pointwise log-likelihood of the MLE log-normal truncated to [xmin, ∞).

    With t = ln(x/x_min) the truncated log-normal density is exp(−βt − γt²) / (x Z(β, γ)),
    γ = 1/(2σ²), β = (ln x_min − μ)/σ²: an exponential family in (β, γ), so the
    log-likelihood is concave with one maximum, which the usual (μ, σ) coordinates hide
    when the tail is far out on a log-normal or near the power-law limit (γ → 0, β = α − 1,
    where μ → −∞ and σ → ∞). Maximized over (β, ln γ) with the exact gradient (the
    moment-matching conditions E[t] = mean t, E[t²] = mean t²).
    """
    t = np.log(tail / xmin)
    mean_t, mean_t2 = float(t.mean()), float((t * t).mean())

    def negative(params: np.ndarray) -> tuple[float, np.ndarray]:
        beta, log_gamma = params
        gamma = math.exp(log_gamma)
        log_z, first, second = _half_gauss(beta, gamma)
        value = beta * mean_t + gamma * mean_t2 + log_z
        return value, np.array([mean_t - first, gamma * (mean_t2 - second)])

    alpha = 1.0 + 1.0 / max(mean_t, 1e-12)
    bounds = np.array([[-1e4, 1e4], [math.log(1e-10), math.log(1e8)]])
    best = min((_newton(negative, np.array(start), bounds) for start in
                ((alpha - 1.0, math.log(1e-4)), (0.0, math.log(0.5 / max(mean_t2, 1e-12))))),
               key=lambda found: found[1])
    beta, gamma = best[0][0], math.exp(best[0][1])
    return -np.log(tail) - beta * t - gamma * t * t - _half_gauss(beta, gamma)[0]


def vuong(first: np.ndarray, second: np.ndarray) -> LikelihoodRatio:
    """Non-nested comparison of two pointwise log-likelihoods of the same n points."""
    from scipy.special import erfc

    difference = first - second
    R = float(difference.sum())
    spread = float(difference.std())
    if spread == 0.0:
        return LikelihoodRatio(R=R, p=1.0, z=0.0)
    z = R / (spread * math.sqrt(difference.size))
    return LikelihoodRatio(R=R, p=float(erfc(abs(z) / math.sqrt(2))), z=z)


def likelihood_ratio_tests(eigenvalues: np.ndarray, xmin: float) -> dict[str, LikelihoodRatio]:
    """Power law against exponential, log-normal (Vuong) and truncated power law (nested)
    on the tail ≥ xmin of ``eigenvalues``. Returns {"exponential", "lognormal",
    "truncated_power_law"} → :class:`LikelihoodRatio`; empty when the tail has < 3 points."""
    from scipy.stats import chi2

    tail = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    tail = tail[tail >= xmin]
    if tail.size < 3 or not xmin > 0 or tail[-1] <= xmin:
        return {}
    power_law = power_law_loglikelihoods(tail, xmin)
    results = {
        "exponential": vuong(power_law, exponential_loglikelihoods(tail, xmin)),
        "lognormal": vuong(power_law, lognormal_loglikelihoods(tail, xmin)),
    }
    alpha_mle = 1.0 + tail.size / np.log(tail / xmin).sum()
    _, _, truncated = truncated_power_law_mle(tail / xmin, start_alpha=alpha_mle)
    truncated -= tail.size * math.log(xmin)  # back to the density in eigenvalue units
    R = min(float(power_law.sum()) - truncated, 0.0)  # nested: the TPL can only do better
    results["truncated_power_law"] = LikelihoodRatio(R=R, p=float(chi2.sf(2 * abs(R), 1)))
    return results
