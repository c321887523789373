"""The elasticity report's finding, computed from the verdict tables with planted cases
both ways (issue 31): ReLU's ratio above its linear twin's or "cannot decide", and one
model's ratio with a bootstrap interval over probes, above 1, below 1, or "cannot decide"."""

from __future__ import annotations

import numpy as np
import pandas as pd

from memlab.measures.stats import NO, UNDECIDED, YES
from memlab.studies.elasticity.figures import (
    clustering_sentence,
    member_sentence,
    ratio_sentence,
)
from memlab.studies.elasticity.study import ratio_interval
from memlab.studies.elasticity.tables import clustering_verdicts, ratio_verdicts


def ratios(relu: float, linear: float, noise: float, n_seeds: int = 4,
           seed: int = 0) -> pd.DataFrame:
    """Final-epoch ratios of two tasks: ReLU ≈ relu, its twin ≈ linear, per-seed noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for task in ("3-class", "0+1 vs rest"):
        for r in range(n_seeds):
            for activation, value in (("relu", relu), ("linear", linear)):
                rows.append({"task": task, "activation": activation, "seed": r, "epoch": 5,
                             "ratio_rel": value + noise * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_ratio_sentence_planted_both_ways():
    planted = ratio_verdicts(ratios(2.0, 1.0, 0.02))
    assert (planted["verdict"] == YES).all()
    sentence = ratio_sentence(planted)
    assert sentence.startswith("The ReLU network's intra/inter S_rel ratio exceeds its linear "
                               "twin's on 2 of 2 tasks, not on 0, and cannot decide on 0")
    assert "by chance an interval misses 0 on about 0.1 task(s)" in sentence
    null = ratio_verdicts(ratios(1.0, 1.0, 0.3, seed=3))
    assert (null["verdict"] == UNDECIDED).all()
    assert "cannot decide on 2" in ratio_sentence(null)
    one_seed = ratio_verdicts(ratios(2.0, 1.0, 0.02, n_seeds=1))
    assert "--models 3" in ratio_sentence(one_seed)


def test_clustering_sentence_counts_the_verdicts():
    rows = []
    for pair in ("0/1", "2/3"):
        for seed in range(3):
            rows += [{"pair": pair, "seed": seed, "features": "inputs",
                      "method": "K-means on raw inputs", "symmetric_accuracy": 0.6},
                     {"pair": pair, "seed": seed, "features": "relu",
                      "method": "kernel K-means on S_ker",
                      "symmetric_accuracy": 0.9 + 0.01 * seed}]
    sentence = clustering_sentence(clustering_verdicts(pd.DataFrame(rows)))
    assert "1 of 1 similarity-based methods beat K-means on the raw inputs" in sentence


def blocks(within: float, between: float, noise: float, seed: int = 0):
    """A symmetric similarity matrix of 3 classes × 10 probes: ``within`` inside a class,
    ``between`` across, plus noise."""
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(3), 10)
    same = classes[:, None] == classes[None, :]
    s = np.where(same, within, between) + noise * rng.standard_normal((30, 30))
    return (s + s.T) / 2, classes


def test_member_ratio_interval_planted_both_ways():
    assert ratio_interval(*blocks(3.0, 1.0, 0.05))["verdict"] == YES
    assert ratio_interval(*blocks(1.0, 3.0, 0.05))["verdict"] == NO
    null = ratio_interval(*blocks(1.0, 1.0, 0.3), seed=1)
    assert null["verdict"] == UNDECIDED and null["low"] < 1 < null["high"]


def test_member_sentence_says_what_the_interval_says():
    summary = {"member": 3, "ratio_rel": 1.4, "ratio_rel_low": 1.2, "ratio_rel_high": 1.6,
               "ratio_rel_verdict": YES}
    assert member_sentence(summary) == (
        "Model 3's intra/inter S_rel ratio is 1.40 [1.20, 1.60] (95% bootstrap over probes): "
        "above 1: a step moves examples of its own class more (locally elastic).")
    summary.update(ratio_rel_low=0.9, ratio_rel_verdict=UNDECIDED)
    assert "cannot decide whether it is above 1" in member_sentence(summary)
    saved_before = {"member": 0, "ratio_rel": 1.1}  # a result saved before the interval
    assert "cannot decide" in member_sentence(saved_before)
