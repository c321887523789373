"""The long-tail study (memlab.studies.longtail) and its command, on a tiny configuration."""

import numpy as np
import pandas as pd
import pytest

from memlab.cli import main
from memlab.errors import ConfigError
from memlab.studies.longtail import LongTailStudyConfig, model_counts, run_longtail_study


def test_model_counts_count_each_models_subset():
    mask = np.array([[1, 1, 0, 1], [0, 0, 1, 1]], bool)
    subpopulation = np.array([0, 0, 2, 1])
    np.testing.assert_array_equal(model_counts(mask, subpopulation, 3),
                                  [[2, 1, 0], [0, 1, 1]])


def test_knobs_merge_into_the_baseline():
    config = LongTailStudyConfig.quick()
    assert config.train_arguments("baseline")["model_kwargs"] == {"hidden": [64, 64]}
    assert config.train_arguments("dropout")["model_kwargs"] == {"hidden": [64, 64],
                                                                 "dropout": 0.5}
    assert config.train_arguments("early_stopping")["epochs"] == 6
    with pytest.raises(ConfigError, match="knob"):
        LongTailStudyConfig(knobs={"wd": {"momentum": 0.5}})


def test_tiny_study_measures_the_long_tail(tmp_path):
    config = LongTailStudyConfig.quick(
        exponents=(1.0,), n_subpopulations=150, control_subpopulations=10, n_train=300,
        n_test=600, hidden=(32,), epochs=25, n_models=16, workers=1,
        knobs={"weight_decay": {"weight_decay": 3e-2}})
    result = run_longtail_study(config, tmp_path / "run", progress=False,
                                figures_dir=tmp_path / "figures")
    tables = result.tables
    for name in ("populations", "memorization", "accuracy", "cost", "theory", "findings"):
        assert (tmp_path / "run" / "tables" / f"{name}.parquet").exists()
    assert pd.read_parquet(tmp_path / "run" / "tables" / "cost.parquet").shape[0] == 2
    assert (tmp_path / "run" / "report.html").stat().st_size > 10_000
    assert len(list((tmp_path / "figures").glob("longtail_*.png"))) == 4

    mem = tables["memorization"].set_index(["prior", "knob", "bucket"]).mem
    assert mem["zipf1", "baseline", "1"] > 0.5 > mem["zipf1", "baseline", "4+"]
    theory = tables["theory"].set_index("prior")
    assert theory.loc["uniform", "expected_singletons"] < 0.01
    assert theory.loc["zipf1", "tau1"] == pytest.approx(theory.loc["zipf1", "tau1_monte_carlo"],
                                                        rel=0.05)
    cost = tables["cost"].set_index("prior")
    # The knob leaves singletons unfitted on the Zipf mixture; the control has none to lose.
    assert cost.loc["zipf1", "extra_unfit"] > 5
    assert cost.loc["zipf1", "extra_error_1"] > abs(cost.loc["uniform", "extra_error_1"])


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
    from memlab.studies.longtail import measure_population

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
