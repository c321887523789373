"""What a population learned on a long-tailed mixture (Feldman 2020; docs/science.md §1,
docs/longtail.md), from its membership mask and records and the generator's tags
(:mod:`memlab.data.longtail`): per-model counts of each subpopulation, test accuracy and
error by how often the model saw the test example's subpopulation, the training
singletons it leaves unfitted, and whether fitting a singleton carries over to its
subpopulation's test draws.

    counts = model_counts(run.membership_mask, tags.subpopulation.to_numpy(), k)  # (t, k)
    measures = measure_population(run, mixture)     # PopulationMeasures
    measures.acc["1"]        # (t,) accuracy on subpopulations each model saw once
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from memlab.data.longtail import TEST_BUCKETS, LongTailData, frequency_bucket


@dataclass
class PopulationMeasures:
    """Per-model measurements of one population on one mixture (t models).

    acc: bucket -> (t,) test accuracy on test examples whose subpopulation the model saw
    that many times (NaN where it had none). error_mass: bucket -> (t,) share of all test
    examples that are in the bucket *and* misclassified. singletons / unfit: (t,) training
    singletons of the model (subpopulations with one example in I_k) and how many of them it
    misclassifies. transfer: pooled counts of test examples from singleton subpopulations by
    whether the model fits the singleton: (n_fit, correct_fit, n_unfit, correct_unfit).
    mem: memorization(run) scores with the generator's tags.
    """

    acc: dict[str, np.ndarray]
    error_mass: dict[str, np.ndarray]
    singletons: np.ndarray
    unfit: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    transfer: tuple[int, int, int, int]
    mem: pd.DataFrame


def model_counts(mask: np.ndarray, subpopulation: np.ndarray, n_subpopulations: int
                 ) -> np.ndarray:
    """(t, k) int: count[k, j] = examples of subpopulation j in model k's training subset,
    from the membership mask (t, n) and each training example's subpopulation (n,)."""
    onehot = np.zeros((mask.shape[1], n_subpopulations), np.float32)
    onehot[np.arange(mask.shape[1]), subpopulation] = 1
    return np.rint(np.asarray(mask, np.float32) @ onehot).astype(np.int64)


def measure_population(run, data: LongTailData) -> PopulationMeasures:
    """Everything the study needs from one finished population (see PopulationMeasures)."""
    from memlab.measures.memorization import memorization

    mask = np.asarray(run.membership_mask, bool)  # (t, n)
    train_correct = np.asarray(run.records("train_correct"), bool)  # (t, n)
    test_correct = np.asarray(run.records("test_correct"), bool)  # (t, m_test)
    k = data.spec.n_subpopulations
    train_sub = data.train_tags["subpopulation"].to_numpy()
    test_sub = data.test_tags["subpopulation"].to_numpy()

    counts = model_counts(mask, train_sub, k)  # (t, k)
    test_bucket = frequency_bucket(counts[:, test_sub])  # (t, m_test)
    n_test = test_correct.shape[1]
    acc, error_mass = {}, {}
    for bucket in TEST_BUCKETS:
        here = test_bucket == bucket
        with np.errstate(invalid="ignore", divide="ignore"):
            acc[bucket] = (test_correct & here).sum(1) / here.sum(1)
        error_mass[bucket] = (~test_correct & here).sum(1) / n_test

    singleton = mask & (counts[:, train_sub] == 1)  # (t, n): i is its subpopulation's only one
    unfit = (singleton & ~train_correct).sum(1)
    # Does fitting the singleton carry over to its subpopulation's test examples?
    fitted = model_counts(mask & train_correct, train_sub, k)[:, test_sub] > 0  # (t, m_test)
    once = test_bucket == "1"
    transfer = (int((once & fitted).sum()), int((once & fitted & test_correct).sum()),
                int((once & ~fitted).sum()), int((once & ~fitted & test_correct).sum()))

    mem = memorization(run).merge(
        data.train_tags[["index", "subpopulation", "train_count", "bucket", "frequency"]],
        on="index")
    train_acc = (train_correct & mask).sum(1) / mask.sum(1)
    return PopulationMeasures(acc, error_mass, singleton.sum(1), unfit, train_acc,
                              test_correct.mean(1), transfer, mem)

