"""Per-example learning dynamics from per-epoch correctness records (Arpit et al. 2017;
docs/science.md §3).

Input is a *correctness history*: ``history[..., e, i]`` is True iff example i was classified
correctly after epoch e + 1. The population engine records it as ``epoch_train_correct``,
shape (n_models, epochs, n), with ``record_epochs=True``; a single model's history is
(epochs, n). Epochs are reported 1-based ("learned at epoch 1" = right after the first
epoch); NaN means "never" (or "not a member", see ``mask``).

- :func:`first_learned`: the first epoch an example is classified correctly.
- :func:`learned_for_good`: the epoch from which it stays correct to the end.
- :func:`forgetting_events`: how often it goes from correct to wrong (Toneva et al. 2019).
- :func:`misclassification_rates` + :func:`dispersion_test`: across seeds, is the spread of
  per-example error rates wider than a Binomial with one common rate (all examples equally
  hard) would give? Real data: yes (over-dispersed); random inputs: no.
  :func:`dispersion_interval`: a bootstrap interval (over examples) for the index.
- :func:`order_consistency`: do different seeds learn the examples in the same order?
- :func:`learning_events`: a population's per-example means of the above over the models
  that trained on each example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


def _mask_rows(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Set entries of (n_models, n) ``values`` to NaN where mask (n_models, n) is False."""
    if mask is None:
        return values
    return np.where(mask, values, np.nan)


