"""``memlab spectra`` end to end, its report, bad inputs, and the fit guards and options
added for speed (float32 with float64 fallback), narrow tails and truncated power laws."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from memlab.measures.spectra import analyze
from memlab.measures.spectra.powerlaw import fit_power_law, fit_truncated_power_law

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    """``python -m memlab.cli ARGS`` in a fresh process (stderr and exit code as a user sees
    them), single-threaded, with matplotlib's headless backend."""
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "memlab.cli", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memlab: error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def small_safetensors(tmp_path: Path) -> Path:
    """Two linear layers (float32, as checkpoints are stored) and a bias: 2 matrices."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_file({"fc1.weight": torch.randn(200, 50, generator=generator),
               "fc1.bias": torch.zeros(200),
               "fc2.weight": torch.randn(10, 200, generator=generator)}, str(path))
    return path


def test_cli_writes_tables_and_report_with_plots(small_safetensors: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli("spectra", small_safetensors, "--out", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "2 matrices in" in result.stdout
    table = pd.read_parquet(out / "spectra.parquet")
    assert list(table["name"]) == ["fc1", "fc2"]
    assert list(table["eig_dtype"]) == ["float32", "float32"]
    assert np.isfinite(table.loc[0, "alpha"]) and table.loc[0, "num_evals"] == 50
    summary = pd.read_parquet(out / "summary.parquet")
    assert summary.loc[0, "layers"] == 2 and summary.loc[0, "ignored_1d_tensors"] == 1
    report = (out / "report.html").read_text()
    assert "α by depth" in report and "<svg" in report  # α by depth, inline SVG
    assert "Empirical spectral densities" in report and "data:image/png;base64," in report
    assert "too few eigenvalues to fit (10 &lt; 50)" in report  # fc2: 10 eigenvalues
    assert "fc1" in report and "fc2" in report


def test_cli_missing_file_is_one_line_error(tmp_path: Path):
    result = run_cli("spectra", tmp_path / "missing.safetensors")
    assert_one_line_error(result, "does not exist")


def test_cli_non_weights_files_are_one_line_errors(tmp_path: Path):
    text = tmp_path / "notes.safetensors"
    text.write_text("these are not weights\n")
    assert_one_line_error(run_cli("spectra", text), "safetensors")
    csv = tmp_path / "table.pt"
    csv.write_text("a,b\n1,2\n")
    assert_one_line_error(run_cli("spectra", csv), "weights_only=True")


class Pickled:
    """A custom object: unpickling it would run code from the file."""

    def __init__(self) -> None:
        self.weight = torch.ones(4, 4)


def test_cli_refuses_pickle_that_needs_code_execution(tmp_path: Path):
    path = tmp_path / "model.pt"
    torch.save({"model": Pickled()}, path)
    assert_one_line_error(run_cli("spectra", path), "weights_only=True", "state dict")
    whole_module = tmp_path / "module.pt"
    torch.save(nn.Linear(4, 4), whole_module)  # the module object, not its state dict
    assert_one_line_error(run_cli("spectra", whole_module), "weights_only=True")


def test_cli_bad_options_are_one_line_errors(small_safetensors: Path, tmp_path: Path):
    assert_one_line_error(run_cli("spectra", small_safetensors, "--layers", "nothing"),
                          "no layer matches")
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_one_line_error(run_cli("spectra", small_safetensors, "--out", afile), "is a file")


# ------------------------------------------------------------------- truncated power law
def truncated_power_law_sample(alpha: float, cut: float, n: int, seed: int) -> np.ndarray:
    """n draws of p(λ) ∝ λ^-α e^(-λ/cut) on [1, ∞): pure power-law draws (inverse CDF)
    kept with probability e^(-(λ-1)/cut)."""
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    while sum(part.size for part in kept) < n:
        draws = (1 - rng.random(4 * n)) ** (-1 / (alpha - 1))
        kept.append(draws[rng.random(draws.size) < np.exp(-(draws - 1) / cut)])
    return np.concatenate(kept)[:n]


@pytest.mark.parametrize("seed", [0, 1])
def test_truncated_power_law_recovers_alpha_and_cutoff(seed):
    values = truncated_power_law_sample(alpha=2.5, cut=50.0, n=20_000, seed=seed)
    alpha, cut = fit_truncated_power_law(values, xmin=1.0)
    assert alpha == pytest.approx(2.5, abs=0.05)
    assert 35.0 < cut < 70.0, cut
    # The plain power law, blind to the cut-off, overestimates α on the same data.
    assert fit_power_law(values).alpha - 2.5 > abs(alpha - 2.5)


def test_truncated_power_law_on_a_pure_power_law_finds_no_cutoff():
    values = (1 - np.random.default_rng(2).random(20_000)) ** (-1 / 1.5)  # α = 2.5
    alpha, cut = fit_truncated_power_law(values, xmin=1.0)
    assert alpha == pytest.approx(2.5, abs=0.05)
    assert cut > 500.0  # ten times any cut-off the previous test resolves


def test_truncated_power_law_columns_through_analyze():
    rng = np.random.default_rng(3)
    eigenvalues = truncated_power_law_sample(alpha=2.5, cut=50.0, n=400, seed=3)
    basis, _ = np.linalg.qr(rng.standard_normal((400, 400)))
    weights = np.sqrt(eigenvalues)[:, None] * basis.T  # WᵀW = V diag(λ) Vᵀ
    row = analyze({"w": weights}, fit="truncated_power_law", mp_fit=False, randomize=False,
                  device="cpu").iloc[0]
    assert 1.5 < row["tpl_alpha"] < 3.5 and row["tpl_lambda_cut"] > 1


# ------------------------------------------------------------------------- narrow tails
def test_narrow_random_bulk_gets_nan_with_reason_not_alpha_77():
    """A randomly initialised 60,000 × 64 layer: N/M ≈ 940 squeezes the MP bulk into a
    factor of 1.13, and an MLE over such a sliver is forced to α ≥ 1 + 1/ln(1.13) ≈ 9
    (it was 77). The robust fit refuses; WeightWatcher's estimator still gives the number."""
    torch.manual_seed(0)
    layer = nn.Linear(64, 60_000)
    row = analyze(layer, device="cpu").iloc[0]
    assert math.isnan(row["alpha"]) and "too narrow" in row["reason"]
    assert row["phase"] == "random-like" and row["num_spikes"] == 0
    assert analyze(layer, device="cpu", reference=True).iloc[0]["alpha"] > 10


