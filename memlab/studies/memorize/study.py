"""The memorization study: population → scores → influence → pairs → removal → report.

    from memlab.studies.memorize import MemorizeConfig, run
    result = run(MemorizeConfig(), out="runs/memorize")      # the demo (make demo)
    run(MemorizeConfig(data=None), out, dataset=my_dataset)  # your own Dataset object
    result.tables["scores"]     # one row per training example: mem, se, acc_in, acc_out, ...
    result.tables["pairs"]      # high-influence pairs, near-duplicates flagged
    result.summary["reliability"], result.report()

Definitions and estimators: docs/science.md §1 (Feldman 2020; Feldman & Zhang 2020). The
population is trained (or resumed) in ``OUT/population``; the study writes ``tables/``,
``summary.json``, ``report.html`` and the influence matrix ``influence.npy`` (+
``influence_se.npy``, memory-mapped) into ``OUT``; the removal study's arms live in
``OUT/removal/`` and the C-score sweep's populations in ``OUT/cscores/``, each a resumable
run. The figures are drawn from the tables alone: the inputs the example and pair figures
show are stored in the ``examples`` and ``top_pairs`` tables (flattened, with the input
shape in the summary), so ``Result.load(OUT).figures()`` needs no run directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab.measures import cscores as cs
from memlab.measures import memorization as mz
from memlab.measures.stats import auroc_interval
from memlab.studies.base import Execution, Result, open_or_train, training_data
from memlab.studies.memorize import removal as rm
from memlab.studies.memorize.config import MemorizeConfig, TargetSEWarning
from memlab.studies.memorize.floors import (
    RELIABILITY_MIN,
    count_verdict,
    noise_floors,
    reliability_verdict,
)

STUDY = "memorize"
STRONG_INFLUENCE = 0.4  # Feldman & Zhang: pairs above this are mostly near-duplicates
N_EXAMPLES = 24  # most memorized examples drawn in the report
N_PAIRS = 12  # strongest pairs drawn in the report
# Subset models below this mean accuracy on their own training examples do not fit them:
# memorization is then inflated, and a mislabeled example (never fitted) is not memorized.
FIT_MIN = 0.95


def _flat_inputs(x: np.ndarray, rows: np.ndarray) -> list[list[float]]:
    return [np.asarray(x[int(i)], np.float32).ravel().tolist() for i in rows]


def _vertical(dataset) -> bool:
    """MNIST-1D's authors draw a signal vertically (value across, position down)."""
    return dataset.name.startswith("mnist1d")


# ------------------------------------------------------------------ run


