"""DP accounting (memlab.engine.accountant) against independent answers.

Known answers: Opacus's RDP analysis on a grid of (σ, q, steps); the analytic Gaussian
mechanism (Balle & Wang 2018) for one unsubsampled step; PLD never above RDP; the σ solved
for a target ε gives that ε back; ε moves the right way with σ, q and steps; every bad
setting is refused in one line that names its flag.
"""

import logging
import math
import re
import sys

import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.rdp import RDPAccountant
from scipy.optimize import brentq
from scipy.stats import norm

from memlab.engine.accountant import (
    RDP_ORDERS,
    check_dp_settings,
    epsilon,
    noise_multiplier_for,
)
from memlab.errors import ConfigError

DELTA = 1e-5


@pytest.fixture(autouse=True)
def _quiet_dp_accounting(caplog):
    """dp_accounting logs a warning for every fractional RDP order it drops at large q."""
    caplog.set_level(logging.ERROR)


def test_orders_are_opacus_defaults():
    assert list(RDP_ORDERS) == list(RDPAccountant.DEFAULT_ALPHAS)


@pytest.mark.filterwarnings("ignore:Optimal order")
def test_rdp_epsilon_matches_opacus():
    """Within 1% wherever Opacus's ε ≤ 20 (every setting DP training uses). Beyond, where the
    best order is fractional and below 2, dp_accounting's fractional-order bound is looser
    (it sums absolute series terms, drops non-converging orders): ours may be higher, never
    lower."""
    compared = 0
    for sigma in (0.5, 1.0, 2.0, 4.0):
        for q in (0.001, 0.01, 0.1, 0.5):
            one_step = compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=RDP_ORDERS)
            for steps in (10, 1000, 10000):
                theirs, _ = get_privacy_spent(orders=RDP_ORDERS, rdp=one_step * steps,
                                              delta=DELTA)
                ours = epsilon(sigma, q, steps, DELTA, method="rdp")
                point = f"σ={sigma} q={q} steps={steps}: ours {ours:.6g}, Opacus {theirs:.6g}"
                assert ours >= theirs * (1 - 1e-6), point
                if theirs <= 20:
                    assert ours == pytest.approx(theirs, rel=0.01), point
                    compared += 1
    assert compared >= 30


@pytest.mark.parametrize("sigma,q,steps", [(1.0, 0.01, 1000), (2.0, 0.1, 100), (1.5, 1.0, 1)])
def test_pld_is_tighter_than_rdp(sigma, q, steps):
    rdp = epsilon(sigma, q, steps, DELTA, method="rdp")
    pld = epsilon(sigma, q, steps, DELTA, method="pld")
    assert 0.5 * rdp <= pld < rdp


def _analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """ε of one Gaussian step of sensitivity 1 and noise std σ: the root of Balle & Wang's
    δ(ε) = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ)."""
    def excess(eps: float) -> float:
        return (norm.cdf(1 / (2 * sigma) - eps * sigma)
                - math.exp(eps) * norm.cdf(-1 / (2 * sigma) - eps * sigma) - delta)
    return brentq(excess, 0.0, 100.0)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 4.0])
def test_pld_matches_analytic_gaussian(sigma):
    exact = _analytic_gaussian_epsilon(sigma, DELTA)
    pld = epsilon(sigma, 1.0, 1, DELTA, method="pld")
    assert pld == pytest.approx(exact, rel=1e-2)
    assert pld >= exact * (1 - 1e-6)  # discretization rounds the loss up: never optimistic


@pytest.mark.parametrize("target", [1.0, 4.0, 8.0])
def test_noise_multiplier_round_trips(target):
    q, steps = 0.01, 1000
    sigma = noise_multiplier_for(target, DELTA, q, steps)
    reached = epsilon(sigma, q, steps, DELTA)
    assert 0.99 * target <= reached <= target
    assert epsilon(sigma * (1 - 3e-3), q, steps, DELTA) > target  # and it is the smallest σ


def test_noise_multiplier_round_trips_pld():
    q, steps, target = 1.0, 1, 0.5  # one unsubsampled step: cheap for PLD
    sigma = noise_multiplier_for(target, DELTA, q, steps, method="pld")
    assert 0.99 * target <= epsilon(sigma, q, steps, DELTA, method="pld") <= target
    assert sigma < noise_multiplier_for(target, DELTA, q, steps, method="rdp")


def test_epsilon_is_monotone():
    def strictly_increasing(values):
        return all(a < b for a, b in zip(values, values[1:]))

    by_sigma = [epsilon(s, 0.01, 1000, DELTA) for s in (0.7, 1.0, 1.5, 2.0, 3.0)]
    by_steps = [epsilon(1.0, 0.01, n, DELTA) for n in (1, 10, 100, 1000, 10000)]
    by_rate = [epsilon(1.0, q, 100, DELTA) for q in (0.001, 0.01, 0.1, 0.3)]
    by_sigma_pld = [epsilon(s, 0.01, 100, DELTA, method="pld") for s in (1.0, 2.0, 4.0)]
    assert strictly_increasing(by_sigma[::-1]) and strictly_increasing(by_sigma_pld[::-1])
    assert strictly_increasing(by_steps) and strictly_increasing(by_rate)


