"""The elasticity study and CLI: clustering helpers with known answers, a linear network
whose ratios are known in closed form, the tables and report, resumption after SIGKILL to
bit-identical results, the caller's RNG left alone, and one-line errors for bad options."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from memlab.cli import main
from memlab.errors import ConfigError
from memlab.measures.elasticity import intra_inter_ratio, symmetrize
from memlab.population import store
from memlab.studies.elasticity import (
    StudyConfig,
    clustering_summary,
    kernel_kmeans,
    multiclass_task,
    pair_task,
    ratio_summary,
    run_study,
    symmetric_accuracy,
    write_report,
)
from tests.conftest import make_blobs

REPO = Path(__file__).resolve().parents[1]


def test_symmetric_accuracy_ignores_cluster_names():
    truth = np.array([3, 3, 3, 8, 8, 8])
    assert symmetric_accuracy(np.array([1, 1, 1, 0, 0, 0]), truth) == 1.0
    assert symmetric_accuracy(np.array([0, 0, 1, 1, 1, 1]), truth) == pytest.approx(5 / 6)
    assert symmetric_accuracy(np.array([0, 1, 0, 1, 0, 1]), truth) == pytest.approx(4 / 6)


def test_kernel_kmeans_recovers_blocks_and_ignores_a_constant_offset():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(-3, 0.5, (15, 2)), rng.normal(3, 0.5, (15, 2))])
    truth = np.repeat([0, 1], 15)
    kernel = points @ points.T
    assert symmetric_accuracy(kernel_kmeans(kernel, 2), truth) == 1.0
    assert symmetric_accuracy(kernel_kmeans(kernel + 100.0, 2), truth) == 1.0


def linear_closed_form(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A linear model f = wᵀx + b (or the true-class logit of Wx + b) after one SGD step:
    S_ker = xᵀx' + 1 and S_rel = |xᵀx' + 1| / (|x|² + 1), whatever the weights."""
    x = x.astype(np.float64)
    gram = x @ x.T + 1
    return symmetrize(np.abs(gram) / np.diag(gram)[:, None]), gram


def test_a_linear_network_has_its_closed_form_ratios_at_every_checkpoint(tmp_path):
    # No hidden layer: the "ReLU" network and its twin are the same linear model, whose
    # similarities depend on the probes' inputs only (SCIENCE.md §4), at every checkpoint.
    data = make_blobs(n_train=150, n_classes=3, n_features=6, spread=0.3)
    config = StudyConfig(hidden=(), checkpoints=(0, 1, 3), probe_per_class=5,
                         pairs=((0, 1),), cluster_per_class=12, n_seeds=2)
    result = run_study(data, config, out=tmp_path, progress=False)
    tasks = {t.name: t for t in (multiclass_task(data, config), pair_task(data, (0, 1), config))}
    assert set(result.ratio["task"]) == set(tasks)
    for row in result.ratio.itertuples():
        task = tasks[row.task]
        s_rel, s_ker = linear_closed_form(data.x_train[task.probes[row.seed]])
        hidden = task.hidden[row.seed]
        assert row.ratio_rel == pytest.approx(intra_inter_ratio(s_rel, hidden), rel=1e-6)
        assert row.ratio_ker == pytest.approx(intra_inter_ratio(np.abs(s_ker), hidden),
                                              rel=1e-6)
    for activation in ("relu", "linear"):
        entry = result.matrices[f"3-class/{activation}"]
        s_rel, s_ker = linear_closed_form(data.x_train[tasks["3-class"].probes[0]])
        np.testing.assert_allclose(entry["s_rel"], s_rel, rtol=1e-6)
        np.testing.assert_allclose(entry["s_ker"], s_ker, rtol=1e-6, atol=1e-9)
    # Tight, well-separated blobs: the kernel xᵀx' + 1 separates the hidden pair exactly.
    clustering = result.clustering.set_index(["seed", "features", "method"])
    for seed in range(2):
        assert clustering.loc[(seed, "relu", "kernel K-means on S_ker"),
                              "symmetric_accuracy"] == 1.0
        assert clustering.loc[(seed, "inputs", "K-means on raw inputs"),
                              "symmetric_accuracy"] == 1.0


def test_study_tables_and_report(tmp_path):
    data = make_blobs(n_train=120, n_classes=3, n_features=8)
    config = StudyConfig(hidden=(16,), checkpoints=(0, 4), probe_per_class=5, pairs=((0, 1),),
                         cluster_per_class=10, n_seeds=1)
    result = run_study(data, config, out=tmp_path / "study", progress=False)
    # 2 tasks x 2 activations x 2 checkpoints
    assert len(result.ratio) == 8
    assert set(result.ratio["activation"]) == {"relu", "linear"}
    # Training learned the blobs (epoch 0 is the untrained network).
    acc = result.ratio.pivot_table("train_acc", ["task", "activation"], "epoch")
    assert (acc[4] > acc[0] + 0.15).all(), acc
    # 3 similarity methods x 2 activations + 2 input baselines
    assert len(result.clustering) == 8
    assert "ratio_rel_relu" in ratio_summary(result.ratio)
    assert "mean" in clustering_summary(result.clustering)
    pngs = write_report(result, "blobs", tmp_path)
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert all(p.endswith(".png") for p in pngs)


