"""The elasticity study and CLI: clustering helpers with known answers, a linear network
whose ratios are known in closed form (and whose ReLU and linear twins are one network, so
the verdict is planted), the paired interval on planted differences, the tables, figures and
report from a saved result, resuming without retraining and after SIGKILL to bit-identical
results, the caller's RNG left alone, and one-line errors for bad options."""

import dataclasses
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
from scipy import stats

from memlab.cli import main
from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.io import loads_strict
from memlab.measures.elasticity import (
    intra_inter_ratio,
    kernel_kmeans,
    symmetric_accuracy,
    symmetrize,
)
from memlab.measures.stats import paired_interval
from memlab.population import store
from memlab.studies.base import Result
from memlab.studies.elasticity import RECIPE, ElasticityConfig, run
from memlab.studies.elasticity.data import multiclass_data, pair_data
from memlab.studies.elasticity.study import check_data
from memlab.studies.elasticity.tables import matrices_of
from tests.conftest import make_blobs

REPO = Path(__file__).resolve().parents[1]


def saved(data, path: Path) -> str:
    """The dataset as an .npz file the study loads by path."""
    data.save(path)
    return str(path)


def recipe(hidden, epochs: int, n_seeds: int) -> PopulationConfig:
    """The study's base recipe with these hidden widths, epochs and replicates."""
    return dataclasses.replace(RECIPE, model_kwargs={"hidden": list(hidden)}, epochs=epochs,
                               n_models=n_seeds)


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
    # similarities depend on the probes' inputs only (docs/science.md §4), at every
    # checkpoint; and the verdict "ReLU exceeds its twin" must be "no" (difference 0).
    data = make_blobs(n_train=150, n_classes=3, n_features=6, spread=0.3)
    config = ElasticityConfig(data=saved(data, tmp_path / "blobs.npz"),
                              population=recipe((), 3, 2), checkpoints=(0, 1, 3),
                              probe_per_class=5, pairs=((0, 1),), cluster_per_class=12)
    result = run(config, tmp_path / "study", progress=False)
    tasks = {t.name: t for t in (multiclass_data(data, config), pair_data(data, (0, 1), config))}
    ratio = result.tables["ratio"]
    assert set(ratio["task"]) == set(tasks) and len(ratio) == 2 * 2 * 2 * 3
    for row in ratio.itertuples():
        task = tasks[row.task]
        s_rel, s_ker = linear_closed_form(data.x_train[task.probes[row.seed]])
        hidden = task.hidden[row.seed]
        assert row.ratio_rel == pytest.approx(intra_inter_ratio(s_rel, hidden), rel=1e-6)
        assert row.ratio_ker == pytest.approx(intra_inter_ratio(np.abs(s_ker), hidden),
                                              rel=1e-6)
    for task in tasks.values():  # the two tabled tasks' matrices, seed 0
        s_rel, s_ker = linear_closed_form(data.x_train[task.probes[0]])
        for activation in ("relu", "linear"):
            entry = matrices_of(result.tables["matrices"], task.name, activation)
            np.testing.assert_allclose(entry["s_rel"], s_rel, rtol=1e-6)
            np.testing.assert_allclose(entry["s_ker"], s_ker, rtol=1e-6, atol=1e-9)
            np.testing.assert_array_equal(entry["classes"], task.hidden[0])
    verdicts = result.tables["verdicts"].set_index("task")
    np.testing.assert_allclose(verdicts["difference"], 0, atol=1e-12)
    assert (verdicts["verdict"] == "no").all()
    assert {v["verdict"] for v in result.summary["ratio"].values()} == {"no"}
    # Tight, well-separated blobs: the kernel xᵀx' + 1 separates the hidden pair exactly.
    clustering = result.tables["clustering"].set_index(["seed", "features", "method"])
    for seed in range(2):
        assert clustering.loc[(seed, "relu", "kernel K-means on S_ker"),
                              "symmetric_accuracy"] == 1.0
        assert clustering.loc[(seed, "inputs", "K-means on raw inputs"),
                              "symmetric_accuracy"] == 1.0


