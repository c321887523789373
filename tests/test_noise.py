"""The noise study: exact corruption, planted late learners, verdicts on planted tables,
sweeps whose models do not depend on the other strengths, the caller's RNG, resume, and a
tiny end-to-end run."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from memlab.cli import main
from memlab.errors import ConfigError
from memlab.io import loads_strict
from memlab.measures.stats import NOT_REPRODUCED, REPRODUCED, UNDECIDED, t_interval
from memlab.population import open_run
from memlab.studies.base import Execution, Result, command_line
from memlab.studies.noise import RECIPE, STUDY, NoiseConfig, parts, run
from memlab.studies.noise.parts import (
    corrupted_examples,
    learning_dynamics,
    make_conditions,
    sweep_populations,
    take_subset,
)
from memlab.studies.noise.verdicts import directions
from memlab.testing import config_from_command
from tests.conftest import make_blobs

ONE_WORKER = Execution(n_workers=1, progress=False)


def recipe(**changes) -> object:
    """The study's recipe with ``hidden`` widths and other population settings changed."""
    hidden = changes.pop("hidden", None)
    if hidden is not None:
        changes["model_kwargs"] = {"hidden": list(hidden)}
    return dataclasses.replace(RECIPE, **changes)


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


def test_presets_are_the_papers_settings_and_round_trip():
    quick, full = NoiseConfig.quick(), NoiseConfig.full()
    assert (quick.n_train, quick.seeds, quick.population.epochs, quick.noise_fractions) == \
        (1000, 16, 60, (0.2, 0.5))
    assert (full.n_train, full.seeds, full.population.epochs) == (None, 32, 150) \
        and full == NoiseConfig()
    assert full.hidden == (100, 100) and full.population.lr == 0.05
    # The sweep follows the population's epochs unless given (the old --epochs set both).
    assert (quick.epochs_of_sweep, full.epochs_of_sweep) == (60, 150)
    assert NoiseConfig.from_dict(quick.to_dict()) == quick  # JSON lists become tuples again
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        NoiseConfig.quick(seeds=1).validate()


def test_command_line_reaches_the_config_and_refuses_what_the_parts_set():
    config = config_from_command(STUDY, "memlab noise --quick --data digits --epochs 7 "
                                        "--hidden 32 --regularizer dropout=0.5,0.7 "
                                        "--regularizer adversarial=4 --seed 3")
    assert (config.population.epochs, config.epochs_of_sweep, config.hidden) == (7, 7, (32,))
    assert config.regularizers == {"dropout": (0.5, 0.7), "adversarial": (4.0,)}
    assert config.population.seed == 3
    assert config_from_command(STUDY, command_line(STUDY, config)) == config
    no_regularizer = NoiseConfig.quick(regularizers={})
    assert config_from_command(STUDY, command_line(STUDY, no_regularizer)) == no_regularizer
    for words, field in (("--models 8", "n_models"), ("--subset 0.3", "subset_fraction"),
                         ("--model cnn1d", "model"), ("--model-option dropout=0.5",
                                                      "model_kwargs"),
                         ("--sweep lr=0.1,0.2", "sweep"), ("--regularizer l1=0.1", "l1")):
        with pytest.raises(ConfigError, match=field):
            config_from_command(STUDY, f"memlab noise {words}")


def test_planted_noisy_labels_are_exactly_the_late_learners(tmp_path):
    # Well-separated blobs: every clean example is right after one epoch; the 12 planted
    # wrong labels can only be memorized, later. The dynamics must single out exactly them.
    data = make_blobs(n_train=120, n_test=30, spread=0.3).with_label_noise(0.1, seed=2)
    planted = corrupted_examples(data)
    config = NoiseConfig.quick(data="blobs", seeds=2, population=recipe(
        hidden=(64,), epochs=80, batch_size=16))
    tables = learning_dynamics({"planted": data}, config, tmp_path, quiet, ONE_WORKER)
    first = tables["examples"].first_learned.fillna(config.population.epochs + 1).to_numpy()
    np.testing.assert_array_equal(first > 1, planted)
    assert first[planted].min() > 10
    curves = tables["curves"]
    assert curves.train_acc_clean.iloc[0] == 1.0 and curves.train_acc_corrupted.iloc[0] == 0.0
    # The per-seed curves average to the mean curve.
    mean = tables["seed_curves"].groupby("epoch").train_acc.mean().to_numpy()
    np.testing.assert_allclose(mean, curves.train_acc)
    # Full-data models (an all-ones mask): every seed trains on all 120 examples.
    assert open_run(tmp_path / "populations" / "dynamics-planted").membership_mask.all()


