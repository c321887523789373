"""Long-tailed mixtures (Feldman 2020): data whose subpopulations are mostly rare.

A *subpopulation* is a Gaussian cluster in input space with its own label; classes are shared
across subpopulations (each subpopulation's label is drawn uniformly from the classes,
independently of everything else, so a rare subpopulation's label cannot be inferred from
its neighbours: it has to be seen, and fitted). Subpopulation j has frequency p_j, from a
*frequency prior*:

- ``"zipf"``: p_j ∝ j^(−s), j = 1..k (a long tail for s around 1);
- ``"uniform"``: p_j = 1/k (no tail when k ≪ n: every subpopulation is seen many times).

The frequencies are assigned to subpopulations in a random order, so a cluster's position
and label say nothing about how common it is. Every train and test example is drawn
i.i.d.: subpopulation j with probability p_j, then x = centre_j + spread · N(0, I).

    from memlab.data.longtail import LongTailSpec, make_longtail, singleton_cost
    data = make_longtail(LongTailSpec(n_subpopulations=500, prior="zipf", exponent=1.0))
    data.dataset                 # a memlab.data.Dataset (x: (n, n_features) float32)
    data.train_tags              # one row per training example: subpopulation, train_count, ...
    singleton_cost(data.frequencies, n=500)   # Feldman's τ₁ for training sets of 500

Tags (the answer to "which subpopulation, seen how often") are returned *beside* the
dataset, as DataFrames in :class:`LongTailData`, not inside it: the population engine
stores ``Dataset.provenance`` in every run manifest, and per-example tables do not belong
there. ``dataset.provenance["longtail"]`` holds the spec (enough to regenerate everything).

The theory (:func:`singleton_cost`, derivation in docs/longtail.md): with training sets of
n i.i.d. draws, the expected frequency of a subpopulation *given that it occurs exactly
once* is

    τ₁ = Σ_j p_j² (1 − p_j)^(n−1) / Σ_j p_j (1 − p_j)^(n−1)
       = E[ mass of the subpopulations seen once ] / E[ number of subpopulations seen once ],

Feldman's τ₁ = E_α[α² (1−α)^(n−1)] / E_α[α (1−α)^(n−1)] with α the frequency of a random
subpopulation (here uniform over the k values p_j). Each training singleton a learner does
not fit costs it about τ₁ of test error (the ℓ = 1 term of Feldman 2020, Theorem 2.3, as
we read it; derivation and assumptions in docs/longtail.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from memlab import streams
from memlab.data import Dataset
from memlab.errors import ConfigError

PRIORS = ("zipf", "uniform")
TRAIN_BUCKETS = ("1", "2-3", "4+")  # memorization buckets (a training example's count >= 1)
TEST_BUCKETS = ("0", "1", "2-3", "4+")  # test accuracy buckets (count in the training set)


@dataclass(frozen=True)
class LongTailSpec:
    """Everything that sets a long-tailed mixture.

    n_subpopulations: k clusters. prior / exponent: frequency prior (exponent s is used by
    ``"zipf"`` only). n_train / n_test: i.i.d. draws. n_features: input dimension d.
    n_classes: labels shared by the subpopulations. spread: within-cluster standard deviation
    per coordinate (cluster centres are N(0, I), so typical centre distances are √(2d)).
    label_noise: probability that an example's label is replaced by a different random class
    (tagged ``noisy``). seed: one seed for centres, labels, frequencies and draws.
    """

    n_subpopulations: int = 500
    prior: str = "zipf"
    exponent: float = 1.0
    n_train: int = 1000
    n_test: int = 2000
    n_features: int = 16
    n_classes: int = 10
    spread: float = 0.3
    label_noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.n_subpopulations < 1:
            raise ConfigError(f"n_subpopulations must be >= 1, got {self.n_subpopulations}")
        if self.prior == "zipf" and not (np.isfinite(self.exponent) and self.exponent >= 0):
            raise ConfigError(f"the Zipf exponent must be finite and >= 0, got {self.exponent}")
        for name in ("n_train", "n_test", "n_features"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_classes < 2:
            raise ConfigError(f"n_classes must be >= 2, got {self.n_classes}")
        if not self.spread >= 0:
            raise ConfigError(f"spread must be >= 0, got {self.spread}")
        if not 0 <= self.label_noise < 1:
            raise ConfigError(f"label_noise must lie in [0, 1), got {self.label_noise}")

    @property
    def name(self) -> str:
        tail = f"zipf{self.exponent:g}" if self.prior == "zipf" else "uniform"
        return f"longtail-{tail}-k{self.n_subpopulations}-n{self.n_train}-seed{self.seed}"


def prior_frequencies(prior: str, n_subpopulations: int, exponent: float = 1.0) -> np.ndarray:
    """(k,) frequencies in rank order (largest first), summing to 1."""
    if prior not in PRIORS:
        raise ConfigError(f"prior must be one of {PRIORS}, got {prior!r}")
    ranks = np.arange(1, n_subpopulations + 1, dtype=np.float64)
    weights = ranks ** -float(exponent) if prior == "zipf" else np.ones_like(ranks)
    return weights / weights.sum()


@dataclass
class LongTailData:
    """A generated mixture: the dataset and the exact answer about every example.

    frequencies: (k,) p_j of subpopulation j (in subpopulation order, not rank order).
    centres: (k, d) float64; subpopulation_labels: (k,) int64.
    train_counts: (k,) int64, how many training examples each subpopulation has.
    train_tags / test_tags: one row per example, columns ``index``, ``subpopulation``,
    ``train_count`` (occurrences of the example's subpopulation in the training set),
    ``bucket`` (TRAIN_BUCKETS / TEST_BUCKETS label of train_count), ``frequency`` (p_j),
    ``label`` (the label the example carries), ``noisy`` (label differs from the
    subpopulation's).
    """

    spec: LongTailSpec
    dataset: Dataset
    frequencies: np.ndarray
    centres: np.ndarray
    subpopulation_labels: np.ndarray
    train_counts: np.ndarray
    train_tags: pd.DataFrame
    test_tags: pd.DataFrame


def frequency_bucket(counts: np.ndarray) -> np.ndarray:
    """Bucket labels "0", "1", "2-3", "4+" of occurrence counts (any shape)."""
    counts = np.asarray(counts)
    return np.select([counts <= 0, counts == 1, counts <= 3], ["0", "1", "2-3"], "4+")


def make_longtail(spec: LongTailSpec) -> LongTailData:
    """Draw a long-tailed mixture (deterministic in ``spec.seed``); see the module docstring."""
    rng = np.random.default_rng([spec.seed, streams.LONGTAIL_MIXTURE])
    k, d = spec.n_subpopulations, spec.n_features
    # Random order: the most frequent subpopulation is any cluster, with any label.
    frequencies = rng.permutation(prior_frequencies(spec.prior, k, spec.exponent))
    centres = rng.standard_normal((k, d))
    labels = rng.integers(0, spec.n_classes, size=k)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        which = rng.choice(k, size=n, p=frequencies)
        x = centres[which] + spec.spread * rng.standard_normal((n, d))
        y = labels[which].copy()
        noisy = rng.random(n) < spec.label_noise
        # Adding 1..C-1 modulo C makes a noisy label differ from the subpopulation's.
        y[noisy] = (y[noisy] + rng.integers(1, spec.n_classes, size=noisy.sum())) % spec.n_classes
        return which, x.astype(np.float32), y.astype(np.int64), noisy

    train_sub, x_train, y_train, train_noisy = draw(spec.n_train)
    test_sub, x_test, y_test, test_noisy = draw(spec.n_test)
    train_counts = np.bincount(train_sub, minlength=k).astype(np.int64)

    def tags(sub: np.ndarray, y: np.ndarray, noisy: np.ndarray) -> pd.DataFrame:
        count = train_counts[sub]
        return pd.DataFrame({
            "index": np.arange(len(sub)), "subpopulation": sub, "train_count": count,
            "bucket": frequency_bucket(count), "frequency": frequencies[sub],
            "label": y, "noisy": noisy,
        })

    dataset = Dataset(
        name=spec.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        class_names=[f"c{c}" for c in range(spec.n_classes)],
        provenance={"source": "memlab.data.longtail.make_longtail", "longtail": asdict(spec)},
    )
    return LongTailData(spec, dataset, frequencies, centres, labels, train_counts,
                        tags(train_sub, y_train, train_noisy), tags(test_sub, y_test, test_noisy))


# ---------------------------------------------------------------- theory


def singleton_cost(frequencies: np.ndarray, n: int) -> float:
    """Feldman's τ₁ for a training set of ``n`` i.i.d. draws from ``frequencies`` (k,):
    the expected test-error cost (a probability) of each training singleton not fitted,
    Σ p² (1−p)^(n−1) / Σ p (1−p)^(n−1). Computed in log space: (1 − p)^(n−1) underflows
    for frequent subpopulations, which is fine, but must not turn the ratio into 0/0."""
    p = np.asarray(frequencies, dtype=np.float64)
    if n < 1 or p.ndim != 1 or (p < 0).any() or not np.isclose(p.sum(), 1):
        raise ConfigError("singleton_cost needs n >= 1 and frequencies that sum to 1")
    p = p[p > 0]
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf: frequency 1 is never seen once
        log_tail = (n - 1) * np.log1p(-p) if n > 1 else np.zeros_like(p)
    log_weight = np.log(p) + log_tail
    if not np.isfinite(log_weight).any():
        return float("nan")  # one subpopulation of frequency 1: nothing is ever seen once
    weight = np.exp(log_weight - log_weight.max())  # ∝ Pr[subpopulation j is a singleton]
    return float((weight * p).sum() / weight.sum())


def expected_singletons(frequencies: np.ndarray, n: int) -> float:
    """Expected number of subpopulations seen exactly once in n draws: Σ n p (1−p)^(n−1)."""
    p = np.asarray(frequencies, dtype=np.float64)
    return float((n * p * (1 - p) ** (n - 1)).sum())


def singleton_mass(frequencies: np.ndarray, n: int) -> float:
    """Expected total frequency of the subpopulations seen exactly once in n draws: the
    test error a learner that fits no singleton gives up, = τ₁ × expected_singletons."""
    p = np.asarray(frequencies, dtype=np.float64)
    return float((n * p * p * (1 - p) ** (n - 1)).sum())


def monte_carlo_singleton_cost(frequencies: np.ndarray, n: int, n_draws: int = 2000,
                               seed: int = 0) -> tuple[float, float]:
    """τ₁ by simulation: draw ``n_draws`` training sets of n, and divide the total frequency
    of the subpopulations seen once by how many there were (a ratio of sums, as τ₁ is a ratio
    of expectations). Returns (estimate, standard error by the delta method); NaNs when no
    simulated training set has a singleton."""
    p = np.asarray(frequencies, dtype=np.float64)
    rng = np.random.default_rng([seed, streams.LONGTAIL_SAMPLE])
    counts = rng.multinomial(n, p, size=n_draws)  # (n_draws, k)
    once = counts == 1
    mass = (once * p).sum(1)
    number = once.sum(1).astype(np.float64)
    if number.sum() == 0:
        return float("nan"), float("nan")  # no draw had a singleton: nothing to average
    ratio = mass.sum() / number.sum()
    # Delta method for a ratio of means: var(mass − ratio·number) / (n_draws · mean(number)²).
    residual = mass - ratio * number
    se = residual.std(ddof=1) / (np.sqrt(n_draws) * number.mean())
    return float(ratio), float(se)