def test_paired_interval_on_planted_differences():
    # mean 2, sd 1 over 3 seeds: t(0.975, 2) · 1/√3 either side, straddling 0.
    half = stats.t.ppf(0.975, 2) / np.sqrt(3)
    out = paired_interval(np.array([1.0, 2.0, 3.0]))
    assert out["difference"] == pytest.approx(2.0)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((2 - half, 2 + half))
    assert out["verdict"] == "cannot decide"
    assert paired_interval(np.array([1.0, 1.1, 0.9]))["verdict"] == "yes"
    assert paired_interval(np.array([-1.0, -1.1, -0.9]))["verdict"] == "no"
    assert paired_interval(np.zeros(4))["verdict"] == "no"  # equal: ReLU does not exceed
    one = paired_interval(np.array([5.0]))
    assert one["verdict"] == "cannot decide" and one["ci_low"] is None


def test_study_tables_report_and_resume(tmp_path, monkeypatch):
    data = make_blobs(n_train=120, n_classes=3, n_features=8)
    config = ElasticityConfig(data=saved(data, tmp_path / "blobs.npz"),
                              population=recipe((16,), 4, 2), checkpoints=(0, 4),
                              probe_per_class=5, pairs=((0, 1),), cluster_per_class=10)
    out = tmp_path / "study"
    result = run(config, out, progress=False)
    # Training learned the blobs (epoch 0 is the untrained network).
    acc = result.tables["ratio"].pivot_table("train_acc", ["task", "activation"], "epoch")
    assert (acc[4] > acc[0] + 0.15).all(), acc
    summary = loads_strict((out / "summary.json").read_text())  # strict JSON
    assert set(summary["ratio"]) == {"3-class", "0+1 vs rest"}
    # 3 similarity methods x 2 activations, each against raw-input K-means
    assert len(result.tables["clustering_vs_inputs"]) == 7
    html = (out / "report.html").read_text()
    assert "the ReLU ratio exceeds its linear twin" in html
    # A loaded result draws the same figures from its tables.
    loaded = Result.load(out)
    assert sorted(loaded.figures()) == ["blobs_heatmaps", "blobs_ratio"]  # dataset: blobs
    paths = loaded.save_figures(tmp_path / "figures")
    assert sorted(p.name for p in paths) == ["elasticity_blobs_heatmaps.png",
                                             "elasticity_blobs_ratio.png"]
    # A second call returns the saved result without training anything.
    import memlab.studies.elasticity.study as study

    def no_training(*args, **kwargs):
        raise AssertionError("resumed study trained again")

    monkeypatch.setattr(study, "train_population", no_training)
    again = run(config, out, progress=False)
    pd.testing.assert_frame_equal(again.tables["ratio"], result.tables["ratio"])


def test_populations_pair_the_twins_and_balance_the_pair_task(tmp_path):
    from memlab.population import open_run

    data = make_blobs(n_train=150, n_classes=5, n_features=6)  # more negatives than positives
    config = ElasticityConfig(data=saved(data, tmp_path / "blobs.npz"),
                              population=recipe((8,), 1, 2), checkpoints=(0, 1),
                              probe_per_class=3, pairs=((0, 2),), cluster_per_class=5)
    run(config, tmp_path / "out", progress=False)
    pair = open_run(tmp_path / "out" / "populations" / "pair-0-2")
    assert pair.config.task == "binary" and pair.n_models == 4
    mask = pair.membership_mask
    positives = np.isin(data.y_train, (0, 2))
    assert mask[:, positives].all()  # every positive, and as many negatives
    np.testing.assert_array_equal(mask.sum(1), 2 * positives.sum())
    assert not np.array_equal(mask[0], mask[1])  # replicate r draws its own negatives
    np.testing.assert_array_equal(mask[:2], mask[2:])  # the twins share them
    multi = open_run(tmp_path / "out" / "populations" / "multiclass")
    assert multi.membership_mask.all()
    # The ReLU network and its twin start from the same weights (replicate 1 of each).
    from memlab.engine.modelspec import ModelSpec

    spec = ModelSpec.resolve("mlp", {"hidden": [8]})
    relu = spec.with_kwargs({"hidden": [8], "activation": "relu"}).initial_state(
        multi.config, (6,), 5, 1)
    linear = spec.with_kwargs({"hidden": [8], "activation": "linear"}).initial_state(
        multi.config, (6,), 5, 1)
    assert all(torch.equal(relu[n], linear[n]) for n in relu)