# ------------------------------------------------------------------ verdicts, planted


def planted_tables(randy_slower: bool = True, seeds: int = 8, epochs: int = 30) -> dict:
    """Study tables with known answers: real reaches 100% training accuracy at epoch 10 on
    every seed, randY at 20-21 (or the other way round); real's one-epoch errors mix easy
    and hard examples, randX's are one Binomial; CSR equal for real and randX (noise only);
    Gini real > randY > randX; noise50's validation accuracy peaks at epoch 5 and falls
    by 0.2; dropout removes randY fitting and keeps real validation accuracy."""
    rng = np.random.default_rng(0)
    epoch = np.arange(1, epochs + 1)
    fast = np.minimum(1.0, epoch / 10)
    rows, dyn = [], []
    for name in ("real", "randY", "randX", "noise50"):
        for seed in range(seeds):
            slow = np.minimum(1.0, epoch / (20 + seed % 2))
            train = {"real": fast if randy_slower else slow,
                     "randY": slow if randy_slower else fast}.get(name, fast)
            val = 0.8 - 0.2 * np.clip((epoch - 5) / 20, 0, 1) - 0.1 * (epoch < 5)
            val = val + rng.normal(0, 0.005, epochs) if name == "noise50" else 0.5 + 0 * epoch
            rows.append(pd.DataFrame({"condition": name, "seed": seed, "epoch": epoch,
                                      "train_acc": train, "val_acc": val, "n_val": 500}))
    seed_curves = pd.concat(rows, ignore_index=True)
    for name, frame in seed_curves.groupby("condition", sort=False):
        mean = frame.groupby("epoch")[["train_acc", "val_acc"]].mean()
        best = int(mean.val_acc.idxmax())
        dyn.append({"condition": name, "best_val_epoch": best,
                    "best_val_acc": mean.val_acc.max(), "final_val_acc": mean.val_acc.iloc[-1],
                    "train_acc_at_best_val": mean.train_acc.loc[best],
                    **{f"epochs_to_{t:g}": float(np.argmax(mean.train_acc.to_numpy() >= t) + 1)
                       for t in (0.9, 0.99, 1.0)}})
    n, trials = 2000, np.full(2000, 100)
    labels = np.repeat([0, 1], n // 2)
    hard = rng.binomial(trials, np.where(np.arange(n) % 2, 0.05, 0.6))
    equal = rng.binomial(trials, 0.5)
    difficulty = pd.concat([pd.DataFrame({"condition": c, "label": labels, "errors": e,
                                          "trials": trials})
                            for c, e in (("real", hard), ("randX", equal))])
    capacity = pd.DataFrame([{"axis": "size", "value": 100, "condition": c, "seed": s,
                              "epochs_to_100": 10.0 + s if c == "real" else np.nan}
                             for c in ("real", "randY") for s in range(3)])
    csr = pd.DataFrame([{"condition": c, "seed": s, "epoch": e,
                         "csr": {"real": 0.1, "randY": 0.3, "randX": 0.1}[c]
                         + rng.normal(0, 0.01),
                         "sensitivity_gini": {"real": 0.6, "randY": 0.4, "randX": 0.3}[c]
                         + rng.normal(0, 0.01)}
                        for c in ("real", "randY", "randX") for s in range(3)
                        for e in (0, 10, 30)])
    sweep = pd.DataFrame([
        {"regularizer": "none", "strength": 0.0, "seed": 0, "randY_train_acc": 1.0,
         "real_best_val_acc": 0.5, "n_train": 1000, "n_val": 1000},
        {"regularizer": "dropout", "strength": 0.8, "seed": 0, "randY_train_acc": 0.2,
         "real_best_val_acc": 0.48, "n_train": 1000, "n_val": 1000}])
    return {"seed_curves": seed_curves, "dynamics": pd.DataFrame(dyn),
            "difficulty": difficulty, "capacity": capacity, "csr": csr, "sweep": sweep}


CONFIG = {"epochs": 30, "capacity_epochs": 100, "seed": 0}  # directions(tables, **CONFIG)


def verdicts(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table.finding, table.verdict))


