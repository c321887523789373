"""benchmarks/gpu_check.py runs on the CPU at a tiny size, so it cannot rot before a GPU run.

Known answers on a CPU: the "device" is the CPU itself, so model k is the same bits in every
chunk size and every engine path gives the CPU's bits twice; no rate can beat the GEMM
peak of its dtype measured in the same run (the old script's clamped difference of two
timings printed 1.7e6 TFLOP/s); the projected time of 2,000 models follows from the
measured parts; and a run cut off in a late section must still have written the earlier
ones.
"""

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
SECTIONS = {"environment": "Environment", "invariance": "Invariance across chunk sizes",
            "peak": "Device peak (GEMM)", "equivalence": "CPU vs device",
            "rates": "Training rates: engine, torch.func recipe, per-model loop",
            "feldman_zhang_mnist": "Feldman & Zhang's MNIST setting (extrapolated)",
            "host_copy": "Per-epoch shuffles on the host and their copy",
            "spectra": "Spectra on the device vs CPU"}


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One --tiny run on the CPU (about 30 s) shared by the checks below."""
    out = tmp_path_factory.mktemp("gpu_check")
    assert load_script().main(["--tiny", "--device", "cpu", "--out", str(out)]) == 0
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_every_section_is_reported(tiny_run):
    results, markdown = tiny_run
    assert results["complete"] is True
    assert set(results["sections"]) == set(SECTIONS)
    titles = [line[5:] for line in markdown.splitlines() if line.startswith("#### ")]
    assert titles == list(SECTIONS.values())  # in this order: invariance first
    assert results["sections"]["environment"]["device"] == "cpu"


def test_model_k_is_the_same_bits_in_every_chunk_size_on_the_cpu(tiny_run):
    invariance = tiny_run[0]["sections"]["invariance"]
    paths = {k: v for k, v in invariance.items() if isinstance(v, dict)}
    assert set(paths) == {f"{path} {dtype}" for dtype in ("float32", "bfloat16")
                          for path in ("MLP fast path", "user CNN with BatchNorm (generic path)")}
    for path, found in paths.items():
        assert found["bit_identical"] is True, path
        assert found["weights_max_abs"] == found["records_max_abs"] == 0.0, path
        assert set(found["by_chunk"]) == {"1", "2"}, path  # each against the 4-model chunk
    assert invariance["bit_identical"] is True


def test_cpu_against_itself_is_exact(tiny_run):
    sections = tiny_run[0]["sections"]
    paths = {k: v for k, v in sections["equivalence"].items() if k != "elapsed_s"}
    assert set(paths) == {"MLP fast path", "CNN1d", "user module with BatchNorm",
                          "language model"}
    for path, found in paths.items():
        assert found["weights_max_rel"] == 0.0, path
        assert all(v == 1.0 for k, v in found.items() if k.endswith("_agreement")), path
    assert sections["spectra"]["alpha_max_abs_difference"] == 0.0


def test_no_rate_beats_the_measured_peak_of_its_dtype(tiny_run):
    sections = tiny_run[0]["sections"]
    first = {dtype: sections["peak"][dtype]["gflops"] for dtype in ("float32", "bfloat16")}
    for dtype, p in sections["peak"].items():
        if isinstance(p, dict):
            assert 0 < p["gflops_min"] <= p["gflops"] <= p["gflops_max"], dtype
    # measured again before every rate, the highest median so far counting: each rate
    # records the peak it was compared with
    peak = {dtype: p["gflops"] for dtype, p in sections["rates"]["peak"].items()}
    for dtype, p in sections["rates"]["peak"].items():
        assert p["gflops"] == max(p["medians"]) >= first[dtype], dtype
    rows = sections["rates"]["rows"]
    trainers = {(r["model"], r["dtype"], r["trainer"]) for r in rows}
    for model in ("MLP 784-512-256-10", "user CNN (UserCNN2d, BatchNorm)"):
        for dtype in ("float32", "bfloat16"):
            for trainer in ("engine", "engine, epochs only", "torch.func recipe"):
                assert (model, dtype, trainer) in trainers
        assert (model, "float32", "per-model loop") in trainers
    for r in rows:
        where = (r["model"], r["dtype"], r["trainer"])
        assert r["seconds"] > 0 and r["rate"] > 0, where
        assert r["gflops"] == pytest.approx(r["rate"] * r["flops_per_example_step"] / 1e9)
        assert first[r["dtype"]] <= r["peak_gflops"] <= peak[r["dtype"]], where
        assert r["gflops"] <= r["peak_gflops"], where
        assert r["fraction_of_peak"] == pytest.approx(r["gflops"] / r["peak_gflops"])
        if "runs_s" in r:  # a whole call: the median of at least 3 timed runs, no clamp
            assert len(r["runs_s"]) >= 3 and r["seconds"] == statistics.median(r["runs_s"])
    fz = sections["feldman_zhang_mnist"]
    for dtype in ("float32", "bfloat16"):
        assert fz[dtype]["peak_gflops"] >= peak[dtype]  # (measured again before it)
        assert fz[dtype]["fraction_of_peak"] == pytest.approx(
            fz[dtype]["gflops"] / fz[dtype]["peak_gflops"])
        assert 0 < fz[dtype]["gflops"] <= fz[dtype]["peak_gflops"]
        assert fz[dtype]["fraction_of_peak"] <= 1.0


def test_the_projected_feldman_zhang_time_follows_from_the_measured_parts(tiny_run):
    fz = tiny_run[0]["sections"]["feldman_zhang_mnist"]
    assert fz["extrapolated"] is True and fz["chunks"] == -(-2000 // fz["chunk"])
    for dtype in ("float32", "bfloat16"):
        m = fz[dtype]
        assert m["compute_dtype"] == dtype
        assert m["median_s"] == statistics.median(m["runs_s"]) > 0
        assert m["epoch_median_s"] == statistics.median(m["epoch_runs_s"]) > 0
        remaining = 10 - fz["epochs_measured"]
        assert m["per_chunk_s"] == pytest.approx(m["median_s"] + remaining * m["epoch_median_s"])
        assert m["projected_2000_models_s"] == pytest.approx(fz["chunks"] * m["per_chunk_s"])
        assert m["models_per_s"] == pytest.approx(2000 / m["projected_2000_models_s"])


def test_the_host_copy_cost_is_a_measured_fraction_of_an_epoch(tiny_run):
    sections = tiny_run[0]["sections"]
    copy = sections["host_copy"]
    for key in ("engine_s", "numpy_draws_s", "copy_s", "device_per_model_s",
                "device_batched_s"):
        assert 0 < copy[key] < 10, key
    for dtype in ("float32", "bfloat16"):
        epoch = sections["feldman_zhang_mnist"][dtype]["epoch_median_s"]
        assert copy[f"fraction_of_{dtype}_epoch"] == pytest.approx(copy["engine_s"] / epoch)


def test_the_markdown_is_ready_to_paste(tiny_run):
    results, markdown = tiny_run
    env = results["sections"]["environment"]
    heading = markdown.splitlines()[0]
    assert heading.startswith("### GPU check on ") and env["cpu"] in heading
    intro = markdown.splitlines()[2]
    assert env["torch"] in intro and env["date"] in intro
    for title in SECTIONS.values():
        assert f"\n#### {title}\n" in markdown
    for header in ("| path | compute dtype | chunk sizes | bit-identical |",
                   "| dtype | GFLOP/s (median) |", "| model | dtype | trainer |",
                   "| per epoch | ms |", "projected 2,000 models (min)"):
        assert header in markdown
    assert "**Extrapolated**" in markdown
    assert "e+" not in markdown  # figures written out, not in exponent notation


def test_comparisons_see_one_ulp_and_keep_nan_apart():
    gpu_check = load_script()
    x = np.array([1.0, 2.0, np.nan], np.float32)
    same = gpu_check.compare({"a": x}, {"a": x.copy()})
    assert same == {"bit_identical": True, "differing": [], "max_abs": 0.0}
    one_ulp = x.copy()
    one_ulp[1] = np.nextafter(one_ulp[1], np.float32(3))
    found = gpu_check.compare({"a": x}, {"a": one_ulp})
    assert found["bit_identical"] is False and found["differing"] == ["a"]
    assert 0 < found["max_abs"] < 1e-6
    nan_moved = np.array([1.0, np.nan, 3.0], np.float32)
    assert math.isinf(gpu_check.compare({"a": x}, {"a": nan_moved})["max_abs"])


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
    assert "#### Environment" in (tmp_path / "gpu_check.md").read_text()
