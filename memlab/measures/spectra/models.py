"""Every layer of every model of a population, one row each, for cross-views with the
models' accuracies (the atlas): α raw and aspect-corrected with their intervals
(:mod:`.aspect`), and the norms, α̂, stable rank and spikes of :func:`.analyze.analyze_full`
(its Marchenko–Pastur fit on, its randomization and likelihood-ratio tests off: they answer
other questions and would dominate the time)."""

from __future__ import annotations

import pandas as pd

from memlab.measures.spectra.analyze import analyze_full
from memlab.measures.spectra.aspect import aspect_corrected_alpha
from memlab.measures.spectra.weights import load_weights

# analyze_full's columns kept beside the aspect module's α (its own "alpha" is the same
# robust fit as raw_alpha; one estimator per column: the aspect module's, with intervals).
KEPT = ["model", "layer_id", "name", "shape", "alpha_weighted", "log_norm",
        "log_spectral_norm", "stable_rank", "num_spikes"]


def layer_table(run, seed: int = 0, n_bootstrap: int = 200) -> pd.DataFrame:
    """One row per (model, weight matrix) of ``run``: model, layer_id, name, shape, alpha
    (raw robust fit) with alpha_lo / alpha_hi, alpha_corrected with its interval, the
    submatrices pooled, then α̂ (``alpha_weighted``), log Frobenius and spectral norms,
    stable rank and spikes. Matrices are the layers as :func:`.weights.load_weights`
    reads them (a convolution: its kernel positions' matrices, as ``analyze`` does)."""
    spectra = analyze_full(run, mp_fit=True, randomize=False, alternatives=False,
                           keep_eigenvalues=False, device="cpu", seed=seed)
    table = spectra.table[[c for c in KEPT if c in spectra.table]].copy()
    rows = []
    for layer in load_weights(run).layers:
        matrix = layer.weight.detach().to("cpu").double().numpy()
        if matrix.ndim > 2:  # (out, in, *kernel): one matrix of the stacked positions
            matrix = matrix.reshape(matrix.shape[0], -1)
        found = aspect_corrected_alpha(matrix, seed=seed, n_bootstrap=n_bootstrap)
        rows.append({"model": layer.model, "name": layer.name, "alpha": found.raw_alpha,
                     "alpha_lo": found.raw_lo, "alpha_hi": found.raw_hi,
                     "alpha_corrected": found.alpha, "alpha_corrected_lo": found.alpha_lo,
                     "alpha_corrected_hi": found.alpha_hi,
                     "n_submatrices": found.n_submatrices})
    alphas = pd.DataFrame(rows)
    return table.merge(alphas, on=["model", "name"], how="left")
