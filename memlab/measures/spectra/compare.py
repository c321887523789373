"""Base model against a fine-tuned one, layer by layer.

For every weight present in both (matched by name and shape): α of each and Δα =
α_tuned − α_base (the robust fit of :mod:`.powerlaw` on each ESD), the distance between the
weights (‖ΔW‖_F, relative to ‖W_base‖_F, and the spectral norm ‖ΔW‖₂), and the ESD of the
difference ΔW = W_tuned − W_base: its numerical rank, its MP fit and spikes (a low-rank
update such as LoRA's shows as a few spikes over the bulk of the fine-tuning noise), and
its own tail fit. This is what LoRA/PEFT analyses look at: where the update went and how
many directions it has.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from memlab.errors import ConfigError
from memlab.measures.spectra.eigen import eigenvalue_resolution, matrix_eigenvalues, resolve_device
from memlab.measures.spectra.mp import fit_marchenko_pastur
from memlab.measures.spectra.phases import MIN_EIGENVALUES_TO_FIT
from memlab.measures.spectra.powerlaw import fit_power_law
from memlab.measures.spectra.weights import load_weights


def _alpha(eigenvalues: np.ndarray) -> float:
    if eigenvalues.size < MIN_EIGENVALUES_TO_FIT:
        return math.nan
    return fit_power_law(eigenvalues).alpha


def compare(base: Any, tuned: Any, layers: str | None = None, device: str = "auto",
            keep_eigenvalues: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, dict]:
    """One row per shared weight of ``base`` and ``tuned`` (any input :func:`analyze`
    takes), in the base model's order. Eigenvalues in float64.

    Columns: name, shape, num_evals, alpha_base, alpha_tuned, delta_alpha, frobenius_base,
    delta_frobenius (‖ΔW‖_F), delta_relative (‖ΔW‖_F/‖W_base‖_F), delta_spectral (‖ΔW‖₂),
    delta_rank (eigenvalues of ΔWᵀΔW above the float64 resolution), delta_num_spikes and
    delta_mp_bulk_max (MP fit of the difference's ESD), delta_alpha_tail (tail fit of the
    difference's ESD). keep_eigenvalues: also return {name: (base, tuned, difference)
    ESDs}. Layers in only one of the two models are listed in ``only_in`` rows.
    """
    import re

    resolved = resolve_device(device)
    base_layers = {layer.name: layer for layer in load_weights(base).layers}
    tuned_layers = {layer.name: layer for layer in load_weights(tuned).layers}
    pattern = re.compile(layers) if layers else None
    rows, esds = [], {}
    for name, first in base_layers.items():
        if pattern is not None and not pattern.search(name):
            continue
        second = tuned_layers.get(name)
        if second is None:
            rows.append({"name": name, "reason": "only in the base model"})
            continue
        if second.shape != first.shape:
            rows.append({"name": name, "reason": f"shapes differ: {first.shape} vs "
                                                 f"{second.shape}"})
            continue
        a, b = first.slices(), second.slices().to(first.weight.dtype)
        difference = (b.to(torch.float64) - a.to(torch.float64))
        evals_a = matrix_eigenvalues(a, resolved, torch.float64)
        evals_b = matrix_eigenvalues(b, resolved, torch.float64)
        evals_d = matrix_eigenvalues(difference, resolved, torch.float64)
        _, rows_, cols = a.shape
        delta_max = float(evals_d[-1]) if evals_d.size else 0.0
        tolerance = max(eigenvalue_resolution(max(float(evals_a[-1]), float(evals_b[-1])),
                                              min(rows_, cols), torch.float64), 1e-300)
        mp = fit_marchenko_pastur(evals_d, rows_, cols)
        alpha_base, alpha_tuned = _alpha(evals_a), _alpha(evals_b)
        rows.append({
            "name": name, "shape": "×".join(map(str, first.shape)), "num_evals": evals_a.size,
            "alpha_base": alpha_base, "alpha_tuned": alpha_tuned,
            "delta_alpha": alpha_tuned - alpha_base,
            "frobenius_base": math.sqrt(float(evals_a.sum())),
            "delta_frobenius": math.sqrt(float(evals_d.sum())),
            "delta_relative": math.sqrt(float(evals_d.sum()) / float(evals_a.sum()))
            if evals_a.sum() > 0 else math.nan,
            "delta_spectral": math.sqrt(delta_max),
            "delta_rank": int((evals_d > tolerance).sum()),
            "delta_num_spikes": mp.num_spikes, "delta_mp_bulk_max": mp.bulk_max,
            "delta_alpha_tail": _alpha(evals_d[evals_d > tolerance]), "reason": "",
        })
        if keep_eigenvalues:
            esds[name] = (evals_a, evals_b, evals_d)
    for name in tuned_layers.keys() - base_layers.keys():
        rows.append({"name": name, "reason": "only in the tuned model"})
    if not rows:
        raise ConfigError("the two models share no weight matrix to compare")
    table = pd.DataFrame(rows)
    return (table, esds) if keep_eigenvalues else table
