"""Differential-privacy accounting for DP-SGD with Poisson subsampling: ε from σ, σ from ε.

A DP-SGD step puts each example in the batch independently with probability q (the expected
batch size over the dataset size), clips every example's gradient to L2 norm C and adds
Gaussian noise of standard deviation σ·C to their sum. Its privacy is that of the
Poisson-subsampled Gaussian mechanism at (σ, q), composed over the steps. Every ε memlab
reports comes from here, and here asks Google's ``dp_accounting`` library: no formula of our
own, so a privacy claim is only as wrong as a widely reviewed library.

Two accountants (``method``):

- ``"rdp"`` (default): Rényi DP at the orders Opacus uses (``RDP_ORDERS``), converted to
  (ε, δ). Tens of milliseconds per call whatever the number of steps; the ε papers quote.
  The orders end at 63, so at δ = 1e-5 no σ brings ε below about 0.1.
- ``"pld"``: privacy loss distributions, numerically tight: a smaller, truer ε, but seconds
  per call at σ below 1 over thousands of steps.

The RDP ε equals Opacus's at integer orders. At fractional orders ``dp_accounting`` sums the
absolute values of the series' terms (an upper bound) and drops an order whose series does
not converge in 1000 terms, so where the best order is below about 2 (ε in the tens or more)
its ε is above Opacus's: looser, never optimistic.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from memlab.errors import ConfigError

# Opacus's RDPAccountant.DEFAULT_ALPHAS, so our RDP ε and Opacus's answer the same question.
RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)])

# The PLD accountant's grid on the privacy loss (the library's default). Losses are rounded up
# to it, so ε errs on the safe side; a coarser grid inflates small ε (σ=4, q=0.001, 10 steps,
# δ=1e-5: 0.0017 at 1e-4 but 0.0030 at 1e-3), a finer one costs time for digits nobody reads.
PLD_DISCRETIZATION = 1e-4

METHODS = ("rdp", "pld")

_SIGMA_RTOL = 1e-3  # noise_multiplier_for stops when the bracket [lo, hi] has hi/lo ≤ 1 + this
_MIN_SIGMA = 1e-2  # the search for σ goes no lower: below it ε is astronomically large anyway
_FAR = 100.0  # an error message's needed σ is searched for up to this many times max_sigma


def epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
            method: str = "rdp") -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps at (σ, q), for the given δ.

    q = 0 or no steps: 0.0 (no example is ever looked at). σ = 0: math.inf (an unnoised
    step publishes a clipped gradient sum exactly, which no (ε, δ) with δ < 1 bounds).
    """
    _check_account_inputs(noise_multiplier, sampling_rate, steps, delta, method)
    return _account(noise_multiplier, sampling_rate, steps, delta, method)


def noise_multiplier_for(epsilon: float, delta: float, sampling_rate: float, steps: int,
                         method: str = "rdp", max_sigma: float = 50.0) -> float:
    """The smallest σ (to a relative 1e-3) whose ε over ``steps`` steps at rate q is ≤ ``epsilon``.

    Bisection on σ, as ε decreases with σ; the σ returned has been checked to meet the target.
    Raises ConfigError (one line, naming the σ that would be needed) when even ``max_sigma``
    does not: at such noise a model learns nothing, and saying so beats training it.
    """
    if not 0 < epsilon < math.inf:
        raise ConfigError(f"a target ε must be a finite number > 0, got {epsilon!r}")
    if not 0 < max_sigma < math.inf:
        raise ConfigError(f"max_sigma must be a finite number > 0, got {max_sigma!r}")
    _check_account_inputs(1.0, sampling_rate, steps, delta, method)
    if sampling_rate == 0 or steps == 0:
        raise ConfigError(f"no noise multiplier to solve for: with sampling rate "
                          f"{sampling_rate:g} over {steps} steps ε is 0 for every σ")

    def meets(sigma: float) -> bool:
        return _account(sigma, sampling_rate, steps, delta, method) <= epsilon

    if not meets(max_sigma):
        raise ConfigError(_beyond_range(meets, epsilon, delta, sampling_rate, steps, method,
                                        max_sigma))
    if method == "rdp":
        return _smallest(meets, max_sigma, shrink=0.5)

    # PLD's ε is below RDP's, so its σ is below (and close to) RDP's: starting from there
    # spares the PLD evaluations at small σ, which take seconds to minutes each.
    def rdp_meets(sigma: float) -> bool:
        return _account(sigma, sampling_rate, steps, delta, "rdp") <= epsilon

    start = max_sigma
    if rdp_meets(max_sigma):
        rdp_sigma = _smallest(rdp_meets, max_sigma, shrink=0.5)
        if meets(rdp_sigma):
            start = rdp_sigma
    return _smallest(meets, start, shrink=0.8)


