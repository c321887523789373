"""The atlas: every measure of one population side by side, and the questions the research
lines ask each other, answered on the same models.

    from memlab.studies.atlas import AtlasConfig, run
    result = run(AtlasConfig(run_dir="runs/memorize/population"), out="runs/atlas")
    result.tables["examples"]     # one row per training example, every measure
    result.tables["models"]       # one row per model: accuracies, per-layer spectra
    result.summary["questions"]   # each question: rho [low, high] and a verdict

Per example (:func:`examples_table`; a language model's documents:
:func:`documents_table`) and per model (:func:`models_table`) the measures listed in
docs/atlas.md; then the cross-views (:mod:`memlab.measures.crossview`): a Spearman matrix
with bootstrap intervals and each question's number, interval and verdict.

The population is the run in ``config.run_dir`` (its outputs go to ``RUN/atlas`` when the
command line is given no ``--out``), or one trained (or resumed) in ``OUT/population``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab.errors import ConfigError
from memlab.measures import crossview
from memlab.studies.atlas.config import AtlasConfig
from memlab.studies.base import Execution, Result, open_or_train, training_data

STUDY = "atlas"

# The per-example measures of the Spearman matrix, in the order they are drawn.
MATRIX = ("mem", "label_error", "cscore", "final_loss", "learning_speed", "knn_agreement",
          "first_learned", "forgetting_events", "critical", "elasticity_within",
          "elasticity_between", "nn_cosine", "n_duplicates", "vulnerability", "corrupted")

# (key, x, y, above, below, what it asks): each question's verdict words.
QUESTIONS = (
    ("learned_last", "mem", "first_learned", "memorized examples are learned later",
     "memorized examples are learned earlier",
     "Are memorized examples learned last? (Arpit et al. x Feldman)"),
    ("elasticity", "mem", "elasticity_within", "memorized examples are more elastic",
     "local elasticity is weakest where memorization is high",
     "Where is local elasticity weakest? (He & Su x Feldman)"),
    ("exposure", "mem", "vulnerability", "memorized examples are more exposed",
     "memorized examples are less exposed",
     "Are memorized examples the most exposed to membership inference? (privacy x "
     "Feldman)"),
    ("noise", "mem", "corrupted", "mislabeled examples are memorized more",
     "mislabeled examples are memorized less", "Are the planted mislabeled examples "
     "memorized? (a known answer)"),
    ("duplicates", "mem", "n_duplicates", "duplicated examples are memorized more",
     "duplicated examples are memorized less", "Are duplicated examples memorized less? "
     "(a copy in the training set stands in for the example)"),
)
# Cheap proxies of the C-score and the sign with which each should follow it (a hard,
# low-C-score example has a high final loss and is learned late).
PROXIES = {"final_loss": -1, "learning_speed": 1, "knn_agreement": 1, "first_learned": -1}


def run(config: AtlasConfig, out: Path, execution: Execution, dataset: Any = None) -> Result:
    """Open the run in ``config.run_dir`` (or train the population in ``OUT/population``),
    compute every per-example and per-model measure, join them and answer the questions.
    Called through :func:`memlab.studies.base.run_study`, which validates, reuses a saved
    result and saves this one."""
    if config.run_dir is not None and dataset is not None:
        raise ConfigError("give either AtlasConfig.run_dir (an existing run) or a dataset "
                          "to train on, not both")
    data = training_data(config, dataset) if config.run_dir is None else None
    population = open_or_train(config, out, execution, data, run_dir=config.run_dir)
    timing: dict[str, float] = {}
    clock = time.perf_counter()
    if population.task.name == "language_model":
        examples = documents_table(population)
    else:
        examples = examples_table(population, config, timing)
    clock_models = time.perf_counter()
    models = models_table(population, config.spectra, seed=config.population.seed)
    timing["models"] = time.perf_counter() - clock_models
    # the measures this run has and that vary in it (no flipped labels: no "corrupted")
    measured = [c for c in MATRIX if c in examples and examples[c].notna().sum() >= 3
                and examples[c].nunique(dropna=True) > 1]
    matrix = crossview.correlation_matrix(examples, measured, n_bootstrap=config.n_bootstrap,
                                          seed=config.population.seed)
    summary = {"questions": questions(matrix, examples), "proxies": proxy_answers(matrix),
               "alpha": alpha_answers(models, population.config.sweep)}
    timing["total"] = time.perf_counter() - clock
    summary["population"] = {
        "run_dir": str(population.path), "n_models": int(population.n_models),
        "n_train": int(len(examples)), "dataset": population.manifest["dataset"]["name"],
        "sweep": population.config.sweep,
        "test_acc_mean": float(models["test_acc"].mean()),
        "estimator": examples.attrs.get("estimator", {}),
    }
    summary["seconds"] = {k: round(v, 3) for k, v in timing.items()}
    tables = {"examples": examples, "models": models, "matrix": matrix}
    return Result(STUDY, config.to_dict(), tables, summary)


# ------------------------------------------------------------------ per example


def examples_table(run, config: AtlasConfig, timing: dict[str, float] | None = None
                   ) -> pd.DataFrame:
    """One row per training example of ``run``, every per-example measure (module doc),
    joined on the example's index: each measure's rows are the run's examples, in order."""
    from memlab.measures import cscores
    from memlab.measures.critical import critical_share
    from memlab.measures.dynamics import learning_events
    from memlab.measures.elasticity import example_elasticity
    from memlab.measures.memorization import input_neighbours, memorization

    timing = {} if timing is None else timing
    clock = time.perf_counter()
    frame = memorization(run, estimator=config.estimator)
    estimator = frame.attrs.get("estimator", {})
    keep = ["index", "label", "mem", "se", "mem_lo", "mem_hi", "acc_out", "n_in", "n_out",
            *[c for c in ("original_label", "corrupted", "label_error") if c in frame]]
    table = frame[keep].rename(columns={"se": "mem_se", "acc_out": "cscore"})
    if "corrupted" not in table:
        table["corrupted"] = False
    table["corrupted"] = table["corrupted"].astype(bool)
    table["planted_duplicate"] = _planted_duplicates(
        len(table), run.dataset.corruption.get("duplicates"))
    timing["memorization"] = time.perf_counter() - clock

    clock = time.perf_counter()
    proxies = cscores.proxies(run)
    table["final_loss"] = proxies["final_loss"].to_numpy()
    if "cumulative_accuracy" in proxies:
        table["learning_speed"] = proxies["cumulative_accuracy"].to_numpy()
        table = table.join(learning_events(run))
    timing["dynamics"] = time.perf_counter() - clock

    clock = time.perf_counter()
    table = table.join(input_neighbours(run.dataset, config.neighbours,
                                        config.duplicate_threshold))
    timing["neighbours"] = time.perf_counter() - clock

    if config.critical_models:
        clock = time.perf_counter()
        table["critical"] = critical_share(run, config.critical_models, config.population.seed)
        timing["critical"] = time.perf_counter() - clock

    if config.elasticity_models:
        clock = time.perf_counter()
        table = table.join(example_elasticity(run, config.elasticity_models,
                                              config.elasticity_examples,
                                              config.population.seed))
        timing["elasticity"] = time.perf_counter() - clock

    clock = time.perf_counter()
    table["vulnerability"] = vulnerability(run, config.audit_dir)
    timing["vulnerability"] = time.perf_counter() - clock
    table.attrs["estimator"] = estimator
    return table