def test_verdicts_on_planted_tables():
    found = verdicts(directions(planted_tables(), **CONFIG))
    assert found == {
        "real data reaches 90% training accuracy in fewer epochs than randY": REPRODUCED,
        "real data reaches 99% training accuracy in fewer epochs than randY": REPRODUCED,
        "one-epoch difficulty of real data is over-dispersed vs one Binomial": REPRODUCED,
        "randX's one-epoch difficulty matches the Binomial": REPRODUCED,
        "randX's one-epoch difficulty matches the Binomial within each class": REPRODUCED,
        "noise needs more epochs to fit 100% at the largest size (100 examples)": REPRODUCED,
        # randX's CSR equals real's up to noise: the interval of the difference covers 0.
        "CSR is higher for networks fit to noise (final epoch)": UNDECIDED,
        "loss-sensitivity Gini is higher for real data than for noise (mean over training)":
            REPRODUCED,
        "noise50: validation accuracy peaks before training accuracy reaches 100%, then falls":
            REPRODUCED,
        "dropout 0.8 lowers randY training accuracy more than real validation accuracy":
            REPRODUCED,
    }


def test_verdicts_turn_when_the_planted_answer_is_reversed():
    tables = planted_tables(randy_slower=False)
    # randX's errors: easy and hard examples now, real's one Binomial.
    difficulty = tables["difficulty"]
    difficulty["condition"] = difficulty.condition.map({"real": "randX", "randX": "real"})
    # noise50 flat: no fall after the peak.
    curves = tables["seed_curves"]
    curves.loc[curves.condition == "noise50", "val_acc"] = 0.5
    found = directions(tables, **CONFIG).set_index("finding")
    speed = found.loc["real data reaches 99% training accuracy in fewer epochs than randY"]
    assert speed.verdict == NOT_REPRODUCED and speed.estimate == pytest.approx(-10.5)
    assert found.loc["one-epoch difficulty of real data is over-dispersed vs one Binomial",
                     "verdict"] == UNDECIDED  # a Binomial: the interval covers 1
    assert found.loc["randX's one-epoch difficulty matches the Binomial",
                     "verdict"] == NOT_REPRODUCED
    assert found.loc["noise50: validation accuracy peaks before training accuracy reaches "
                     "100%, then falls", "verdict"] == NOT_REPRODUCED


def test_t_interval_known_values():
    mean, low, high = t_interval(np.array([1.0, 2.0, 3.0]))
    # mean 2, sd 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3) = 2.4841
    assert (mean, low, high) == pytest.approx((2.0, 2 - 2.4841, 2 + 2.4841), abs=1e-4)
    assert np.isnan(t_interval(np.array([5.0]))[1])


# ------------------------------------------------------------------ engine behaviour


def test_a_sweep_model_is_the_same_bits_with_three_or_four_strengths(tmp_path):
    data = make_blobs(n_train=96, n_test=30, spread=1.5)
    config = NoiseConfig.quick(data="blobs", sweep_epochs=3, sweep_seeds=2,
                               population=recipe(hidden=(16,), batch_size=32))
    strengths = {"dropout": (0.2, 0.4, 0.6, 0.8), "input_noise": (0.1, 0.3, 0.6, 1.0),
                 "weight_decay": (1e-3, 1e-2, 3e-2, 1e-1)}
    three = sweep_populations(data, "real", config, tmp_path / "three",
                              {k: v[:3] for k, v in strengths.items()}, ONE_WORKER)
    four = sweep_populations(data, "real", config, tmp_path / "four", strengths, ONE_WORKER)
    for (name, values3, run3), (_, values4, run4) in zip(three, four, strict=True):
        assert values4[:len(values3)] == values3
        rows = 2 * len(values3)  # sweep_seeds models per strength, strength-major
        for record in ("train_margin", "test_margin", "val_acc", "epoch_train_loss_mean"):
            np.testing.assert_array_equal(run3.records(record), run4.records(record)[:rows],
                                          f"{name} {record}")
        if name != "none":  # the strengths really act: the extra one trains other models
            assert not np.array_equal(run4.records("test_margin")[rows:],
                                      run4.records("test_margin")[:2])


