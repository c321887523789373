"""SVD smoothing: keep each layer's power-law tail, drop the bulk (Martin & Mahoney).

For each weight matrix with a robust tail fit, every slice W = U S Vᵀ is replaced by
Σ_{σ_i² ≥ x_min} σ_i u_i v_iᵀ: the directions whose eigenvalue lies in the fitted tail.
Layers without a fit (too few eigenvalues, no admissible tail, depthwise or grouped
convolutions) are left unchanged and say so in the returned table.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from memlab.errors import ConfigError
from memlab.measures.spectra.phases import MIN_EIGENVALUES_TO_FIT
from memlab.measures.spectra.powerlaw import fit_power_law
from memlab.measures.spectra.weights import layers_from_module, layers_from_state_dict


def svd_smooth(model: nn.Module | Mapping[str, Any], layers: str | None = None
               ) -> tuple[nn.Module | dict[str, torch.Tensor], pd.DataFrame]:
    """A smoothed copy of ``model`` (an ``nn.Module`` or a state dict; the input is not
    modified) and a table: name, num_evals, n_kept (components kept), xmin, reason."""
    import re

    if isinstance(model, nn.Module):
        smoothed: Any = copy.deepcopy(model)
        found = layers_from_module(smoothed)  # weights are views of the copy's parameters
    elif isinstance(model, Mapping):
        smoothed = {k: (v.detach().clone() if isinstance(v, torch.Tensor)
                        else torch.from_numpy(np.array(v))) for k, v in model.items()}
        found, _ = layers_from_state_dict(smoothed)
    else:
        raise ConfigError(f"svd_smooth takes an nn.Module or a state dict, not a "
                          f"{type(model).__name__}")
    pattern = re.compile(layers) if layers else None
    rows = []
    for layer in found:
        if pattern is not None and not pattern.search(layer.name):
            continue
        row: dict[str, Any] = {"name": layer.name, "num_evals": 0, "n_kept": np.nan,
                               "xmin": np.nan, "reason": ""}
        if layer.groups != 1:
            row["reason"] = "grouped or depthwise convolution: left unchanged"
            rows.append(row)
            continue
        slices = layer.slices().to(torch.float64)
        u, s, vh = torch.linalg.svd(slices, full_matrices=False)
        eigenvalues = (s**2).flatten().numpy()
        row["num_evals"] = eigenvalues.size
        if eigenvalues.size < MIN_EIGENVALUES_TO_FIT:
            row["reason"] = f"too few eigenvalues to fit ({eigenvalues.size}): left unchanged"
            rows.append(row)
            continue
        fit = fit_power_law(eigenvalues)
        if not fit.ok:
            row["reason"] = f"no tail fit ({fit.reason}): left unchanged"
            rows.append(row)
            continue
        keep = (s**2 >= fit.xmin).to(s.dtype)
        new = (u * (s * keep)[:, None, :]) @ vh  # (k, rows, cols)
        weight = layer.weight
        if weight.ndim == 2:
            restored = new[0]
        else:  # inverse of LayerMatrix.slices for groups = 1: (k, out, in) → (out, in, *kernel)
            restored = new.permute(1, 2, 0).reshape(weight.shape)
        with torch.no_grad():
            weight.copy_(restored.to(weight.dtype))
        row.update(n_kept=int(keep.sum()), xmin=fit.xmin)
        rows.append(row)
    return smoothed, pd.DataFrame(rows)
