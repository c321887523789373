"""The population engine: isolation, equivalence with one-at-a-time training, resumption."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memlab.engine.config import (
    STREAM_SHUFFLE,
    PopulationConfig,
    membership_mask,
    model_rng,
)
from memlab.errors import ConfigError, RunError
from memlab.models import build_model
from memlab.population import open_run, store, train_population
from tests.conftest import chunk_of, initial_state, make_blobs

FAST = dict(model="mlp", model_kwargs={"hidden": [16, 16]})
GENERIC = dict(model="mlp", model_kwargs={"hidden": [16, 16], "activation": "tanh"})


def reference_loop(dataset, config: PopulationConfig, k: int) -> dict[str, torch.Tensor]:
    """Model k trained the way a user would write it: nn.Module, torch.optim, one model."""
    model = build_model(config.model, dataset.input_shape, dataset.n_classes,
                        **config.model_kwargs)
    model.load_state_dict(initial_state(config, dataset, k))
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
    members = np.flatnonzero(membership_mask(config, dataset.n_train, range(k, k + 1))[0])
    shuffler = model_rng(config.seed, k, STREAM_SHUFFLE)
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    for _ in range(config.epochs):
        order = members[shuffler.permutation(len(members))]
        for start in range(0, len(order), config.batch_size):
            index = torch.from_numpy(order[start:start + config.batch_size])
            loss = F.cross_entropy(model(x[index]), y[index],
                                   label_smoothing=config.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.state_dict()


def train_models(dataset, config, models):
    mask = membership_mask(config, dataset.n_train, models)
    return chunk_of(dataset, config, models, mask)


@pytest.mark.parametrize("arch", [FAST, GENERIC, dict(model="cnn1d",
                                                       model_kwargs={"channels": 4})])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_models_trained_together_equal_models_trained_alone(arch, optimizer):
    dataset = make_blobs(n_train=120, n_features=12)
    config = PopulationConfig(**arch, n_models=4, subset_fraction=0.6, epochs=4, batch_size=16,
                              optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01,
                              weight_decay=1e-3, label_smoothing=0.1)
    together = train_models(dataset, config, range(4)).weights
    for k in range(4):
        alone = train_models(dataset, config, range(k, k + 1)).weights
        reference = reference_loop(dataset, config, k)
        for name, stacked in together.items():
            np.testing.assert_allclose(stacked[k], alone[name][0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(stacked[k], reference[name].numpy(), rtol=1e-4,
                                       atol=2e-5, err_msg=f"model {k} {name}")
    # The models really trained (and differ from one another).
    assert not np.allclose(together["layers.0.weight" if arch["model"] == "mlp"
                                    else "conv1.weight"][0],
                           together["layers.0.weight" if arch["model"] == "mlp"
                                    else "conv1.weight"][1])


@pytest.mark.parametrize("arch", [FAST, GENERIC])
def test_model_ignores_examples_outside_its_subset(arch):
    """Rewrite every example outside model 0's subset: model 0 must not change at all."""
    dataset = make_blobs(n_train=150)
    config = PopulationConfig(**arch, n_models=3, subset_fraction=0.5, epochs=3, batch_size=16)
    mask = membership_mask(config, dataset.n_train)
    before = chunk_of(dataset, config, range(3), mask)

    outside = ~mask[0]
    altered = make_blobs(n_train=150)
    altered.x_train[outside] = np.random.default_rng(1).normal(
        size=altered.x_train[outside].shape).astype(np.float32) * 10
    altered.y_train[outside] = (altered.y_train[outside] + 1) % 3
    after = chunk_of(altered, config, range(3), mask)
    for name in before.weights:
        np.testing.assert_array_equal(before.weights[name][0], after.weights[name][0])
        assert not np.array_equal(before.weights[name][1], after.weights[name][1])


