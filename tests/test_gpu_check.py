"""benchmarks/gpu_check.py runs on the CPU at a tiny size, so it cannot rot before a GPU run.

Known answers on a CPU: the "device" is the CPU itself, so every engine path must give
exactly the same bits twice (differences 0, records agreeing everywhere); the projected
time of 2,000 models must follow from the measured epoch time and overhead; and a run
cut off in a late section must still have written the earlier ones.
"""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_gpu_check_on_cpu_reports_every_section(tmp_path):
    gpu_check = load_script()
    assert gpu_check.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["complete"] is True
    sections = results["sections"]
    assert set(sections) == {"environment", "equivalence", "throughput",
                             "feldman_zhang_mnist", "spectra"}
    paths = {k: v for k, v in sections["equivalence"].items() if k != "elapsed_s"}
    assert set(paths) == {"MLP fast path", "CNN1d", "user module with BatchNorm",
                          "language model"}
    for path, found in paths.items():  # CPU vs CPU: deterministic
        assert found["weights_max_rel"] == 0.0, path
        assert all(v == 1.0 for k, v in found.items() if k.endswith("_agreement")), path
    fz = sections["feldman_zhang_mnist"]
    for dtype in ("float32", "bfloat16"):
        m = fz[dtype]
        chunks = -(-2000 // fz["chunk"])
        expected = chunks * (m["overhead_s"] + 10 * m["seconds_per_epoch"])
        assert m["projected_2000_models_s"] == pytest.approx(expected)
        assert m["models_per_s"] == pytest.approx(2000 / expected)
        assert m["compute_dtype"] == dtype
    assert sections["spectra"]["alpha_max_abs_difference"] == 0.0
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "## feldman_zhang_mnist" in markdown and "| path |" in markdown


def test_a_run_cut_off_late_has_written_the_earlier_sections(tmp_path, monkeypatch):
    gpu_check = load_script()

    def cut_off(*args, **kwargs):
        raise KeyboardInterrupt  # what a time limit's signal does mid-section

    monkeypatch.setattr(gpu_check, "load", cut_off)  # section 2 starts by loading data
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["complete"] is False
    assert set(results["sections"]) == {"environment"}
    assert results["sections"]["environment"]["device"] == "cpu"
    assert "## environment" in (tmp_path / "gpu_check.md").read_text()
