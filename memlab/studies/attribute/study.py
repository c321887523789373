"""Score cheap data-attribution methods against a population's ground truth.

    from memlab.studies.attribute import AttributeConfig, run
    result = run(AttributeConfig(run_dir="runs/pop", methods=("grad_dot", "trak")),
                 out="runs/attribute")
    result.summary["methods"]["trak"]["lds"]

The population's models are split three ways (by index):

- the first ``method_models`` (``trak_models`` for TRAK) are the models the cheap methods
  read (weights, gradients, Hessians);
- the last ``n_heldout`` models are held out: every LDS is measured on them only;
- the ``n_validation`` models before the held-out ones choose each method's damping (from
  ``dampings``) by their LDS, so no hyperparameter sees the held-out models;
- datamodels and difference in means are fitted on every model that is not held out.

The population is the run in ``config.run_dir``, or one trained (or resumed) in
``OUT/population``. Scores (n_train, n_targets) float32 of every method stream to
memory-mapped files ``OUT/scores/<method>.npy``; a method whose scores and
``OUT/methods/<method>.json`` exist is not recomputed when the study is resumed. Scoring is
:mod:`memlab.studies.attribute.scoring` (with the ranking: every LDS and every paired
difference with a 95% interval and a verdict, ``summary["ranking"]`` and the ``ranking``
table, from which the report's finding is written); retraining (TracIn's checkpoints, top-k
removal) :mod:`memlab.studies.attribute.retrain`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from memlab.engine.precision import cpu_model
from memlab.errors import ConfigError, RunError
from memlab.measures.attribution import methods as am
from memlab.measures.stats import Z95
from memlab.studies.attribute import scoring as sc
from memlab.studies.attribute.config import AttributeConfig
from memlab.studies.attribute.retrain import build_template, removal_study, replicate_run
from memlab.studies.base import Execution, Result, open_or_train, training_data

STUDY = "attribute"


def run(config: AttributeConfig, out: Path, execution: Execution, dataset: Any = None
        ) -> Result:
    """Open the run in ``config.run_dir`` (or train the population in ``OUT/population``),
    score every method and the ground truth, and return the tables and summary (the scores
    stay in ``OUT/scores``). ``dataset``: a :class:`memlab.data.Dataset` to train on instead
    of ``config.data`` (which must then be None). Called through
    :func:`memlab.studies.base.run_study`, which validates, reuses a saved result and saves
    this one."""
    if config.run_dir is not None and dataset is not None:
        raise ConfigError("give either AttributeConfig.run_dir (an existing run) or a dataset "
                          "to train on, not both")
    data = training_data(config, dataset) if config.run_dir is None else None
    if data is not None:  # before training: one untrained model says what can score it
        from memlab.models import build_model

        check_methods(build_model(config.population.model, tuple(data.input_shape),
                                  data.n_classes, **config.population.model_kwargs).eval(),
                      config)
    population_run = open_or_train(config, out, execution, data, run_dir=config.run_dir)
    if "test_logodds" not in population_run.record_names:
        raise RunError(f"{population_run.path} has no test_logodds record (an older run); "
                       "retrain it with this memlab version")
    config = resolve(config, population_run)
    n_models = population_run.n_models
    split = split_models(n_models, config)
    n_test = population_run.manifest["dataset"]["n_test"]
    if config.n_targets > n_test:
        raise ConfigError(f"--targets {config.n_targets} exceeds the {n_test} test examples")
    check_methods(build_template(population_run), config)
    outputs = np.asarray(population_run.records("test_logodds")[:, :config.n_targets],
                         np.float64)
    started = time.perf_counter()
    # Trained before the methods run, so that a mismatched OUT/ceiling fails in seconds.
    replicate = (replicate_run(population_run, config, split["heldout"], out / "ceiling",
                               execution) if config.ceiling else None)
    # Its training time as its run recorded it (the same on a re-run that resumes it).
    replicate_seconds = (replicate.manifest["summary"]["chunk_seconds_total"]
                         if replicate is not None else None)
    truth, truth_scores, curve = sc.ground_truth(population_run, config, split, outputs, out)
    rows, scores = sc.score_methods(population_run, config, out, split, outputs, execution)
    damping_edges = sc.warn_damping_edges(rows)
    self_frame, self_summary = sc.self_influence(population_run, config, split)
    tables: dict[str, pd.DataFrame] = {"models_curve": curve, "self_influence": self_frame}
    removal_summary = None
    if config.removal:
        removal_frame, removal_summary = removal_study(
            population_run, config, {**truth_scores, **scores}, execution, out / "removal")
        tables["removal"] = removal_frame
    ceiling = None
    if replicate is not None:
        ceiling, per_method, tables["ceiling"] = ceiling_of(
            population_run, replicate, config, split, outputs, {**scores, **truth_scores})
        ceiling["seconds"] = replicate_seconds
        for name, row in {**rows, **truth}.items():
            row.update(per_method[name], ceiling=ceiling["ceiling"])
    all_rows = {**rows, **truth}
    held = split["heldout"]
    tables["ranking"], ranking = sc.ranking(
        {**scores, **truth_scores}, np.asarray(population_run.membership_mask[held]),
        outputs[held], seed=config.population.seed)
    with_ceiling_ratios(tables["ranking"], ranking, all_rows)
    table = pd.DataFrame([{"method": name, **{k: v for k, v in row.items()
                                              if not isinstance(v, dict | list)}}
                          for name, row in all_rows.items()])
    tables["methods"] = table
    tables["top_examples"] = sc.top_examples({**truth_scores, **scores}, config,
                                             population_run.dataset)
    models = population_run.models_table()
    summary: dict[str, Any] = {
        "methods": rows, **truth, "ranking": ranking,
        "n_heldout_models": int(len(split["heldout"])),
        "n_validation_models": int(len(split["validation"])),
        "n_fit_models": int(len(split["fit"])), "n_targets": config.n_targets,
        "output": "test_logodds",
        "population": {"run_dir": str(population_run.path), "n_models": n_models,
                       "n_train": population_run.manifest["dataset"]["n_train"],
                       "dataset": population_run.manifest["dataset"]["name"],
                       "config": population_run.manifest["config"],
                       "test_acc_mean": float(models["test_acc"].mean()),
                       "train_seconds": population_run.manifest.get("summary", {}).get(
                           "chunk_seconds_total"),
                       "train_flops": sc.training_flops(population_run)},
        "ceiling": ceiling, "damping_edges": damping_edges,
        "self_influence": self_summary, "removal": removal_summary,
        "seconds_total": time.perf_counter() - started,
        "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
    }
    return Result(STUDY, config.to_dict(), tables, json.loads(json.dumps(
        summary, default=float)))


def ceiling_of(population_run, replicate, config: AttributeConfig, split: dict,
               outputs: np.ndarray, scores: dict[str, np.ndarray]
               ) -> tuple[dict, dict[str, dict], pd.DataFrame]:
    """The LDS ceiling from the held-out models and ``replicate``, their masks' second
    replicate (:func:`memlab.studies.attribute.retrain.replicate_run`), and each method's
    fraction of it (:func:`memlab.studies.attribute.scoring.noise_ceiling`)."""
    held = split["heldout"]
    second = np.asarray(replicate.records("test_logodds")[:, :config.n_targets], np.float64)
    ceiling, per_method, frame = sc.noise_ceiling(
        config, np.asarray(population_run.membership_mask[held]), outputs[held], second,
        scores)
    ceiling.update(run_dir=str(replicate.path), seed=replicate.config.seed,
                   train_seconds=replicate.manifest.get("summary", {}).get(
                       "chunk_seconds_total"),
                   compared_with="lds_replicates: LDS against the mean of the two "
                                 "replicates' outputs (lds: against one)")
    return ceiling, per_method, frame


def with_ceiling_ratios(frame: pd.DataFrame, ranking: dict, rows: dict[str, dict]) -> None:
    """Add each method's ``ceiling_ratio`` with its 95% interval (± 1.96
    ``ceiling_ratio_se``, NaN without a ceiling) to the ranking's table and rows, in place."""
    from memlab.io import strict_jsonable

    def number(value) -> float:  # None (no ceiling, or undefined) -> NaN
        return float("nan") if value is None else float(value)

    ratio = {name: number(row.get("ceiling_ratio")) for name, row in rows.items()}
    se = {name: number(row.get("ceiling_ratio_se")) for name, row in rows.items()}
    frame["ceiling_ratio"] = [ratio.get(name, np.nan) for name in frame["method"]]
    frame["ceiling_ratio_low"] = [ratio.get(n, np.nan) - Z95 * se.get(n, np.nan)
                                  for n in frame["method"]]
    frame["ceiling_ratio_high"] = [ratio.get(n, np.nan) + Z95 * se.get(n, np.nan)
                                   for n in frame["method"]]
    columns = ["ceiling_ratio", "ceiling_ratio_low", "ceiling_ratio_high"]
    for row, values in zip(ranking["rows"], frame[columns].to_dict("records")):
        row.update(strict_jsonable(values))


