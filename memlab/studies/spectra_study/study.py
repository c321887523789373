"""Do spectral metrics track generalization? MLPs on MNIST-1D, one knob at a time.

A family of 2-hidden-layer MLPs is trained with the population engine around a base
configuration, varying one knob at a time (batch size, width, fraction of random labels,
training length). For every model: its test accuracy and the means over its weight
matrices of α, α̂, log ‖W‖_F², log λ_max and the stable rank (memlab's robust fit; MP fit
and randomization off). Per knob and metric: Spearman ρ and Kendall τ with test accuracy
across that knob's models, with a 95% percentile bootstrap interval over models (models
resampled with replacement), so that a re-run on another machine can be judged against
the interval rather than against a single number.

Everything lands in ``OUT/``: ``populations/<config>/`` (engine runs, resumable),
``tables/{models,configurations,correlations}.parquet``, ``summary.json``, ``report.html``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from memlab.errors import ConfigError
from memlab.studies.base import Result, StudyConfig, saved_result

STUDY = "spectra_study"
METRICS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")


@dataclass(frozen=True)
class SpectraStudyConfig(StudyConfig):
    """knobs: knob → values, each varied alone around ``base`` (hidden, batch_size,
    label_noise, epochs). models_per_config: models trained per value (each on its own
    random ``subset_fraction`` of the training set). n_bootstrap: resamples of the
    correlation intervals."""

    data: str = "mnist1d"
    base: dict[str, Any] = field(default_factory=lambda: {
        "hidden": 256, "batch_size": 64, "label_noise": 0.0, "epochs": 30})
    knobs: dict[str, list] = field(default_factory=lambda: {
        "batch_size": [16, 64, 256, 1024], "hidden": [32, 64, 128, 256, 512],
        "label_noise": [0.0, 0.2, 0.5, 1.0], "epochs": [2, 8, 30, 60]})
    models_per_config: int = 8
    subset_fraction: float = 0.8
    lr: float = 0.05
    n_bootstrap: int = 2000
    seed: int = 0

    @classmethod
    def quick(cls, **changes: Any) -> SpectraStudyConfig:
        """Two knobs, narrow MLPs, 4 models per value: about a minute on 2 cores."""
        return cls(**{**dict(base={"hidden": 64, "batch_size": 64, "label_noise": 0.0,
                                   "epochs": 10},
                             knobs={"label_noise": [0.0, 0.5, 1.0], "epochs": [2, 10]},
                             models_per_config=4, n_bootstrap=500), **changes})

    @classmethod
    def full(cls, **changes: Any) -> SpectraStudyConfig:
        """The README's study: four knobs, 8 models per value."""
        return cls(**changes)


def _check(config: SpectraStudyConfig) -> None:
    if config.models_per_config < 2:
        raise ConfigError("models_per_config must be at least 2 (correlations need spread)")
    unknown = (set(config.knobs) | set(config.base)) - {"hidden", "batch_size",
                                                        "label_noise", "epochs"}
    if unknown:
        raise ConfigError(f"unknown knobs {sorted(unknown)}; use hidden, batch_size, "
                          "label_noise, epochs")


def correlations_table(models: pd.DataFrame, n_bootstrap: int, seed: int) -> pd.DataFrame:
    """Per knob and metric: Spearman ρ (with a bootstrap interval over models) and
    Kendall τ with test accuracy, and the number of models behind them."""
    from scipy.stats import kendalltau

    from memlab.measures.spectra import spearman_interval

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


def run(config: SpectraStudyConfig, out: str | Path | None = None,
        progress: bool = True) -> Result:
    """Train (or resume) every configuration's population, analyze their spectra, and write
    tables, summary.json and report.html into ``out`` (default runs/spectra-study).
    Resumable: a second call with the same ``out`` and config returns the saved result."""
    _check(config)
    out = Path(out if out is not None else "runs/spectra-study")
    saved = saved_result(out, STUDY, config)
    if saved is not None:
        return saved
    from memlab.data import load
    from memlab.measures.spectra import analyze_full
    from memlab.population import train_population

    start = time.perf_counter()
    base_data = load(config.data)
    rows = []
    for knob, values in config.knobs.items():
        for value in values:
            settings = {**config.base, knob: value}
            data = (base_data.with_label_noise(settings["label_noise"], seed=config.seed)
                    if settings["label_noise"] > 0 else base_data)
            tag = "_".join(f"{k}{v}" for k, v in settings.items())
            population = train_population(
                data, model="mlp", model_kwargs={"hidden": (settings["hidden"],) * 2},
                n_models=config.models_per_config, subset_fraction=config.subset_fraction,
                epochs=settings["epochs"], batch_size=settings["batch_size"],
                optimizer="sgd", lr=config.lr, seed=config.seed,
                out=out / "populations" / tag, save_weights=True, progress=progress)
            accuracy = population.records("test_correct").mean(axis=1)
            result = analyze_full(population, mp_fit=False, randomize=False,
                                  alternatives=False, keep_eigenvalues=False, device="cpu")
            for _, summary in result.summary.iterrows():
                model = int(summary["model"])
                rows.append({"knob": knob, "value": float(value), "model": model,
                             "test_accuracy": float(accuracy[model]),
                             **{m: float(summary.get(m, float("nan"))) for m in METRICS}})
    models = pd.DataFrame(rows)
    configurations = (models.groupby(["knob", "value"], sort=False)
                      .mean(numeric_only=True).drop(columns="model").reset_index())
    correlations = correlations_table(models, config.n_bootstrap, config.seed)
    alpha = correlations[correlations["metric"] == "alpha"].set_index("knob")
    summary = {
        "n_models": len(models), "models_per_config": config.models_per_config,
        "base": dict(config.base), "seconds": time.perf_counter() - start,
        "n_bootstrap": config.n_bootstrap,
        "alpha_spearman": {knob: {"rho": row["spearman"], "low": row["spearman_lo"],
                                  "high": row["spearman_hi"], "n_models": int(row["n_models"])}
                           for knob, row in alpha.iterrows()},
    }
    result = Result(STUDY, config.to_dict(),
                    {"models": models, "configurations": configurations,
                     "correlations": correlations}, summary)
    result.save(out)
    return result
