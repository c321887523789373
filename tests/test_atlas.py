"""The atlas: its joins are exact, planted structure gives the expected signs, a second
atlas reuses what exists, and the command line writes beside the run."""

import dataclasses

import numpy as np
import pytest

from memlab.cli import main
from memlab.data import load
from memlab.population import open_run
from memlab.studies.atlas import AtlasConfig, run
from memlab.studies.atlas.config import RECIPE

# 300 digits with 10% of the labels flipped and 30 examples planted twice more, 48 MLPs
# on half the data for 60 epochs of batch 16: enough to fit the flipped labels (at 30
# epochs of batch 64 they were not, and memorization could not find them), few enough to
# take seconds.
POPULATION = dataclasses.replace(RECIPE, n_models=48, subset_fraction=0.5, epochs=60,
                                 batch_size=16, model_kwargs={"hidden": [64]})


CONFIG = AtlasConfig(data=None, population=POPULATION, n_bootstrap=100,
                     elasticity_models=2, elasticity_examples=64)


@pytest.fixture(scope="module")
def planted():
    data = load("digits").subset(np.arange(300)).with_label_noise(0.1, seed=0)
    return data.with_duplicates(30, copies=2, seed=0)


@pytest.fixture(scope="module")
def atlas(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas")
    return run(CONFIG, out=out, dataset=planted, progress=False)


def test_the_joins_are_exact(atlas, planted):
    examples, models = atlas.tables["examples"], atlas.tables["models"]
    population = open_run(atlas.out / "population")
    assert list(examples["index"]) == list(range(planted.n_train))  # every example once
    np.testing.assert_array_equal(examples["label"], planted.y_train)
    np.testing.assert_array_equal(examples["n_in"], population.membership_mask.sum(0))
    assert list(models["model"]) == list(range(population.n_models))  # every model once
    np.testing.assert_array_equal(models["test_acc"], population.models_table()["test_acc"])
    flipped = np.asarray(planted.corruption["label_noise"]["indices"])
    assert set(np.flatnonzero(examples["corrupted"])) == set(flipped)
    assert examples["planted_duplicate"].sum() == 30 * 3  # originals and their two copies
    for layer in ("layers.0", "layers.1"):  # every layer's alpha with its interval
        lo, alpha, hi = (models[f"{layer}.{c}"] for c in ("alpha_lo", "alpha", "alpha_hi"))
        fitted = alpha.notna()
        assert fitted.mean() > 0.9
        assert ((lo <= alpha) & (alpha <= hi))[fitted].all()


def test_planted_structure_has_the_expected_signs(atlas):
    """Memorization goes with the flipped labels and against the planted copies (a copy in
    the training set stands in for its original)."""
    questions = atlas.summary["questions"]
    assert questions["noise"]["low"] > 0, questions["noise"]
    assert questions["noise"]["verdict"] == "mislabeled examples are memorized more"
    assert questions["duplicates"]["high"] < 0, questions["duplicates"]
    matrix = atlas.tables["matrix"]
    row = matrix[(matrix["a"] == "mem") & (matrix["b"] == "label_error")].iloc[0]
    assert row["low"] > 0  # the label-error score also finds the flipped labels


def test_a_second_atlas_reuses_what_exists(atlas, planted, monkeypatch):
    """The same atlas again: the saved result, nothing recomputed or retrained."""
    import memlab.population
    import memlab.studies.atlas.study as study

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(study, "examples_table", refuse)
    monkeypatch.setattr(memlab.population, "train_population", refuse)
    again = run(CONFIG, out=atlas.out, dataset=planted, progress=False)
    assert again.summary == atlas.summary


def test_the_command_writes_beside_the_run(atlas, tmp_path, capsys):
    """memlab atlas RUN: results in RUN/atlas; the population is read, not retrained."""
    population = atlas.out / "population"
    code = main(["atlas", str(population), "--bootstrap", "50", "--elasticity-models", "0",
                 "--no-spectra", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{population / 'atlas' / 'summary.json'}" in out
    saved = (population / "atlas" / "tables" / "examples.parquet")
    assert saved.is_file()


def test_alpha_beyond_the_norm_on_64_models_over_two_knobs(tmp_path):
    """HT-SR's question as docs/atlas.md asks it of 1,024 models over four knobs, here on
    64 models over two (memlab spectra-study): per knob and pooled, the partial ρ of α (raw
    and aspect-corrected) with test accuracy given the log Frobenius norm, with its
    interval and a verdict computed from it."""
    from memlab.studies.spectra_study import RECIPE as SPECTRA
    from memlab.studies.spectra_study import SpectraStudyConfig
    from memlab.studies.spectra_study import run as spectra_study

    population = dataclasses.replace(SPECTRA, model_kwargs={"hidden": [64, 64]}, n_models=16,
                                     epochs=4)
    config = SpectraStudyConfig.quick(knobs={"weight_decay": [0.0, 0.005],
                                             "label_noise": [0.0, 0.5]},
                                      n_bootstrap=50, population=population)
    result = spectra_study(config, tmp_path / "study", progress=False)
    assert len(result.tables["models"]) == 64
    table = result.tables["beyond_norm"]
    assert set(table["alpha"]) == {"alpha", "alpha_corrected"}
    for _, rows in table.groupby("alpha"):
        assert list(rows["group"]) == ["weight_decay", "label_noise", "pooled"]
        pooled = rows[rows["group"] == "pooled"].iloc[0]
        assert pooled["n"] >= 60  # (a model whose layers no fit could reach drops out)
        assert pooled["partial_low"] <= pooled["partial"] <= pooled["partial_high"]
        assert pooled["verdict"] in ("cannot decide",
                                     "higher alpha, higher accuracy beyond the norm",
                                     "higher alpha, lower accuracy beyond the norm")
    assert result.summary["beyond_norm"] == table.to_dict("records")


def test_a_language_model_population_gets_its_documents_row(tmp_path):
    """Documents instead of examples: memorization of per-token accuracy with its interval,
    held-out accuracy, final loss and LiRA vulnerability; the questions that need labels,
    neighbours or per-epoch records say "not measured" rather than a number."""
    from memlab.studies.lm_memorize import LMMemorizeConfig
    from memlab.studies.lm_memorize import run as lm_memorize

    lm_memorize(LMMemorizeConfig.tiny(), tmp_path / "lm", progress=False)
    population = open_run(tmp_path / "lm" / "population")
    result = run(AtlasConfig(run_dir=str(population.path), n_bootstrap=50, spectra=False),
                 out=tmp_path / "atlas", progress=False)
    documents = result.tables["examples"]
    assert len(documents) == population.membership_mask.shape[1]
    assert {"mem", "mem_lo", "mem_hi", "cscore", "final_loss", "vulnerability"} <= set(
        documents)
    finite = documents["mem"].notna()
    bounded = documents[["mem_lo", "mem_hi"]].notna().all(axis=1)  # (one OUT model: none)
    assert bounded.mean() > 0.9
    lo, mem, hi = documents["mem_lo"], documents["mem"], documents["mem_hi"]
    assert ((lo <= mem) & (mem <= hi))[bounded].all()
    questions = result.summary["questions"]
    assert questions["learned_last"]["verdict"] == "not measured"
    assert questions["exposure"]["n"] == int((finite & documents["vulnerability"].notna()).sum())