def test_membership_mask_is_per_model_and_exact(blobs):
    config = PopulationConfig(n_models=50, subset_fraction=0.7)
    mask = membership_mask(config, blobs.n_train)
    assert mask.shape == (50, blobs.n_train)
    assert (mask.sum(1) == round(0.7 * blobs.n_train)).all()
    # Row k does not depend on which other models are drawn with it.
    np.testing.assert_array_equal(mask[10:12], membership_mask(config, blobs.n_train,
                                                               range(10, 12)))
    # Every example is in about 70% of the subsets.
    assert abs(mask.mean() - 0.7) < 1e-9 and 0.4 < mask.mean(0).min()


def test_records_are_consistent(tmp_path, blobs):
    run = train_population(blobs, **FAST, n_models=6, chunk_size=4, epochs=8, batch_size=16,
                           out=tmp_path / "run", progress=False, n_workers=1)
    correct, margin = run.records("train_correct"), run.records("train_margin")
    assert correct.shape == (6, blobs.n_train) and correct.dtype == bool
    np.testing.assert_array_equal(correct, margin > 0)
    pred = run.records("test_pred")
    np.testing.assert_array_equal(run.records("test_correct"), pred == blobs.y_test)
    # The stored weights reproduce the recorded predictions.
    module = run.model(4)
    logits = module(torch.from_numpy(blobs.x_test)).detach()
    np.testing.assert_array_equal(logits.argmax(1).numpy(), pred[4])
    loss = F.cross_entropy(logits, torch.from_numpy(blobs.y_test), reduction="none")
    np.testing.assert_allclose(run.records("test_loss")[4], loss.numpy(), rtol=1e-4, atol=1e-5)
    table = run.models_table()
    assert (table.train_acc_in > 0.9).all(), "blobs are easy: models fit their subsets"
    np.testing.assert_array_equal(run.weights([5, 1])["layers.0.weight"],
                                  run.weights()["layers.0.weight"][[5, 1]])


def test_per_epoch_records(tmp_path, blobs):
    run = train_population(blobs, **FAST, n_models=3, epochs=5, batch_size=32,
                           record_epochs=True, out=tmp_path / "run", progress=False)
    per_epoch = run.records("epoch_train_correct")
    assert per_epoch.shape == (3, 5, blobs.n_train)
    np.testing.assert_array_equal(per_epoch[:, -1], run.records("train_correct"))
    assert run.records("epoch_test_loss").dtype == np.float16
    losses = run.records("epoch_train_loss_mean")
    assert (losses[:, -1] < losses[:, 0]).all()


SCRIPT = """
import sys
from memlab.population import train_population
from tests.conftest import make_blobs
train_population(make_blobs(n_train=1000, n_features=20), model="mlp",
                 model_kwargs={{"hidden": [32, 32]}}, n_models=16, chunk_size=2, epochs=40,
                 batch_size=32, out=sys.argv[1], n_workers={workers}, progress=False)
"""


def test_run_killed_midway_resumes_to_identical_arrays(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    killed = tmp_path / "killed"
    # Models 4.. wait (the executor's test hold): the kill provably lands mid-run.
    process = subprocess.Popen([sys.executable, "-c", SCRIPT.format(workers=1), str(killed)],
                               env={**env, "MEMLAB_TEST_HOLD": "4"}, cwd=repo)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [i for i in range(8) if store.chunk_is_complete(killed, i)]
        if len(done) >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "running", "the kill must land mid-run for this test"
    with pytest.raises(RunError, match="not complete"):
        open_run(killed)

    # Resume with 2 worker processes; compare with an uninterrupted in-process run.
    subprocess.run([sys.executable, "-c", SCRIPT.format(workers=2), str(killed)], env=env,
                   cwd=repo, check=True)
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-c", SCRIPT.format(workers=1), str(straight)], env=env,
                   cwd=repo, check=True)
    resumed, reference = open_run(killed), open_run(straight)
    assert resumed.record_names == reference.record_names
    for name in reference.record_names:
        np.testing.assert_array_equal(resumed.records(name), reference.records(name), name)
    for name, array in reference.weights().items():
        np.testing.assert_array_equal(resumed.weights()[name], array)
    assert not list((killed / "chunks").glob(".*")), "temporary chunk directories cleaned up"


