"""Known-answer tests for memlab.measures.spectra: fits, MP, inputs, conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from memlab.errors import CheckpointError, ConfigError
from memlab.measures.spectra import analyze, analyze_full, fit_marchenko_pastur, mp_edge
from memlab.measures.spectra.powerlaw import candidate_scan, fit_power_law

torch.set_num_threads(1)


def power_law_matrix(alpha: float, n_eigenvalues: int, seed: int) -> np.ndarray:
    """A square matrix whose squared singular values are i.i.d. draws from the pure power
    law p(λ) ∝ λ^-α on [1, ∞): W = diag(√λ) Vᵀ with V a dense random orthogonal matrix
    (a product of three Householder reflections: O(n²), unlike a QR), so WᵀW = V diag(λ) Vᵀ."""
    rng = np.random.default_rng(seed)
    eigenvalues = (1 - rng.random(n_eigenvalues)) ** (-1 / (alpha - 1))  # inverse CDF
    weights = np.diag(np.sqrt(eigenvalues))
    for _ in range(3):
        normal = rng.standard_normal(n_eigenvalues)
        normal /= np.linalg.norm(normal)
        weights = weights - 2 * np.outer(weights @ normal, normal)  # W ← W (I − 2vvᵀ)
    return weights


def loop_scan(x: np.ndarray, unbiased: bool, two_sided_ks: bool, min_tail: int):
    """The straightforward per-x_min loop the vectorized scan must equal."""
    n = x.size
    alphas, distances = np.full(n - 1, np.nan), np.full(n - 1, np.inf)
    for i in range(n - 1):
        tail = x[i:]
        n_tail = tail.size
        alpha = 1 + (n_tail - 1 if unbiased else n_tail) / np.sum(np.log(tail / x[i]))
        alphas[i] = alpha
        if n_tail < min_tail or alpha <= 1:
            continue
        fitted = 1 - (tail / x[i]) ** (1 - alpha)
        steps = np.arange(n_tail) / n_tail
        gap = np.abs(fitted - steps)
        if two_sided_ks:
            gap = np.maximum(gap, np.abs(fitted - steps - 1 / n_tail))
        distances[i] = gap.max()
    return alphas, distances


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.0])
def test_pure_power_law_matrix_gives_its_alpha(alpha):
    weights = power_law_matrix(alpha, 2000, seed=int(alpha))
    row = analyze({"layer.weight": weights}, mp_fit=False, randomize=False, device="cpu").iloc[0]
    assert row["num_evals"] == 2000
    assert abs(row["alpha"] - alpha) <= 2 * row["sigma"], (row["alpha"], row["sigma"])
    assert abs(row["alpha"] - alpha) <= 0.3
    if alpha == 3:  # α = 2 and 4 sit on band edges: "undecided" is the right answer there
        assert row["phase"] == "heavy-tailed"
    else:
        assert row["phase"] in ("undecided", "heavy-tailed", "very-heavy-tailed",
                                "bulk-decay")


def test_gaussian_matrix_is_random_like_with_mp_edge_of_theory():
    rng = np.random.default_rng(0)
    n_rows, n_cols, std = 1000, 400, 0.05
    weights = rng.standard_normal((n_rows, n_cols)) * std
    row = analyze({"fc.weight": weights}, device="cpu").iloc[0]
    _, theory_edge = mp_edge(std, n_rows, n_cols)
    assert row["mp_bulk_max"] == pytest.approx(theory_edge, rel=0.05)
    assert row["lambda_max"] == pytest.approx(theory_edge, rel=0.05)
    assert row["num_spikes"] == 0
    assert row["phase"] == "random-like"
    assert row["num_traps"] == 0


def test_spike_is_counted_and_mp_sigma_ignores_it():
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((800, 300))
    u, v = rng.standard_normal(800), rng.standard_normal(300)
    weights += 3 * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v)) * math.sqrt(800)
    fit = fit_marchenko_pastur(np.linalg.eigvalsh(weights.T @ weights), 800, 300)
    assert fit.sigma == pytest.approx(1.0, rel=0.03)
    assert fit.num_spikes == 1


@pytest.mark.parametrize("mode", ["reference", "robust"])
def test_vectorized_scan_equals_loop(mode):
    rng = np.random.default_rng(3)
    # A realistic ESD: MP bulk plus a heavy tail, 300 values.
    x = np.sort(np.concatenate([rng.chisquare(5, 270), (1 - rng.random(30)) ** -0.5 * 10]))
    unbiased = two_sided = mode == "robust"
    min_tail = 10 if mode == "robust" else 2
    alphas, distances = candidate_scan(x, unbiased=unbiased, two_sided_ks=two_sided,
                                       min_tail=min_tail)
    loop_alphas, loop_distances = loop_scan(x, unbiased, two_sided, min_tail)
    np.testing.assert_allclose(alphas, loop_alphas, rtol=1e-12)
    np.testing.assert_allclose(distances, loop_distances, rtol=1e-10, atol=1e-12)


def test_reference_mode_matches_weightwatcher_fit():
    ww_powerlaw = pytest.importorskip("weightwatcher.WW_powerlaw")
    rng = np.random.default_rng(4)
    for _ in range(3):
        x = np.linalg.eigvalsh(np.cov(rng.standard_t(3, size=(200, 600))))
        ours = fit_power_law(x, mode="reference")
        theirs = ww_powerlaw.WWFit(x[x > 1e-5])
        assert ours.alpha == pytest.approx(theirs.alpha, abs=1e-9)
        assert ours.xmin == pytest.approx(theirs.xmin, rel=1e-12)


def test_robust_fit_refuses_a_handful_of_points():
    fit = fit_power_law(np.array([1.0, 2.0, 3.0]))
    assert not fit.ok and math.isnan(fit.alpha) and "3" in fit.reason


def test_module_inputs_conv_embedding_attention_and_nothing_dropped():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(4, 64, kernel_size=3),
        nn.Conv2d(3, 48, kernel_size=3),
        nn.Embedding(5000, 32),
        nn.MultiheadAttention(32, 4),
        nn.Linear(32, 2),  # 2 eigenvalues: cannot be fitted, must keep its row
    )
    result = analyze_full(model, device="cpu")
    table = result.table.set_index("name")
    assert table.loc["0", "type"] == "conv1d" and table.loc["0", "num_evals"] == 3 * 4
    assert table.loc["1", "type"] == "conv2d" and table.loc["1", "num_evals"] == 9 * 3
    assert table.loc["2", "type"] == "embedding" and table.loc["2", "N"] == 5000
    assert {"3.in_proj.q", "3.in_proj.k", "3.in_proj.v", "3.out_proj"} <= set(table.index)
    assert table.loc["4", "reason"] != "" and table.loc["4", "phase"] == "unfitted"
    assert len(table) == 8
    assert result.summary.loc[0, "layers"] == 8


def test_safetensors_file_and_population_stack(tmp_path):
    from safetensors.torch import save_file

    rng = np.random.default_rng(5)
    state = {"layers.0.weight": torch.from_numpy(rng.standard_normal((3, 200, 100)))}
    table = analyze(state, population=True, device="cpu")
    assert list(table["model"]) == [0, 1, 2]
    path = tmp_path / "model.safetensors"
    save_file({"layers.0.weight": state["layers.0.weight"][0].contiguous()}, str(path))
    single = analyze(path, device="cpu").iloc[0]
    assert single["alpha"] == pytest.approx(table.loc[0, "alpha"])
    assert single["rand_distance"] == pytest.approx(table.loc[0, "rand_distance"])


def test_randomization_is_seeded():
    weights = {"w": power_law_matrix(3.0, 200, seed=0)}
    first = analyze(weights, seed=7, device="cpu")
    again = analyze(weights, seed=7, device="cpu")
    other = analyze(weights, seed=8, device="cpu")
    assert first.loc[0, "rand_lambda_max"] == again.loc[0, "rand_lambda_max"]
    assert first.loc[0, "rand_lambda_max"] != other.loc[0, "rand_lambda_max"]


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        analyze(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        analyze(bad)
    with pytest.raises(ConfigError, match="no layer matches"):
        analyze({"w": np.eye(20)}, layers="nothing")
    with pytest.raises(CheckpointError, match="no weight matrices"):
        analyze({"bias": np.ones(3)})


def test_nan_weights_get_a_reason_not_a_crash():
    weights = np.ones((20, 10))
    weights[0, 0] = np.nan
    row = analyze({"w": weights}, device="cpu").iloc[0]
    assert "NaN" in row["reason"]