def resolve(config: AttributeConfig, population_run) -> AttributeConfig:
    """``config`` with what None leaves to the population filled in: the methods that
    apply, the self-influence methods, TracIn's checkpoint epochs."""
    template = build_template(population_run)
    methods = config.resolved_methods(am.exact_hessian_applies(template))
    if config.methods is None:  # every method that applies to this model
        methods = tuple(m for m in methods if am.refusal(m, template) is None)
    self_methods = config.resolved_self_influence_methods(methods)
    if config.self_influence_methods is None:
        self_methods = tuple(m for m in self_methods if am.refusal(m, template) is None)
    return dataclasses.replace(
        config, methods=methods, self_influence_methods=self_methods,
        tracin_checkpoints=config.resolved_checkpoints(population_run.config.epochs))


def split_models(n_models: int, config: AttributeConfig) -> dict[str, np.ndarray]:
    """Model indices: ``heldout`` (the last n_heldout), ``validation`` (the n_validation
    before them), ``fit`` (every model not held out)."""
    start = n_models - config.n_heldout - config.n_validation
    trak = "trak" in (*(config.methods or ()), *(config.self_influence_methods or ()))
    used = max(config.method_models, config.trak_models if trak else 1)
    if start < used or start < 10:
        raise ConfigError(
            f"the run has {n_models} models: too few for {config.n_heldout} held-out, "
            f"{config.n_validation} validation and {used} method models (plus >= 10 to fit "
            "datamodels); train more models or lower --heldout")
    return {"heldout": np.arange(n_models - config.n_heldout, n_models),
            "validation": np.arange(start, n_models - config.n_heldout),
            "fit": np.arange(0, n_models - config.n_heldout)}


