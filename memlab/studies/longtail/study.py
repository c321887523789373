"""Why memorization pays (Feldman 2020; docs/science.md §1): the long-tail laboratory.

    from memlab.studies.longtail import LongtailConfig, run
    result = run(LongtailConfig.quick(), out="runs/longtail")
    result.tables["findings"]        # the four claims, each with its numbers and a verdict

For each frequency prior (Zipf exponents s, plus a uniform no-tail control with few,
frequent subpopulations) the study draws a long-tailed mixture (:mod:`memlab.data.longtail`)
and trains one population per *knob*:

- ``baseline``: an MLP trained to fit its training set (it memorizes): ``config.population``;
- knobs that limit memorization: ``weight_decay``, ``early_stopping`` (fewer epochs),
  ``dropout``, ``label_smoothing``, ``small_model`` (a narrow network).

Every population uses the same seed, so model k of every knob trains on the same random
subset I_k (|I_k| = m = subset_fraction · n_train): comparisons between knobs are paired.

What a subpopulation's "training frequency" means: model k saw subpopulation j
``count[k, j]`` times, the number of its examples in I_k. Test accuracy by frequency uses
these per-model counts (a test example from a subpopulation seen once *by this model*);
memorization scores, which compare models with and without an example, are bucketed by the
count in the whole training set (the generator's tags). The measurements are
:mod:`memlab.measures.longtail`'s.

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
counts they produced. The claims' verdicts: :mod:`memlab.studies.longtail.verdicts`.

Everything lands in ``out/``: ``populations/<prior>-<knob>/`` (engine runs, resumable),
``tables/*.parquet``, ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab import validate
from memlab.data.longtail import (
    TEST_BUCKETS,
    TRAIN_BUCKETS,
    LongTailData,
    expected_singletons,
    make_longtail,
    monte_carlo_singleton_cost,
    singleton_cost,
    singleton_mass,
)
from memlab.measures.longtail import PopulationMeasures, measure_population, model_counts
from memlab.measures.memorization import MEMORIZED
from memlab.measures.stats import mean_se
from memlab.progress import tqdm
from memlab.studies.base import Execution, Result
from memlab.studies.longtail.config import BASELINE, RECIPE, LongtailConfig
from memlab.studies.longtail.verdicts import findings

STUDY = "longtail"


def memorization_rows(prior: str, knob: str, measures: PopulationMeasures) -> list[dict]:
    """Mean memorization score per training-frequency bucket (whole-training-set counts)."""
    rows = []
    for bucket in TRAIN_BUCKETS:
        scores = measures.mem.loc[measures.mem["bucket"] == bucket, "mem"].to_numpy()
        mem = mean_se(scores)
        rows.append({"prior": prior, "knob": knob, "bucket": bucket, "n_examples": len(scores),
                     "mem": mem.mean, "mem_se": mem.se,
                     "memorized": float(np.mean(scores >= MEMORIZED)) if len(scores) else np.nan})
    return rows


def accuracy_rows(prior: str, knob: str, measures: PopulationMeasures,
                  baseline: PopulationMeasures) -> list[dict]:
    """Test accuracy per per-model frequency bucket, and its paired drop from the baseline."""
    rows = []
    for bucket in TEST_BUCKETS:
        acc = mean_se(measures.acc[bucket])
        drop = mean_se(baseline.acc[bucket] - measures.acc[bucket])
        share = float(np.mean(np.isfinite(measures.acc[bucket])))
        rows.append({"prior": prior, "knob": knob, "bucket": bucket, "accuracy": acc.mean,
                     "accuracy_se": acc.se, "drop": drop.mean, "drop_se": drop.se,
                     "models_with_bucket": share})
    return rows


def cost_row(prior: str, knob: str, measures: PopulationMeasures,
             baseline: PopulationMeasures, tau1: float) -> dict:
    """The knob's extra test error, by bucket, beside Feldman's τ₁ × extra unfit singletons."""
    row: dict[str, Any] = {"prior": prior, "knob": knob}
    for bucket in TEST_BUCKETS:
        extra = mean_se(measures.error_mass[bucket] - baseline.error_mass[bucket])
        row[f"extra_error_{bucket}"], row[f"extra_error_{bucket}_se"] = extra.mean, extra.se
    extra = mean_se(baseline.test_acc - measures.test_acc)
    row["extra_error"], row["extra_error_se"] = extra.mean, extra.se
    row["singletons"] = float(measures.singletons.mean())
    row["fit_singletons"] = float(1 - measures.unfit.sum() / max(measures.singletons.sum(), 1))
    extra = mean_se(measures.unfit - baseline.unfit)
    row["extra_unfit"], row["extra_unfit_se"] = extra.mean, extra.se
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
    # Its standard error by the delta method (the two paired means' errors as independent):
    # var(e / t) = se_e² / t² + e² se_t² / t⁴, with t = τ₁ · extra_unfit.
    theory_se = tau1 * row["extra_unfit_se"]
    row["measured_over_theory_se"] = math.sqrt(
        _divide(row["extra_error_1_se"] ** 2, row["theory"] ** 2)
        + _divide(row["extra_error_1"] ** 2 * theory_se ** 2, row["theory"] ** 4))
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
        mc, mc_se = monte_carlo_singleton_cost(p, m, n_draws=2000, seed=config.population.seed)
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


def run(config: LongtailConfig, out: Path, execution: Execution) -> Result:
    """Train every (prior, knob) population (resuming finished ones) and measure them.
    Called through :func:`memlab.studies.base.run_study`, which validates, reuses a saved
    result and saves this one."""
    from memlab.population import train_population

    out = Path(out)
    n_models = config.population.n_models
    # Each population's membership mask (1 byte) and final records (15 bytes per model
    # and example, train and test) exist at once while it is analysed.
    validate.fits_in_memory(16.0 * n_models * (config.n_train + config.n_test),
                            f"--models {n_models}", "give fewer models")
    started = time.perf_counter()
    workers = execution.n_workers or os.cpu_count() or 1
    chunk_size = (config.population.chunk_size
                  if config.population.chunk_size != RECIPE.chunk_size
                  else max(1, math.ceil(n_models / workers)))
    data = {prior: make_longtail(spec) for prior, spec in config.priors().items()}
    knobs = (BASELINE, *config.knob_settings())
    bar = tqdm(total=len(data) * len(knobs), unit="population", disable=not execution.progress,
               desc=f"longtail study (~{config.expected_minutes():.0f} min on 2 cores)")

    mem_rows, acc_rows, cost_rows, population_rows, tails = [], [], [], [], []
    baselines: dict[str, PopulationMeasures] = {}
    for prior, mixture in data.items():
        tau1 = singleton_cost(mixture.frequencies, config.subset_size)
        for knob in knobs:
            bar.set_postfix_str(f"{prior} {knob}")
            population = train_population(
                mixture.dataset, dataclasses.replace(config.recipe(knob), chunk_size=chunk_size),
                out=out / "populations" / f"{prior}-{knob}", device=execution.device,
                n_workers=workers, executor=execution.executor,
                ray_address=execution.ray_address, progress=False)
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
    return Result(STUDY, config.to_dict(), tables, summary)


def headline_lines(result: Result) -> list[str]:
    """What ``memlab longtail`` prints: each finding's verdict, the time, the tables."""
    lines = [f"[{row.verdict}] {row.finding}: {row.measured}"
             for row in result.tables["findings"].itertuples()]
    return lines + [f"{result.summary['seconds']:.0f} s; tables in {result.out / 'tables'}"]
