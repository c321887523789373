"""Noise floors and reliability for the memorization study's headline counts.

A count (examples memorized, high-influence pairs) is a finding only beside what a
population without the effect would count: the same estimator on the membership mask
permuted, each training example's IN/OUT column shuffled across the models (every example
keeps its number of IN models; any link between membership and the records is gone). And
a ranking of examples is a finding only where the scores are reliable (split-half
reliability clearly above :data:`RELIABILITY_MIN`). docs/memorization.md, "The finding".
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from memlab import streams
from memlab.measures import memorization as mz
from memlab.measures.inout import pair_blocks
from memlab.measures.stats import ABOVE, BELOW, UNDECIDED, Z95, interval_side

# Split-half reliability (Spearman of the scores of two disjoint halves) the scores must
# reach before their rankings (most memorized examples, pairs) are presented as findings:
# below it, which examples pass a threshold is mostly decided by noise. The rule: the
# reliability's interval (mean ± 1.96 sd over the random splits) must lie above it.
RELIABILITY_MIN = 0.5
RELIABLE, UNRELIABLE = "reliable", "unreliable"
# Noise floors: counts from populations whose membership mask is permuted, each training
# example's IN/OUT column shuffled across the models (every example keeps its number of IN
# models; any link between membership and the records is gone). A few permutations give
# the floor's mean and spread; each costs one memorization estimate and the influence of
# the memorized examples.
NULL_PERMUTATIONS = 5
ABOVE_NOISE = "above noise"
_NULL_BLOCK_BYTES = 256 * 2**20  # working memory of one block of null influence


def count_memorized(mask: np.ndarray, records: dict[str, np.ndarray], estimator: str,
                    mem_min: float) -> int:
    """Examples with mem ≥ ``mem_min`` under ``mask`` (t, n), ``estimator``'s score from
    ``records`` (model axis first) as the study computes it (NaN scores never count)."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        score = mz.estimate(mask, records, estimator).score
    return int(np.sum(np.nan_to_num(score, nan=-np.inf) >= mem_min))


