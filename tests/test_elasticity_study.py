"""The elasticity study and CLI on tiny data: clustering helpers with known answers, the
tables' shape, the report, and one-line errors for bad options."""

import numpy as np
import pytest

from memlab.cli import main
from memlab.errors import ConfigError
from memlab.studies.elasticity import (
    StudyConfig,
    clustering_summary,
    kernel_kmeans,
    ratio_summary,
    run_study,
    symmetric_accuracy,
    write_report,
)
from tests.conftest import make_blobs


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


def test_study_tables_and_report(tmp_path):
    data = make_blobs(n_train=120, n_classes=3, n_features=8)
    config = StudyConfig(hidden=(16,), checkpoints=(0, 2), probe_per_class=5, pairs=((0, 1),),
                         cluster_per_class=10, seeds=(0,))
    result = run_study(data, config, progress=False)
    # 2 tasks x 2 activations x 2 checkpoints
    assert len(result.ratio) == 8
    assert set(result.ratio["activation"]) == {"relu", "linear"}
    assert (result.ratio["ratio_rel"] > 0).all()
    # 3 similarity methods x 2 activations + 2 input baselines
    assert len(result.clustering) == 8
    assert result.clustering["symmetric_accuracy"].between(0.5, 1).all()
    assert "ratio_rel_relu" in ratio_summary(result.ratio)
    assert "mean" in clustering_summary(result.clustering)
    pngs = write_report(result, "blobs", tmp_path)
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert all(p.endswith(".png") for p in pngs)


def test_bad_pairs_are_config_errors():
    data = make_blobs(n_classes=3)
    with pytest.raises(ConfigError, match="class pair"):
        StudyConfig(pairs=((0, 7),)).validate(data)
    with pytest.raises(ConfigError, match="checkpoints"):
        StudyConfig(checkpoints=(5, 1)).validate(data)


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