def test_damaged_chunk_is_retrained_identically(tmp_path, blobs):
    kwargs = dict(**FAST, n_models=4, chunk_size=2, epochs=3, out=tmp_path / "run",
                  progress=False)
    run = train_population(blobs, **kwargs)
    reference = np.array(run.records("train_margin"))
    damaged = store.chunk_dir(run.path, 1) / "train_margin.npy"
    damaged.write_bytes(damaged.read_bytes()[:-7])  # truncated, as by a crash or a bad disk
    assert not store.chunk_is_complete(run.path, 1)
    rerun = train_population(blobs, **kwargs)
    np.testing.assert_array_equal(rerun.records("train_margin"), reference)


def test_mismatched_run_is_refused(tmp_path, blobs):
    train_population(blobs, **FAST, n_models=2, epochs=1, out=tmp_path / "run", progress=False)
    with pytest.raises(RunError, match=r"different settings.*\n.*n_models: run has 2, "
                                       r"requested 1"):
        train_population(blobs, **FAST, n_models=1, epochs=1, out=tmp_path / "run",
                         progress=False)
    with pytest.raises(RunError, match=r"different settings.*\n.*epochs: run has 1"):
        train_population(blobs, **FAST, n_models=2, epochs=2, out=tmp_path / "run",
                         progress=False)
    with pytest.raises(RunError, match="dataset: run has 'blobs'"):
        train_population(blobs.with_label_noise(0.1), **FAST, n_models=2, epochs=1,
                         out=tmp_path / "run", progress=False)


def test_corrupted_run_directory_gets_clear_errors(tmp_path, blobs):
    run = train_population(blobs, **FAST, n_models=2, epochs=1, out=tmp_path / "run",
                           progress=False)
    record = run.path / "records" / "test_margin.npy"
    record.write_bytes(record.read_bytes()[:50])
    with pytest.raises(RunError, match="test_margin.npy is unreadable"):
        open_run(run.path)
    (run.path / "manifest.json").write_text("{ not json")
    with pytest.raises(RunError, match="manifest .* is unreadable"):
        open_run(run.path)
    with pytest.raises(RunError, match="does not exist"):
        open_run(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty and is not a memlab run"):
        train_population(blobs, **FAST, n_models=2, epochs=1, out=tmp_path / "other",
                         progress=False)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_subset_fraction_outside_unit_interval_is_refused(fraction, blobs):
    with pytest.raises(ConfigError, match=r"subset_fraction must be a number in \(0, 1\)"):
        train_population(blobs, n_models=2, subset_fraction=fraction, progress=False)


def test_bad_settings_are_refused(blobs):
    with pytest.raises(ConfigError, match="unknown model"):
        train_population(blobs, model="resnet", progress=False)
    with pytest.raises(ConfigError, match="n_models must be a positive integer"):
        train_population(blobs, n_models=0, progress=False)
    with pytest.raises(ConfigError, match="cnn2d needs image inputs"):
        train_population(blobs, model="cnn2d", progress=False)


def test_cli_train_and_info(tmp_path):
    from memlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--models", "4", "--epochs", "2", "--subset",
                 "0.5", "--quiet", "--workers", "1", "--out", str(out)]) == 0
    assert main(["info", str(out)]) == 0
    assert open_run(out).records("test_correct").shape == (4, 359)


def test_cli_bad_input_is_one_line_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "memlab.cli", "train", "--subset", "1.2",
                             "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "--subset must be a number in (0, 1), got 1.2" in result.stderr
    assert "Traceback" not in result.stderr


def test_divergence_is_reported_not_recorded(blobs, tmp_path):
    with pytest.raises(ConfigError, match="training diverged.*lower the learning rate"):
        train_population(blobs, **FAST, n_models=2, epochs=3, lr=1e6, out=tmp_path / "r",
                         progress=False)