def count_pairs(member: np.ndarray, test_records: np.ndarray, infl_min: float,
                estimator: str, train_labels: np.ndarray | None = None,
                test_labels: np.ndarray | None = None) -> int:
    """Pairs (training example i, test example j) with infl(i, j) ≥ ``infl_min`` (and the
    same label where ``train_labels``/``test_labels`` are given), the training examples
    being the columns of ``member`` (t, k: their membership across the models), influence
    computed as the study computes it: ``probit`` from the test margins
    (:func:`memorization.in_out_pairs_margin`), ``binary`` from test correctness (the
    float32 products of :func:`memorization.estimate_influence`), both rounded to float32
    as the saved matrix is. Block by block: at most ``_NULL_BLOCK_BYTES`` of temporaries,
    never the whole k × n_test matrix."""
    member = np.asarray(member, bool)
    t, k = member.shape
    m = test_records.shape[1]
    if estimator == "probit":
        test_records = np.asarray(test_records, np.float64)  # converted once, not per block
    n_in = member.sum(0)
    # ~16 float64 temporaries per pair (the probit's sums, squares, variances, thetas)
    per_block = max(1, _NULL_BLOCK_BYTES // (16 * 8 * max(m, 1)))
    count = 0
    for start in range(0, k, per_block):
        cols = slice(start, min(start + per_block, k))
        with np.errstate(divide="ignore", invalid="ignore"):
            if estimator == "probit":
                values = mz.in_out_pairs_margin(member[:, cols], test_records).score
            else:
                (_, _, block), = pair_blocks(member[:, cols], test_records, n_in[cols],
                                             t - n_in[cols], dtype=np.float32, binary=True,
                                             variances=False)
                values = block.score
        hit = np.asarray(values, np.float32) >= infl_min  # NaN (no IN or OUT model): no
        if train_labels is not None and test_labels is not None:
            hit &= np.asarray(train_labels)[cols, None] == np.asarray(test_labels)[None, :]
        count += int(hit.sum())
    return count


def noise_floors(mask: np.ndarray, records: dict[str, np.ndarray], test_records: np.ndarray,
                 memorized: np.ndarray, *, estimator: str, influence_estimator: str,
                 mem_min: float, infl_min: float, train_labels: np.ndarray | None = None,
                 test_labels: np.ndarray | None = None,
                 n_permutations: int = NULL_PERMUTATIONS, seed: int = 0) -> dict[str, Any]:
    """What a population without memorization or influence would count, from
    ``n_permutations`` copies of ``mask`` (t, n_train) with each training example's
    IN/OUT column shuffled across the models (seeded: ``[seed, streams.MEMORIZE_NULL]``):

    - ``n_memorized_null``: examples with mem ≥ ``mem_min`` (``estimator``, from the
      training ``records``);
    - ``n_pairs_null``: pairs of the *memorized* examples (``memorized``: their indices,
      chosen on the real mask as the study's pairs are) with infl ≥ ``infl_min`` (same
      label where labels are given), influence recomputed with their permuted columns
      (``influence_estimator``, from ``test_records``: margins for the probit,
      correctness for the binary). The memorized set is kept because it is a finding of
      its own, with its own floor; the question here is how many of its pairs pass
      ``infl_min`` by chance. (Choosing the set on the permuted mask too would count few
      pairs wherever many examples are truly memorized, and call chance pairs of truly
      memorized examples a finding.)

    Each with ``_sd`` (over the permutations), ``_counts`` (one per permutation) and
    ``_upper`` (:func:`null_upper`)."""
    mask = np.asarray(mask, bool)
    memorized = np.asarray(memorized, np.int64)
    rng = np.random.default_rng([seed, streams.MEMORIZE_NULL])
    memorized_counts, pair_counts = [], []
    labels = (None if train_labels is None else np.asarray(train_labels)[memorized],
              test_labels)
    for _ in range(n_permutations):
        permuted = rng.permuted(mask, axis=0)  # every column shuffled on its own
        memorized_counts.append(count_memorized(permuted, records, estimator, mem_min))
        pair_counts.append(count_pairs(permuted[:, memorized], test_records, infl_min,
                                       influence_estimator, *labels))
    floors: dict[str, Any] = {"null_permutations": n_permutations}
    for name, counts in (("n_memorized_null", memorized_counts), ("n_pairs_null", pair_counts)):
        values = np.asarray(counts, np.float64)
        floors[name] = float(values.mean())
        floors[f"{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        floors[f"{name}_upper"] = null_upper(values)
        floors[f"{name}_counts"] = [int(c) for c in counts]
    return floors


def null_upper(counts: np.ndarray, level: float = 0.95) -> float:
    """The upper end of the ``level`` prediction interval of one more permuted
    population's count, from the permuted counts: mean + t_{P−1} · sqrt(1 + 1/P) ·
    spread (P permutations; about 3 spreads at P = 5). The spread is the counts' sd, but
    at least sqrt(mean) (Poisson's: a few permutations can all agree by chance) and at
    least 1 (so that a floor of 0 from a few permutations does not make 1 pair a
    finding)."""
    counts = np.asarray(counts, np.float64)
    p = len(counts)
    if p < 2:
        raise ValueError(f"a noise floor's spread needs at least 2 permutations, got {p}")
    mean = float(counts.mean())
    spread = max(float(counts.std(ddof=1)), math.sqrt(mean), 1.0)
    factor = float(scipy_stats.t.ppf((1 + level) / 2, p - 1))
    return mean + factor * math.sqrt(1 + 1 / p) * spread


def count_verdict(count: float, upper: float | None) -> str:
    """:data:`ABOVE_NOISE` where ``count`` exceeds ``upper`` (the noise floor's
    :func:`null_upper`), else :data:`UNDECIDED` ("cannot decide": the count could come
    from a population without the effect)."""
    if upper is None or not np.isfinite(upper):
        return UNDECIDED
    return ABOVE_NOISE if count > upper else UNDECIDED


def reliability_verdict(reliability: float | None, sd: float | None) -> str:
    """:data:`RELIABLE` where the split-half reliability's interval (mean ± 1.96 sd over
    the random splits) lies above :data:`RELIABILITY_MIN`, :data:`UNRELIABLE` where it lies
    below, else :data:`UNDECIDED`. The report presents per-example rankings (and the pairs
    passing a threshold) as findings only when reliable."""
    if reliability is None or not np.isfinite(reliability):
        return UNDECIDED
    sd = 0.0 if sd is None or not np.isfinite(sd) else sd
    side = interval_side(reliability - Z95 * sd, reliability + Z95 * sd, RELIABILITY_MIN)
    return RELIABLE if side == ABOVE else UNRELIABLE if side == BELOW else UNDECIDED
