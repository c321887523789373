"""What each population of the elasticity study trains on and is probed with: the C-class
data on every training example, and for a class pair (a, b) the "a or b" data against as
many random negatives, with the probes of every replicate."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from memlab import streams
from memlab.data import Dataset
from memlab.measures.elasticity import per_class_sample
from memlab.studies.elasticity.config import ElasticityConfig


@dataclass
class ElasticityData:
    """One population's training data, masks and probes.

    data: the training data with the population's labels (0/1 for a pair); task: the
    engine's task (``classification`` or ``binary``); mask: (n_seeds, n_train) bool
    training subsets; probes: (n_seeds, n) training indices whose similarities are
    measured (the step uses ``data``'s labels); hidden: (n_seeds, n) the classes the ratio
    and clustering are scored against (for a pair, a or b). name: its label in the tables;
    key: its run directory under ``populations/``."""

    name: str
    key: str
    data: Dataset
    task: str
    mask: np.ndarray
    probes: np.ndarray
    hidden: np.ndarray
    pair: tuple[int, int] | None = None


def multiclass_data(dataset: Dataset, config: ElasticityConfig) -> ElasticityData:
    """The C-class population: every model trains on the whole training set; replicate r's
    probes from stream ``[seed, r, ELASTICITY_PROBES]``."""
    y, seed = dataset.y_train, config.population.seed
    probes = np.stack([
        per_class_sample(y, np.arange(dataset.n_classes), config.probe_per_class,
                         np.random.default_rng([seed, r, streams.ELASTICITY_PROBES]))
        for r in range(config.n_seeds)])
    return ElasticityData(name=f"{dataset.n_classes}-class", key="multiclass", data=dataset,
                          task="classification",
                          mask=np.ones((config.n_seeds, dataset.n_train), bool),
                          probes=probes, hidden=y[probes])


def pair_data(dataset: Dataset, pair: tuple[int, int],
              config: ElasticityConfig) -> ElasticityData:
    """"a or b" (label 1) against as many random examples of the other classes (label 0);
    replicate r's negatives and probes from stream ``[seed, r, ELASTICITY_PAIRS, a, b]``."""
    y, seed = dataset.y_train, config.population.seed
    positive = np.isin(y, pair)
    negative_pool = np.flatnonzero(~positive)
    masks, probes = [], []
    for r in range(config.n_seeds):
        rng = np.random.default_rng([seed, r, streams.ELASTICITY_PAIRS, *pair])
        row = positive.copy()
        row[rng.choice(negative_pool, min(positive.sum(), len(negative_pool)),
                       replace=False)] = True
        masks.append(row)
        probes.append(per_class_sample(y, np.array(pair), config.cluster_per_class, rng))
    binary = dataclasses.replace(
        dataset, name=f"{dataset.name}-{pair[0]}or{pair[1]}", y_train=positive.astype(np.int64),
        y_test=np.isin(dataset.y_test, pair).astype(np.int64),
        class_names=["rest", f"{dataset.class_names[pair[0]]}|{dataset.class_names[pair[1]]}"],
        corruption={})
    probes = np.stack(probes)
    return ElasticityData(name=f"{pair[0]}+{pair[1]} vs rest", key=f"pair-{pair[0]}-{pair[1]}",
                          data=binary, task="binary", mask=np.stack(masks), probes=probes,
                          hidden=y[probes], pair=pair)
