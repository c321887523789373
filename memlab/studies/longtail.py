"""Why memorization pays (Feldman 2020): the long-tail laboratory.

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

Everything lands in ``RUN/``: ``populations/<prior>-<knob>/`` (engine runs, resumable),
``tables/*.parquet``, ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
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
from memlab.population import train_population
from memlab.population.run import Run
from memlab.population.store import atomic_save_table, atomic_write_json

BASELINE = "baseline"
CONTROL = "uniform"


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
class LongTailStudyConfig:
    """Everything that sets the study's results; ``quick()`` and ``full()`` are the presets.

    exponents: Zipf exponents s of the long-tailed priors (k = n_subpopulations each).
    control_subpopulations: k of the uniform no-tail control (k ≪ m: no singletons).
    n_train / n_test / n_features / n_classes / spread: the mixture (see LongTailSpec).
    hidden, epochs, batch_size, lr: the baseline MLP and its SGD (momentum 0.9).
    n_models: models per population, each on a random subset_fraction of n_train.
    knobs: name -> changes to the baseline (see :func:`default_knobs`).
    workers: CPU worker processes for the populations (None: one per core).
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
    workers: int | None = None

    @classmethod
    def quick(cls, **changes: Any) -> LongTailStudyConfig:
        return replace(cls(), **changes)

    @classmethod
    def full(cls, **changes: Any) -> LongTailStudyConfig:
        return replace(cls(exponents=(0.5, 0.75, 1.0, 1.25, 1.5, 2.0), n_models=512,
                           knobs=strength_grid()), **changes)

    def __post_init__(self) -> None:
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


def measure_population(run: Run, data: LongTailData) -> PopulationMeasures:
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
                     "memorized": float(np.mean(scores >= 0.25)) if len(scores) else np.nan})
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


