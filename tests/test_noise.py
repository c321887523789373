"""The noise study: exact corruption, planted late learners, sweeps whose models do not
depend on the other strengths, the caller's RNG, and a tiny end-to-end run."""

import numpy as np
import pytest
import torch

from memlab.cli import main
from memlab.population import open_run
from memlab.studies.noise import (
    NoiseStudyConfig,
    corrupted_examples,
    learning_dynamics,
    make_conditions,
    run_noise_study,
    sweep_populations,
    take_subset,
)
from tests.conftest import make_blobs


def quiet(message: str) -> None:
    pass


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


def test_planted_noisy_labels_are_exactly_the_late_learners(tmp_path):
    # Well-separated blobs: every clean example is right after one epoch; the 12 planted
    # wrong labels can only be memorized, later. The dynamics must single out exactly them.
    data = make_blobs(n_train=120, n_test=30, spread=0.3).with_label_noise(0.1, seed=2)
    planted = corrupted_examples(data)
    config = NoiseStudyConfig.quick("blobs", hidden=(64,), seeds=2, epochs=80, batch_size=16,
                                    workers=1)
    tables = learning_dynamics({"planted": data}, config, tmp_path, quiet)
    first = tables["examples"].first_learned.fillna(config.epochs + 1).to_numpy()
    np.testing.assert_array_equal(first > 1, planted)
    assert first[planted].min() > 10
    curves = tables["curves"]
    assert curves.train_acc_clean.iloc[0] == 1.0 and curves.train_acc_corrupted.iloc[0] == 0.0
    # Full-data models (an all-ones mask): every seed trains on all 120 examples.
    assert open_run(tmp_path / "populations" / "dynamics-planted").membership_mask.all()


def test_a_sweep_model_is_the_same_bits_with_three_or_four_strengths(tmp_path):
    data = make_blobs(n_train=96, n_test=30, spread=1.5)
    config = NoiseStudyConfig.quick("blobs", hidden=(16,), sweep_epochs=3, sweep_seeds=2,
                                    batch_size=32, workers=1)
    strengths = {"dropout": (0.2, 0.4, 0.6, 0.8), "input_noise": (0.1, 0.3, 0.6, 1.0),
                 "weight_decay": (1e-3, 1e-2, 3e-2, 1e-1)}
    three = sweep_populations(data, "real", config, tmp_path / "three",
                              {k: v[:3] for k, v in strengths.items()})
    four = sweep_populations(data, "real", config, tmp_path / "four", strengths)
    for (name, values3, run3), (_, values4, run4) in zip(three, four, strict=True):
        assert values4[:len(values3)] == values3
        rows = 2 * len(values3)  # sweep_seeds models per strength, strength-major
        for record in ("train_margin", "test_margin", "val_acc", "epoch_train_loss_mean"):
            np.testing.assert_array_equal(run3.records(record), run4.records(record)[:rows],
                                          f"{name} {record}")
        if name != "none":  # the strengths really act: the extra one trains other models
            assert not np.array_equal(run4.records("test_margin")[rows:],
                                      run4.records("test_margin")[:2])


def test_end_to_end_tiny_study_leaves_the_callers_rng_alone(tmp_path):
    path = tmp_path / "blobs.npz"
    make_blobs(n_train=150, n_test=60, n_classes=3, spread=1.5).save(path)
    config = NoiseStudyConfig.quick(
        str(path), n_train=None, hidden=(16,), noise_fractions=(0.3,), seeds=2, epochs=4,
        difficulty_seeds=4, capacity_sizes=(50, 10_000), capacity_widths=(8,), capacity_seeds=2,
        capacity_epochs=3, csr_every=2, csr_examples=20, lass_iter=3, sweep_epochs=2,
        regularizers={"dropout": (0.5,), "adversarial": (2.0,)}, workers=1)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    result = run_noise_study(config, tmp_path / "study", progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # nothing drew from or reseeded it
    tables = tmp_path / "study" / "tables"
    for name in ("curves", "examples", "dynamics", "difficulty", "dispersion", "capacity",
                 "csr", "sweep", "directions"):
        assert (tables / f"{name}.parquet").exists(), name
    assert (tmp_path / "study" / "report.html").stat().st_size > 10_000
    curves = result.tables["curves"]
    assert set(curves.condition) == {"real", "randY", "randX", "noise30"}
    assert curves.loc[curves.condition == "noise30", "train_acc_corrupted"].notna().all()
    sweep = result.tables["sweep"]
    assert list(sweep.regularizer) == ["none", "dropout", "adversarial"]

    # Seeds follow the engine's rules: replicate r of every condition starts from the same
    # weights, so at epoch 0 every condition's CSR, sensitivity and validation accuracy are
    # the same numbers (the training-set accuracy is not: the labels differ).
    csr = result.tables["csr"]
    start = csr[csr.epoch == 0].set_index(["condition", "seed"])
    for name in ("randY", "randX", "noise30"):
        for column in ("csr", "val_acc"):
            np.testing.assert_array_equal(start.loc[name, column], start.loc["real", column])
    assert sorted(csr.epoch.unique()) == [0, 2, 4]
    # The last checkpoint is the trained model the engine evaluates at the end.
    run = open_run(tmp_path / "study" / "populations" / "csr-randY")
    final = csr[(csr.condition == "randY") & (csr.epoch == 4)].sort_values("seed")
    np.testing.assert_allclose(final.train_acc, run.records("train_correct").mean(1))
    assert run.membership_mask.all()

    directions = result.tables["directions"]
    assert len(directions) == 10  # 2 speed, 3 dispersion, capacity, 2 CSR, noise30, dropout
    speed = directions.finding.str.contains("reaches 90% training accuracy")
    assert directions[speed].reproduced.all()  # blobs: real reaches 90%, randY cannot
    assert set(result.tables["capacity"].value[result.tables["capacity"].axis == "size"]) == {50}
    assert "[10000] exceed the 150 training examples" in result.summary["notes"][0]


def test_cli_reports_bad_input_in_one_line(capsys):
    assert main(["noise-study", "--data", "no-such-data", "--quick"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["noise-study", "--quick", "--seeds", "0"]) == 2
