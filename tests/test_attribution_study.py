"""The attribution study and `memlab attribute` end to end on a small population."""


import numpy as np
import pytest

from memlab.cli import main
from memlab.io import loads_strict
from memlab.studies.attribute import AttributeConfig, run


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("attribute")
    config = AttributeConfig.quick(removal=True, removal_targets=3, removal_seeds=2,
                                   removal_k=20)
    return config, out, run(config, out, n_workers=1, progress=False)


def test_summary_has_every_method_with_lds_se_seconds_and_models(study):
    config, out, result = study
    summary = loads_strict((out / "summary.json").read_text())  # strict JSON
    for name in config.methods:
        row = summary["methods"][name]
        assert set(row) >= {"lds", "lds_se", "seconds", "n_models_used"}
        assert row["n_models_used"] == (config.trak_models if name == "trak"
                                        else config.method_models)
    for name in ("datamodels", "diff_in_means"):
        assert set(summary[name]) >= {"lds", "lds_se", "seconds", "n_models_used"}
    assert summary["n_heldout_models"] == config.n_heldout
    # Answers, not shapes: influence and TRAK predict the held-out models, random does not.
    methods = summary["methods"]
    assert abs(methods["random"]["lds"]) < 3 * methods["random"]["lds_se"]
    for name in ("if_exact", "trak", "grad_dot"):
        assert methods[name]["lds"] > 0.3 + 3 * methods[name]["lds_se"]
    # TracIn's checkpoints were replayed bit-for-bit (the last equals the stored weights).
    assert methods["tracin"]["replay_max_abs_deviation"] < 1e-5
    # Removing a method's top-k supporters lowers the target's output more than random k.
    assert summary["removal"]["if_exact"]["effect_vs_random"] < 0


def test_ceiling_from_a_second_replicate_bounds_every_method(study):
    """The held-out masks trained again with other seeds (OUT/ceiling, a resumable run):
    the ceiling is in the summary, the headline and the table, and no method beats it
    beyond noise; each ratio is its LDS against the replicates' mean over the ceiling."""
    from memlab.population import open_run
    from memlab.studies.attribute.retrain import replicate_seed
    from memlab.studies.attribute.study import headline_lines

    config, out, result = study
    ceiling = result.summary["ceiling"]
    assert 0 < ceiling["ceiling_single"] <= ceiling["ceiling"] <= 1
    assert ceiling["n_models"] == config.n_heldout and ceiling["ceiling_se"] > 0
    replicate = open_run(out / "ceiling")
    population = open_run(out / "population")
    held = slice(population.n_models - config.n_heldout, None)
    assert np.array_equal(replicate.membership_mask, population.membership_mask[held])
    assert replicate.config.seed == replicate_seed(config.population.seed) != \
        population.config.seed
    # Same masks, other seeds: correlated outputs, not the same ones.
    assert not np.array_equal(replicate.records("test_logodds"),
                              population.records("test_logodds")[held])
    rows = {**result.summary["methods"], "datamodels": result.summary["datamodels"]}
    for name, row in rows.items():
        assert row["ceiling_ratio"] == pytest.approx(row["lds_replicates"] / ceiling["ceiling"])
        assert row["ceiling_ratio"] < 1 + 3 * row["ceiling_ratio_se"], name
    best = max(rows, key=lambda name: rows[name]["lds"])
    assert rows[best]["lds"] < ceiling["ceiling_single"] + 3 * rows[best]["lds_se"]
    assert rows[best]["ceiling_ratio"] > 0.5  # on logistic regression the best come close
    table = result.tables["methods"].set_index("method")
    assert table.loc["trak", "ceiling"] == ceiling["ceiling"]
    assert table.loc["trak", "ceiling_ratio"] == rows["trak"]["ceiling_ratio"]
    assert len(result.tables["ceiling"]) == config.n_targets
    assert any(line.startswith("LDS ceiling") for line in headline_lines(result))
    # Every damping is interior of the grid it was chosen on, or said to be on an edge.
    edges = {edge["method"] for edge in result.summary["damping_edges"]}
    for name, row in result.summary["methods"].items():
        if row.get("damping") is not None:
            tried = sorted(float(d) for d in row["validation_lds"])
            interior = tried[0] < row["damping"] < tried[-1]
            assert interior != (name in edges) and interior == (row["damping_edge"] is None)
            assert set(row["damping_extended"]) <= set(tried)


def test_scores_are_memory_mapped_and_agree_with_the_lds(study):
    config, out, result = study
    from memlab.measures.attribution.lds import lds
    from memlab.population import open_run

    scores = np.load(out / "scores" / "trak.npy", mmap_mode="r")
    population = open_run(out / "population")
    assert scores.shape == (population.dataset.n_train, config.n_targets)
    held = slice(population.n_models - config.n_heldout, None)
    outputs = population.records("test_logodds")[held, :config.n_targets]
    again = lds(scores, population.membership_mask[held], outputs,
                seed=config.population.seed)
    assert again.mean == pytest.approx(result.summary["methods"]["trak"]["lds"])


def test_second_run_returns_the_saved_result(study):
    config, out, result = study
    again = run(config, out, progress=False)
    assert again.summary == result.summary
    html = (out / "report.html").read_text()
    assert "Ranking: which differences the data resolves" in html and "<svg" in html
    assert html.index('class="finding"') < html.index("<section>")