def test_tail_span_guard_leaves_real_power_laws_alone():
    rng = np.random.default_rng(4)
    values = (1 - rng.random(384)) ** (-1 / 2.0)  # α = 3
    guarded, unguarded = fit_power_law(values), fit_power_law(values, min_tail_span=1.0)
    assert guarded == unguarded
    assert fit_power_law(1 + 0.01 * rng.random(384)).reason.startswith("the nonzero")


# --------------------------------------------------------------------- float32 fast path
def power_law_weights(alpha: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    eigenvalues = (1 - rng.random(n)) ** (-1 / (alpha - 1))
    basis, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return np.sqrt(eigenvalues)[:, None] * basis.T


def test_float32_path_matches_float64():
    weights = power_law_weights(3.0, 384, seed=5)
    fast = analyze({"w": torch.from_numpy(weights).float()}, device="cpu").iloc[0]
    exact = analyze({"w": torch.from_numpy(weights).float()}, device="cpu",
                    eig_dtype="float64").iloc[0]
    assert fast["eig_dtype"] == "float32" and exact["eig_dtype"] == "float64"
    assert fast["n_tail"] == exact["n_tail"]
    assert fast["alpha"] == pytest.approx(exact["alpha"], abs=1e-4)
    assert fast["xmin"] == pytest.approx(exact["xmin"], rel=1e-4)
    assert fast["log_norm"] == pytest.approx(exact["log_norm"], abs=1e-6)
    # float64 weights keep float64 arithmetic under "auto".
    assert analyze({"w": weights}, device="cpu").iloc[0]["eig_dtype"] == "float64"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_collapse_is_found_in_either_precision(dtype):
    """Rank 20 of 100: the 80 zero eigenvalues sit at float32 round-off (~1e-7 λ_max) or
    float64 round-off (~1e-16 λ_max), above matrix_rank's tolerance on W alone, but below
    the eigensolve's resolution. A float32 collapse verdict is confirmed in float64."""
    rng = np.random.default_rng(6)
    low_rank = rng.standard_normal((300, 20)) @ rng.standard_normal((20, 100))
    row = analyze({"w": torch.from_numpy(low_rank).to(dtype)}, device="cpu").iloc[0]
    assert row["rank_fraction"] == pytest.approx(0.2)
    assert row["phase"] == "rank-collapse"
    assert row["eig_dtype"] == "float64"


def test_bad_eig_dtype_is_a_config_error():
    from memlab.errors import ConfigError

    with pytest.raises(ConfigError, match="eig_dtype"):
        analyze({"w": np.eye(20)}, eig_dtype="float16")
