"""Eigenvalues of WᵀW: the empirical spectral density (ESD) of a weight matrix.

For W (N × M after putting the longer side first, N ≥ M) the ESD is the M eigenvalues of
X = WᵀW, i.e. the squared singular values of W, *unnormalized* (WeightWatcher's
convention; α is scale-free but α̂, λ_max and the norms are not). They come from a
values-only symmetric eigensolver on the M × M Gram matrix, which gives the same values as
an SVD at a fraction of its cost: in float32 for weights stored in ≤ 32 bits (a few
1e-7·λ_max of error), with a per-layer float64 recomputation wherever the result hinges on
smaller eigenvalues, or in float64 throughout.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from memlab.errors import ConfigError


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
EIG_DTYPES = ("auto", "float32", "float64")
# float32 eigenvalues of the Gram matrix carry an absolute error of a few eps32 · λ_max
# (measured on all-MiniLM-L6-v2: at most 22 eps32 · λ_max for M = 384). memlab takes
# M · eps · λ_max as the resolution: a conservative bound (17× the largest error measured).
# A fit whose x_min is within this many resolutions of zero is recomputed in float64: its
# tail eigenvalues would otherwise carry relative errors of more than ~1e-3.
FLOAT32_XMIN_MARGIN = 100.0


def compute_dtype(weight_dtype: torch.dtype, eig_dtype: str) -> torch.dtype:
    """The dtype the Gram matrix and its eigenvalues are computed in."""
    if eig_dtype not in EIG_DTYPES:
        raise ConfigError(f"eig_dtype must be one of {EIG_DTYPES}, got {eig_dtype!r}")
    if eig_dtype == "float64" or (eig_dtype == "auto" and weight_dtype == torch.float64):
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
        with np.errstate(invalid="ignore", over="ignore"):  # inf weights: caught below
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
    if gram.device.type == "cpu":
        # Values only: LAPACK ?syevd reduces to tridiagonal form and stops (no eigenvectors).
        # SciPy's OpenBLAS build rather than torch's MKL: on the AMD EPYC (Zen 4) this was
        # measured on, 4.0 ms instead of 6.1 ms for a 384 × 384 float32 Gram matrix (best
        # of 60, same accuracy: 1.7e-6·λ_max); MKL picks slower code paths on AMD CPUs.
        from scipy.linalg import eigvalsh

        values = np.concatenate([eigvalsh(matrix, driver="evd", check_finite=False,
                                          overwrite_a=True)
                                 for matrix in gram.numpy()]).astype(np.float64)
        np.clip(values, 0.0, None, out=values)  # round-off: −1e-17
    else:
        values = torch.linalg.eigvalsh(gram, UPLO="U").clamp_min_(0.0)
        values = values.reshape(-1).to("cpu", torch.float64).numpy()
    return values if k == 1 else np.sort(values)  # eigvalsh sorts each slice already


def shuffled(slices: torch.Tensor, seed: int, name: str) -> torch.Tensor:
    """The same entries in a random order (seeded per layer: results do not depend on
    which other layers were analyzed)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    flat = slices.reshape(-1)
    return flat[torch.randperm(flat.numel(), generator=generator)].reshape(slices.shape)


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov distance (0 = same distribution, 1 = disjoint)."""
    if a.size == 0 or b.size == 0:
        return float("nan")
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(cdf_a - cdf_b).max())