def test_ranking_says_which_differences_the_data_resolves(study):
    """The ranking (summary and table): every method's LDS with its 95% interval, paired
    differences with the random control and down the ranking; the methods that predict the
    held-out models beat the control, and the finding says so first."""
    from memlab.studies.attribute.figures import finding_sentences
    from memlab.studies.attribute.study import headline_lines

    config, out, result = study
    ranking = result.summary["ranking"]
    assert ranking["control"] == "random" and ranking["n_models"] == config.n_heldout
    assert {"if_exact", "trak", "grad_dot"} <= set(ranking["better_than_control"])
    assert "random" not in ranking["better_than_control"] + ranking["undecided_vs_control"]
    table = result.tables["ranking"]
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    assert set(table["method"]) == {*config.methods, "datamodels", "diff_in_means"}
    assert (table["lds"].diff().dropna() <= 0).all()  # best first
    assert (table["lds_low"] < table["lds"]).all() and (table["lds"] < table["lds_high"]).all()
    methods = result.summary["methods"]
    for row in table[table.method.isin(list(methods))].itertuples():
        assert row.lds == pytest.approx(methods[row.method]["lds"])  # the same scores
        assert row.lds_high - row.lds == pytest.approx(1.959964 * methods[row.method]["lds_se"])
    assert table.set_index("method").loc["random", "kind"] == "control"
    best = ranking["best"]
    assert best == table[table.kind != "control"].iloc[0]["method"]
    sentences = finding_sentences(result.summary)
    assert len(sentences) == 3 and best in sentences[0]  # ranking, control, ceiling
    assert sentences[2].startswith("For scale, training noise caps the LDS")
    assert headline_lines(result)[-2 - len(sentences):-2] == sentences
    import html

    assert html.escape(sentences[0]) in (out / "report.html").read_text()


def test_cli_attribute_on_an_existing_run(study, tmp_path, capsys):
    config, out, _ = study
    # A damping grid whose best value is its upper edge, not extended: a warning, recorded.
    code = main(["attribute", str(out / "population"), "--methods", "grad_dot,if_exact,random",
                 "--targets", "10", "--heldout", "40", "--validation", "20",
                 "--dampings", "0.001,0.01", "--damping-extensions", "0", "--no-ceiling",
                 "--self-influence-methods", "grad_dot",
                 "--out", str(tmp_path / "cli"), "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    # One rounded line per score (no JSON): "name  LDS value ± se  seconds"
    rows = {line.split()[0]: float(line.split()[2])
            for line in printed[:printed.index("held-out models")].splitlines()}
    assert set(rows) == {"grad_dot", "if_exact", "random", "datamodels", "diff_in_means"}
    assert rows["grad_dot"] > rows["random"]
    assert "of the ceiling" not in printed and "LDS ceiling" not in printed
    assert not printed.lstrip().startswith("{")
    summary = loads_strict((tmp_path / "cli" / "summary.json").read_text())
    assert summary["ceiling"] is None and not (tmp_path / "cli" / "ceiling").exists()
    assert [edge["method"] for edge in summary["damping_edges"]] == ["if_exact"]
    assert summary["damping_edges"][0]["edge"] == "upper"
    assert "memlab: warning: if_exact: the damping chosen" in captured.err
    assert "damping on the grid's upper edge: if_exact (0.01)" in printed
    assert main(["attribute", str(out / "population"), "--methods", "nope"]) == 2
    # --models is the population's size (training); the models a method reads: --method-models
    assert main(["attribute", str(out / "population"), "--models", "3"]) == 2
    assert "--method-models" in capsys.readouterr().err


def test_none_chooses_from_the_population(study):
    """methods / self_influence_methods / tracin_checkpoints = None (the command's defaults)
    choose what applies: if_exact only where the exact Hessian fits, TracIn at 1/4, 1/2,
    3/4 and the end of training."""
    from memlab.measures.attribution.methods import METHODS
    from memlab.population import open_run
    from memlab.studies.attribute import config as attribute_config
    from memlab.studies.attribute.study import resolve

    assert attribute_config.METHODS == tuple(METHODS)
    _, out, _ = study
    population = open_run(out / "population")  # logistic regression: if_exact applies
    auto = AttributeConfig(run_dir=str(population.path))
    resolved = resolve(auto, population)
    assert resolved.methods == attribute_config.DEFAULT_METHODS
    assert resolved.self_influence_methods == ("grad_dot", "trak", "if_exact", "if_ekfac")
    assert resolved.tracin_checkpoints == (5, 10, 15, 20)  # 20 epochs
    assert auto.resolved_methods(small=False) == tuple(
        m for m in attribute_config.DEFAULT_METHODS if m != "if_exact")
    assert auto.resolved_self_influence_methods(("trak",)) == ("grad_dot", "trak", "if_ekfac")
    assert auto.resolved_checkpoints(30) == (8, 15, 22, 30)


def test_if_exact_on_a_model_too_large_for_the_hessian_fails_at_once(tmp_path):
    """if_exact needs the full Hessian: on a 5,110-parameter MLP the study says so before
    the ground truth and the other methods run (it used to fail when if_exact's turn came)."""
    import time

    from memlab.data import load
    from memlab.errors import ConfigError
    from memlab.population import train_population

    population = train_population(load("mnist1d"), model="mlp", model_kwargs={"hidden": [100]},
                                  n_models=20, subset_fraction=0.5, epochs=1, n_workers=1,
                                  out=tmp_path / "population", progress=False)
    config = AttributeConfig(run_dir=str(population.path),
                             methods=("grad_dot", "if_exact"), n_targets=5, n_heldout=3,
                             n_validation=3, method_models=2, trak_models=2)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="if_exact needs the exact Hessian.*5110 param"):
        run(config, tmp_path / "attribute", progress=False)
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "attribute" / "summary.json").exists()
