"""The marginal-utility (removal) study: is what the network memorizes worth keeping?

``seeds`` models per arm, each trained on the *whole* training set (``full``), on it without
the examples with mem ≥ threshold (``memorized``), and without as many random examples
(``random``, a fresh random set per seed), all with the population's recipe
(docs/science.md §1). Every arm is a population with an explicit membership mask in its own
run directory (``OUT/removal/<sets>-<arm>``), so it resumes like any run; replicate s of
every arm shares its initialization and shuffling streams, so the arms are paired by seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from memlab.errors import ConfigError
from memlab.measures.stats import HIGHER, LOWER, UNDECIDED, t_interval, verdict_from_interval
from memlab.population import Run, train_population

ARMS = ("full", "memorized", "random")
METRICS = ("test_acc", "high_influence_acc", "train_acc")
STREAM_RANDOM_REMOVAL = 8  # numpy stream [seed, 8, s]: the random set removed for seed s


def removal_sets(n_train: int, removed: np.ndarray, seeds: int, seed: int) -> dict[str, np.ndarray]:
    """arm -> (seeds, n_train) bool membership: all ones, without ``removed``, and without
    as many random examples (drawn for seed s from the stream [seed, 8, s])."""
    full = np.ones((seeds, n_train), bool)
    memorized = full.copy()
    memorized[:, removed] = False
    random = full.copy()
    for s in range(seeds):
        rng = np.random.default_rng([seed, STREAM_RANDOM_REMOVAL, s])
        random[s, rng.choice(n_train, len(removed), replace=False)] = False
    return {"full": full, "memorized": memorized, "random": random}


def sets_digest(removed: np.ndarray, tests: np.ndarray) -> str:
    """16 hex digits naming the removed set and the high-influence test set (so a changed
    set trains new arms instead of clashing with the old arms' masks)."""
    return hashlib.sha256(removed.astype(np.int64).tobytes() + b"|"
                          + tests.astype(np.int64).tobytes()).hexdigest()[:16]


def removal_table(run: Run, removed: np.ndarray, tests: np.ndarray, seeds: int, out: Path,
                  device: str = "cpu", n_workers: int | None = None, progress: bool = True,
                  executor: str = "local", ray_address: str | None = None) -> pd.DataFrame:
    """Train (or resume) the three arms under ``out`` and return one row per (arm, seed):
    n_train, train_acc (on the arm's own training set), test_acc, high_influence_acc (on
    the test examples ``tests``), removed_acc (on the examples the arm left out)."""
    n = run.dataset.n_train
    if seeds < 2:
        raise ConfigError(f"the removal study needs at least 2 seeds for intervals, got {seeds}")
    if len(removed) == 0 or len(removed) >= n:
        raise ConfigError(f"{len(removed)} of {n} examples are memorized: nothing to compare; "
                          "choose another --threshold")
    config = dataclasses.replace(run.config, n_models=seeds, save_weights=False,
                                 record_epochs=False, subsets="explicit", sweep={})
    digest = sets_digest(removed, tests)
    rows = []
    for arm, membership in removal_sets(n, removed, seeds, run.config.seed).items():
        arm_run = train_population(run.dataset, config, membership=membership, device=device,
                                   n_workers=n_workers, executor=executor,
                                   ray_address=ray_address, out=out / f"{digest}-{arm}",
                                   progress=progress)
        train_correct = arm_run.records("train_correct")
        test_correct = arm_run.records("test_correct")
        for s in range(seeds):
            member = membership[s]
            rows.append(dict(
                arm=arm, seed=s, n_train=int(member.sum()),
                train_acc=float(train_correct[s, member].mean()),
                test_acc=float(test_correct[s].mean()),
                high_influence_acc=(float(test_correct[s, tests].mean()) if len(tests)
                                    else float("nan")),
                removed_acc=(float(train_correct[s, ~member].mean()) if (~member).any()
                             else float("nan"))))
    return pd.DataFrame(rows)


def removal_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval per arm and metric, and of the paired (same seed)
    differences memorized − full, random − full, memorized − random."""
    rows = []
    by_arm = {arm: group.sort_values("seed") for arm, group in table.groupby("arm")}
    for arm in ARMS:
        if arm in by_arm:
            for metric in METRICS:
                mean, low, high = t_interval(by_arm[arm][metric].to_numpy())
                rows.append(dict(comparison=arm, metric=metric, mean=mean, ci_low=low,
                                 ci_high=high, seeds=len(by_arm[arm])))
    for a, b in (("memorized", "full"), ("random", "full"), ("memorized", "random")):
        if a in by_arm and b in by_arm:
            for metric in METRICS[:2]:
                diff = by_arm[a][metric].to_numpy() - by_arm[b][metric].to_numpy()
                mean, low, high = t_interval(diff)
                rows.append(dict(comparison=f"{a} - {b}", metric=metric, mean=mean,
                                 ci_low=low, ci_high=high, seeds=len(diff)))
    return pd.DataFrame(rows)


def verdict(summary: pd.DataFrame, metric: str = "test_acc") -> str:
    """What the paired memorized − random interval says about ``metric``: 'lower', 'higher'
    or 'cannot decide' (the 95% interval contains 0, or is undefined)."""
    row = summary[(summary.comparison == "memorized - random") & (summary.metric == metric)]
    if not len(row) or not np.isfinite(row.ci_low.iloc[0]):
        return UNDECIDED
    low, high = float(row.ci_low.iloc[0]), float(row.ci_high.iloc[0])
    return verdict_from_interval(low, high, above=HIGHER, below=LOWER)