def check_methods(template: torch.nn.Module, config: AttributeConfig) -> None:
    """Refuse, before any work, every method asked for (in ``methods`` or
    ``self_influence_methods``) that cannot score models like ``template`` (EK-FAC needs
    Linear layers only, if_exact a small model, ...; :func:`~memlab.measures.attribution.
    methods.refusal`), all in one message. Methods left to the study (None) are chosen
    among those that apply instead."""
    from memlab import validate

    wanted: dict[str, list[str]] = {}
    for field in ("methods", "self_influence_methods"):
        for name in getattr(config, field) or ():
            wanted.setdefault(name, []).append(field)
    with validate.all_problems("attribution methods for this model"):
        for name, fields in wanted.items():
            why = am.refusal(name, template)
            if why is not None:
                validate.problem(f"{why}; drop {name} from {' and '.join(fields)}")


def headline_lines(result: Result) -> list[str]:
    """What ``memlab attribute`` prints: every method's LDS (± se), its LDS against the
    replicates' mean and fraction of the ceiling, seconds and models read; the ceiling, the
    held-out models, dampings left on a grid's edge, where the scores are."""
    s = result.summary
    rows = {**s["methods"], "datamodels": s["datamodels"],
            "diff_in_means": s["diff_in_means"]}
    from memlab.report.numbers import fmt, fmt_pct, fmt_se

    width = max(map(len, rows))
    lines = [f"{name:{width}}  LDS {fmt_se(row.get('lds'), row.get('lds_se'))}"
             + (f"  (replicates' mean {fmt(row['lds_replicates'], 3)}, "
                f"{fmt_pct(row.get('ceiling_ratio'), 0)} of the ceiling)"
                if row.get("lds_replicates") is not None else "")
             + (f"  {fmt(row['seconds'], 2)} s" if row.get("seconds") is not None else "")
             for name, row in rows.items()]
    lines.append(f"held-out models: {s['n_heldout_models']}")
    ceiling = s.get("ceiling")
    if ceiling:
        lines.append(
            f"LDS ceiling (training noise: the {ceiling['n_models']} held-out masks trained "
            f"twice): {ceiling['ceiling']:.3f} ± {ceiling['ceiling_se']:.3f} against the "
            f"replicates' mean (lds_replicates; ceiling_ratio = lds_replicates / ceiling), "
            f"{ceiling['ceiling_single']:.3f} against one model (lds)")
    for edge in s.get("damping_edges") or ():
        lines.append(f"damping on the grid's {edge['edge']} edge: {edge['method']} "
                     f"({edge['damping']:g})")
    from memlab.studies.attribute.figures import finding_sentences

    lines += finding_sentences(s)  # the report's finding: the ranking and what it resolves
    return lines + [f"scores:  {result.out / 'scores'}",
                    f"run:     {s['population']['run_dir']}"]
