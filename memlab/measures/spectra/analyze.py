"""Per-layer analysis: eigenvalues, tail fit and its tests, norm metrics, MP fit, phase.

Metrics per layer (docs/science.md §5): alpha, xmin, D, n_tail, sigma (Clauset power-law fit,
:mod:`.powerlaw`); with ``uncertainty=True`` alpha_lo/alpha_hi, xmin_lo/xmin_hi (bootstrap
interval) and gof_p (:mod:`.bootstrap`); with ``alternatives=True`` (default) the
likelihood-ratio tests lr_{exponential,lognormal,tpl}_{R,p} (:mod:`.alternatives`);
alpha_weighted α̂ = α·log10 λ_max, log_spectral_norm = log10 λ_max, log_norm =
log10 ||W||_F², log_alpha_norm = log10 Σ λ^α, stable_rank = ||W||_F²/λ_max; the MP fit
(mp_sigma, mp_bulk_max, num_spikes, mp_softrank = λ⁺/λ_max); the randomized comparison
(rand_distance, num_traps = correlation traps); phase, evidence and verdict
(:mod:`.phases`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from memlab.errors import CheckpointError, ConfigError
from memlab.measures.spectra.alternatives import likelihood_ratio_tests
from memlab.measures.spectra.bootstrap import DEFAULT_BOOTSTRAP, DEFAULT_LEVEL, tail_uncertainty
from memlab.measures.spectra.eigen import (
    EIG_DTYPES,
    compute_dtype,
    eigenvalue_resolution,
    ks_two_sample,
    matrix_eigenvalues,
    resolve_device,
    shuffled,
)
from memlab.measures.spectra.mp import fit_marchenko_pastur, mp_edge, spike_threshold
from memlab.measures.spectra.phases import (
    MIN_EIGENVALUES_TO_FIT,
    RANK_COLLAPSE_FRACTION,
    VERDICT_KINDS,
    verdict,
    verdict_kind,
)
from memlab.measures.spectra.powerlaw import (
    PowerLawFit,
    fit_power_law,
    fit_truncated_power_law,
)
from memlab.measures.spectra.weights import LayerMatrix, load_weights
from memlab.measures.stats import spearman_interval

# Largest Gram side (M) decomposed by default: an M × M float64 eigensolve takes O(M³)
# time and 8·M² bytes (20,000 → 3.2 GB). Bigger layers get a row with a reason.
DEFAULT_MAX_EIGENVALUES_PER_MATRIX = 20_000
# A fit whose x_min is within this many float32 resolutions of zero is recomputed in
# float64: its tail eigenvalues would otherwise carry relative errors of more than ~1e-3.
FLOAT32_XMIN_MARGIN = 100.0


@dataclass
class SpectraResult:
    """table: one row per layer (per model in a population), in the model's order.
    summary: one row per model. eigenvalues / random_eigenvalues: row index → ESD
    (ascending, float64), for plots. order: how the layer order was found."""

    table: pd.DataFrame
    summary: pd.DataFrame
    eigenvalues: dict[int, np.ndarray] = field(default_factory=dict)
    random_eigenvalues: dict[int, np.ndarray] = field(default_factory=dict)
    label: str = ""
    seconds: float = 0.0
    order: str = "module"


def _select(layers: list[LayerMatrix], wanted: Iterable[str] | str | None) -> list[LayerMatrix]:
    if wanted is None:
        return layers
    if isinstance(wanted, str):
        try:
            pattern = re.compile(wanted)
        except re.error as error:
            raise ConfigError(f"--layers {wanted!r} is not a valid regular expression: "
                              f"{error}") from error
        chosen = [layer for layer in layers if pattern.search(layer.name)]
    else:
        names = set(wanted)
        chosen = [layer for layer in layers if layer.name in names]
        missing = names - {layer.name for layer in layers}
        if missing:
            raise ConfigError(f"no layer named {sorted(missing)[:5]}; available: "
                              f"{[layer.name for layer in layers][:10]} …")
    if not chosen:
        raise ConfigError(f"no layer matches {wanted!r}; available: "
                          f"{[layer.name for layer in layers][:10]} …")
    return chosen


def log10_sum_power(values: np.ndarray, power: float) -> float:
    """log10 Σ λ^power, computed in log space (λ^α overflows float64 for big λ and α)."""
    positive = values[values > 0]
    if positive.size == 0 or not math.isfinite(power):
        return float("nan")
    logs = power * np.log(positive)
    top = logs.max()
    return float((top + math.log(np.exp(logs - top).sum())) / math.log(10))


def _spectrum_and_fit(slices: torch.Tensor, layer: LayerMatrix, device: torch.device,
                      dtype: torch.dtype, reference: bool, fit_tail: bool
                      ) -> tuple[np.ndarray, float, PowerLawFit | None]:
    """(eigenvalues, rank fraction, power-law fit) of one layer, computed in ``dtype``.

    Eigenvalues: ascending float64, times WeightWatcher's conv2d factor in reference mode;
    all NaN (and no fit) if a weight is NaN/inf. The rank fraction counts eigenvalues above
    the larger of numpy.linalg.matrix_rank's tolerance (σ > σ_max · max(N, M) · eps of the
    stored dtype, squared) and the resolution of the eigensolve in ``dtype``.
    """
    _, rows, cols = slices.shape
    eigenvalues = matrix_eigenvalues(slices, device, dtype)
    if not np.isfinite(eigenvalues).all():
        return eigenvalues, float("nan"), None
    if reference:
        eigenvalues = eigenvalues * layer.conv_scale
    lambda_max = float(eigenvalues[-1])
    tolerance = max(lambda_max * (max(rows, cols) * layer.eps) ** 2,
                    eigenvalue_resolution(lambda_max, min(rows, cols), dtype))
    rank_fraction = float((eigenvalues > tolerance).mean()) if lambda_max > 0 else 0.0
    if fit_tail:
        power_law = fit_power_law(eigenvalues, mode="reference" if reference else "robust")
    else:
        nan = float("nan")
        power_law = PowerLawFit(nan, nan, nan, 0, nan, reason=(
            f"too few eigenvalues to fit ({eigenvalues.size} < {MIN_EIGENVALUES_TO_FIT})"))
    return eigenvalues, rank_fraction, power_law


def _float32_is_enough(eigenvalues: np.ndarray, rank_fraction: float,
                       power_law: PowerLawFit | None, n_small: int) -> bool:
    """Whether a float32 result can stand: no overflow, no rank-collapse verdict and no tail
    starting near the float32 resolution."""
    if power_law is None:  # non-finite: overflow in float32, or NaN/inf weights
        return False
    resolution = eigenvalue_resolution(float(eigenvalues[-1]), n_small, torch.float32)
    return rank_fraction >= RANK_COLLAPSE_FRACTION and not (
        power_law.ok and power_law.xmin < FLOAT32_XMIN_MARGIN * resolution)


@dataclass(frozen=True)
class Options:
    """Everything :func:`analyze` does to a layer besides loading it."""

    mp_fit: bool = True
    randomize: bool = True
    seed: int = 0
    reference: bool = False
    fit: str = "power_law"
    max_eigenvalues: int = DEFAULT_MAX_EIGENVALUES_PER_MATRIX
    eig_dtype: str = "auto"
    alternatives: bool = True
    uncertainty: bool = False
    n_bootstrap: int = DEFAULT_BOOTSTRAP
    level: float = DEFAULT_LEVEL


NON_FINITE_REASON = "weights contain NaN or inf; the checkpoint is corrupted or diverged"


def analyze_layer(layer: LayerMatrix, device: torch.device, options: Options
                  ) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """(row, eigenvalues, shuffled-W eigenvalues) of one layer."""
    slices = layer.slices(options.reference)
    k, rows, cols = slices.shape
    n_big, n_small = max(rows, cols), min(rows, cols)
    num_evals = k * n_small
    row: dict[str, Any] = {
        "name": layer.name, "type": layer.kind, "shape": "×".join(map(str, layer.shape)),
        "groups": layer.groups, "pooled": layer.pooled(options.reference),
        "N": n_big, "M": n_small, "num_evals": num_evals, "reason": "",
    }
    if layer.depthwise and not options.reference:
        row.update(phase="unfitted", evidence="depthwise", verdict=(
            "depthwise convolution: its blocks are 1 × 1, so its eigenvalues are the "
            f"squared weights ({num_evals} of them), not a matrix spectrum; not fitted"))
        row["reason"] = "depthwise convolution (1 × 1 blocks): no matrix spectrum"
        return row, None, None
    if n_small > options.max_eigenvalues:
        row["reason"] = (f"{n_small} × {n_small} Gram matrix exceeds max_eigenvalues="
                         f"{options.max_eigenvalues}; raise it (O(M³) time, 8·M² bytes) or "
                         "use a GPU")
        return row, None, None
    # Reference mode fits whatever WeightWatcher fits (≥ 8 eigenvalues); the default mode
    # does not fit below the minimum at which an interval can decide a phase.
    fit_tail = options.reference or num_evals >= MIN_EIGENVALUES_TO_FIT
    dtype = compute_dtype(layer.weight.dtype, options.eig_dtype)
    eigenvalues, rank_fraction, power_law = _spectrum_and_fit(
        slices, layer, device, dtype, options.reference, fit_tail)
    if dtype == torch.float32 and not _float32_is_enough(eigenvalues, rank_fraction,
                                                          power_law, n_small):
        dtype = torch.float64
        eigenvalues, rank_fraction, power_law = _spectrum_and_fit(
            slices, layer, device, dtype, options.reference, fit_tail)
    row["eig_dtype"] = str(dtype).removeprefix("torch.")
    if power_law is None:  # NaN/inf weights make the Gram matrix non-finite
        row["reason"] = NON_FINITE_REASON
        row.update(phase="unfitted", verdict=f"not fitted: {NON_FINITE_REASON}")
        return row, None, None
    lambda_max = float(eigenvalues[-1])
    frobenius_sq = float(eigenvalues.sum())
    alpha = power_law.alpha
    log_spectral_norm = math.log10(lambda_max) if lambda_max > 0 else float("nan")
    row.update(
        alpha=alpha, xmin=power_law.xmin, D=power_law.D, n_tail=power_law.n_tail,
        sigma=power_law.sigma, lambda_max=lambda_max,
        alpha_weighted=alpha * log_spectral_norm, log_spectral_norm=log_spectral_norm,
        log_norm=math.log10(frobenius_sq) if frobenius_sq > 0 else float("nan"),
        log_alpha_norm=log10_sum_power(eigenvalues, alpha),
        stable_rank=frobenius_sq / lambda_max if lambda_max > 0 else float("nan"),
        rank_fraction=rank_fraction,
    )
    if not power_law.ok:
        row["reason"] = power_law.reason
    tests: dict[str, tuple[float, float]] = {}
    if options.alternatives and power_law.ok:
        for name, result in likelihood_ratio_tests(eigenvalues, power_law.xmin).items():
            short = "tpl" if name == "truncated_power_law" else name
            row[f"lr_{short}_R"], row[f"lr_{short}_p"] = result.R, result.p
            tests[name] = (result.R, result.p)
    if options.uncertainty and power_law.ok and not options.reference:
        spread = tail_uncertainty(eigenvalues, power_law, n_bootstrap=options.n_bootstrap,
                                  level=options.level, seed=options.seed)
        row.update(alpha_lo=spread.alpha_lo, alpha_hi=spread.alpha_hi,
                   xmin_lo=spread.xmin_lo, xmin_hi=spread.xmin_hi, gof_p=spread.gof_p)
    if options.fit == "truncated_power_law" and power_law.ok:
        row["tpl_alpha"], row["tpl_lambda_cut"] = fit_truncated_power_law(eigenvalues,
                                                                          power_law.xmin)
    nan = float("nan")
    num_spikes, bulk_max = nan, nan
    if options.mp_fit:
        mp = fit_marchenko_pastur(eigenvalues, rows, cols)
        num_spikes, bulk_max = mp.num_spikes, mp.bulk_max
        row.update(mp_sigma=mp.sigma, mp_bulk_min=mp.bulk_min, mp_bulk_max=mp.bulk_max,
                   num_spikes=mp.num_spikes, mp_softrank=mp.softrank)
    random_eigenvalues = None
    if options.randomize:
        random_eigenvalues = matrix_eigenvalues(shuffled(slices, options.seed, layer.name),
                                                device, dtype)
        if options.reference:
            random_eigenvalues = random_eigenvalues * layer.conv_scale
        # A shuffled W has i.i.d. entries: its MP edge is known from the entries' second
        # moment, no fit needed. Shuffled eigenvalues beyond it are correlation traps (a
        # few large entries that stay large whatever their position).
        entry_sigma = math.sqrt(frobenius_sq / (k * rows * cols))
        _, random_edge = mp_edge(entry_sigma, rows, cols)
        threshold = spike_threshold(random_edge, entry_sigma, rows, cols)
        positive = eigenvalues[eigenvalues > 0]
        positive_random = random_eigenvalues[random_eigenvalues > 0]
        row.update(
            rand_lambda_max=float(random_eigenvalues[-1]), rand_bulk_max=random_edge,
            num_traps=int((random_eigenvalues > threshold).sum()),
            rand_distance=ks_two_sample(np.log(positive), np.log(positive_random)),
        )
    phase, evidence, words = verdict(
        num_evals=num_evals, alpha=alpha, sigma=power_law.sigma, fit_reason=power_law.reason,
        rank_fraction=rank_fraction, num_spikes=num_spikes, lambda_max=lambda_max,
        bulk_max=bulk_max, alpha_lo=row.get("alpha_lo", nan), alpha_hi=row.get("alpha_hi", nan),
        gof_p=row.get("gof_p", nan), tests=tests)
    if options.reference and num_evals < MIN_EIGENVALUES_TO_FIT and power_law.ok:
        words += "; α shown only to compare with WeightWatcher"
    row.update(phase=phase, evidence=evidence, verdict=words)
    return row, eigenvalues, random_eigenvalues


SUMMARY_METRICS = ("alpha", "alpha_weighted", "log_spectral_norm", "log_norm",
                   "log_alpha_norm", "stable_rank", "mp_softrank", "num_spikes", "num_traps",
                   "rand_distance")


def verdict_kinds(table: pd.DataFrame) -> pd.Series:
    """Each row's verdict kind (:func:`.phases.verdict_kind`: the decided α band,
    "undecided", "no-power-law", ...), from its ``phase`` and ``evidence``."""
    if "phase" not in table:
        return pd.Series("unfitted", index=table.index, dtype=object)
    evidence = table["evidence"] if "evidence" in table else pd.Series(None, index=table.index)
    return pd.Series([verdict_kind(p, e) for p, e in zip(table["phase"], evidence)],
                     index=table.index, dtype=object)


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many rows of the per-layer table carry each verdict kind (every kind of
    :data:`.phases.VERDICT_KINDS`, zeros included; they add up to the rows). The one count
    of verdicts: the summary's ``n_<kind>`` and the reports' counts are this."""
    found = verdict_kinds(table).value_counts()
    counts = {kind: int(found.get(kind, 0)) for kind in VERDICT_KINDS}
    counts.update({kind: int(n) for kind, n in found.items() if kind not in counts})
    return counts


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model: the mean of each metric over fitted layers; α and α̂ also
    averaged with each layer's number of eigenvalues as weight (``*_mean_by_evals``);
    and the number of layers of each verdict kind, ``n_<kind>`` (:func:`verdict_counts`:
    they add up to ``layers``)."""
    table = table.copy()
    if "model" not in table:
        table["model"] = 0
    rows = []
    for model, group in table.groupby("model", sort=True):
        fitted = group[(group["reason"] == "") & group.get("alpha", pd.Series(
            np.nan, index=group.index)).notna()]
        summary: dict[str, Any] = {"model": model, "layers": len(group),
                                   "layers_fitted": len(fitted),
                                   "layers_unfitted": len(group) - len(fitted)}
        for metric in SUMMARY_METRICS:
            if metric in fitted:
                summary[metric] = float(fitted[metric].mean())
        weights = fitted["num_evals"].astype(float)
        for metric in ("alpha", "alpha_weighted"):
            if metric in fitted and weights.sum() > 0:
                summary[f"{metric}_mean_by_evals"] = float((fitted[metric] * weights).sum()
                                                           / weights.sum())
        if "phase" in group:
            summary.update({f"n_{kind}": count for kind, count in verdict_counts(group).items()})
        rows.append(summary)
    return pd.DataFrame(rows)


def population_spread(summary: pd.DataFrame) -> pd.DataFrame:
    """Across the models of a population: mean, std, min and max of each summary metric."""
    numeric = summary.drop(columns=["model"]).select_dtypes("number")
    return numeric.agg(["mean", "std", "min", "max"]).T.rename_axis("metric").reset_index()


def population_layers(table: pd.DataFrame, accuracy: np.ndarray | None = None,
                      seed: int = 0) -> pd.DataFrame:
    """One row per layer across the models of a population: models, α median and
    quartiles, mean with a bootstrap 95% interval over models, the share of models with
    each verdict kind (``verdicts``) and (given each model's test ``accuracy``,
    (n_models,)) Spearman ρ of α with accuracy and its bootstrap interval over models."""
    rows = []
    rng = np.random.default_rng(seed)
    for layer_id, group in table.groupby("layer_id", sort=True):
        alpha = group["alpha"].to_numpy(dtype=float)
        finite = alpha[np.isfinite(alpha)]
        row: dict[str, Any] = {"layer_id": int(layer_id), "name": group["name"].iloc[0],
                               "shape": group["shape"].iloc[0],
                               "num_evals": int(group["num_evals"].iloc[0]),
                               "models": len(group), "models_fitted": int(finite.size)}
        if finite.size:
            means = finite[rng.integers(0, finite.size, size=(1000, finite.size))].mean(1)
            q1, median, q3 = np.quantile(finite, [0.25, 0.5, 0.75])
            row.update(alpha_median=median, alpha_q1=q1, alpha_q3=q3,
                       alpha_mean=finite.mean(), alpha_mean_lo=np.quantile(means, 0.025),
                       alpha_mean_hi=np.quantile(means, 0.975))
        shares = verdict_kinds(group).value_counts(normalize=True)
        row["verdicts"] = ", ".join(f"{kind} {share:.0%}" for kind, share in shares.items())
        if accuracy is not None:
            models = group["model"].to_numpy(dtype=int)
            rho, low, high = spearman_interval(alpha, np.asarray(accuracy)[models], seed=seed)
            row.update(spearman_alpha_accuracy=rho, spearman_lo=low, spearman_hi=high)
        rows.append(row)
    return pd.DataFrame(rows)


def analyze_full(
    model_or_path: Any,
    layers: Iterable[str] | str | None = None,
    mp_fit: bool = True,
    randomize: bool = True,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    reference: bool = False,
    fit: str = "power_law",
    population: bool = False,
    max_eigenvalues: int = DEFAULT_MAX_EIGENVALUES_PER_MATRIX,
    keep_eigenvalues: bool = True,
    eig_dtype: str = "auto",
    alternatives: bool = True,
    uncertainty: bool = False,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
) -> SpectraResult:
    """Analyze every weight matrix of a model (or each model of a population).

    See :func:`analyze` for the arguments; this also returns the model summary and the
    eigenvalues (for plots).
    """
    if fit not in ("power_law", "truncated_power_law"):
        raise ConfigError(f"fit must be 'power_law' or 'truncated_power_law', got {fit!r}")
    if eig_dtype not in EIG_DTYPES:
        raise ConfigError(f"eig_dtype must be one of {EIG_DTYPES}, got {eig_dtype!r}")
    if n_bootstrap < 20:
        raise ConfigError(f"n_bootstrap={n_bootstrap} is too few for a 95% interval; use ≥ 20")
    options = Options(mp_fit=mp_fit, randomize=randomize, seed=seed, reference=reference,
                      fit=fit, max_eigenvalues=max_eigenvalues, eig_dtype=eig_dtype,
                      alternatives=alternatives, uncertainty=uncertainty,
                      n_bootstrap=n_bootstrap)
    start = time.perf_counter()
    resolved = resolve_device(device)
    loaded = load_weights(model_or_path, population=population)
    if not loaded.layers:
        raise CheckpointError(f"{loaded.label} has no weight matrices (≥2-D tensors) to analyze")
    chosen = _select(loaded.layers, layers)
    rows, esds, random_esds = [], {}, {}
    for layer in chosen:
        row, eigenvalues, random_eigenvalues = analyze_layer(layer, resolved, options)
        if layer.model is not None:
            row = {"model": layer.model, **row}
        if keep_eigenvalues and eigenvalues is not None:
            esds[len(rows)] = eigenvalues
            if random_eigenvalues is not None:
                random_esds[len(rows)] = random_eigenvalues
        rows.append(row)
    table = pd.DataFrame(rows)
    table.insert(table.columns.get_loc("name"), "layer_id",
                 table.groupby("model").cumcount() if "model" in table else range(len(table)))
    summary = summarize(table)
    summary.insert(1, "ignored_1d_tensors", loaded.ignored_tensors)
    return SpectraResult(table=table, summary=summary, eigenvalues=esds,
                         random_eigenvalues=random_esds, label=loaded.label,
                         seconds=time.perf_counter() - start, order=loaded.order)


def analyze(
    model_or_path: Any,
    layers: Iterable[str] | str | None = None,
    mp_fit: bool = True,
    randomize: bool = True,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    reference: bool = False,
    fit: str = "power_law",
    population: bool = False,
    max_eigenvalues: int = DEFAULT_MAX_EIGENVALUES_PER_MATRIX,
    eig_dtype: str = "auto",
    alternatives: bool = True,
    uncertainty: bool = False,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
) -> pd.DataFrame:
    """One row per layer, in the model's order: power-law fit and its tests, norm metrics,
    MP fit, randomized comparison, phase, evidence and verdict.

    model_or_path: ``nn.Module``, state dict, weights file, Hugging Face directory, memlab
    run directory / ``Run`` (then one row per layer per model), ``"minilm"`` or
    ``"efficientnet-lite0"``. layers: names to keep, or a regular expression string.
    mp_fit, randomize: add the MP bulk fit / the shuffled-weights comparison (seeded by
    ``seed``). device: "auto" (GPU if any), "cpu" or "cuda". reference: WeightWatcher
    0.7.7's estimator and conv conventions. fit: "power_law" or "truncated_power_law"
    (adds tpl_alpha, tpl_lambda_cut). population: a mapping whose tensors have a leading
    model axis. eig_dtype: "auto" (float32 arithmetic for ≤ 32-bit weights with a per-layer
    float64 recomputation where float32 cannot resolve the result), "float32" or
    "float64". alternatives: likelihood-ratio tests against exponential, log-normal and
    truncated power law (cheap). uncertainty: bootstrap interval of α and x_min and the
    GOF p-value, ``n_bootstrap`` resamples each, seeded by ``seed`` (costly: off by
    default, see docs/spectra.md). Layers that cannot be fitted keep their row, with
    ``reason`` saying why.
    """
    return analyze_full(model_or_path, layers=layers, mp_fit=mp_fit, randomize=randomize,
                        seed=seed, device=device, reference=reference, fit=fit,
                        population=population, max_eigenvalues=max_eigenvalues,
                        keep_eigenvalues=False, eig_dtype=eig_dtype,
                        alternatives=alternatives, uncertainty=uncertainty,
                        n_bootstrap=n_bootstrap).table


def tail_candidates(eigenvalues: np.ndarray, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                    seed: int = 0) -> pd.DataFrame:
    """Both readings of one spectrum side by side: memlab's robust tail and WeightWatcher's
    (reference) tail. For each: α with x_min fixed, its bootstrap interval and the GOF p of
    that tail (:func:`.bootstrap.fixed_xmin_uncertainty`, the same method for both), the
    likelihood-ratio tests, and the verdict computed from them. The robust row also carries
    the interval and GOF p of the whole procedure, x_min choice included
    (``alpha_lo_full``, ``alpha_hi_full``, ``gof_p_full``)."""
    from memlab.measures.spectra.bootstrap import fixed_xmin_uncertainty

    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    robust = fit_power_law(values)
    rows = []
    for label, fit in (("memlab robust", robust),
                       ("WeightWatcher (reference)", fit_power_law(values, mode="reference"))):
        if not fit.ok:
            rows.append({"fit": label, "reason": fit.reason})
            continue
        alpha, low, high, gof_p = fixed_xmin_uncertainty(values, fit.xmin,
                                                         n_bootstrap=n_bootstrap, seed=seed)
        tests = likelihood_ratio_tests(values, fit.xmin)
        row: dict[str, Any] = {"fit": label, "alpha_reported": fit.alpha, "alpha": alpha,
                               "alpha_lo": low, "alpha_hi": high, "xmin": fit.xmin,
                               "n_tail": fit.n_tail, "D": fit.D, "gof_p": gof_p}
        if fit is robust:
            spread = tail_uncertainty(values, robust, n_bootstrap=n_bootstrap, seed=seed)
            row.update(alpha_lo_full=spread.alpha_lo, alpha_hi_full=spread.alpha_hi,
                       xmin_lo_full=spread.xmin_lo, xmin_hi_full=spread.xmin_hi,
                       gof_p_full=spread.gof_p)
        for name, result in tests.items():
            row[f"lr_{name}_R"], row[f"lr_{name}_p"] = result.R, result.p
        phase, evidence, words = verdict(
            num_evals=values.size, alpha=alpha, sigma=fit.sigma, fit_reason="",
            rank_fraction=1.0, alpha_lo=low, alpha_hi=high, gof_p=gof_p,
            tests={k: (v.R, v.p) for k, v in tests.items()})
        row.update(phase=phase, evidence=evidence, verdict=words)
        rows.append(row)
    return pd.DataFrame(rows)


# Columns of the per-layer table worth showing, in display order (CLI, reports).
TABLE_COLUMNS = ["layer_id", "name", "type", "shape", "pooled", "num_evals", "alpha",
                 "alpha_lo", "alpha_hi", "xmin", "n_tail", "gof_p", "lr_lognormal_p",
                 "alpha_weighted", "log_spectral_norm", "log_norm", "stable_rank",
                 "num_spikes", "mp_softrank", "num_traps", "rand_distance", "phase",
                 "verdict", "reason"]