def tiny_config(path) -> NoiseConfig:
    """The quick preset on tiny data: a few seconds."""
    return NoiseConfig.quick(
        data=str(path), n_train=None, population=recipe(hidden=(16,), epochs=4),
        noise_fractions=(0.3,), seeds=2, difficulty_seeds=4, capacity_sizes=(50, 10_000),
        capacity_widths=(8,), capacity_seeds=2, capacity_epochs=3, csr_every=2,
        csr_examples=20, lass_iter=3, sweep_epochs=2,
        regularizers={"dropout": (0.5,), "adversarial": (2.0,)})


def test_end_to_end_tiny_study_rng_resume_and_saved_result(tmp_path, monkeypatch):
    path = tmp_path / "blobs.npz"
    make_blobs(n_train=150, n_test=60, n_classes=3, spread=1.5).save(path)
    config = tiny_config(path)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    result = run(config, tmp_path / "study", n_workers=1, progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # nothing drew from or reseeded it
    curves = result.tables["curves"]
    assert set(curves.condition) == {"real", "randY", "randX", "noise30"}
    assert curves.loc[curves.condition == "noise30", "train_acc_corrupted"].notna().all()
    assert list(result.tables["sweep"].regularizer) == ["none", "dropout", "adversarial"]

    # Seeds follow the engine's rules: replicate r of every condition starts from the same
    # weights, so at epoch 0 every condition's CSR and validation accuracy are the same
    # numbers (the training-set accuracy is not: the labels differ).
    csr = result.tables["csr"]
    start = csr[csr.epoch == 0].set_index(["condition", "seed"])
    for name in ("randY", "randX", "noise30"):
        for column in ("csr", "val_acc"):
            np.testing.assert_array_equal(start.loc[name, column], start.loc["real", column])
    assert sorted(csr.epoch.unique()) == [0, 2, 4]
    # The last checkpoint is the trained model the engine evaluates at the end.
    population = open_run(tmp_path / "study" / "populations" / "csr-randY")
    final = csr[(csr.condition == "randY") & (csr.epoch == 4)].sort_values("seed")
    np.testing.assert_allclose(final.train_acc, population.records("train_correct").mean(1))
    assert population.membership_mask.all()

    # Blobs are learned in an epoch or two; random labels cannot reach 90% in 4 epochs.
    found = result.tables["directions"].set_index("finding")
    assert found.loc["real data reaches 90% training accuracy in fewer epochs than randY",
                     "verdict"] == REPRODUCED
    assert set(result.tables["capacity"].value[result.tables["capacity"].axis == "size"]) == {50}
    assert "[10000] exceed the 150 training examples" in result.summary["notes"][0]
    loads_strict((tmp_path / "study" / "summary.json").read_text())  # no NaN / Infinity

    # A second call with the same out trains nothing and returns the saved result.
    def no_training(*args, **kwargs):
        raise AssertionError("resumed study trained a population")

    monkeypatch.setattr(parts, "train_population", no_training)
    again = run(config, tmp_path / "study", n_workers=1, progress=False)
    pd.testing.assert_frame_equal(again.tables["directions"], result.tables["directions"])
    loaded = Result.load(tmp_path / "study")
    assert set(loaded.figures()) == {"curves", "partial", "difficulty", "first_learned",
                                     "capacity", "csr", "sweep"}
    page = loaded.report().html()
    assert "Verdict:" in page  # the captions quote the directions
    # The finding leads, computed from the data: noise30 has clean and corrupted examples.
    assert page.index('class="finding"') < page.index("<section>")
    assert "learned last" in page and "Reproduce" in page


def test_cli_reports_bad_input_in_one_line(capsys, tmp_path):
    assert main(["noise", "--data", "no-such-data", "--quick", "--out", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["noise", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds must be a positive integer" in capsys.readouterr().err
    assert main(["noise", "--quick", "--seeds", "1", "--out", str(tmp_path)]) == 2
    assert "at least 2 seeds; give --seeds 2 or more" in capsys.readouterr().err
