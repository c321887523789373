"""Do the audit's 95% intervals hold? Coverage with known answers (issue 29).

Each replicate is a fresh synthetic population of T models on the same N examples, audited
as `memlab audit` does (every model the target, the others its shadows; intervals from
`mia.audit_metrics`, the bootstrap over models as targets *and* shadows). Example i has a
fixed difficulty μ_i, noise σ_i and exposure e_i (deterministic, below); model k's score
is φ[k, i] = μ_i + SHIFT·σ_i·e_i·M[k, i] + σ_i·ε[k, i], with M[k, i] ~ Bernoulli(1/2)
and ε ~ N(0, 1) drawn anew per replicate.

What is true:
- null populations (SHIFT = 0; M independent of φ): AUC 1/2 and every difference 0; TPR at
  FPR α is the expectation of the empirical TPR of exchangeable scores at "the largest TPR
  whose FPR ≤ α", E[(⌊αN⁻⌋ + 1)/(N⁻ + 1)] with N⁻ ~ Binomial(T·N, 1/2) non-member trials
  (0.0106 here, not 0.01: the threshold sits on a non-member's score), in closed form below.
  Leaving the target out of its shadows biases LiRA online's null AUC by −0.0009 (measured
  at 16 models on 20,000 populations), under 0.1 SD: not corrected for.
- SHIFT = 1: the expected metric of an audit of T models on these examples, measured once on
  100,000 populations of this generator (point estimates only; Monte Carlo SE ≤ 0.00006,
  under 0.5% of any cell's SD), written into TRUTH below. The last test checks every truth
  against the replicates' mean, so a change of the attacks that moves one fails there.

The grid: {null, SHIFT = 1} × {LiRA online, online fixed variance, offline, offline fixed
variance, loss threshold, each LiRA − loss} × {AUC, TPR at 1% FPR}: 36 cells of 400
replicates (1,200 for the loss threshold's own cells), 800 non-member trials per replicate,
eight times 1/FPR (TPR at 0.1% FPR would need ≥ 1,000 and is not in the grid). Measured,
with the earlier bootstrap over target models alone: docs/audit.md, "Intervals that hold"
(`python tests/test_audit_coverage.py` prints the table).
"""

import numpy as np
import pytest
from scipy import stats

from memlab.measures import audit as au
from memlab.measures import mia
from memlab.measures.stats import UNDECIDED

T_MODELS, N_EXAMPLES, SHIFT, FPR = 32, 50, 1.0, 0.01
REPLICATES = 400  # per cell: Monte Carlo SE of a coverage near 0.95 is 0.011
# The loss threshold's cells: its bootstrap is the plain one over models (no shadows), which
# covers 94.5% at 32 models (3,000 populations): with 400 replicates one of its cells would
# land below 0.93 by chance in about one seed in ten, so these cheap cells get 1,200.
LOSS_REPLICATES = 1200
VERDICT_POPULATIONS = 200  # null populations for the all-vs-one-shadow verdict
RESAMPLES = 100  # bootstrap resamples inside each replicate
ATTACKS = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed", "loss")
METRICS = ("auc", f"tpr_at_fpr_{FPR:g}")
LIRA = ATTACKS[:-1]
# Every paired verdict of the audit's summary (memlab.studies.audit.study), and each LiRA
# variant against the loss threshold.
PAIRS = [(a, "loss") for a in LIRA] + [("lira_online", "lira_offline_fixed")]

# SHIFT = 1, T_MODELS = 32, N_EXAMPLES = 50: the mean of each point estimate over 100,000
# populations (_measure_truth(100_000)).
TRUTH = {
    ("lira_online", "auc"): 0.64169, ("lira_online", "tpr_at_fpr_0.01"): 0.04141,
    ("lira_online_fixed", "auc"): 0.65627, ("lira_online_fixed", "tpr_at_fpr_0.01"): 0.04385,
    ("lira_offline", "auc"): 0.63023, ("lira_offline", "tpr_at_fpr_0.01"): 0.04404,
    ("lira_offline_fixed", "auc"): 0.64297, ("lira_offline_fixed", "tpr_at_fpr_0.01"): 0.05107,
    ("loss", "auc"): 0.58671, ("loss", "tpr_at_fpr_0.01"): 0.03951,
}