def test_populations_pair_the_twins_and_balance_the_pair_task(tmp_path):
    from memlab.population import open_run

    data = make_blobs(n_train=150, n_classes=5, n_features=6)  # more negatives than positives
    config = StudyConfig(hidden=(8,), checkpoints=(0, 1), probe_per_class=3, pairs=((0, 2),),
                         cluster_per_class=5, n_seeds=2)
    run_study(data, config, out=tmp_path, progress=False)
    pair = open_run(tmp_path / "populations" / "pair-0-2")
    assert pair.config.task == "binary" and pair.n_models == 4
    mask = pair.membership_mask
    positives = np.isin(data.y_train, (0, 2))
    assert mask[:, positives].all()  # every positive, and as many negatives
    np.testing.assert_array_equal(mask.sum(1), 2 * positives.sum())
    assert not np.array_equal(mask[0], mask[1])  # replicate r draws its own negatives
    np.testing.assert_array_equal(mask[:2], mask[2:])  # the twins share them
    multi = open_run(tmp_path / "populations" / "multiclass")
    assert multi.membership_mask.all()
    # The ReLU network and its twin start from the same weights (replicate 1 of each).
    from memlab.population.modelspec import ModelSpec

    spec = ModelSpec.resolve("mlp", {"hidden": [8]})
    relu = spec.with_kwargs({"hidden": [8], "activation": "relu"}).initial_state(
        multi.config, (6,), 5, 1)
    linear = spec.with_kwargs({"hidden": [8], "activation": "linear"}).initial_state(
        multi.config, (6,), 5, 1)
    assert all(torch.equal(relu[n], linear[n]) for n in relu)


def test_bad_pairs_are_config_errors():
    data = make_blobs(n_classes=3)
    with pytest.raises(ConfigError, match="class pair"):
        StudyConfig(pairs=((0, 7),)).validate(data)
    with pytest.raises(ConfigError, match="checkpoints"):
        StudyConfig(checkpoints=(5, 1)).validate(data)
    with pytest.raises(ConfigError, match="last checkpoint"):
        StudyConfig(checkpoints=(0,)).validate(data)


def test_cli_reports_bad_options_in_one_line(tmp_path, capsys):
    code = main(["elasticity", "--data", "digits", "--out", str(tmp_path), "--pairs", "5x8"])
    assert code == 2
    assert "--pairs takes class pairs" in capsys.readouterr().err


def test_from_run_measures_a_population_member(tmp_path, blobs):
    from memlab.population import train_population

    train_population(blobs, model="mlp", model_kwargs={"hidden": [16]}, n_models=2,
                     chunk_size=2, epochs=2, batch_size=32, out=tmp_path / "run",
                     progress=False, n_workers=1)
    out = tmp_path / "member"
    code = main(["elasticity", "--from-run", str(tmp_path / "run"), "--model", "1",
                 "--probe-per-class", "4", "--out", str(out)])
    assert code == 0
    assert np.load(out / "member_s_rel.npy").shape == (12, 12)
    assert (out / "report.html").exists()
    assert main(["elasticity", "--from-run", str(tmp_path / "run"), "--model", "5",
                 "--out", str(out)]) == 2


# ------------------------------------------------------------------ resume, RNG


def saved_outputs(out: Path) -> dict[str, object]:
    """Every table and array the CLI saved (not the run directories' bookkeeping)."""
    found = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if relative.startswith("populations/") and "/records/" not in relative:
            continue
        if path.suffix == ".parquet":
            found[relative] = pd.read_parquet(path)
        elif path.suffix == ".npy":
            found[relative] = np.load(path)
    return found


@pytest.mark.slow
def test_quick_preset_resumes_after_sigkill_bit_identically_and_leaves_the_rng(tmp_path):
    command = ["elasticity", "--quick", "--data", "digits", "--quiet"]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "memlab.cli", *command, "--out",
                                str(killed)], env=env, cwd=REPO)
    first_chunk = killed / "populations" / "multiclass"
    deadline = time.time() + 120
    while time.time() < deadline and not store.chunk_is_complete(first_chunk, 0):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert store.chunk_is_complete(first_chunk, 0)
    assert not (killed / "ratio.parquet").exists(), "killed after it finished: no test"

    torch.manual_seed(123)
    before = torch.get_rng_state()
    threads = torch.get_num_threads()
    try:
        assert main([*command, "--out", str(tmp_path / "straight")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(before, torch.get_rng_state()), "the study moved torch's global RNG"

    subprocess.run([sys.executable, "-m", "memlab.cli", *command, "--out", str(killed)],
                   env=env, cwd=REPO, check=True, capture_output=True)
    resumed, straight = saved_outputs(killed), saved_outputs(tmp_path / "straight")
    assert "ratio.parquet" in straight and "clustering.parquet" in straight
    assert any(name.startswith("matrices/") for name in straight)
    assert any("/records/elasticity_ratio_rel" in name for name in straight)
    assert sorted(resumed) == sorted(straight)
    for name, expected in straight.items():
        if isinstance(expected, pd.DataFrame):
            pd.testing.assert_frame_equal(resumed[name], expected, check_exact=True)
        else:
            np.testing.assert_array_equal(resumed[name], expected, err_msg=name)
