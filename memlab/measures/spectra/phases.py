"""Phase and verdict of a layer, computed from the tests, never from a point estimate alone.

Martin & Mahoney's phases read α against fixed bands (< 2 very heavy, 2–4 heavy-tailed,
4–6 bulk-decay, ≥ 6 random-like) and the MP fit (spikes, bulk edge). memlab gives a phase
only when the data decide it:

1. fewer than :data:`MIN_EIGENVALUES_TO_FIT` eigenvalues: "too few eigenvalues to fit",
   phase ``unfitted`` (no α in the default mode; reference mode still reports
   WeightWatcher's α, flagged);
2. rank collapse, or an MP bulk with no spike (random-like), as before;
3. the tail tests: a goodness-of-fit p < 0.1, or an exponential that fits the tail
   significantly better (Vuong p < 0.1), means "no power-law tail" (phase
   ``no-power-law``, or the MP phase where an MP fit exists);
4. the α band: from the bootstrap interval when one was computed (else α ± 1.96 σ with
   x_min held fixed, which ignores the x_min choice); an interval that spans two bands
   gets phase ``undecided`` and says which bands;
5. an exponential or log-normal that the power law cannot be told from (Vuong p ≥ 0.1) is
   said in the verdict and in ``evidence`` ("power law or log-normal", …): "power law"
   alone means every alternative tested fits significantly worse.

Why 50 eigenvalues: on pure power laws with α = 3 (40 seeds each, tails of ≥ 8 allowed;
``benchmarks/spectra.py --stats``) the 95% bootstrap interval of α has a median width of
3.0 at 16 eigenvalues, 2.2 at 25, 1.8 at 50 and 1.2 at 100. A phase band is 2 wide, so
below 50 the typical interval spans two bands or more and no phase can be decided from
it: WeightWatcher's α on such layers (EfficientNet's 9- and 25-eigenvalue depthwise
convolutions, a 10-class head) is noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

ALPHA_VERY_HEAVY = 2.0  # below: very heavy-tailed, a hint of over-fitting
ALPHA_HEAVY_TAILED = 4.0  # below: heavy-tailed (well trained); 2–4 typical
ALPHA_RANDOM_LIKE = 6.0  # at or above: the tail is not a power law worth the name
# Fewer than this share of numerically nonzero eigenvalues = rank collapse.
RANK_COLLAPSE_FRACTION = 0.5
# Fewer eigenvalues than this: no fit, no phase (see the module docstring for why 50).
MIN_EIGENVALUES_TO_FIT = 50
# Significance used for the GOF and likelihood-ratio tests (Clauset et al. use 0.1).
SIGNIFICANCE = 0.1

PHASES = ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed",
          "very-heavy-tailed", "no-power-law", "undecided", "rank-collapse", "unfitted")

# What a layer's verdict says about its tail, one kind per layer: the α band it decided,
# "undecided" (the interval spans two bands), or why it has no band. The summary's counts
# and the reports count these (:func:`verdict_kind`), so a count always agrees with the
# verdicts: a layer whose verdict reads "no power-law tail" is a ``no-power-law`` layer
# even where its phase is an MP phase (bulk+spikes, bleeding-out).
VERDICT_KINDS = ("very-heavy-tailed", "heavy-tailed", "bulk-decay", "random-like",
                 "undecided", "no-power-law", "no-fit", "rank-collapse", "unfitted")
KIND_WORDS = {"very-heavy-tailed": "very heavy-tailed (α < 2)",
              "heavy-tailed": "heavy-tailed (α 2–4)",
              "bulk-decay": "bulk-decay (α 4–6)",
              "random-like": "random-like (α ≥ 6, or a random MP bulk)",
              "undecided": "cannot decide: the interval of α spans two bands",
              "no-power-law": "no power-law tail: the tail tests reject it",
              "no-fit": "no power-law tail fitted (see the reason)",
              "rank-collapse": "rank collapse",
              "unfitted": f"too few eigenvalues to fit (< {MIN_EIGENVALUES_TO_FIT})"}
# evidence (the second output of :func:`verdict`) -> kind, where the evidence alone decides
_EVIDENCE_KINDS = {"too few eigenvalues": "unfitted", "rank collapse": "rank-collapse",
                   "random bulk": "random-like", "no power law": "no-power-law",
                   "no fit": "no-fit"}

_BANDS = ((ALPHA_VERY_HEAVY, "very-heavy-tailed"), (ALPHA_HEAVY_TAILED, "heavy-tailed"),
          (ALPHA_RANDOM_LIKE, "bulk-decay"), (math.inf, "random-like"))
_BAND_WORDS = {"very-heavy-tailed": "very heavy-tailed (α < 2: strongly correlated, possibly "
                                    "over-fitted)",
               "heavy-tailed": "heavy-tailed (α 2–4: well trained)",
               "bulk-decay": "bulk-decay (α 4–6: partly trained)",
               "random-like": "random-like (α ≥ 6: no tail worth the name)"}


def alpha_band(alpha: float) -> str:
    """The Martin–Mahoney band of an α value."""
    return next(name for edge, name in _BANDS if alpha < edge)


def verdict_kind(phase: str, evidence: str | None) -> str:
    """The kind of one layer's verdict (:data:`VERDICT_KINDS`) from the phase and evidence
    :func:`verdict` gave it: the evidence where it rules a band out, else the phase (an α
    band or "undecided")."""
    if evidence in _EVIDENCE_KINDS:
        return _EVIDENCE_KINDS[evidence]
    return phase if phase in VERDICT_KINDS else "undecided"


def _mp_phase(num_spikes: float, lambda_max: float, bulk_max: float) -> str | None:
    if math.isnan(num_spikes):
        return None
    if num_spikes == 0:
        return "random-like"
    return "bleeding-out" if lambda_max < 2 * bulk_max else "bulk+spikes"


def verdict(*, num_evals: int, alpha: float, sigma: float, fit_reason: str,
            rank_fraction: float, num_spikes: float = math.nan, lambda_max: float = math.nan,
            bulk_max: float = math.nan, alpha_lo: float = math.nan, alpha_hi: float = math.nan,
            gof_p: float = math.nan, tests: Mapping[str, tuple[float, float]] | None = None,
            ) -> tuple[str, str, str]:
    """(phase, evidence, verdict) of one layer.

    tests: {"exponential" | "lognormal" | "truncated_power_law": (R, p)}, R > 0 favouring
    the power law. evidence: "too few eigenvalues", "rank collapse", "random bulk",
    "no power law", "power law", "power law or log-normal[ or exponential]", "log-normal",
    "no fit".
    """
    tests = dict(tests or {})
    if num_evals < MIN_EIGENVALUES_TO_FIT:
        return "unfitted", "too few eigenvalues", (
            f"too few eigenvalues to fit ({num_evals} < {MIN_EIGENVALUES_TO_FIT})")
    if rank_fraction < RANK_COLLAPSE_FRACTION:
        return "rank-collapse", "rank collapse", (
            f"rank collapse: only {rank_fraction:.0%} of the eigenvalues are nonzero")
    mp_phase = _mp_phase(num_spikes, lambda_max, bulk_max)
    if mp_phase == "random-like":
        return "random-like", "random bulk", (
            "random-like: the whole spectrum fits a random (MP) bulk; untrained")
    if fit_reason or math.isnan(alpha):
        phase = mp_phase or "random-like"
        return phase, "no fit", f"{phase}: no power-law tail fitted ({fit_reason})"
    exponential = tests.get("exponential")
    if not math.isnan(gof_p) and gof_p < SIGNIFICANCE:
        return mp_phase or "no-power-law", "no power law", (
            f"no power-law tail (GOF p = {gof_p:.2f})")
    if exponential and exponential[0] < 0 and exponential[1] < SIGNIFICANCE:
        return mp_phase or "no-power-law", "no power law", (
            f"no power-law tail: an exponential fits it better (R = {exponential[0]:.1f}, "
            f"p = {exponential[1]:.2g})")
    if math.isnan(alpha_lo) or math.isnan(alpha_hi):
        low, high, how = alpha - 1.96 * sigma, alpha + 1.96 * sigma, "α ± 1.96σ, x_min fixed"
    else:
        low, high, how = alpha_lo, alpha_hi, "bootstrap 95%"
    bands = list(dict.fromkeys(alpha_band(a) for a in (low, alpha, high)))
    if len(bands) > 1:
        phase = "undecided"
        text = (f"α = {alpha:.2f} [{low:.2f}, {high:.2f}] ({how}) spans "
                f"{' to '.join(b.replace('-', ' ') for b in bands)}: the data cannot decide")
    else:
        phase = bands[0]
        text = f"{_BAND_WORDS[phase]}, α = {alpha:.2f} [{low:.2f}, {high:.2f}] ({how})"
    # Which alternatives the tail tests leave standing: "power law" alone only if the GOF
    # test (when run) keeps it and each alternative tested fits significantly worse.
    standing, undecided = [], []
    for name, words in (("lognormal", "a log-normal"), ("exponential", "an exponential")):
        result = tests.get(name)
        if result is None:
            continue
        if result[0] < 0 and result[1] < SIGNIFICANCE:  # only the log-normal gets here
            standing.append(name)
            text += f"; {words} fits the tail better (p = {result[1]:.2g})"
        elif result[1] >= SIGNIFICANCE:
            standing.append(name)
            undecided.append(f"{words} (p = {result[1]:.2f})")
    if undecided:  # neither test rejects: say so, not "power law" by default
        text += ("; the data cannot decide between a power law and "
                 f"{' or '.join(undecided)}: neither is rejected")
    evidence = " or ".join(["power law", *[n.replace("lognormal", "log-normal")
                                           for n in standing]])
    if tests.get("lognormal") and tests["lognormal"][0] < 0 \
            and tests["lognormal"][1] < SIGNIFICANCE:
        evidence = "log-normal"
    truncated = tests.get("truncated_power_law")
    if truncated and truncated[1] < SIGNIFICANCE:
        text += f"; the tail bends down (truncated power law, p = {truncated[1]:.2g})"
    if not math.isnan(gof_p):
        text += f"; GOF p = {gof_p:.2f}"
    return phase, evidence, text
