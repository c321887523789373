"""The privacy audit of a population: membership inference against every model in turn.

    from memlab.studies.audit import AuditConfig, run
    result = run(AuditConfig(run_dir="runs/memorize/population"), out="runs/audit")
    result.summary["lira_online"]["auc"], result.summary["lira_online"]["tpr_at_fpr_0.001"]
    result.tables["examples"]          # one row per training example: mem, mem_se, vulnerability

Every model k of the population is the target in turn and the other t − 1 its shadow models
(leave-one-model-out), so every (model, example) pair is a trial whose answer is the
membership mask. The attacks and metrics are ``memlab.measures.mia``, the tables
``memlab.measures.audit``; memorization is ``memlab.measures.memorization``
(counterfactual memorization of per-token accuracy for language-model runs). On top of the
attacks:

- the shadow curve: each attack's AUC and TPR at 0.1% FPR with 1, 2, 4, … shadows per side
  (IN and OUT) up to all of them, and the paired bootstrap difference all − one;
- per example: vulnerability (TPR of ``vulnerability_attack`` on the example's member
  trials at one global threshold of FPR ``vulnerability_fpr``) next to mem and its se;
  planted mislabeled canaries (``label_noise``) against clean examples;
- the exposure study (``exposure=True``, :mod:`memlab.studies.audit.exposure`): populations
  trained with different epochs, weight decay and MLP width, audited the same way, with
  memorization on the same axes.

The population is the run in ``config.run_dir``, or one trained (or resumed) in
``OUT/population`` from the config's data options and recipe — an explicit
``membership`` mask included; the exposure study's runs live in ``OUT/exposure/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab.errors import ConfigError
from memlab.measures import audit as au
from memlab.measures import mia, stats
from memlab.measures.dp_canaries import audit_privacy_canaries
from memlab.studies.audit.config import AuditConfig
from memlab.studies.base import Execution, Result, open_or_train, training_data

STUDY = "audit"
N_EXPOSED = 24  # most exposed examples shown as inputs
# |ρ(mem, vulnerability)| below this across its whole interval is a relation too weak to
# call one (Cohen's "small" correlation is 0.1): thousands of examples resolve ρ = 0.04
# from 0, and "memorized examples are more exposed" would then overstate it.
NEGLIGIBLE_RHO = 0.1
NEGLIGIBLE = "negligible"


def run(config: AuditConfig, out: Path, execution: Execution, dataset: Any = None) -> Result:
    """Open the run in ``config.run_dir`` (or train the population in ``OUT/population``),
    attack every model in turn, and return the tables and summary. ``dataset``: a
    :class:`memlab.data.Dataset` to train on instead of ``config.data`` (which must then be
    None). Called through :func:`memlab.studies.base.run_study`, which validates, reuses a
    saved result and saves this one."""
    if config.run_dir is not None and dataset is not None:
        raise ConfigError("give either AuditConfig.run_dir (audit an existing run) or a "
                          "dataset to train on, not both")
    data = training_data(config, dataset) if config.run_dir is None else None
    population_run = open_or_train(config, out, execution, data, run_dir=config.run_dir)
    if config.exposure and config.run_dir is not None:  # before the audit, not after it
        population_run.require_trust(purpose="train the exposure study with its recipe")
    timing: dict[str, float] = {}
    started = clock = time.perf_counter()
    inputs = au.attack_inputs(population_run)
    read_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    memo = au.memorization_table(population_run)
    memo_seconds = time.perf_counter() - clock
    tables, summary = audit(inputs, memo, config, timing)
    timing["metrics"] += read_seconds  # reading the records counts with the attacks
    timing["examples"] += memo_seconds  # memorization with the per-example tables

    clock = time.perf_counter()
    tables["most_exposed"] = au.most_exposed(population_run, tables["examples"], N_EXPOSED)
    timing["examples"] += time.perf_counter() - clock
    if config.dp:  # ε lower bounds from the privacy canaries, beside the accountant's ε
        clock = time.perf_counter()
        summary["dp"] = audit_privacy_canaries(population_run, seed=config.population.seed)
        timing["dp"] = time.perf_counter() - clock
    timing["audit_total"] = time.perf_counter() - started  # training not included
    if config.exposure:
        from memlab.studies.audit.exposure import exposure_table

        clock = time.perf_counter()
        tables["exposure"] = exposure_table(config, out / "exposure", execution, data,
                                            population_run)
        timing["exposure"] = time.perf_counter() - clock

    t, n = inputs.mask.shape
    models = population_run.models_table()
    summary["population"] = {
        "run_dir": str(population_run.path), "n_models": t, "n_train": n,
        "dataset": population_run.manifest["dataset"]["name"],
        "task": population_run.task.name,
        "config": population_run.manifest["config"],
        "test_acc_mean": float(models["test_acc"].mean()),
        "train_acc_in_mean": float(models["train_acc_in"].mean()),
        "input_shape": list(population_run.manifest["dataset"].get("input_shape") or []),
    }
    summary["seconds"] = {k: round(v, 3) for k, v in timing.items()}
    return Result(STUDY, config.to_dict(), tables, summary)


def audit(inputs: mia.AttackInputs, memo: pd.DataFrame, config: AuditConfig,
          timing: dict[str, float] | None = None) -> tuple[dict[str, pd.DataFrame],
                                                            dict[str, Any]]:
    """The audit of one population's records, without the run they came from: the
    attacks (``inputs``), each example's vulnerability next to ``memo``
    (:func:`memlab.measures.audit.memorization_table`), the shadow curve and every
    verdict. Returns the tables (attacks, roc, examples, by_mem, shadows) and the summary
    (per attack, the comparisons, shadows, memorization, canaries, vulnerability);
    :func:`run` adds the population's description and the most exposed inputs.
    ``timing``: filled with the seconds of each part (metrics, examples, shadow_curve)."""
    timing = {} if timing is None else timing
    seed = config.population.seed
    settings = dict(n_bootstrap=config.n_bootstrap, seed=seed)
    mask = inputs.mask

    clock = time.perf_counter()
    scores, attacks, full, roc = au.attack_table(inputs, config.attacks, rmia_a=config.rmia_a,
                                                 rmia_gamma=config.rmia_gamma, **settings)
    timing["metrics"] = time.perf_counter() - clock  # the scores and their bootstrap

    clock = time.perf_counter()
    examples = au.examples_table(memo, scores, mask, config.vulnerability_attack,
                                 config.vulnerability_fpr)
    relation, by_mem = au.mem_relation(examples)
    canaries = au.canary_summary(examples)
    timing["examples"] = time.perf_counter() - clock

    clock = time.perf_counter()
    curve_attacks = tuple(a for a in config.curve_attacks if a in config.attacks) \
        or config.attacks
    curve, shadows = au.shadow_curve(inputs, curve_attacks, config.shadow_caps,
                                     examples=config.curve_examples, rmia_a=config.rmia_a,
                                     rmia_gamma=config.rmia_gamma, **settings)
    timing["shadow_curve"] = time.perf_counter() - clock

    tables = {"attacks": attacks, "roc": roc, "examples": examples, "by_mem": by_mem,
              "shadows": curve}
    summary: dict[str, Any] = {
        name: {**au.strip(full[name]), **mia.n_shadows(mask)} for name in scores}
    summary["attacks"] = list(scores)
    summary["lira_online_vs_loss"] = au.compare(full, "lira_online", "loss")
    summary["lira_offline_fixed_vs_loss"] = au.compare(full, "lira_offline_fixed", "loss")
    summary["lira_online_vs_offline_fixed"] = au.compare(full, "lira_online",
                                                         "lira_offline_fixed")
    summary["shadows"] = shadows
    summary["memorization"] = {**relation, **mem_exposure(examples)}
    summary["canaries"] = canaries
    summary["vulnerability"] = {
        "attack": config.vulnerability_attack, "fpr": config.vulnerability_fpr,
        "split_half": au.vulnerability_reliability(
            inputs, config.vulnerability_attack, config.vulnerability_fpr, seed=seed,
            rmia_a=config.rmia_a, rmia_gamma=config.rmia_gamma)}
    return tables, summary


def mem_exposure(examples: pd.DataFrame) -> dict[str, Any]:
    """Whether memorized examples are the exposed ones: Spearman ρ(mem, vulnerability)
    over the examples with both (the same ρ as ``spearman_mem_vulnerability``), its 95%
    interval (Fisher's z, :func:`memlab.measures.stats.spearman_with_interval`) and
    :func:`mem_exposure_verdict`. Keys: spearman_ci_low, spearman_ci_high, n_examples,
    verdict."""
    rho = stats.spearman_with_interval(examples["mem"].to_numpy(np.float64),
                                       examples["vulnerability"].to_numpy(np.float64))
    return {"spearman_ci_low": rho["ci_low"], "spearman_ci_high": rho["ci_high"],
            "n_examples": rho["n"],
            "verdict": mem_exposure_verdict(rho["ci_low"], rho["ci_high"])}


def mem_exposure_verdict(low: float | None, high: float | None) -> str:
    """The verdict of ρ(mem, vulnerability)'s interval [low, high]: "higher" (memorized
    examples are more exposed: the interval above 0), "lower" (below 0), "negligible"
    (off 0 but inside ±NEGLIGIBLE_RHO throughout: a many-example population resolves a
    relation too weak to matter) or "cannot decide" (it holds 0, or there is none)."""
    side = stats.interval_side(low, high)
    if side == stats.UNDECIDED:
        return stats.UNDECIDED
    if max(abs(low), abs(high)) < NEGLIGIBLE_RHO:  # type: ignore[arg-type]
        return NEGLIGIBLE
    return stats.HIGHER if side == stats.ABOVE else stats.LOWER
