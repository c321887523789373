"""The paper's directions (docs/science.md §3), each a verdict computed from the study's
tables with an interval: "reproduced", "not reproduced" or "cannot decide" (the interval
overlaps the line between the two).

Intervals (95%):

- per-seed comparisons (speed, capacity, CSR, Gini, the validation peak): a t-interval of
  the paired per-seed difference; replicate r of every condition starts from the same
  weights and sees the same batches, so the differences are paired. A run that never
  reaches a threshold counts as one epoch past the cap (a censored value: for "noise is
  slower" this can only shrink the difference, so "reproduced" stays safe);
- the dispersion index: a bootstrap over examples (:func:`memlab.measures.dynamics.
  dispersion_interval`);
- the regularizer row: a t-interval over the sweep's seeds, or with one model per strength
  a normal interval from the Binomial variance of each accuracy over its examples (seed
  variation is then not in it);
- "noisy labels are learned last" (:func:`learned_last`, the report's headline for partial
  label noise): a normal interval over examples (Welch's standard error) of the corrupted
  examples' mean first-learned epoch minus the clean ones'.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from memlab.measures import dynamics
from memlab.measures.stats import (
    NOT_REPRODUCED,
    REPRODUCED,
    UNDECIDED,
    Z95,
    mean_se,
    t_interval,
    verdict_from_interval,
)

LEVEL = 0.95
# "Equally hard" tolerates a dispersion index up to 1.25: 25% more variance than one
# Binomial, e.g. a spread of true error rates of sd 0.023 at p = 0.3 and 100 seeds.
EQUAL_MARGIN = 0.25
# A fall of validation accuracy after its peak smaller than one point counts as flat.
FLAT_MARGIN = 0.01


def sign_verdict(low: float, high: float) -> str:
    """The paper predicts a positive difference: reproduced if the interval lies above 0,
    not reproduced if below, else cannot decide (also when there is no interval)."""
    return verdict_from_interval(low, high, above=REPRODUCED, below=NOT_REPRODUCED)


def all_verdicts(verdicts: list[str]) -> str:
    """Several comparisons that must all hold: reproduced only if every one is; not
    reproduced if any one is not; else cannot decide."""
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return UNDECIDED


def _row(finding: str, measured: str, estimate: float, low: float, high: float,
         verdict: str, interval: str) -> dict[str, Any]:
    return {"finding": finding, "measured": measured, "estimate": float(estimate),
            "ci_low": float(low), "ci_high": float(high), "verdict": verdict,
            "interval": interval}


def _ci(low: float, high: float, digits: int = 3) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval"
    return f"[{low:+.{digits}g}, {high:+.{digits}g}]"


def _epochs(value: float) -> str:
    return "never" if not np.isfinite(value) else f"{value:g}"


def _paired(values: pd.DataFrame, column: str, better: str, worse: str) -> np.ndarray:
    """Per-seed ``worse - better`` of ``column`` (rows indexed by condition and seed)."""
    wide = values.pivot(index="seed", columns="condition", values=column)
    return (wide[worse] - wide[better]).to_numpy(float)


def _speed(tables: dict[str, pd.DataFrame], threshold: float, epochs: int) -> dict[str, Any]:
    dyn = tables["dynamics"].set_index("condition")
    seeds = tables["seed_curves"]
    reach = []
    for (name, seed), frame in seeds[seeds.condition.isin(["real", "randY"])].groupby(
            ["condition", "seed"]):
        epoch = float(dynamics.epochs_to_reach(frame.sort_values("epoch").train_acc.to_numpy(),
                                               threshold))
        reach.append({"condition": name, "seed": seed,
                      "epochs": epochs + 1 if np.isnan(epoch) else epoch})
    diff = _paired(pd.DataFrame(reach), "epochs", "real", "randY")
    mean, low, high = t_interval(diff)
    key = f"epochs_to_{threshold:g}"
    return _row(f"real data reaches {threshold:.0%} training accuracy in fewer epochs than "
                "randY",
                f"mean curve: real {_epochs(dyn.loc['real', key])} vs randY "
                f"{_epochs(dyn.loc['randY', key])} epochs (of {epochs}); per seed randY − real "
                f"{mean:+.1f} epochs {_ci(low, high)}", mean, low, high, sign_verdict(low, high),
                f"t-interval of the paired per-seed difference ({len(diff)} seeds; never "
                f"reached = {epochs + 1})")


def _dispersion(tables: dict[str, pd.DataFrame], name: str, within_class: bool,
                seed: int) -> tuple[float, float, float]:
    frame = tables["difficulty"][tables["difficulty"].condition == name]
    groups = frame.label.to_numpy() if within_class else None
    test = dynamics.dispersion_test(frame.errors, frame.trials, groups)
    low, high = dynamics.dispersion_interval(frame.errors, frame.trials, groups, seed=seed)
    return test.dispersion_index, low, high


def _equally_hard(index: float, low: float, high: float) -> str:
    """"Matches the Binomial": not reproduced if the interval lies above 1, reproduced if it
    covers 1 and stays within 1 + EQUAL_MARGIN, else cannot decide."""
    if low > 1:
        return NOT_REPRODUCED
    if np.isfinite(high) and high <= 1 + EQUAL_MARGIN:
        return REPRODUCED
    return UNDECIDED


def directions(tables: dict[str, pd.DataFrame], *, epochs: int, capacity_epochs: int,
               seed: int) -> pd.DataFrame:
    """One row per direction of the paper: finding, measured (text), estimate, ci_low,
    ci_high, verdict, interval (what the interval is). ``epochs``: of the dynamics part;
    ``capacity_epochs``: the capacity part's cap; ``seed``: of the bootstrap intervals."""
    rows = [_speed(tables, threshold, epochs) for threshold in (0.9, 0.99)]

    index, low, high = _dispersion(tables, "real", False, seed)
    verdict = verdict_from_interval(low, high, above=REPRODUCED, below=NOT_REPRODUCED,
                                    reference=1.0)
    rows.append(_row("one-epoch difficulty of real data is over-dispersed vs one Binomial",
                     f"real: dispersion index {index:.2f} [{low:.2f}, {high:.2f}] (1 = Binomial)",
                     index, low, high, verdict, "bootstrap over examples"))
    real_index = index
    for within in (False, True):
        index, low, high = _dispersion(tables, "randX", within, seed)
        where = " within each class" if within else ""
        real_text = (f"; real {_dispersion(tables, 'real', True, seed)[0]:.2f}" if within
                     else f"; real's index is {real_index / index:.1f}x randX's")
        rows.append(_row(f"randX's one-epoch difficulty matches the Binomial{where}",
                         f"randX: dispersion index{where} {index:.2f} [{low:.2f}, {high:.2f}]"
                         + real_text, index, low, high, _equally_hard(index, low, high),
                         f"bootstrap over examples; equal if within 1 + {EQUAL_MARGIN:g}"))

    capacity = tables["capacity"]
    sizes = capacity[capacity.axis == "size"]
    if len(sizes):
        largest = sizes.value.max()
        cap = capacity_epochs
        at = sizes[sizes.value == largest].assign(
            epochs=lambda f: f.epochs_to_100.fillna(cap + 1))
        median = at.groupby("condition").epochs_to_100.median()
        diff = _paired(at, "epochs", "real", "randY")
        mean, low, high = t_interval(diff)
        rows.append(_row(f"noise needs more epochs to fit 100% at the largest size "
                         f"({largest} examples)",
                         f"median epochs real {_epochs(median.get('real', np.nan))} vs randY "
                         f"{_epochs(median.get('randY', np.nan))} (of {cap}); per seed "
                         f"randY − real {mean:+.1f} {_ci(low, high)}", mean, low, high,
                         sign_verdict(low, high),
                         f"t-interval of the paired per-seed difference ({len(diff)} seeds;"
                         f" never = {cap + 1})"))
    else:  # every capacity size exceeds n_train: said, not skipped
        rows.append(_row("noise needs more epochs to fit 100% at the largest size (none fits)",
                         "no capacity size is at most the number of training examples",
                         np.nan, np.nan, np.nan, UNDECIDED, "no runs"))

    csr = tables["csr"]
    final = csr[csr.epoch == csr.epoch.max()]
    means = final.groupby("condition").csr.mean()
    rows.append(_both("CSR is higher for networks fit to noise (final epoch)",
                      f"real {means['real']:.3f}, randY {means['randY']:.3f}, randX "
                      f"{means['randX']:.3f}", final, "csr", "real", ("randY", "randX")))
    # Averaged over the checkpoints after initialization: the paper tracks it during training.
    during = (csr[csr.epoch > 0].groupby(["condition", "seed"]).sensitivity_gini.mean()
              .reset_index())
    sens = during.groupby("condition").sensitivity_gini.mean()
    last = final.groupby("condition").sensitivity_gini.mean()
    rows.append(_both("loss-sensitivity Gini is higher for real data than for noise (mean over "
                      "training)",
                      f"real {sens['real']:.3f}, randY {sens['randY']:.3f}, randX "
                      f"{sens['randX']:.3f}; final epoch: real {last['real']:.3f}, randY "
                      f"{last['randY']:.3f}, randX {last['randX']:.3f}",
                      during, "sensitivity_gini", None, ("randY", "randX"), higher="real"))

    dyn = tables["dynamics"].set_index("condition")
    seeds = tables["seed_curves"]
    for name in [c for c in dyn.index if c.startswith("noise")]:
        peak, reach = int(dyn.loc[name, "best_val_epoch"]), dyn.loc[name, "epochs_to_1"]
        frame = seeds[seeds.condition == name]
        at_peak = frame[frame.epoch == peak].set_index("seed").val_acc
        at_end = frame[frame.epoch == frame.epoch.max()].set_index("seed").val_acc
        mean, low, high = t_interval((at_peak - at_end).to_numpy())
        before = bool(np.isnan(reach) or peak < reach)
        if not before or high < FLAT_MARGIN:
            verdict = NOT_REPRODUCED
        else:
            verdict = REPRODUCED if low > 0 else UNDECIDED
        rows.append(_row(f"{name}: validation accuracy peaks before training accuracy reaches "
                         "100%, then falls",
                         f"val peak at epoch {peak} ({dyn.loc[name, 'best_val_acc']:.3f}, train "
                         f"acc then {dyn.loc[name, 'train_acc_at_best_val']:.3f}); train 100% "
                         f"at epoch {_epochs(reach)}; final val "
                         f"{dyn.loc[name, 'final_val_acc']:.3f}; fall per seed {mean:+.3f} "
                         f"{_ci(low, high)}", mean, low, high,
                         verdict, f"t-interval over {len(at_peak)} seeds (peak epoch chosen on "
                         f"the same seeds); flat if the fall is below {FLAT_MARGIN:g}"))

    row = _dropout(tables["sweep"])
    if row is not None:
        rows.append(row)
    return pd.DataFrame(rows)


