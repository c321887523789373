"""The noise study: conditions with exact corruption, the model stack, and a tiny end-to-end run."""

import numpy as np
import pytest
import torch

from memlab.cli import main
from memlab.models import MLP
from memlab.studies.noise import (
    NoiseStudyConfig,
    Regularization,
    StackedMLP,
    corrupted_examples,
    make_conditions,
    run_noise_study,
    stack_accuracy,
    take_subset,
    train_stack,
)
from tests.conftest import make_blobs


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
def test_randomized_labels_have_exactly_the_fraction_asked(fraction):
    dataset = make_blobs(n_train=400, n_classes=5)
    noisy = dataset.with_label_noise(fraction, seed=3)
    changed = noisy.y_train != dataset.y_train
    assert changed.sum() == round(fraction * 400)  # every flipped label really differs
    np.testing.assert_array_equal(corrupted_examples(noisy), changed)


def test_conditions():
    dataset = make_blobs(n_train=200)
    conditions = make_conditions(dataset, (0.2, 0.5), seed=0)
    assert list(conditions) == ["real", "randY", "randX", "noise20", "noise50"]
    assert (conditions["randY"].y_train != dataset.y_train).all()
    assert corrupted_examples(conditions["randX"]).all()
    np.testing.assert_array_equal(conditions["randX"].y_train, dataset.y_train)
    assert not np.isclose(conditions["randX"].x_train, dataset.x_train).any()
    assert corrupted_examples(conditions["noise20"]).sum() == 40
    assert not corrupted_examples(conditions["real"]).any()
    assert take_subset(dataset, 50, seed=0).n_train == 50


def test_stacked_mlp_matches_nn_mlp():
    torch.manual_seed(0)
    net = StackedMLP(3, 10, (8, 6), 4, seed=1)
    x = torch.randn(3, 5, 10)
    logits = net(x)
    for k in range(3):
        module = MLP((10,), 4, hidden=(8, 6))
        state = {}
        for i, (w, b) in enumerate(zip(net.weights, net.biases)):
            state[f"layers.{i}.weight"], state[f"layers.{i}.bias"] = w[k], b[k]
        module.load_state_dict(state)
        torch.testing.assert_close(logits[k], module(x[k]))


def test_train_stack_fits_separable_data_and_dropout_zero_changes_nothing():
    dataset = make_blobs(n_train=120, spread=0.3)
    x = torch.from_numpy(np.stack([dataset.x_train] * 2))
    y = torch.from_numpy(np.stack([dataset.y_train] * 2))
    results = []
    for reg in (None, Regularization.none(2)):
        net = StackedMLP(2, 10, (16,), 3, seed=0)
        train_stack(net, x, y, epochs=5, batch_size=32, lr=0.05, momentum=0.9,
                    regularization=reg, seed=0)
        results.append(net(x).detach())
        assert stack_accuracy(net, x, y).mean() == 1.0
    torch.testing.assert_close(results[0], results[1])


def test_end_to_end_tiny_study(tmp_path):
    path = tmp_path / "blobs.npz"
    make_blobs(n_train=150, n_test=60, n_classes=3, spread=1.5).save(path)
    config = NoiseStudyConfig.quick(
        str(path), n_train=None, hidden=(16,), noise_fractions=(0.3,), seeds=2, epochs=4,
        difficulty_seeds=4, capacity_sizes=(50, 10_000), capacity_widths=(8,), capacity_seeds=2,
        capacity_epochs=3, csr_every=2, csr_examples=20, lass_iter=3, sweep_epochs=2,
        regularizers={"dropout": (0.5,), "adversarial": (2.0,)}, workers=1)
    result = run_noise_study(config, tmp_path / "study", progress=False)
    tables = tmp_path / "study" / "tables"
    for name in ("curves", "examples", "dynamics", "difficulty", "dispersion", "capacity",
                 "csr", "sweep", "directions"):
        assert (tables / f"{name}.parquet").exists(), name
    assert (tmp_path / "study" / "report.html").stat().st_size > 10_000
    curves = result.tables["curves"]
    assert set(curves.condition) == {"real", "randY", "randX", "noise30"}
    assert curves.loc[curves.condition == "noise30", "train_acc_corrupted"].notna().all()
    assert list(result.tables["sweep"].regularizer) == ["none", "dropout", "adversarial"]
    assert result.tables["csr"].csr.between(0, 1).all()
    assert len(result.tables["directions"]) >= 8
    assert set(result.tables["capacity"].value[result.tables["capacity"].axis == "size"]) == {50}
    assert "[10000] exceed the 150 training examples" in result.summary["notes"][0]


def test_cli_reports_bad_input_in_one_line(capsys):
    assert main(["noise-study", "--data", "no-such-data", "--quick"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["noise-study", "--quick", "--seeds", "0"]) == 2