def example_parameters(n: int = N_EXAMPLES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """μ_i (normal quantiles, SD 2), σ_i (log-normal, SD of log 0.5) and exposure e_i
    (half the examples), from a low-discrepancy sequence: no random numbers, so TRUTH
    does not depend on a generator's stream."""
    u = (np.arange(n) + 0.5) / n
    v = (np.arange(n) * 0.6180339887498949 + 0.31) % 1
    return 2.0 * stats.norm.ppf(u), np.exp(0.5 * stats.norm.ppf(v)), v > 0.5


MU, SIGMA, EXPOSED = example_parameters()


def population(rng: np.random.Generator, shift: float) -> mia.AttackInputs:
    mask = rng.random((T_MODELS, N_EXAMPLES)) < 0.5
    phi = MU + shift * SIGMA * EXPOSED * mask + SIGMA * rng.normal(size=mask.shape)
    return mia.AttackInputs(phi, mask)


def null_tpr(alpha: float, trials: int) -> float:
    """E[(⌊αN⌋ + 1)/(N + 1)], N ~ Binomial(trials, 1/2) (N = 0 or trials: no ROC)."""
    n = np.arange(1, trials)
    p = stats.binom.pmf(n, trials, 0.5)
    return float((p * (np.floor(alpha * n * (1 + 1e-12)) + 1) / (n + 1)).sum() / p.sum())


def truth(shift: float) -> dict[tuple[str, str], float]:
    if shift == 0:
        base = {(a, m): 0.5 if m == "auc" else null_tpr(FPR, T_MODELS * N_EXAMPLES)
                for a in ATTACKS for m in METRICS}
    else:
        base = dict(TRUTH)
    base.update({(f"{a}-loss", m): base[(a, m)] - base[("loss", m)]
                 for a in LIRA for m in METRICS})
    return base


def _measure_truth(populations: int, seed: int = 1) -> dict[tuple[str, str], float]:
    """How TRUTH was computed (about 2 minutes per 100,000 populations on one core)."""
    rng = np.random.default_rng([seed, 29])
    total: dict[tuple[str, str], float] = {}
    for _ in range(populations):
        inputs = population(rng, SHIFT)
        for name, score in mia.attack_scores(inputs, ATTACKS).items():
            m = mia.roc_metrics(score, inputs.mask, n_bootstrap=0, fprs=(FPR,))
            for metric in METRICS:
                total[(name, metric)] = total.get((name, metric), 0.0) + m[metric]
    return {k: v / populations for k, v in total.items()}


def simulate(shift: float, before: bool = False) -> dict:
    """REPLICATES audits (LOSS_REPLICATES for the loss threshold's cells): per cell the
    estimates and whether the interval covered the truth; on null populations also every
    paired verdict. ``before``: also the coverage of the earlier interval (percentile
    bootstrap over target models, the shadows' statistics held fixed)."""
    rng = np.random.default_rng([29, int(shift * 100)])
    want = truth(shift)
    size = {k: LOSS_REPLICATES if k[0] == "loss" else REPLICATES for k in want}
    estimates = {k: np.empty(size[k]) for k in want}
    covered = {k: np.empty(size[k], bool) for k in want}
    earlier = {k: np.empty(size[k], bool) for k in want}
    verdicts: dict[str, list[bool]] = {}
    for r in range(LOSS_REPLICATES):
        inputs = population(rng, shift)
        attacks = ATTACKS if r < REPLICATES else ("loss",)
        scores, full = mia.audit_metrics(inputs, attacks, n_bootstrap=RESAMPLES, seed=r,
                                         fprs=(FPR,))
        fixed = {a: mia.roc_metrics(scores[a], inputs.mask, RESAMPLES, (FPR,), seed=r,
                                    return_samples=True)["_samples"]
                 for a in (attacks if before else ())}
        for (name, metric), value in want.items():
            if r >= size[(name, metric)]:
                continue
            if name.endswith("-loss"):
                d = mia.paired_difference(full[name[:-5]], full["loss"], metric)
                estimate, low, high = d["difference"], d["ci_low"], d["ci_high"]
            else:
                m = full[name]
                estimate, low, high = m[metric], m[f"{metric}_ci_low"], m[f"{metric}_ci_high"]
            estimates[(name, metric)][r] = estimate
            covered[(name, metric)][r] = low <= value <= high
            if before:
                held = fixed[name[:-5]][metric] - fixed["loss"][metric] \
                    if name.endswith("-loss") else fixed[name][metric]
                low, high = np.quantile(held, [0.025, 0.975])
                earlier[(name, metric)][r] = low <= value <= high
        if shift != 0 or r >= REPLICATES:
            continue
        for a, b in PAIRS:  # the summary's verdicts: any but "cannot decide" is false here
            for metric, d in au.compare(full, a, b, METRICS).items():
                verdicts.setdefault(f"{a} vs {b}, {metric}", []).append(
                    d["verdict"] != f"{a} {UNDECIDED}")
        if r < VERDICT_POPULATIONS:  # the shadow curve's verdict: all shadows beat one
            _, one = mia.audit_metrics(inputs, ("lira_online", "lira_offline_fixed"), cap=1,
                                       n_bootstrap=RESAMPLES, seed=r, fprs=(FPR,))
            for name, d in au.all_vs_one(full, one).items():
                verdicts.setdefault(f"{name} all vs one shadow, auc", []).append(
                    d["all_beat_one_by_2se"])
    return {"truth": want, "estimates": estimates, "covered": covered, "verdicts": verdicts,
            "before": earlier if before else None}


@pytest.fixture(scope="module")
def grid() -> dict[str, dict]:
    return {"null": simulate(0.0), "shift": simulate(SHIFT)}


def coverage_table(grid: dict[str, dict]) -> dict[tuple[str, str, str], float]:
    return {(population, *cell): float(hits.mean())
            for population, result in grid.items() for cell, hits in result["covered"].items()}


def test_intervals_hold_in_every_cell(grid):
    coverage = coverage_table(grid)
    assert len(coverage) == 36 and all(len(h) >= REPLICATES for r in grid.values()
                                       for h in r["covered"].values())
    low = {cell: c for cell, c in coverage.items() if c < 0.93}
    assert not low, low
    # Not bought by width alone: the mean over the grid stays near the nominal 95%.
    assert np.mean(list(coverage.values())) <= 0.975, coverage


def test_null_verdicts_are_rarely_false(grid):
    verdicts = grid["null"]["verdicts"]
    assert len(verdicts) == 2 * len(PAIRS) + 2
    rates = {name: float(np.mean(v)) for name, v in verdicts.items()}
    assert all(len(v) >= VERDICT_POPULATIONS for v in verdicts.values())
    assert max(rates.values()) <= 0.08, rates  # nominal: 5% (2.5% one-sided for 2 SE)


def test_truth_is_what_the_audit_measures(grid):
    """The replicates' mean point estimate lies within 4 Monte Carlo SE of each truth."""
    for population, result in grid.items():
        for cell, values in result["estimates"].items():
            error = values.mean() - result["truth"][cell]
            assert abs(error) < 4 * values.std(ddof=1) / np.sqrt(len(values)), (population,
                                                                                 cell, error)


def report(grid: dict[str, dict]) -> str:
    """The coverage table of docs/audit.md ("Intervals that hold"), in Markdown."""
    coverage = coverage_table(grid)
    lines = ["| population | attack | metric | truth | SD | before | coverage |",
             "|---|---|---|---|---|---|---|"]
    for (population, name, metric), value in coverage.items():
        result = grid[population]
        sd = result["estimates"][(name, metric)].std(ddof=1)
        earlier = "" if result["before"] is None else \
            f"{result['before'][(name, metric)].mean():.3f}"
        lines.append(f"| {population} | {name} | {metric} | "
                     f"{result['truth'][(name, metric)]:+.4f} | {sd:.4f} | {earlier} | "
                     f"{value:.3f} |")
    lines.append(f"\nmean {np.mean(list(coverage.values())):.3f}, "
                 f"min {min(coverage.values()):.3f}")
    for name, v in grid["null"]["verdicts"].items():
        lines.append(f"false verdicts, {name}: {np.mean(v):.3f} of {len(v)}")
    return "\n".join(lines)


if __name__ == "__main__":  # python tests/test_audit_coverage.py: the docs' table
    print(report({"null": simulate(0.0, before=True), "shift": simulate(SHIFT, before=True)}))