def test_compact_records_decode_to_the_same_arrays(tmp_path, blobs):
    settings = dict(**FAST, n_models=5, chunk_size=2, epochs=3, record_epochs=True,
                    progress=False, n_workers=1)
    plain = train_population(blobs, **settings, out=tmp_path / "plain")
    compact = train_population(blobs, **settings, compact_records=True,
                               out=tmp_path / "compact")
    for name in ("train_correct", "test_correct", "epoch_train_correct"):
        np.testing.assert_array_equal(compact.records(name), plain.records(name))
        assert compact.records(name).dtype == bool
    np.testing.assert_allclose(compact.records("train_margin"), plain.records("train_margin"),
                               rtol=1e-3, atol=1e-3)  # float16 on disk
    # 240 examples: 30 bytes of bits per model instead of 240 bools; float16 halves margins.
    assert compact._stored_record("train_correct").nbytes * 8 == plain._stored_record(
        "train_correct").nbytes
    assert compact._stored_record("train_margin").nbytes * 2 == plain._stored_record(
        "train_margin").nbytes
    pd_plain, pd_compact = plain.models_table(), compact.models_table()
    np.testing.assert_allclose(pd_compact.train_acc_in, pd_plain.train_acc_in)
    # The sizes the docs state (README, docs/scaling.md, --compact-records' help): 15 bytes
    # per model and example, about 10 compact (240 train + 60 test examples: bits padded).
    for run, expected in ((plain, 15.0), (compact, 10.125)):
        final = [name for name in run.record_names if name.startswith(("train_", "test_"))]
        stored = sum(run._stored_record(name).nbytes for name in final)
        assert stored / (5 * (240 + 60)) == pytest.approx(expected, abs=0.01)


def test_a_temporary_run_directory_goes_with_its_run():
    """out=None trains in a temporary directory: there while the Run is alive (its arrays
    are memory-mapped from it), removed once the Run is garbage-collected."""
    import gc

    from memlab.data import load
    from memlab.population import train_population

    data = load("digits")
    run = train_population(data, n_models=2, subset_fraction=0.5, epochs=1, batch_size=64,
                           n_workers=1, progress=False, save_weights=False)
    path = run.path
    assert path.is_dir() and path.name.startswith("memlab-run-")
    margins = np.array(run.records("test_margin"))
    del run
    gc.collect()
    assert not path.exists()
    assert margins.shape == (2, data.n_test)


def test_forked_and_spawned_workers_train_the_same_bits(tmp_path, blobs, monkeypatch):
    """Workers start by fork on Linux (torch already imported) and by spawn elsewhere: the
    start method must not change a single bit. The main process first runs a two-thread
    product, so the forked workers inherit a live OpenMP pool (and must not hang in it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.randn(512, 512) @ torch.randn(512, 512)
        runs = {}
        for method in ("fork", "spawn"):
            monkeypatch.setenv("MEMLAB_START_METHOD", method)
            runs[method] = train_population(blobs, **FAST, n_models=6, chunk_size=2, epochs=2,
                                            out=tmp_path / method, n_workers=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert runs["fork"].record_names == runs["spawn"].record_names
    for name in runs["fork"].record_names:
        np.testing.assert_array_equal(runs["fork"].records(name), runs["spawn"].records(name))
    for name, weights in runs["fork"].weights().items():
        np.testing.assert_array_equal(weights, runs["spawn"].weights()[name])


def test_an_unknown_start_method_is_one_line(tmp_path, blobs, monkeypatch):
    monkeypatch.setenv("MEMLAB_START_METHOD", "teleport")
    with pytest.raises(ConfigError, match="MEMLAB_START_METHOD='teleport'"):
        train_population(blobs, **FAST, n_models=4, chunk_size=2, epochs=1,
                         out=tmp_path / "run", n_workers=2, progress=False)