def theory_rows(config: LongTailStudyConfig, data: dict[str, LongTailData],
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


# ---------------------------------------------------------------- the study


@dataclass
class LongTailStudyResult:
    tables: dict[str, pd.DataFrame]
    summary: dict
    out: Path


def run_longtail_study(config: LongTailStudyConfig, out: str | Path, progress: bool = True,
                       figures_dir: str | Path | None = None) -> LongTailStudyResult:
    """Train every (prior, knob) population (resuming finished ones), measure, and write
    tables, summary.json and report.html (and figures as longtail_*.png in figures_dir)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    workers = config.workers or os.cpu_count() or 1
    data = {prior: make_longtail(spec) for prior, spec in config.priors().items()}
    knobs = (BASELINE, *config.knobs)
    bar = tqdm(total=len(data) * len(knobs), desc="longtail study", unit="population",
               disable=not progress)

    mem_rows, acc_rows, cost_rows, population_rows = [], [], [], []
    baselines: dict[str, PopulationMeasures] = {}
    for prior, mixture in data.items():
        tau1 = singleton_cost(mixture.frequencies, config.subset_size)
        for knob in knobs:
            bar.set_postfix_str(f"{prior} {knob}")
            run = train_population(
                mixture.dataset, **config.train_arguments(knob),
                chunk_size=max(1, math.ceil(config.n_models / workers)),
                out=out / "populations" / f"{prior}-{knob}", n_workers=workers,
                progress=False)
            measures = measure_population(run, mixture)
            if knob == BASELINE:
                baselines[prior] = measures
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
    }
    tables["findings"] = findings(tables)
    (out / "tables").mkdir(exist_ok=True)
    for name, table in tables.items():
        atomic_save_table(out / "tables" / f"{name}.parquet", table)
    summary = {
        "config": asdict(config), "subset_size": config.subset_size,
        "datasets": {prior: mixture.dataset.describe() for prior, mixture in data.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "findings": tables["findings"].to_dict(orient="records"),
    }
    for described in summary["datasets"].values():
        described.pop("class_names", None)
    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary, default=str)))
    write_report(tables, summary, out / "report.html",
                 Path(figures_dir) if figures_dir is not None else None)
    return LongTailStudyResult(tables, summary, out)


def findings(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The issue's four claims, each with the measured numbers and whether they hold."""
    mem, cost, acc = tables["memorization"], tables["cost"], tables["accuracy"]
    rows = []

    def add(finding: str, measured: str, holds: bool) -> None:
        rows.append({"finding": finding, "measured": measured, "holds": bool(holds)})

    base = mem[(mem.knob == BASELINE) & (mem.prior != CONTROL)]
    for prior, group in base.groupby("prior", sort=False):
        by = dict(zip(group.bucket, group.mem))
        present = [by[b] for b in TRAIN_BUCKETS if np.isfinite(by.get(b, np.nan))]
        add(f"{prior}: singletons have the highest memorization scores",
            ", ".join(f"mem[{b}] = {by[b]:.3f}" for b in TRAIN_BUCKETS),
            len(present) > 1 and by["1"] == max(present))

    drops = acc[(acc.knob != BASELINE)].pivot_table(index=["prior", "knob"], columns="bucket",
                                                     values="drop", sort=False)
    for prior in drops.index.get_level_values(0).unique():
        if prior == CONTROL:
            continue
        group = drops.loc[prior]
        limiting = cost[(cost.prior == prior) & (cost.fit_singletons < 0.9)].knob
        group = group.loc[group.index.isin(limiting)]
        if group.empty:
            continue
        mostly = (group["1"] > group["4+"]).mean()
        add(f"{prior}: knobs that stop fitting singletons lose accuracy mostly on "
            "subpopulations seen once",
            "; ".join(f"{knob}: −{row['1']:.3f} (seen once) vs −{row['4+']:.3f} (4+)"
                      for knob, row in group.iterrows()),
            mostly >= 0.5)

    if not cost.empty:
        total = cost.groupby("prior", sort=False)["extra_error_1"].mean()
        tail = total.drop(CONTROL, errors="ignore")
        if CONTROL in total.index and len(tail):
            add("the singleton cost shrinks on the no-tail control",
                f"mean extra test error on singleton subpopulations: control "
                f"{total[CONTROL]:.4f} vs Zipf {tail.min():.4f}–{tail.max():.4f}",
                abs(total[CONTROL]) < tail.min())
        limiting = cost[(cost.prior != CONTROL) & (cost.fit_singletons < 0.9)]
        if len(limiting):
            ratio = limiting.measured_over_theory
            add("measured singleton cost vs Feldman's τ₁ × extra unfitted singletons",
                f"measured / theory: median {ratio.median():.2f} "
                f"(range {ratio.min():.2f}–{ratio.max():.2f}; carry-over of fitting to the "
                f"subpopulation's test draws {limiting.carry_over.median():.2f})",
                0.5 <= ratio.median() <= 2)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- report


def _knob_colors(knobs: list[str]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10" if len(knobs) <= 10 else "tab20")
    return {knob: ("black" if knob == BASELINE else palette(i % palette.N))
            for i, knob in enumerate(knobs)}


def plot_memorization(mem: pd.DataFrame):
    """Mean memorization score by training-frequency bucket, one panel per prior."""
    import matplotlib.pyplot as plt

    priors = list(dict.fromkeys(mem.prior))
    knobs = list(dict.fromkeys(mem.knob))
    colors = _knob_colors(knobs)
    fig, axes = plt.subplots(1, len(priors), figsize=(3.4 * len(priors), 3), sharey=True,
                             squeeze=False)
    width = 0.8 / len(knobs)
    for ax, prior in zip(axes[0], priors):
        for i, knob in enumerate(knobs):
            rows = mem[(mem.prior == prior) & (mem.knob == knob)]
            x = np.arange(len(rows)) + (i - (len(knobs) - 1) / 2) * width
            ax.bar(x, rows.mem, width, yerr=rows.mem_se, color=colors[knob], label=knob)
        ax.set_xticks(range(len(TRAIN_BUCKETS)), TRAIN_BUCKETS)
        ax.set_title(prior)
    fig.supxlabel("how often the subpopulation occurs in the whole training set", fontsize=9)
    axes[0][0].set_ylabel("mean memorization score")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def plot_accuracy(acc: pd.DataFrame):
    """Test accuracy by the test example's training frequency, one line per knob."""
    import matplotlib.pyplot as plt

    priors = list(dict.fromkeys(acc.prior))
    knobs = list(dict.fromkeys(acc.knob))
    colors = _knob_colors(knobs)
    fig, axes = plt.subplots(1, len(priors), figsize=(3.4 * len(priors), 3), sharey=True,
                             squeeze=False)
    for ax, prior in zip(axes[0], priors):
        for knob in knobs:
            rows = acc[(acc.prior == prior) & (acc.knob == knob)]
            # A bucket that few models have (e.g. "seen once" on the control) is noise.
            shown = rows.accuracy.where(rows.models_with_bucket >= 0.5)
            ax.errorbar(range(len(rows)), shown, yerr=rows.accuracy_se, marker="o",
                        color=colors[knob], label=knob, lw=2 if knob == BASELINE else 1)
        ax.set_xticks(range(len(TEST_BUCKETS)), TEST_BUCKETS)
        ax.set_title(prior)
    fig.supxlabel("how often the model saw the test example's subpopulation", fontsize=9)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def plot_cost(cost: pd.DataFrame):
    """Extra test error (share of all test draws) by bucket, per knob, one panel per prior."""
    import matplotlib.pyplot as plt

    priors = list(dict.fromkeys(cost.prior))
    knobs = list(dict.fromkeys(cost.knob))
    colors = _knob_colors([BASELINE, *knobs])
    fig, axes = plt.subplots(1, len(priors), figsize=(3.4 * len(priors), 3), sharey=True,
                             squeeze=False)
    width = 0.8 / len(knobs)
    for ax, prior in zip(axes[0], priors):
        for i, knob in enumerate(knobs):
            row = cost[(cost.prior == prior) & (cost.knob == knob)].iloc[0]
            x = np.arange(len(TEST_BUCKETS)) + (i - (len(knobs) - 1) / 2) * width
            ax.bar(x, [row[f"extra_error_{b}"] for b in TEST_BUCKETS], width,
                   yerr=[row[f"extra_error_{b}_se"] for b in TEST_BUCKETS],
                   color=colors[knob], label=knob)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xticks(range(len(TEST_BUCKETS)), TEST_BUCKETS)
        ax.set_title(prior)
    fig.supxlabel("how often the model saw the test example's subpopulation", fontsize=9)
    axes[0][0].set_ylabel("extra test error vs baseline\n(share of all test draws)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def plot_theory(cost: pd.DataFrame):
    """Measured extra error on singleton subpopulations against τ₁ × extra unfit singletons."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    markers = dict(zip(dict.fromkeys(cost.prior), "osD^vP*X"))
    colors = _knob_colors([BASELINE, *dict.fromkeys(cost.knob)])
    for _, row in cost.iterrows():
        ax.errorbar(row.theory, row.extra_error_1, yerr=row.extra_error_1_se,
                    marker=markers[row.prior], color=colors[row.knob], ls="none")
    top = max(cost.theory.max(), cost.extra_error_1.max(), 1e-3) * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=0.8, label="measured = theory")
    for prior, marker in markers.items():
        ax.plot([], [], marker=marker, color="grey", ls="none", label=prior)
    for knob, color in colors.items():
        if knob != BASELINE:
            ax.plot([], [], marker="s", color=color, ls="none", label=knob)
    ax.set_xlabel("theory: τ₁ × extra unfitted singletons")
    ax.set_ylabel("measured extra test error\non singleton subpopulations")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def write_report(tables: dict[str, pd.DataFrame], summary: dict, path: Path,
                 figures_dir: Path | None = None) -> Path:
    """The study's report.html; with ``figures_dir`` also each figure as longtail_*.png."""
    from memlab.report import Report

    config = summary["config"]
    report = Report("Why memorization pays: the long-tail laboratory (Feldman 2020)")
    report.text(
        f"Mixtures of {config['n_subpopulations']} subpopulations (Zipf exponents "
        f"{', '.join(f'{s:g}' for s in config['exponents'])}) and a uniform control of "
        f"{config['control_subpopulations']}; {config['n_train']} training / "
        f"{config['n_test']} test draws, {config['n_features']} features, "
        f"{config['n_classes']} classes, cluster spread {config['spread']}. Each population: "
        f"{config['n_models']} MLPs {list(config['hidden'])}, each on a random "
        f"{summary['subset_size']} training examples, SGD lr {config['lr']}, batch "
        f"{config['batch_size']}, {config['epochs']} epochs. {summary['seconds']:.0f} s in all.")
    report.heading("Findings")
    report.table(tables["findings"], caption="The issue's claims, measured")
    figures = [
        ("memorization", plot_memorization(tables["memorization"]),
         "Mean memorization score (± s.e.) by how often the example's subpopulation occurs "
         "in the training set."),
        ("accuracy", plot_accuracy(tables["accuracy"]),
         "Test accuracy by how many times the model saw the test example's subpopulation "
         "(buckets that fewer than half of the models have are not drawn)."),
        ("cost", plot_cost(tables["cost"]),
         "Extra test error of each knob over the baseline, by bucket (paired over models)."),
        ("theory", plot_theory(tables["cost"]),
         "Measured extra error on subpopulations seen once vs Feldman's τ₁ × the extra "
         "training singletons the knob leaves unfitted."),
    ]
    for name, fig, caption in figures:
        report.heading(name.capitalize())
        if figures_dir is not None:
            figures_dir.mkdir(parents=True, exist_ok=True)
            fig.savefig(figures_dir / f"longtail_{name}.png", dpi=80, bbox_inches="tight")
        report.figure(fig, caption=caption, fmt="png")
        if name == "memorization":
            report.table(tables["memorization"], caption="Memorization by bucket")
        if name == "accuracy":
            report.table(tables["accuracy"], caption="Test accuracy by bucket; drop = "
                         "baseline − knob (paired)")
        if name == "theory":
            report.table(tables["theory"], caption="τ₁ per prior, with its Monte-Carlo "
                         "check and the singleton counts")
            report.table(tables["cost"], caption="Cost of each knob against the theory")
    report.heading("Populations")
    report.table(tables["populations"], caption="Every population trained")
    return report.save(path)