def first_learned(history: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(..., epochs, n) bool -> (..., n) float: first 1-based epoch with a correct
    prediction, NaN if never correct. ``mask`` (n_models, n): NaN where False."""
    history = np.asarray(history, dtype=bool)
    ever = history.any(axis=-2)
    epoch = history.argmax(axis=-2).astype(np.float64) + 1  # argmax: first True
    return _mask_rows(np.where(ever, epoch, np.nan), mask)


def learned_for_good(history: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(..., epochs, n) bool -> (..., n) float: the 1-based epoch from which the example is
    correct at every later epoch; NaN if it is wrong after the last epoch."""
    history = np.asarray(history, dtype=bool)
    n_epochs = history.shape[-2]
    # Reverse time: the run of Trues at the end is the run at the start of the reversed axis.
    reversed_wrong = ~np.flip(history, axis=-2)
    trailing = np.where(reversed_wrong.any(axis=-2), reversed_wrong.argmax(axis=-2), n_epochs)
    epoch = (n_epochs - trailing + 1).astype(np.float64)
    return _mask_rows(np.where(trailing > 0, epoch, np.nan), mask)


def forgetting_events(history: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(..., epochs, n) bool -> (..., n) float: number of correct -> wrong transitions
    between consecutive epochs."""
    history = np.asarray(history, dtype=bool)
    events = (history[..., :-1, :] & ~history[..., 1:, :]).sum(axis=-2).astype(np.float64)
    return _mask_rows(events, mask)


def misclassification_rates(correct: np.ndarray, mask: np.ndarray | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Across seeds: correct (n_seeds, n) bool, mask (n_seeds, n) bool (which seeds count
    for which example; e.g. the membership mask) -> (errors (n,) int, trials (n,) int).
    The misclassification rate of example i is errors[i] / trials[i]."""
    correct = np.asarray(correct, dtype=bool)
    counted = np.ones_like(correct) if mask is None else np.asarray(mask, dtype=bool)
    trials = counted.sum(axis=0)
    errors = (~correct & counted).sum(axis=0)
    return errors, trials


@dataclass(frozen=True)
class DispersionTest:
    """Pearson's dispersion test of per-example error counts against one common Binomial.

    Under "every example is equally hard", errors_i ~ Binomial(trials_i, p) with one p, and
    statistic = sum_i (errors_i - trials_i p)^2 / (trials_i p (1 - p)) ~ chi2(n - 1).
    dispersion_index = statistic / dof: ~1 when the Binomial fits, >> 1 when examples differ
    in difficulty (over-dispersion). p_value: one-sided, for over-dispersion.
    """

    mean_rate: float
    dispersion_index: float
    statistic: float
    dof: int
    p_value: float
    n_examples: int

    @property
    def over_dispersed(self) -> bool:
        return self.p_value < 0.01


def dispersion_test(errors: np.ndarray, trials: np.ndarray, groups: np.ndarray | None = None
                    ) -> DispersionTest:
    """errors, trials: (n,) counts from :func:`misclassification_rates` (examples with
    zero trials are ignored). ``groups`` (n,) ints, e.g. the class labels: test against one
    Binomial rate *per group* instead ("equally hard within a class"); groups that are
    always right or always wrong carry no information and are left out."""
    errors, trials = np.asarray(errors, float), np.asarray(trials, float)
    groups = np.zeros(len(errors), int) if groups is None else np.asarray(groups)
    keep = trials > 0
    errors, trials, groups = errors[keep], trials[keep], groups[keep]
    mean_rate = errors.sum() / trials.sum() if trials.sum() else float("nan")
    statistic, dof = 0.0, 0
    for group in np.unique(groups):
        e, t = errors[groups == group], trials[groups == group]
        p = e.sum() / t.sum()
        if 0 < p < 1 and len(e) > 1:
            statistic += float(((e - t * p) ** 2 / (t * p * (1 - p))).sum())
            dof += len(e) - 1
    if dof < 1:  # every example always right (or always wrong): no spread to test
        return DispersionTest(float(mean_rate), float("nan"), float("nan"), 0, float("nan"),
                              len(errors))
    return DispersionTest(float(mean_rate), statistic / dof, statistic, dof,
                          float(stats.chi2.sf(statistic, dof)), len(errors))


def dispersion_interval(errors: np.ndarray, trials: np.ndarray,
                        groups: np.ndarray | None = None, n_bootstrap: int = 1000,
                        level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval for the dispersion index of :func:`dispersion_test`,
    resampling *examples* (the rates are re-estimated in every resample). Under "equally
    hard" each example's standardized squared residual has mean ~1, so the interval covers 1;
    examples that differ in difficulty push it above 1. (Resampling seeds instead would
    duplicate trials and fake over-dispersion.) Returns (low, high); NaN if undefined."""
    errors, trials = np.asarray(errors, float), np.asarray(trials, float)
    groups = np.zeros(len(errors), int) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(errors), size=(n_bootstrap, len(errors)))
    values = np.array([dispersion_test(errors[i], trials[i], groups[i]).dispersion_index
                       for i in indices])
    values = values[np.isfinite(values)]
    if len(values) < n_bootstrap / 2:
        return float("nan"), float("nan")
    tail = 50 * (1 - level)
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def binomial_reference(trials: np.ndarray, p: float, seed: int = 0) -> np.ndarray:
    """Misclassification rates (n,) that equally hard examples would show: one draw of
    Binomial(trials_i, p) / trials_i per example, for plotting beside the observed rates."""
    trials = np.asarray(trials)
    draws = np.random.default_rng(seed).binomial(trials, p)
    return draws / np.maximum(trials, 1)


def order_consistency(epochs: np.ndarray) -> float:
    """Mean Spearman rank correlation, over all pairs of seeds, of the order in which they
    learn the examples. epochs (n_seeds, n) float, e.g. :func:`first_learned`; NaN entries
    (never learned, or not a member) are left out of each pair. Never-learned examples
    should be passed as a large value (e.g. epochs + 1) to count them as learned last."""
    epochs = np.asarray(epochs, dtype=np.float64)
    correlations = []
    for a in range(len(epochs)):
        for b in range(a + 1, len(epochs)):
            both = ~np.isnan(epochs[a]) & ~np.isnan(epochs[b])
            if both.sum() < 3:
                continue
            rho = stats.spearmanr(epochs[a, both], epochs[b, both]).statistic
            if np.isfinite(rho):
                correlations.append(rho)
    return float(np.mean(correlations)) if correlations else float("nan")


def accuracy_curve(history: np.ndarray, mask: np.ndarray | None = None,
                   examples: np.ndarray | None = None) -> np.ndarray:
    """(n_models, epochs, n) bool -> (n_models, epochs) accuracy over each model's member
    examples (``mask`` (n_models, n)), optionally restricted to ``examples`` (n,) bool."""
    history = np.asarray(history, dtype=bool)
    counted = np.ones((history.shape[0], history.shape[-1]), bool) if mask is None else mask
    if examples is not None:
        counted = counted & np.asarray(examples, bool)[None, :]
    hits = (history & counted[:, None, :]).sum(axis=-1)
    return hits / np.maximum(counted.sum(axis=-1), 1)[:, None]


def epochs_to_reach(accuracy: np.ndarray, threshold: float) -> np.ndarray:
    """(..., epochs) accuracy -> (...,) first 1-based epoch with accuracy >= threshold,
    NaN if never reached (censored at the number of epochs trained)."""
    reached = np.asarray(accuracy) >= threshold - 1e-12
    return np.where(reached.any(-1), reached.argmax(-1) + 1.0, np.nan)


def learning_events(run) -> pd.DataFrame:
    """Per example, means over the models that trained on it of the epoch it was first
    learned, the epoch it was learned for good (epochs + 1: never) and its forgetting
    events, from the run's per-epoch records (``record_epochs=True``)."""
    from memlab.measures.inout import _row_blocks

    mask = run.membership_mask
    history = run.records("epoch_train_correct")  # (t, epochs, n)
    t, epochs, n = history.shape
    sums = {name: np.zeros(n) for name in ("first_learned", "learned_for_good",
                                           "forgetting_events")}
    for rows in _row_blocks(t, epochs * n * 10):
        member = np.asarray(mask[rows], bool)
        h = np.asarray(history[rows], bool)
        for name, function in (("first_learned", first_learned),
                               ("learned_for_good", learned_for_good),
                               ("forgetting_events", forgetting_events)):
            values = function(h)
            values = np.where(np.isnan(values), epochs + 1, values)  # never: after the end
            sums[name] += np.where(member, values, 0).sum(0)
    n_in = np.asarray(mask, bool).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame({name: total / n_in for name, total in sums.items()})