def _both(finding: str, measured: str, values: pd.DataFrame, column: str, base: str | None,
          others: tuple[str, ...], higher: str | None = None) -> dict[str, Any]:
    """Every condition in ``others`` above ``base`` (or below ``higher``), paired by seed;
    the row's estimate and interval are those of the weaker comparison."""
    found = []
    for other in others:
        diff = (_paired(values, column, base, other) if higher is None
                else _paired(values, column, other, higher))
        found.append((other, *t_interval(diff)))
    verdict = all_verdicts([sign_verdict(low, high) for _, _, low, high in found])
    weakest = min(found, key=lambda f: f[2] if np.isfinite(f[2]) else -np.inf)
    parts = [f"{(higher or o)} − {(o if higher else base)} {m:+.3f} {_ci(lo, hi)}"
             for o, m, lo, hi in found]
    return _row(finding, measured + "; per seed " + ", ".join(parts), weakest[1], weakest[2],
                weakest[3], verdict,
                f"t-interval of paired per-seed differences ({values.seed.nunique()} seeds); "
                "the weaker comparison shown")


def _dropout(sweep: pd.DataFrame) -> dict[str, Any] | None:
    """Dropout at its strongest lowers randY training accuracy more than real validation
    accuracy: effect = (randY drop) − (real validation drop), per seed."""
    dropout = sweep[sweep.regularizer == "dropout"]
    if not len(dropout):
        return None
    strongest = dropout.strength.max()
    base = sweep[sweep.regularizer == "none"].set_index("seed")
    strong = dropout[dropout.strength == strongest].set_index("seed")
    noise_drop = base.randY_train_acc - strong.randY_train_acc
    val_drop = base.real_best_val_acc - strong.real_best_val_acc
    effect = (noise_drop - val_drop).to_numpy(float)
    if len(effect) >= 2:
        mean, low, high = t_interval(effect)
        what = f"t-interval over {len(effect)} seeds"
    else:  # one model per strength: only the examples' Binomial variance is known
        accuracies = [(base.randY_train_acc, base.n_train), (strong.randY_train_acc,
                                                             strong.n_train),
                      (base.real_best_val_acc, base.n_val), (strong.real_best_val_acc,
                                                             strong.n_val)]
        se = math.sqrt(sum(float(a.iloc[0] * (1 - a.iloc[0]) / n.iloc[0])
                           for a, n in accuracies))
        mean = float(effect[0])
        half = float(stats.norm.ppf(0.5 + LEVEL / 2)) * se
        low, high = mean - half, mean + half
        what = "normal interval from the accuracies' Binomial variance (one model per strength)"
    means = lambda f, c: float(f[c].mean())  # noqa: E731
    return _row(f"dropout {strongest:g} lowers randY training accuracy more than real "
                "validation accuracy",
                f"randY train {means(base, 'randY_train_acc'):.3f} -> "
                f"{means(strong, 'randY_train_acc'):.3f}, real val "
                f"{means(base, 'real_best_val_acc'):.3f} -> "
                f"{means(strong, 'real_best_val_acc'):.3f}; difference of the drops {mean:+.3f}"
                f" {_ci(low, high)}", mean, low, high, sign_verdict(low, high), what)


