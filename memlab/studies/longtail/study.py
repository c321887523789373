"""Why memorization pays (Feldman 2020; docs/science.md §1): the long-tail laboratory.

    from memlab.studies.longtail import LongtailConfig, run
    result = run(LongtailConfig.quick(), out="runs/longtail")
    result.tables["findings"]        # the four claims, each with its numbers and a verdict

For each frequency prior (Zipf exponents s, plus a uniform no-tail control with few,
frequent subpopulations) the study draws a long-tailed mixture (:mod:`memlab.data.longtail`)
and trains one population per *knob*:

- ``baseline``: an MLP trained to fit its training set (it memorizes);
- knobs that limit memorization: ``weight_decay``, ``early_stopping`` (fewer epochs),
  ``dropout``, ``label_smoothing``, ``small_model`` (a narrow network).

Every population uses the same seed, so model k of every knob trains on the same random
subset I_k (|I_k| = m = subset_fraction · n_train): comparisons between knobs are paired.

What a subpopulation's "training frequency" means: model k saw subpopulation j
``count[k, j]`` times, the number of its examples in I_k. Test accuracy by frequency uses
these per-model counts (a test example from a subpopulation seen once *by this model*);
memorization scores, which compare models with and without an example, are bucketed by the
count in the whole training set (the generator's tags).

Measured per (prior, knob), against the baseline, averaged over models with standard errors
from the paired per-model differences:

- mean memorization score by training-frequency bucket (1, 2-3, 4+);
- test accuracy by the test example's per-model frequency (0, 1, 2-3, 4+) and its drop;
- the test error the knob adds on subpopulations seen once (a probability: the share of
  test draws that are from a singleton subpopulation and newly misclassified), and
- the theory: τ₁ (:func:`memlab.data.longtail.singleton_cost`, for training sets of m) times the
  number of training singletons the knob leaves unfitted (beyond the baseline's).

Known by construction (and tested): a subpopulation's label is drawn independently of
everything else, so on test examples from subpopulations a model never saw its accuracy is
1/C in expectation, and a model that fits its training set has memorization ≈ 1 − 1/C on
singletons; the planted frequencies are tabled in ``subpopulations`` beside the training
counts they produced.

Everything lands in ``out/``: ``populations/<prior>-<knob>/`` (engine runs, resumable),
``tables/*.parquet``, ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from memlab.data.longtail import (
    TEST_BUCKETS,
    TRAIN_BUCKETS,
    LongTailData,
    LongTailSpec,
    expected_singletons,
    frequency_bucket,
    make_longtail,
    monte_carlo_singleton_cost,
    singleton_cost,
    singleton_mass,
)
from memlab.errors import ConfigError
from memlab.measures.memorization import MEMORIZED
from memlab.studies.base import Result, StudyConfig, saved_result

STUDY = "longtail"
BASELINE = "baseline"
CONTROL = "uniform"
Z95 = 1.959964  # two-sided 95% normal quantile, for the verdicts' intervals


def default_knobs() -> dict[str, dict[str, Any]]:
    """knob name -> changes to the baseline's ``train_population`` arguments (model_kwargs
    are merged into the baseline's). Strengths chosen so that each knob leaves most
    training singletons unfitted while frequent subpopulations are still learned."""
    return {
        "weight_decay": {"weight_decay": 2e-2},
        "early_stopping": {"epochs": 6},
        "dropout": {"model_kwargs": {"dropout": 0.5}},
        "label_smoothing": {"label_smoothing": 0.5},
        "small_model": {"model_kwargs": {"hidden": [12]}},
    }


def strength_grid() -> dict[str, dict[str, Any]]:
    """Each knob at several strengths (the full preset, or ``memlab longtail --grid``)."""
    grid: dict[str, dict[str, Any]] = {}
    for value in (5e-3, 2e-2, 5e-2):
        grid[f"weight_decay={value:g}"] = {"weight_decay": value}
    for value in (3, 6, 12):
        grid[f"epochs={value}"] = {"epochs": value}
    for value in (0.3, 0.5, 0.7):
        grid[f"dropout={value:g}"] = {"model_kwargs": {"dropout": value}}
    for value in (0.5, 0.9):
        grid[f"label_smoothing={value:g}"] = {"label_smoothing": value}
    for value in (8, 12, 24):
        grid[f"hidden=[{value}]"] = {"model_kwargs": {"hidden": [value]}}
    return grid


@dataclass(frozen=True)
class LongtailConfig(StudyConfig):
    """Everything that sets the study's results; ``quick()`` and ``full()`` are the presets.

    exponents: Zipf exponents s of the long-tailed priors (k = n_subpopulations each).
    control_subpopulations: k of the uniform no-tail control (k ≪ m: no singletons).
    n_train / n_test / n_features / n_classes / spread: the mixture (see LongTailSpec).
    hidden, epochs, batch_size, lr: the baseline MLP and its SGD (momentum 0.9).
    n_models: models per population, each on a random subset_fraction of n_train.
    knobs: name -> changes to the baseline (see :func:`default_knobs`).
    n_workers: CPU worker processes for the populations (None: one per core).
    """

    exponents: tuple[float, ...] = (0.5, 1.0, 1.5)
    n_subpopulations: int = 500
    control_subpopulations: int = 50
    n_train: int = 1000
    n_test: int = 2000
    n_features: int = 16
    n_classes: int = 10
    spread: float = 0.2
    hidden: tuple[int, ...] = (64, 64)
    epochs: int = 40
    batch_size: int = 32
    lr: float = 0.05
    n_models: int = 96
    subset_fraction: float = 0.5
    knobs: dict[str, dict[str, Any]] = field(default_factory=default_knobs)
    seed: int = 0
    n_workers: int | None = None

    @classmethod
    def quick(cls, **changes: Any) -> LongtailConfig:
        """The README's preset (the defaults): Zipf 0.5, 1, 1.5 and the control, one strength
        per knob, 96 models per population (about 2 minutes on 2 free cores)."""
        return cls(**changes)

    @classmethod
    def full(cls, **changes: Any) -> LongtailConfig:
        """Six exponents, 512 models per population, every knob at several strengths."""
        return cls(**{**dict(exponents=(0.5, 0.75, 1.0, 1.25, 1.5, 2.0), n_models=512,
                             knobs=strength_grid()), **changes})

    def __post_init__(self) -> None:
        object.__setattr__(self, "exponents", tuple(float(s) for s in self.exponents))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.exponents:
            raise ConfigError("give at least one Zipf exponent")
        for s in self.exponents:
            if not (math.isfinite(s) and s >= 0):
                raise ConfigError(f"Zipf exponents must be finite and >= 0, got {s}")
        if self.n_models < 4:
            raise ConfigError(f"populations need at least 4 models, got {self.n_models}")
        if not 0 < self.subset_fraction < 1:
            raise ConfigError(f"subset_fraction must lie in (0, 1), got {self.subset_fraction}")
        allowed = {"weight_decay", "epochs", "label_smoothing", "model_kwargs", "lr"}
        for name, changes in self.knobs.items():
            if name == BASELINE or not changes or set(changes) - allowed:
                raise ConfigError(f"knob {name!r} must change some of {sorted(allowed)}, "
                                  f"got {changes!r}")

    @property
    def subset_size(self) -> int:
        """m: training examples per model (the engine's rounding)."""
        return int(round(self.subset_fraction * self.n_train))

    def priors(self) -> dict[str, LongTailSpec]:
        """name -> spec: ``zipf<s>`` for each exponent, then the uniform control."""
        common = dict(n_train=self.n_train, n_test=self.n_test, n_features=self.n_features,
                      n_classes=self.n_classes, spread=self.spread, seed=self.seed)
        specs = {f"zipf{s:g}": LongTailSpec(self.n_subpopulations, "zipf", s, **common)
                 for s in self.exponents}
        specs[CONTROL] = LongTailSpec(self.control_subpopulations, "uniform", 0.0, **common)
        return specs

    def train_arguments(self, knob: str) -> dict[str, Any]:
        """``train_population`` keyword arguments of a knob's populations."""
        arguments: dict[str, Any] = dict(
            model="mlp", model_kwargs={"hidden": list(self.hidden)}, n_models=self.n_models,
            subset_fraction=self.subset_fraction, epochs=self.epochs,
            batch_size=self.batch_size, optimizer="sgd", lr=self.lr, momentum=0.9,
            seed=self.seed, save_weights=False,
        )
        for key, value in self.knobs.get(knob, {}).items():
            if key == "model_kwargs":
                arguments["model_kwargs"] = {**arguments["model_kwargs"], **value}
            else:
                arguments[key] = value
        return arguments

    def expected_minutes(self) -> float:
        """Rough wall time on two free CPU cores, from model-example-epochs (dropout's autograd
        path counts double). Calibrated on the quick preset: 4 minutes of CPU time."""
        work = 0.0
        for knob in (BASELINE, *self.knobs):
            arguments = self.train_arguments(knob)
            slow = 2 if arguments["model_kwargs"].get("dropout") else 1
            work += arguments["epochs"] * slow
        work *= self.n_models * self.subset_size * (len(self.exponents) + 1)
        return work / 3.5e5 / 60 + 0.3


# ---------------------------------------------------------------- measurement


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


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def memorization_rows(prior: str, knob: str, measures: PopulationMeasures) -> list[dict]:
    """Mean memorization score per training-frequency bucket (whole-training-set counts)."""
    rows = []
    for bucket in TRAIN_BUCKETS:
        scores = measures.mem.loc[measures.mem["bucket"] == bucket, "mem"].to_numpy()
        mean, se = _mean_se(scores)
        rows.append({"prior": prior, "knob": knob, "bucket": bucket, "n_examples": len(scores),
                     "mem": mean, "mem_se": se,
                     "memorized": float(np.mean(scores >= MEMORIZED)) if len(scores) else np.nan})
    return rows


def accuracy_rows(prior: str, knob: str, measures: PopulationMeasures,
                  baseline: PopulationMeasures) -> list[dict]:
    """Test accuracy per per-model frequency bucket, and its paired drop from the baseline."""
    rows = []
    for bucket in TEST_BUCKETS:
        acc, acc_se = _mean_se(measures.acc[bucket])
        drop, drop_se = _mean_se(baseline.acc[bucket] - measures.acc[bucket])
        share = float(np.mean(np.isfinite(measures.acc[bucket])))
        rows.append({"prior": prior, "knob": knob, "bucket": bucket, "accuracy": acc,
                     "accuracy_se": acc_se, "drop": drop, "drop_se": drop_se,
                     "models_with_bucket": share})
    return rows


def cost_row(prior: str, knob: str, measures: PopulationMeasures,
             baseline: PopulationMeasures, tau1: float) -> dict:
    """The knob's extra test error, by bucket, beside Feldman's τ₁ × extra unfit singletons."""
    row: dict[str, Any] = {"prior": prior, "knob": knob}
    for bucket in TEST_BUCKETS:
        mean, se = _mean_se(measures.error_mass[bucket] - baseline.error_mass[bucket])
        row[f"extra_error_{bucket}"], row[f"extra_error_{bucket}_se"] = mean, se
    row["extra_error"], row["extra_error_se"] = _mean_se(baseline.test_acc - measures.test_acc)
    row["singletons"] = float(measures.singletons.mean())
    row["fit_singletons"] = float(1 - measures.unfit.sum() / max(measures.singletons.sum(), 1))
    row["extra_unfit"], row["extra_unfit_se"] = _mean_se(measures.unfit - baseline.unfit)
    row["tau1"] = tau1
    row["theory"] = tau1 * row["extra_unfit"]
    # Feldman's model: a subpopulation is one point, so fitting it means being right on all
    # its test draws. Here test draws are noisy neighbours; scale by the measured carry-over.
    n_fit, right_fit, n_unfit, right_unfit = (a + b for a, b in
                                              zip(measures.transfer, baseline.transfer))
    gap = (right_fit / n_fit - right_unfit / n_unfit) if n_fit and n_unfit else float("nan")
    row["carry_over"] = gap
    row["theory_carry_over"] = row["theory"] * gap
    row["cost_per_unfit_singleton"] = _divide(row["extra_error_1"], row["extra_unfit"])
    row["measured_over_theory"] = _divide(row["extra_error_1"], row["theory"])
    return row


def _divide(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is 0 or NaN (nothing to compare)."""
    return numerator / denominator if denominator and np.isfinite(denominator) else float("nan")


def theory_rows(config: LongtailConfig, data: dict[str, LongTailData],
                baselines: dict[str, PopulationMeasures]) -> pd.DataFrame:
    """Per prior: τ₁ for training sets of m, against a Monte-Carlo estimate on the same
    frequencies, and the expected vs observed number of singletons and their test mass."""
    m = config.subset_size
    rows = []
    for prior, mixture in data.items():
        p = mixture.frequencies
        mc, mc_se = monte_carlo_singleton_cost(p, m, n_draws=2000, seed=config.seed)
        observed = baselines[prior]
        once_share = float(np.mean(np.isfinite(observed.acc["1"])))
        rows.append({
            "prior": prior, "k": len(p), "m": m, "tau1": singleton_cost(p, m),
            "tau1_times_m": singleton_cost(p, m) * m, "tau1_monte_carlo": mc,
            "tau1_monte_carlo_se": mc_se, "expected_singletons": expected_singletons(p, m),
            "observed_singletons": float(observed.singletons.mean()),
            "singleton_mass": singleton_mass(p, m),
            "train_singletons_full_set": int((mixture.train_tags["train_count"] == 1).sum()),
            "models_with_a_singleton_test_example": once_share,
        })
    return pd.DataFrame(rows)


def subpopulation_rows(prior: str, mixture: LongTailData, counts: np.ndarray) -> pd.DataFrame:
    """The planted tail of one mixture: one row per subpopulation with its frequency p_j
    (rank 1 = most frequent), its count in the training set, the expected count n·p_j, and
    its mean count over the models' subsets (counts: (t, k) per-model counts)."""
    p = mixture.frequencies
    order = np.argsort(-p, kind="stable")
    rank = np.empty(len(p), np.int64)
    rank[order] = np.arange(1, len(p) + 1)
    return pd.DataFrame({"prior": prior, "subpopulation": np.arange(len(p)), "rank": rank,
                         "frequency": p, "expected_train_count": p * mixture.spec.n_train,
                         "train_count": mixture.train_counts,
                         "mean_model_count": counts.mean(0)}).sort_values(
        "rank", ignore_index=True)


# ---------------------------------------------------------------- the study


def run(config: LongtailConfig, out: str | Path | None = None,
        progress: bool = True) -> Result:
    """Train every (prior, knob) population (resuming finished ones), measure, and write
    tables/, summary.json and report.html into ``out``. Resumable: a second call with the
    same ``out`` and config returns the saved result without training."""
    if out is None:
        raise ConfigError("give an output directory (out=...) for the study's populations")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    saved = saved_result(out, STUDY, config)
    if saved is not None:
        return saved
    from memlab.population import train_population

    started = time.perf_counter()
    workers = config.n_workers or os.cpu_count() or 1
    data = {prior: make_longtail(spec) for prior, spec in config.priors().items()}
    knobs = (BASELINE, *config.knobs)
    bar = tqdm(total=len(data) * len(knobs), desc="longtail study", unit="population",
               disable=not progress)

    mem_rows, acc_rows, cost_rows, population_rows, tails = [], [], [], [], []
    baselines: dict[str, PopulationMeasures] = {}
    for prior, mixture in data.items():
        tau1 = singleton_cost(mixture.frequencies, config.subset_size)
        for knob in knobs:
            bar.set_postfix_str(f"{prior} {knob}")
            population = train_population(
                mixture.dataset, **config.train_arguments(knob),
                chunk_size=max(1, math.ceil(config.n_models / workers)),
                out=out / "populations" / f"{prior}-{knob}", n_workers=workers,
                progress=False)
            measures = measure_population(population, mixture)
            if knob == BASELINE:
                baselines[prior] = measures
                tails.append(subpopulation_rows(prior, mixture, model_counts(
                    population.membership_mask, mixture.train_tags["subpopulation"].to_numpy(),
                    mixture.spec.n_subpopulations)))
            baseline = baselines[prior]
            mem_rows += memorization_rows(prior, knob, measures)
            acc_rows += accuracy_rows(prior, knob, measures, baseline)
            if knob != BASELINE:
                cost_rows.append(cost_row(prior, knob, measures, baseline, tau1))
            population_rows.append({
                "prior": prior, "knob": knob, "train_accuracy": float(measures.train_acc.mean()),
                "test_accuracy": float(measures.test_acc.mean()),
                "fit_singletons": float(1 - measures.unfit.sum()
                                        / max(measures.singletons.sum(), 1)),
                "singletons_per_model": float(measures.singletons.mean()),
            })
            bar.update()
    bar.close()

    tables = {
        "populations": pd.DataFrame(population_rows),
        "memorization": pd.DataFrame(mem_rows),
        "accuracy": pd.DataFrame(acc_rows),
        "cost": pd.DataFrame(cost_rows),
        "theory": theory_rows(config, data, baselines),
        "subpopulations": pd.concat(tails, ignore_index=True),
    }
    tables["findings"] = findings(tables)
    datasets = {}
    for prior, mixture in data.items():
        described = mixture.dataset.describe()
        described.pop("class_names", None)
        datasets[prior] = described
    summary = {
        "subset_size": config.subset_size, "n_classes": config.n_classes,
        "datasets": datasets, "seconds": round(time.perf_counter() - started, 1),
        "findings": tables["findings"].to_dict(orient="records"),
    }
    result = Result(STUDY, config.to_dict(), tables, summary)
    result.save(out)
    return result


def verdict(difference: float, se: float) -> str:
    """"yes" when the 95% interval difference ± 1.96 se lies above 0, "no" when below,
    "cannot decide" when it contains 0 (or the se is undefined)."""
    if not (np.isfinite(difference) and np.isfinite(se)):
        return "cannot decide"
    if difference - Z95 * se > 0:
        return "yes"
    if difference + Z95 * se < 0:
        return "no"
    return "cannot decide"


def findings(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The issue's four claims, each with the measured numbers and a verdict computed from
    the intervals ("yes", "no", "cannot decide"; 95%, normal approximation; the standard
    errors of two buckets are combined as if independent, which is conservative for the
    positively correlated paired drops)."""
    mem, cost, acc = tables["memorization"], tables["cost"], tables["accuracy"]
    rows = []

    def add(finding: str, measured: str, answer: str) -> None:
        rows.append({"finding": finding, "measured": measured, "verdict": answer,
                     "holds": answer == "yes"})

    base = mem[(mem.knob == BASELINE) & (mem.prior != CONTROL)]
    for prior, group in base.groupby("prior", sort=False):
        by = group.set_index("bucket")
        others = [b for b in TRAIN_BUCKETS[1:] if np.isfinite(by.mem.get(b, np.nan))]
        if "1" not in by.index or not np.isfinite(by.mem["1"]) or not others:
            answer = "cannot decide"
        else:  # singletons above the highest other bucket, by more than the noise
            top = max(others, key=lambda b: by.mem[b])
            answer = verdict(by.mem["1"] - by.mem[top],
                             math.hypot(by.mem_se["1"], by.mem_se[top]))
        add(f"{prior}: singletons have the highest memorization scores",
            ", ".join(f"mem[{b}] = {by.mem[b]:.3f} ± {by.mem_se[b]:.3f}"
                      for b in TRAIN_BUCKETS if b in by.index), answer)

    limiting_all = cost[(cost.prior != CONTROL) & (cost.fit_singletons < 0.9)]
    for prior, group in acc[acc.knob != BASELINE].groupby("prior", sort=False):
        if prior == CONTROL:
            continue
        knobs = set(limiting_all[limiting_all.prior == prior].knob)
        wide = group[group.knob.isin(knobs)].set_index(["knob", "bucket"])
        if not knobs or wide.empty:
            continue
        answers, parts = [], []
        for knob in dict.fromkeys(group.knob):
            if knob not in knobs:
                continue
            once, frequent = wide.loc[(knob, "1")], wide.loc[(knob, "4+")]
            answers.append(verdict(once["drop"] - frequent["drop"],
                                   math.hypot(once["drop_se"], frequent["drop_se"])))
            parts.append(f"{knob}: −{once['drop']:.3f} (seen once) vs −{frequent['drop']:.3f} "
                         "(4+)")
        answer = ("yes" if answers.count("yes") > len(answers) / 2
                  else "no" if answers.count("no") > len(answers) / 2 else "cannot decide")
        add(f"{prior}: knobs that stop fitting singletons lose accuracy mostly on "
            "subpopulations seen once",
            "; ".join(parts) + f" ({answers.count('yes')} of {len(answers)} knobs by more "
            "than the noise)", answer)

    if not cost.empty:
        by_prior = cost.groupby("prior", sort=False)
        total = by_prior["extra_error_1"].mean()
        se = by_prior["extra_error_1_se"].apply(lambda s: math.sqrt((s**2).sum()) / len(s))
        tail = total.drop(CONTROL, errors="ignore")
        if CONTROL in total.index and len(tail):
            smallest = tail.idxmin()
            add("the singleton cost shrinks on the no-tail control",
                f"mean extra test error on singleton subpopulations: control "
                f"{total[CONTROL]:.4f} ± {se[CONTROL]:.4f} vs Zipf "
                f"{tail.min():.4f}–{tail.max():.4f}",
                verdict(tail[smallest] - abs(total[CONTROL]),
                        math.hypot(se[smallest], se[CONTROL])))
        if len(limiting_all):
            ratio = limiting_all.measured_over_theory
            within = bool(0.5 <= ratio.median() <= 2)
            add("measured singleton cost vs Feldman's τ₁ × extra unfitted singletons "
                "(within a factor of 2)",
                f"measured / theory: median {ratio.median():.2f} "
                f"(range {ratio.min():.2f}–{ratio.max():.2f}; carry-over of fitting to the "
                f"subpopulation's test draws {limiting_all.carry_over.median():.2f})",
                "yes" if within else "no")
    return pd.DataFrame(rows, columns=["finding", "measured", "verdict", "holds"])