def run(config: MemorizeConfig, out: Path, execution: Execution, dataset=None) -> Result:
    """Train (or resume) the population in ``OUT/population``, measure memorization,
    influence, pairs, reliability (and the removal study and C-scores when asked).
    ``dataset``: a :class:`memlab.data.Dataset` to use instead of ``config.data`` (which
    must then be None). Called through :func:`memlab.studies.base.run_study`, which
    validates, reuses a saved result and saves this one."""
    p = config.population
    # The a-priori worst case; with --grow the pilot's measured errors decide instead.
    advice = None if config.grow else mz.precision_advice(p.n_models, p.subset_fraction,
                                                          config.target_se)
    if advice:
        advice = (advice.replace("requested precision", "requested standard error (target_se)")
                  + "; an a-priori worst case: the summary's models_needed is measured on "
                  "this population, and --grow trains them")
        warnings.warn(advice, TargetSEWarning, stacklevel=2)
    data = training_data(config, dataset)
    engine = execution.training()
    started = time.perf_counter()
    requested = config  # the result's identity: the command as given, pilot size included
    if config.grow:  # a run grown before holds more models than the pilot: keep them all
        stored = _stored_models(out / "population")
        if stored > p.n_models:
            config = dataclasses.replace(config, population=dataclasses.replace(
                p, n_models=stored))
    population = open_or_train(config, out, execution, data)
    grown = None
    if config.grow:  # the population so far is the pilot
        pilot = mz.memorization(population, estimator=config.estimator)
        needed = mz.models_needed_for_se(pilot["se"].to_numpy(), population.n_models,
                                         config.target_se)
        if needed > population.n_models:
            grown = {"pilot_models": population.n_models, "models": needed}
            bigger = dataclasses.replace(p, n_models=needed)
            population = open_or_train(dataclasses.replace(config, population=bigger), out,
                                       execution, data)
    seconds = {"train": time.perf_counter() - started}

    clock = time.perf_counter()
    scores = mz.memorization(population, estimator=config.estimator)
    choice = scores.attrs["estimator"]
    # Influence with the memorization estimator where it fits in memory (the probit's
    # smaller error keeps noise out of the high-influence pairs: 512 models give 302
    # pairs with it, 458 with the binary influence, against 278 from 1,000 binary).
    influence_estimator = choice["estimator"] if choice["estimator"] == "probit" and \
        mz.probit_influence_fits(data.n_train, data.n_test) else "binary"
    infl = mz.influence(population, out=out / "influence.npy", estimator=influence_estimator,
                        reuse=True)  # (run_study removed it if it was damaged)
    pairs = mz.high_influence_pairs(population, config.mem_min, config.infl_min,
                                    config.same_label, scores=scores, infl=infl,
                                    duplicate_threshold=config.duplicate_threshold)
    rows = population.usable_models()  # (models that diverged: left out, as in the scores)
    mask = np.asarray(population.membership_mask[rows])
    records = {name: np.asarray(population.records(name)[rows]) for name in
               ("train_correct", "train_margin") if name in population.record_names}
    curve = mz.reliability_curve(mask, records, n_splits=config.reliability_splits,
                                 seed=p.seed, estimator=choice["estimator"])  # ends with all
    duplicates = mz.near_duplicates(data, config.duplicate_threshold)
    mem = scores["mem"].to_numpy()

    tables: dict[str, pd.DataFrame] = {"scores": scores, "pairs": pairs, "reliability": curve,
                                       "near_duplicates": duplicates}
    targets = {"mem": mem,
               f"acc_out (C-score at r={p.subset_fraction:g})": scores["acc_out"].to_numpy()}
    if config.cscores:
        recipe = {k: v for k, v in dataclasses.asdict(p).items()
                  if k not in ("n_models", "subset_fraction")}
        reuse = {r: population for r in config.cscore_ratios
                 if math.isclose(r, p.subset_fraction)}
        runs = cs.cscore_sweep(data, config.cscore_ratios, config.cscore_models,
                               out=out / "cscores", reuse=reuse, **engine, **recipe)
        tables["cscores"] = cs.cscores(runs)
        targets["cscore"] = tables["cscores"]["cscore"].to_numpy()
    tables["proxies"] = cs.proxies(population)
    tables["proxy_correlations"] = cs.rank_correlations(tables["proxies"], targets)
    tables["classes"] = class_table(scores, data.n_classes, config.mem_min)
    top = scores.sort_values(["mem", "se"], ascending=[False, True]).head(N_EXAMPLES).copy()
    top["input"] = _flat_inputs(data.x_train, top["index"].to_numpy())
    tables["examples"] = top.reset_index(drop=True)
    strongest = pairs.head(N_PAIRS).copy()
    strongest["train_input"] = _flat_inputs(data.x_train, strongest["train"].to_numpy())
    strongest["test_input"] = _flat_inputs(data.x_test, strongest["test"].to_numpy())
    tables["top_pairs"] = strongest
    seconds["analysis"] = time.perf_counter() - clock

    summary = headline(config, population, data, scores, pairs, curve, duplicates, tables)
    # The counts' noise floors: the same counts from populations with a permuted mask.
    clock = time.perf_counter()
    labels = population.dataset
    test_records = np.asarray(population.records(
        "test_margin" if influence_estimator == "probit" else "test_correct")[rows])
    floors = noise_floors(
        mask, records, test_records, np.flatnonzero(np.nan_to_num(mem, nan=-np.inf)
                                                    >= config.mem_min),
        estimator=choice["estimator"], influence_estimator=influence_estimator,
        mem_min=config.mem_min, infl_min=config.infl_min,
        train_labels=labels.y_train if config.same_label else None,
        test_labels=labels.y_test if config.same_label else None, seed=p.seed)
    del test_records
    summary.update(floors)
    summary["memorized_verdict"] = count_verdict(summary["n_memorized"],
                                                 floors["n_memorized_null_upper"])
    summary["pairs_verdict"] = count_verdict(summary["n_pairs"], floors["n_pairs_null_upper"])
    seconds["noise_floors"] = time.perf_counter() - clock
    summary["advice"] = advice
    summary["estimator"] = choice
    summary["influence_estimator"] = influence_estimator
    fraction = mz.memorized_fraction_interval(mask, records, choice["estimator"],
                                              config.mem_min, seed=p.seed)
    summary["memorized_fraction_lo"], summary["memorized_fraction_hi"] = fraction[1:]
    summary["models_needed"] = {  # for se <= target_se at 90% of examples; this is the pilot
        name: mz.models_needed_for_se(
            (scores[f"mem_{name}_hi"] - scores[f"mem_{name}_lo"]).to_numpy() / (2 * mz.Z95),
            population.n_models, config.target_se)
        for name in ("binary", "probit") if f"mem_{name}" in scores}
    summary["grown"] = grown
    if config.removal:
        clock = time.perf_counter()
        removed = np.flatnonzero(np.nan_to_num(mem, nan=-np.inf) >= config.mem_min)
        tests = np.unique(pairs["test"].to_numpy()).astype(np.int64)
        table = rm.removal_table(population, removed, tests, config.removal_seeds,
                                 out / "removal", **engine)
        tables["removal"] = table
        tables["removal_summary"] = rm.removal_summary(table)
        summary["removal"] = {
            "seeds": config.removal_seeds, "threshold": config.mem_min,
            "n_removed": int(len(removed)), "n_high_influence_tests": int(len(tests)),
            "sets": rm.sets_digest(removed, tests),
            "test_acc_verdict": rm.verdict(tables["removal_summary"], "test_acc"),
            "high_influence_acc_verdict": rm.verdict(tables["removal_summary"],
                                                     "high_influence_acc")}
        seconds["removal"] = time.perf_counter() - clock
    summary["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return Result(STUDY, requested.to_dict(), tables, summary)


def _stored_models(run_dir: Path) -> int:
    """Models a run directory was asked to hold (0 where there is none yet)."""
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return 0
    return int(json.loads(manifest.read_text())["config"]["n_models"])


def class_table(scores: pd.DataFrame, n_classes: int, mem_min: float) -> pd.DataFrame:
    """Per given label: examples, fraction with mem ≥ mem_min, mean mem."""
    rows = []
    for c in range(n_classes):
        mem = scores.loc[scores["label"] == c, "mem"].to_numpy()
        finite = mem[np.isfinite(mem)]
        rows.append(dict(label=c, n=len(mem),
                         memorized_fraction=float(np.mean(finite >= mem_min))
                         if len(finite) else float("nan"),
                         mem_mean=float(finite.mean()) if len(finite) else float("nan")))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ noise floors, verdicts


def headline(config: MemorizeConfig, population, data, scores: pd.DataFrame,
             pairs: pd.DataFrame, curve: pd.DataFrame, duplicates: pd.DataFrame,
             tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The summary's numbers (strict JSON: NaN becomes null when saved)."""
    from memlab.report import input_kind

    p = config.population
    models = population.models_table()
    mem = scores["mem"].to_numpy()
    strong = pairs["infl"] > STRONG_INFLUENCE
    summary: dict[str, Any] = {
        "dataset": population.manifest["dataset"]["name"], "run_dir": str(population.path),
        "fingerprint": population.manifest["dataset"]["fingerprint"],
        "n_train": data.n_train, "n_test": data.n_test, "n_classes": data.n_classes,
        "class_names": list(data.class_names), "input_shape": list(data.input_shape),
        "input_kind": input_kind(tuple(data.input_shape)), "vertical": _vertical(data),
        "n_models": population.n_models, "subset_fraction": p.subset_fraction,
        "epochs": p.epochs, "model": p.model, "model_kwargs": p.model_kwargs,
        "optimizer": p.optimizer, "lr": p.lr, "batch_size": p.batch_size,
        "weight_decay": p.weight_decay,
        "test_acc_mean": float(models.test_acc.mean()),
        "test_acc_sd": float(models.test_acc.std(ddof=1)) if len(models) > 1 else 0.0,
        "train_acc_in_mean": float(models.train_acc_in.mean()),
        "train_acc_in_min": float(models.train_acc_in.min()),
        "train_acc_out_mean": float(models.train_acc_out.mean()),
        "mem_min": config.mem_min, "infl_min": config.infl_min,
        "memorized_fraction": float(np.nanmean(mem >= config.mem_min)),
        "n_memorized": int(np.sum(np.nan_to_num(mem, nan=-1) >= config.mem_min)),
        "mem_mean": float(np.nanmean(mem)),
        "se_median": float(np.nanmedian(scores["se"])),
        "n_se_zero": int((scores["se"] == 0).sum()),
        "error_bound": mz.error_bound(population.n_models, p.subset_fraction),
        "target_se": config.target_se,
        "reliability": float(curve.spearman.iloc[-1]),
        "reliability_sd": float(curve.spearman_sd.iloc[-1]),
        "reliability_verdict": reliability_verdict(float(curve.spearman.iloc[-1]),
                                                   float(curve.spearman_sd.iloc[-1])),
        "reliability_min": RELIABILITY_MIN, "fit_min": FIT_MIN,
        "same_label": config.same_label,
        "n_pairs": len(pairs), "n_pairs_near_duplicate": int(pairs["near_duplicate"].sum()),
        "n_pair_tests": int(pairs["test"].nunique()) if len(pairs) else 0,
        "strong_influence": STRONG_INFLUENCE, "n_pairs_strong": int(strong.sum()),
        "n_pairs_strong_near_duplicate": int((strong & pairs["near_duplicate"]).sum()),
        "n_near_duplicate_tests": len(duplicates),
        "duplicate_threshold": config.duplicate_threshold,
        "recorded_epochs": bool(p.record_epochs),
    }
    summary["has_label_error"] = "label_error" in scores
    if "corrupted" in scores:
        corrupted = scores["corrupted"].to_numpy(bool)
        summary["label_noise_fraction"] = float(corrupted.mean())
        summary["n_flipped"] = int(corrupted.sum())
        summary["mem_mean_flipped"] = float(np.nanmean(mem[corrupted]))
        summary["mem_mean_clean"] = float(np.nanmean(mem[~corrupted]))
        # AUROC of each score for the flipped labels, with DeLong's 95% interval: mem, and
        # two scores asking a different question (is the given label believable?) that do
        # not need the models to fit: the label-error score and the final training loss.
        candidates = {"noise": mem}
        if "label_error" in scores:
            candidates["label_error"] = scores["label_error"].to_numpy()
        if "final_loss" in tables.get("proxies", {}):
            candidates["final_loss"] = tables["proxies"]["final_loss"].to_numpy()
        for name, values in candidates.items():
            _, low, high = auroc_interval(values, corrupted)
            summary[f"{name}_auroc"] = mz.detection_auroc(values, corrupted)
            summary[f"{name}_auroc_lo"], summary[f"{name}_auroc_hi"] = low, high
    if "cscores" in tables:
        summary["spearman_mem_cscore"] = mz.spearman(mem, tables["cscores"]["cscore"].to_numpy())
        summary["cscore_ratios"] = [float(r) for r in config.cscore_ratios]
        summary["cscore_models"] = config.cscore_models
    return summary