@pytest.mark.parametrize("method", ["rdp", "pld"])
def test_epsilon_edges(method):
    assert epsilon(0.0, 0.01, 100, DELTA, method) == math.inf
    assert epsilon(1.0, 0.0, 100, DELTA, method) == 0.0
    assert epsilon(1.0, 0.01, 0, DELTA, method) == 0.0


def _one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("sigma,clip,delta,n,target,flag", [
    (None, 1.0, DELTA, 1000, None, "--dp-epsilon"),  # neither σ nor ε
    (1.0, 1.0, DELTA, 1000, 4.0, "--dp-noise-multiplier"),  # both
    (0.0, 1.0, DELTA, 1000, None, "--dp-noise-multiplier"),
    (-1.0, 1.0, DELTA, 1000, None, "--dp-noise-multiplier"),
    (NAN, 1.0, DELTA, 1000, None, "--dp-noise-multiplier"),
    (INF, 1.0, DELTA, 1000, None, "--dp-noise-multiplier"),
    (None, 1.0, DELTA, 1000, 0.0, "--dp-epsilon"),
    (None, 1.0, DELTA, 1000, -2.0, "--dp-epsilon"),
    (None, 1.0, DELTA, 1000, INF, "--dp-epsilon"),
    (1.0, 0.0, DELTA, 1000, None, "--dp-max-grad-norm"),
    (1.0, -1.0, DELTA, 1000, None, "--dp-max-grad-norm"),
    (1.0, NAN, DELTA, 1000, None, "--dp-max-grad-norm"),
    (1.0, INF, DELTA, 1000, None, "--dp-max-grad-norm"),
    (1.0, 1.0, 0.0, 1000, None, "--dp-delta"),
    (1.0, 1.0, NAN, 1000, None, "--dp-delta"),
    (1.0, 1.0, 0.5, 1000, None, "--dp-delta"),
])
def test_bad_settings_name_their_flag(sigma, clip, delta, n, target, flag):
    assert flag in _one_line_error(check_dp_settings, sigma, clip, delta, n, target)


def test_delta_must_be_below_one_over_n():
    check_dp_settings(1.0, 1.0, 9e-4, 1000)  # just below 1/n: accepted
    check_dp_settings(None, 1.0, 1e-5, 1000, epsilon=4.0)
    message = _one_line_error(check_dp_settings, 1.0, 1.0, 1e-3, 1000)  # δ = 1/n
    assert "--dp-delta" in message and "1/n = 0.001" in message and "0.0001" in message
    assert "at least one" in _one_line_error(check_dp_settings, 1.0, 1.0, DELTA, 0)


def test_out_of_range_target_names_the_needed_sigma():
    q, steps, target = 0.2, 1000, 0.2  # needs σ ≈ 114
    message = _one_line_error(noise_multiplier_for, target, DELTA, q, steps, max_sigma=50.0)
    needed = float(re.search(r"σ ≈ ([0-9.e+]+)", message).group(1))
    assert 50 < needed and "σ ≤ 50" in message and "raise the target ε" in message
    assert epsilon(needed * 1.02, q, steps, DELTA) <= target < epsilon(needed * 0.98, q, steps,
                                                                       DELTA)


def test_target_below_what_rdp_can_certify_is_refused():
    # RDP's largest order is 63: at δ=1e-5 no σ certifies ε below about 0.1.
    message = _one_line_error(noise_multiplier_for, 0.05, DELTA, 0.01, 100)
    assert "out of reach" in message and "raise the target ε" in message


@pytest.mark.parametrize("args,kwargs", [
    ((1.0, 0.01, 100, DELTA), {"method": "moments"}),
    ((-1.0, 0.01, 100, DELTA), {}),
    ((1.0, 1.5, 100, DELTA), {}),
    ((1.0, 0.01, -1, DELTA), {}),
    ((1.0, 0.01, math.inf, DELTA), {}),
    ((1.0, 0.01, 100, 0.0), {}),
])
def test_epsilon_refuses_bad_inputs(args, kwargs):
    _one_line_error(epsilon, *args, **kwargs)


def test_noise_multiplier_for_refuses_nothing_to_solve():
    _one_line_error(noise_multiplier_for, 0.0, DELTA, 0.01, 100)
    _one_line_error(noise_multiplier_for, 1.0, DELTA, 0.0, 100)
    _one_line_error(noise_multiplier_for, 1.0, DELTA, 0.01, 0)


def test_missing_library_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # (import raises ImportError)
    assert "pip install dp-accounting" in _one_line_error(epsilon, 1.0, 0.01, 100, DELTA)
