"""The long-tail study (memlab.studies.longtail) and its command, on a tiny configuration:
answers known by construction (chance accuracy on never-seen subpopulations, 1 − 1/C
memorization of fitted singletons, the planted frequencies and the singletons they imply),
the saved result, resuming without retraining, and one-line errors."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from memlab.cli import main
from memlab.data.longtail import expected_singletons, make_longtail
from memlab.errors import ConfigError
from memlab.io import loads_strict
from memlab.measures.longtail import measure_population, model_counts
from memlab.studies.base import Result, command_line
from memlab.studies.longtail import RECIPE, STUDY, LongtailConfig, run, strength_grid
from memlab.testing import config_from_command


def test_model_counts_count_each_models_subset():
    mask = np.array([[1, 1, 0, 1], [0, 0, 1, 1]], bool)
    subpopulation = np.array([0, 0, 2, 1])
    np.testing.assert_array_equal(model_counts(mask, subpopulation, 3),
                                  [[2, 1, 0], [0, 1, 1]])


def test_knobs_merge_into_the_baseline():
    config = LongtailConfig.quick()
    baseline = config.recipe("baseline")
    assert baseline.model_kwargs == {"hidden": [64, 64]} and not baseline.save_weights
    assert (baseline.n_models, baseline.epochs, baseline.lr) == (96, 40, 0.05)
    assert config.recipe("dropout").model_kwargs == {"hidden": [64, 64], "dropout": 0.5}
    assert config.recipe("early_stopping").epochs == 6
    with pytest.raises(ConfigError, match="knob"):
        LongtailConfig(knobs={"wd": {"momentum": 0.5}}).validate()
    assert LongtailConfig.from_dict(LongtailConfig.full().to_dict()) == LongtailConfig.full()
    assert LongtailConfig.full().knob_settings() == strength_grid()
    with pytest.raises(ConfigError, match="knobs or grid"):
        LongtailConfig(grid=True, knobs={"wd": {"weight_decay": 0.1}}).validate()


def test_command_line_reaches_the_config():
    # The regenerate script's --grid entry, and its Reproduce line.
    config = config_from_command(STUDY, "memlab longtail --quick --grid --exponents 1 "
                                        "--models 8 --seed 2")
    assert config == LongtailConfig(exponents=(1.0,), grid=True, population=dataclasses.replace(
        RECIPE, n_models=8, seed=2))
    assert config.priors()["zipf1"].seed == 2
    knobs = LongtailConfig(knobs={"wd": {"weight_decay": 0.1}, "narrow": {
        "model_kwargs": {"hidden": [8]}}})
    for one in (config, knobs, LongtailConfig.full()):
        assert config_from_command(STUDY, command_line(STUDY, one)) == one


def test_tiny_study_recovers_what_the_generator_planted(tmp_path, monkeypatch):
    n_classes = 4
    config = LongtailConfig.quick(
        exponents=(1.0,), n_subpopulations=150, control_subpopulations=10, n_train=300,
        n_test=600, n_classes=n_classes, population=dataclasses.replace(
            RECIPE, model_kwargs={"hidden": [32]}, epochs=25, n_models=16),
        knobs={"weight_decay": {"weight_decay": 3e-2}})
    out = tmp_path / "run"
    result = run(config, out, n_workers=1, progress=False)
    tables = result.tables
    assert loads_strict((out / "summary.json").read_text())["subset_size"] == 150
    m, chance = config.subset_size, 1 / n_classes

    # The planted frequencies, and the counts they produced, are in the tables.
    tails = tables["subpopulations"].set_index(["prior", "subpopulation"]).sort_index()
    for prior, spec in config.priors().items():
        mixture = make_longtail(spec)
        rows = tails.loc[prior]
        np.testing.assert_array_equal(rows.frequency, mixture.frequencies)
        np.testing.assert_array_equal(rows.train_count, mixture.train_counts)
        assert rows.mean_model_count.sum() == pytest.approx(m)  # every model sees m examples
    theory = tables["theory"].set_index("prior")
    p = tails.loc["zipf1"].frequency.to_numpy()
    assert theory.loc["zipf1", "expected_singletons"] == pytest.approx(
        expected_singletons(p, m))
    # Singletons per model: a subset of m of the n training draws holds subpopulation j
    # once with the hypergeometric probability of 1 of its c_j; summed, the exact mean
    # (16 models: its standard error is about 1).
    counts = tails.loc["zipf1"].train_count.to_numpy()
    exact = stats.hypergeom(config.n_train, counts, m).pmf(1).sum()
    assert theory.loc["zipf1", "observed_singletons"] == pytest.approx(exact, abs=4)
    assert theory.loc["uniform", "expected_singletons"] < 0.01
    assert theory.loc["zipf1", "tau1"] == pytest.approx(theory.loc["zipf1", "tau1_monte_carlo"],
                                                        rel=0.05)

    # Labels are independent of the clusters: on never-seen subpopulations, chance (1/C).
    acc = tables["accuracy"].set_index(["prior", "knob", "bucket"])
    for knob in ("baseline", "weight_decay"):
        assert acc.loc[("zipf1", knob, "0"), "accuracy"] == pytest.approx(chance, abs=0.12)
        assert acc.loc[("zipf1", knob, "4+"), "accuracy"] > 0.9
    # A singleton's OUT models never saw its subpopulation: mem = fit rate − 1/C.
    populations = tables["populations"].set_index(["prior", "knob"])
    fit = populations.loc[("zipf1", "baseline"), "fit_singletons"]
    assert fit > 0.9
    mem = tables["memorization"].set_index(["prior", "knob", "bucket"]).mem
    assert mem["zipf1", "baseline", "1"] == pytest.approx(fit - chance, abs=0.12)
    assert mem["zipf1", "baseline", "4+"] < 0.2
    cost = tables["cost"].set_index("prior")
    # The knob leaves singletons unfitted on the Zipf mixture; the control has none to lose.
    assert cost.loc["zipf1", "extra_unfit"] > 5
    assert cost.loc["zipf1", "extra_error_1"] > abs(cost.loc["uniform", "extra_error_1"])
    findings = tables["findings"].set_index("finding")
    assert findings.loc["zipf1: singletons have the highest memorization scores",
                        "verdict"] == "yes"
    assert set(findings.verdict) <= {"yes", "no", "cannot decide"}

    # The report, and the figures of a loaded result, from the tables alone.
    page = (out / "report.html").read_text()
    assert "1/4" in page
    assert "Singletons are memorized most" in page  # the finding, from the claims above
    loaded = Result.load(out)
    assert sorted(loaded.figures()) == ["accuracy", "cost", "memorization", "tail", "theory"]
    # A second call returns the saved result without training.
    import memlab.population

    def no_training(*args, **kwargs):
        raise AssertionError("resumed study trained again")

    monkeypatch.setattr(memlab.population, "train_population", no_training)
    again = run(config, out, n_workers=1, progress=False)
    pd.testing.assert_frame_equal(again.tables["cost"], tables["cost"])


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["longtail", "--out", str(tmp_path), "--models", "2"]) == 2
    assert "--models" in capsys.readouterr().err
    assert main(["longtail", "--out", str(tmp_path), "--exponents", "-1"]) == 2
    assert "exponent" in capsys.readouterr().err


class _FakeRun:
    """Just what measure_population reads from a Run: a mask and correctness records."""

    def __init__(self, mask, records):
        self.membership_mask, self._records = mask, records

    def records(self, name):
        return self._records[name]


def test_measure_population_on_known_correctness(monkeypatch):
    import memlab.measures.memorization as memorization_module
    from memlab.data.longtail import LongTailSpec, make_longtail

    data = make_longtail(LongTailSpec(n_subpopulations=60, n_train=80, n_test=200, seed=2))
    rng = np.random.default_rng(0)
    mask = rng.random((5, 80)) < 0.5
    counts = model_counts(mask, data.train_tags.subpopulation.to_numpy(), 60)
    test_count = counts[:, data.test_tags.subpopulation.to_numpy()]
    train_count = counts[:, data.train_tags.subpopulation.to_numpy()]
    # A learner that is right everywhere except on subpopulations it saw exactly once.
    records = {"test_correct": test_count != 1, "train_correct": train_count != 1}
    monkeypatch.setattr(memorization_module, "memorization",
                        lambda run: pd.DataFrame({"index": np.arange(80), "mem": 0.0}))
    measures = measure_population(_FakeRun(mask, records), data)
    np.testing.assert_array_equal(measures.acc["1"], 0.0)
    np.testing.assert_array_equal(measures.acc["4+"], 1.0)
    np.testing.assert_allclose(measures.error_mass["1"], (test_count == 1).mean(1))
    np.testing.assert_array_equal(measures.singletons, (mask & (train_count == 1)).sum(1))
    np.testing.assert_array_equal(measures.unfit, measures.singletons)
    n_once = int((test_count == 1).sum())
    assert measures.transfer == (0, 0, n_once, 0)  # no singleton fitted, none right