def censored_first_learned(examples: pd.DataFrame, epochs: int) -> np.ndarray:
    """Each example's first-learned epoch averaged over all seeds, a seed that never learned
    it counting as ``epochs + 1`` (the ``examples`` table keeps the mean over the seeds that
    learned it, ``first_learned``, and the share that never did, ``never_learned_fraction``;
    leaving the never-learned out would make the hardest examples look early)."""
    never = examples.never_learned_fraction.to_numpy(float)
    first = np.nan_to_num(examples.first_learned.to_numpy(float))  # NaN only where never = 1
    return (1 - never) * first + never * (epochs + 1)


def learned_last(examples: pd.DataFrame, epochs: int) -> list[dict[str, Any]]:
    """"Noisy labels are learned last", per condition that has both clean and corrupted
    training examples (partial label noise): the corrupted examples' mean first-learned
    epoch (:func:`censored_first_learned`) minus the clean ones', with a 95% normal
    interval over examples (Welch's standard error) and its verdict (reproduced: the
    interval lies above 0). Keys: condition, clean, corrupted, difference, ci_low,
    ci_high, n_clean, n_corrupted, never_learned_corrupted (the corrupted examples' share
    of seeds that never learned them), verdict."""
    rows = []
    for name, frame in examples.groupby("condition", sort=False):
        corrupted = frame.corrupted.to_numpy(bool)
        if corrupted.all() or not corrupted.any():  # real, randY, randX: nothing to compare
            continue
        epoch = censored_first_learned(frame, epochs)
        clean, noisy = mean_se(epoch[~corrupted]), mean_se(epoch[corrupted])
        difference = noisy.mean - clean.mean
        half = Z95 * math.hypot(clean.se, noisy.se)
        low, high = difference - half, difference + half
        rows.append({"condition": name, "clean": clean.mean, "corrupted": noisy.mean,
                     "difference": difference, "ci_low": low, "ci_high": high,
                     "n_clean": int((~corrupted).sum()), "n_corrupted": int(corrupted.sum()),
                     "never_learned_corrupted": float(
                         frame.never_learned_fraction.to_numpy(float)[corrupted].mean()),
                     "verdict": sign_verdict(low, high)})
    return rows