def test_bad_settings_are_config_errors():
    data = make_blobs(n_classes=3)
    with pytest.raises(ConfigError, match="class pair"):
        check_data(ElasticityConfig(pairs=((0, 7),)), data)
    with pytest.raises(ConfigError, match="checkpoints"):
        ElasticityConfig(checkpoints=(5, 1)).validate()
    with pytest.raises(ConfigError, match="after the last epoch"):
        ElasticityConfig(checkpoints=(0, 30)).validate()  # 20 epochs
    with pytest.raises(ConfigError, match="sets the sweep"):
        ElasticityConfig(population=dataclasses.replace(RECIPE, sweep={"lr": [0.1]})
                         ).validate()
    # The last epoch is always measured, a checkpoint or not.
    assert ElasticityConfig(checkpoints=(0, 5)).epochs == (0, 5, 20)


def test_cli_reports_bad_options_in_one_line(tmp_path, capsys):
    code = main(["elasticity", "--data", "digits", "--out", str(tmp_path), "--pairs", "5x8"])
    assert code == 2
    assert "--pairs takes class pairs" in capsys.readouterr().err
    assert main(["elasticity", "--out", str(tmp_path), "--lr", "nan"]) == 2
    assert "lr must be finite" in capsys.readouterr().err


def test_from_run_measures_a_population_member(tmp_path, blobs):
    from memlab.population import train_population

    train_population(blobs, model="mlp", model_kwargs={"hidden": [16]}, n_models=2,
                     chunk_size=2, epochs=2, batch_size=32, out=tmp_path / "run",
                     progress=False, n_workers=1)
    out = tmp_path / "member"
    code = main(["elasticity", "--from-run", str(tmp_path / "run"), "--member", "1",
                 "--probe-per-class", "4", "--quiet", "--out", str(out)])
    assert code == 0
    result = Result.load(out)
    entry = matrices_of(result.tables["matrices"], "model 1", result.summary["model"])
    assert entry["s_rel"].shape == (12, 12)
    assert result.summary["ratio_rel"] == pytest.approx(
        intra_inter_ratio(entry["s_rel"], entry["classes"]))
    assert (out / "report.html").exists()
    assert main(["elasticity", "--from-run", str(tmp_path / "run"), "--member", "5",
                 "--out", str(tmp_path / "other")]) == 2
    assert main(["elasticity", "--from-run", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "other")]) == 2


# ------------------------------------------------------------------ resume, RNG


def saved_outputs(out: Path) -> dict[str, object]:
    """Every table the study saved and every record of its populations (not the run
    directories' bookkeeping)."""
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
    assert not (killed / "tables" / "ratio.parquet").exists(), "killed after it finished"

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
    for table in ("ratio", "clustering", "verdicts", "matrices"):
        assert f"tables/{table}.parquet" in straight
    assert any("/records/elasticity_ratio_rel" in name for name in straight)
    assert sorted(resumed) == sorted(straight)
    for name, expected in straight.items():
        if isinstance(expected, pd.DataFrame):
            pd.testing.assert_frame_equal(resumed[name], expected, check_exact=True)
        else:
            np.testing.assert_array_equal(resumed[name], expected, err_msg=name)
