"""Do spectral metrics track generalization? MLPs on MNIST-1D, one knob at a time.

    from memlab.studies.spectra_study import SpectraStudyConfig, run
    result = run(SpectraStudyConfig.quick(), out="runs/spectra_study")
    result.tables["correlations"]   # per knob and metric: Spearman ρ [95% interval], τ

A family of MLPs (two hidden layers of 256 in the base recipe) is trained with the
population engine around a base configuration, varying one knob at a time (batch size,
width, fraction of random labels, training length). For every model: its test accuracy and
the means over its weight matrices of α, α̂, log ‖W‖_F², log λ_max and the stable rank
(memlab's robust fit; MP fit and randomization off). Per knob and metric: Spearman ρ and
Kendall τ with test accuracy across that knob's models, with a 95% percentile bootstrap
interval over models (models resampled with replacement), so that a re-run on another
machine can be judged against the interval rather than against a single number.

Everything lands in ``OUT/``: ``populations/<config>/`` (engine runs, resumable),
``tables/{models,configurations,correlations}.parquet``, ``summary.json``, ``report.html``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from memlab.studies.base import Execution, Result
from memlab.studies.spectra_study.config import SpectraStudyConfig

STUDY = "spectra_study"
METRICS = ("alpha", "alpha_corrected", "alpha_weighted", "log_norm", "log_spectral_norm",
           "stable_rank")


def correlations_table(models: pd.DataFrame, n_bootstrap: int, seed: int) -> pd.DataFrame:
    """Per knob and metric: Spearman ρ (with a bootstrap interval over models) and
    Kendall τ with test accuracy, and the number of models behind them."""
    from scipy.stats import kendalltau

    from memlab.measures.stats import spearman_interval

    rows = []
    for knob, group in models.groupby("knob", sort=False):
        for metric in METRICS:
            # Models without the metric (every layer under the fitting minimum, e.g. a
            # width-32 MLP on 40 inputs) are left out and not counted.
            pairs = group[[metric, "test_accuracy", "value"]].dropna()
            rho, low, high = spearman_interval(pairs[metric], pairs["test_accuracy"],
                                               n_bootstrap=n_bootstrap, seed=seed)
            tau = (float(kendalltau(pairs[metric], pairs["test_accuracy"]).statistic)
                   if len(pairs) >= 3 else float("nan"))
            rows.append({"knob": knob, "metric": metric, "spearman": rho, "spearman_lo": low,
                         "spearman_hi": high, "kendall_tau": tau, "n_models": len(pairs),
                         "n_values": pairs["value"].nunique()})
    return pd.DataFrame(rows)


def run(config: SpectraStudyConfig, out: Path, execution: Execution) -> Result:
    """Train (or resume) every configuration's population in ``OUT/populations/<config>``
    and analyze their spectra. Called through :func:`memlab.studies.base.run_study`, which
    validates, reuses a saved result and saves this one."""
    from memlab.data import load
    from memlab.measures.spectra import analyze_full
    from memlab.population import train_population

    start = time.perf_counter()
    seed = config.population.seed
    base_data = load(config.data)
    rows = []
    for knob, value, settings, recipe in config.configurations():
        data = (base_data.with_label_noise(settings["label_noise"], seed=seed)
                if settings["label_noise"] > 0 else base_data)
        # (weight decay 0, the only value before it was a knob, is left out of the name:
        # runs trained before it was one resume)
        tag = "_".join(f"{k}{v}" for k, v in settings.items()
                       if not (k == "weight_decay" and v == 0))
        population = train_population(data, recipe, out=Path(out) / "populations" / tag,
                                      **execution.training())
        accuracy = population.records("test_correct").mean(axis=1)
        result = analyze_full(population, mp_fit=False, randomize=False,
                              alternatives=False, keep_eigenvalues=False, device="cpu")
        corrected = corrected_alpha(population, seed)
        for _, summary in result.summary.iterrows():
            model = int(summary["model"])
            rows.append({"knob": knob, "value": float(value), "model": model,
                         "test_accuracy": float(accuracy[model]),
                         **{m: float(summary.get(m, float("nan"))) for m in METRICS
                            if m != "alpha_corrected"},
                         "alpha_corrected": float(corrected.get(model, float("nan")))})
    models = pd.DataFrame(rows)
    configurations = (models.groupby(["knob", "value"], sort=False)
                      .mean(numeric_only=True).drop(columns="model").reset_index())
    correlations = correlations_table(models, config.n_bootstrap, seed)
    beyond = beyond_norm_table(models)
    alpha = correlations[correlations["metric"] == "alpha"].set_index("knob")
    summary = {
        "n_models": len(models), "models_per_config": config.population.n_models,
        "base": config.base(), "seconds": time.perf_counter() - start,
        "n_bootstrap": config.n_bootstrap,
        "alpha_spearman": {knob: {"rho": row["spearman"], "low": row["spearman_lo"],
                                  "high": row["spearman_hi"], "n_models": int(row["n_models"])}
                           for knob, row in alpha.iterrows()},
    }
    summary["beyond_norm"] = beyond.to_dict("records")
    return Result(STUDY, config.to_dict(), {"models": models, "configurations": configurations,
                                            "correlations": correlations,
                                            "beyond_norm": beyond}, summary)


def corrected_alpha(population, seed: int) -> dict[int, float]:
    """Each model's mean over its layers of the aspect-corrected α
    (:func:`memlab.measures.spectra.aspect.aspect_corrected_alpha`, point estimates: the
    question is across models)."""
    from memlab.measures.spectra.aspect import aspect_corrected_alpha
    from memlab.measures.spectra.weights import load_weights

    values: dict[int, list[float]] = {}
    for layer in load_weights(population).layers:
        matrix = layer.weight.detach().double().numpy().reshape(layer.weight.shape[0], -1)
        found = aspect_corrected_alpha(matrix, seed=seed, n_bootstrap=0)
        if np.isfinite(found.alpha):
            values.setdefault(layer.model, []).append(found.alpha)
    return {model: float(np.mean(alphas)) for model, alphas in values.items()}


def beyond_norm_table(models: pd.DataFrame) -> pd.DataFrame:
    """Does α (raw, aspect-corrected) predict test accuracy beyond the log Frobenius norm?
    Per knob and pooled over every model: the partial Spearman ρ given the norm, with
    Fisher's 95% interval and a verdict (:func:`memlab.measures.crossview.beyond_norm`)."""
    from memlab.measures.crossview import beyond_norm

    parts = []
    for alpha in ("alpha", "alpha_corrected"):
        table = beyond_norm(models, alpha, "log_norm", accuracy="test_accuracy", by="knob")
        table.insert(0, "alpha", alpha)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def headline_lines(result: Result) -> list[str]:
    """What ``memlab spectra-study`` prints: the mean per configuration, the correlations,
    and how long the study took."""
    lines = []
    with pd.option_context("display.width", 220, "display.max_columns", 40,
                           "display.max_rows", 500, "display.max_colwidth", 60,
                           "display.float_format", "{:.3g}".format):
        for name in ("configurations", "correlations"):
            lines += [result.tables[name].to_string(index=False), ""]
    return lines + [f"study took {result.summary['seconds'] / 60:.1f} min"]