def documents_table(run) -> pd.DataFrame:
    """A language-model population's atlas rows, one per training document: counterfactual
    memorization of per-token accuracy with its interval, the held-out accuracy (its
    C-score estimate), the IN models' final loss, and LiRA vulnerability on minus the
    document's loss. Documents have no labels, neighbours or elasticity: those questions
    say "not measured"."""
    from memlab.measures import cscores
    from memlab.measures.audit import lira_vulnerability
    from memlab.measures.inout import in_out

    rows = run.usable_models()
    means = in_out(run.membership_mask[rows], np.asarray(run.records("train_acc")[rows]))
    low, high = means.interval()
    table = pd.DataFrame({"index": np.arange(len(means.score)), "mem": means.score,
                          "mem_se": means.se, "mem_lo": low, "mem_hi": high,
                          "cscore": means.mean_out, "n_in": means.n_in, "n_out": means.n_out})
    table["final_loss"] = cscores.proxies(run)["final_loss"].to_numpy()
    table["vulnerability"] = lira_vulnerability(run)
    table.attrs["estimator"] = {"estimator": "in_out", "reason": "per-token accuracy of "
                                "language models (counterfactual memorization)"}
    return table


def _planted_duplicates(n: int, record: dict | None) -> np.ndarray:
    """Whether each example is an original or a copy that ``Dataset.with_duplicates``
    planted (False everywhere without such a record)."""
    flags = np.zeros(n, bool)
    if record:
        flags[np.asarray(record["originals"], np.int64)] = True
        flags[np.asarray(record["copy_indices"], np.int64)] = True
    return flags


def vulnerability(run, audit_dir: str | None = None) -> np.ndarray:
    """Each example's membership-inference vulnerability: a saved audit's (``audit_dir``,
    checked to be of this run), else LiRA (online) scored here, at 1% FPR."""
    if audit_dir is None:
        from memlab.measures.audit import lira_vulnerability

        return lira_vulnerability(run)
    saved = Result.load(audit_dir)
    if Path(saved.summary["population"]["run_dir"]).resolve() != Path(run.path).resolve():
        raise ConfigError(f"--audit-dir {audit_dir} audited "
                          f"{saved.summary['population']['run_dir']}, not {run.path}; "
                          "give the audit of this run, or leave --audit-dir out")
    return saved.tables["examples"]["vulnerability"].to_numpy(np.float64)