def check_dp_settings(noise_multiplier: float | None, max_grad_norm: float, delta: float,
                      n_examples: int, epsilon: float | None = None) -> None:
    """Refuse DP-SGD settings that cannot give a meaningful guarantee, in one line each.

    Exactly one of σ (``noise_multiplier``) and a target ε is given: a target ε sets σ. A run
    without DP has neither, and does not come here. δ must be below 1/n (n = examples a model
    trains on): a mechanism that publishes one random example outright already has δ = 1/n.
    """
    if (noise_multiplier is None) == (epsilon is None):
        which = "both" if noise_multiplier is not None else "neither"
        raise ConfigError(f"DP-SGD needs exactly one of --dp-noise-multiplier (σ) and "
                          f"--dp-epsilon (a target ε that sets σ), got {which}")
    if noise_multiplier is not None and not 0 < noise_multiplier < math.inf:
        raise ConfigError(f"--dp-noise-multiplier must be a finite number > 0, got "
                          f"{noise_multiplier!r}: it is σ, the noise std over the clipping "
                          "norm (about 1 is usual)")
    if epsilon is not None and not 0 < epsilon < math.inf:
        raise ConfigError(f"--dp-epsilon must be a finite number > 0, got {epsilon!r}: it is "
                          "the privacy budget of the whole run (1 to 8 is usual)")
    if not 0 < max_grad_norm < math.inf:
        raise ConfigError(f"--dp-max-grad-norm must be a finite number > 0, got "
                          f"{max_grad_norm!r}: it is C, the L2 norm every example's gradient "
                          "is clipped to (1.0 is usual)")
    if n_examples < 1:
        raise ConfigError(f"DP-SGD needs at least one training example per model, got "
                          f"{n_examples}")
    if not 0 < delta < 1 / n_examples:
        raise ConfigError(f"--dp-delta must be in (0, 1/n), got {delta!r}: with n = "
                          f"{n_examples} examples per model δ must be below 1/n = "
                          f"{1 / n_examples:.3g}, e.g. --dp-delta {1 / (10 * n_examples):.2g} "
                          "(1/(10 n))")


def _check_account_inputs(noise_multiplier: float, sampling_rate: float, steps: int,
                          delta: float, method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown privacy accountant {method!r}: use one of {METHODS}")
    if not 0 <= noise_multiplier < math.inf:
        raise ConfigError(f"a noise multiplier must be a finite number >= 0, got "
                          f"{noise_multiplier!r}")
    if not 0 <= sampling_rate <= 1:
        raise ConfigError(f"a sampling rate must be in [0, 1], got {sampling_rate!r}")
    if not (0 <= steps < math.inf and steps == int(steps)):
        raise ConfigError(f"a number of steps must be a whole number >= 0, got {steps!r}")
    if not 0 < delta < 1:
        raise ConfigError(f"δ must be in (0, 1), got {delta!r}")


def _library():
    """The dp_accounting module, or a one-line ConfigError saying how to get it. Imported
    on first use: it imports much of scipy (about 2.5 s), which every run without DP (and
    every ``memlab`` command that trains) would otherwise pay at start-up."""
    try:
        import dp_accounting
    except ImportError:  # only DP runs need it
        raise ConfigError("differential privacy needs dp-accounting: pip install "
                          "dp-accounting") from None
    return dp_accounting


def _account(noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
             method: str) -> float:
    """ε from the library, for inputs already checked."""
    if sampling_rate == 0 or steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    dpa = _library()
    step = dpa.PoissonSampledDpEvent(sampling_rate, dpa.GaussianDpEvent(noise_multiplier))
    if method == "rdp":
        accountant = dpa.rdp.RdpAccountant(list(RDP_ORDERS))
    else:
        accountant = dpa.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    # The library logs a warning for every fractional order whose series it drops (dozens
    # per call at large q): dropping an order only loosens ε, which the docstring states.
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        accountant.compose(dpa.SelfComposedDpEvent(step, int(steps)))
        return float(accountant.get_epsilon(delta))
    finally:
        absl.setLevel(level)


def _smallest(meets: Callable[[float], bool], hi: float, shrink: float,
              rtol: float = _SIGMA_RTOL) -> float:
    """The smallest σ ≤ ``hi`` that meets the target, given that ``hi`` does: step down by
    ``shrink`` until σ fails (or reaches _MIN_SIGMA), then bisect (geometrically) to rtol."""
    lo = hi * shrink
    while lo >= _MIN_SIGMA and meets(lo):
        hi, lo = lo, lo * shrink
    return hi if lo < _MIN_SIGMA else _bisect(meets, lo, hi, rtol)


def _bisect(meets: Callable[[float], bool], lo: float, hi: float, rtol: float) -> float:
    """Shrink [lo, hi] (lo fails, hi meets) until hi/lo ≤ 1 + rtol; return hi."""
    while hi / lo > 1 + rtol:
        mid = math.sqrt(lo * hi)
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _beyond_range(meets: Callable[[float], bool], target: float, delta: float, rate: float,
                  steps: int, method: str, max_sigma: float) -> str:
    """The one-line error when σ = max_sigma is not enough, with the σ that would be."""
    problem = (f"a target ε of {target:g} at δ={delta:g} over {steps} steps at sampling rate "
               f"{rate:g}")
    fix = "raise the target ε, train fewer steps or use a smaller batch"
    lo, hi = max_sigma, 2 * max_sigma
    while not meets(hi):
        if hi >= _FAR * max_sigma:
            eps_far = _account(hi, rate, steps, delta, method)
            floor = ", about the least RDP accounting can certify" if method == "rdp" else ""
            return (f"{problem} is out of reach of any noise multiplier (at σ = {hi:g} ε is "
                    f"still {eps_far:.3g}{floor}): {fix}")
        lo, hi = hi, 2 * hi
    needed = _bisect(meets, lo, hi, rtol=1e-2)
    return (f"{problem} needs a noise multiplier σ ≈ {needed:.3g}, beyond the search range "
            f"σ ≤ {max_sigma:g}: {fix}")