# ------------------------------------------------------------------ per model


def models_table(run, spectra: bool = True, seed: int = 0) -> pd.DataFrame:
    """The run's models table (accuracies, subset sizes, sweep values) and, with
    ``spectra``, per layer L (columns ``L.alpha``, ...): α with its bootstrap interval,
    the aspect-corrected α (:func:`memlab.measures.spectra.aspect_corrected_alpha`) with
    its interval, α̂, log Frobenius and spectral norms, stable rank and spikes; and their
    means over layers (``alpha``, ``alpha_corrected``, ``log_norm``, ...)."""
    table = run.models_table().reset_index(drop=True)
    if not spectra:
        return table
    from memlab.measures.spectra.models import layer_table

    layers = layer_table(run, seed=seed)
    wide = layers.pivot(index="model", columns="name", values=LAYER_COLUMNS)
    wide.columns = [f"{name}.{metric}" for metric, name in wide.columns]
    means = layers.groupby("model")[LAYER_MEANS].mean()
    return table.join(means, on="model").join(wide, on="model")


LAYER_MEANS = ["alpha", "alpha_corrected", "alpha_weighted", "log_norm",
               "log_spectral_norm", "stable_rank", "num_spikes"]
LAYER_COLUMNS = ["alpha", "alpha_lo", "alpha_hi", "alpha_corrected", "alpha_corrected_lo",
                 "alpha_corrected_hi", *LAYER_MEANS[2:]]


# ------------------------------------------------------------------ the questions


def _pair(matrix: pd.DataFrame, a: str, b: str) -> dict | None:
    found = matrix[((matrix["a"] == a) & (matrix["b"] == b))
                   | ((matrix["a"] == b) & (matrix["b"] == a))]
    return None if found.empty else found.iloc[0].to_dict()


def questions(matrix: pd.DataFrame, examples: pd.DataFrame) -> dict[str, dict]:
    """Each of :data:`QUESTIONS` answered from the matrix: ρ, its interval, n and the
    verdict; "not measured" when a side is missing (no per-epoch records, no planted
    noise...)."""
    answers = {}
    for key, a, b, above, below, asked in QUESTIONS:
        pair = _pair(matrix, a, b)
        if pair is None or not np.isfinite(pair["rho"]):
            reason = (f"{b} does not vary in this run" if b in examples
                      and examples[b].nunique(dropna=True) <= 1
                      else f"this run has no {b} (per-epoch records, planted noise, "
                           "elasticity models)")
            answers[key] = {"question": asked, "verdict": "not measured", "reason": reason,
                            "rho": None, "low": None, "high": None, "n": 0, "x": a, "y": b}
            continue
        answers[key] = {"question": asked, "x": a, "y": b, **crossview.answer(
            pair["rho"], pair["low"], pair["high"], int(pair["n"]), above=above,
            below=below)}
    return answers


def proxy_answers(matrix: pd.DataFrame) -> dict[str, dict]:
    """Do cheap proxies rank the examples as the population does (Jiang et al.)? Each
    proxy's ρ with this population's C-score estimate; the verdict reads it against the
    sign the proxy should have (:data:`PROXIES`)."""
    answers = {}
    for proxy, sign in PROXIES.items():
        pair = _pair(matrix, "cscore", proxy)
        if pair is not None and np.isfinite(pair["rho"]):
            agrees, disagrees = "ranks as the population does", "ranks against it"
            answers[proxy] = crossview.answer(
                pair["rho"], pair["low"], pair["high"], int(pair["n"]),
                above=agrees if sign > 0 else disagrees,
                below=disagrees if sign > 0 else agrees)
            answers[proxy]["expected_sign"] = sign
    return answers


def alpha_answers(models: pd.DataFrame, sweep: dict) -> dict[str, list[dict]]:
    """Does α (raw and aspect-corrected; mean over layers) predict test accuracy beyond the
    log Frobenius norm? Per sweep knob and pooled (:func:`crossview.beyond_norm`)."""
    if "alpha" not in models:
        return {}
    frame = models.copy()
    by = None
    if sweep:
        keys = [f"sweep_{key}" for key in sweep]
        frame["knob"] = frame[keys].astype(str).agg(", ".join, axis=1)
        by = "knob"
    return {alpha: crossview.beyond_norm(frame, alpha, "log_norm", by=by).to_dict("records")
            for alpha in ("alpha", "alpha_corrected") if alpha in frame}
