"""Spectra reports that read well: one summary row per layer for a 192-model population,
every axis labelled, no title cut, a headless-browser render; and the study shape of
``spectra-study`` (quick preset, resumable, correlations with intervals; the command and
its knobs)."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from memlab.measures.spectra import analyze_full, population_layers  # noqa: E402
from memlab.studies.spectra_study.figures import (  # noqa: E402
    layer_group,
    plot_alpha_by_depth,
    plot_alpha_vs_accuracy,
    plot_layer_groups,
    plot_population_alpha,
    population_report,
    wrap,
)

torch.set_num_threads(1)
N_MODELS = 192


@pytest.fixture(scope="module")
def population():
    """192 models × 3 layers (one too small to fit), stacked as a population run stores
    them, with a test accuracy per model that α is planted to track on layer 0."""
    rng = np.random.default_rng(0)
    alphas = rng.uniform(2.5, 4.5, N_MODELS)
    first = np.stack([(rng.standard_normal((120, 60)) / 8) @ np.diag(
        np.sqrt((1 - rng.random(60)) ** (-1 / (a - 1)))) for a in alphas])
    state = {"layers.0.weight": first.astype(np.float32),
             "layers.1.weight": (rng.standard_normal((N_MODELS, 80, 120)) / 11).astype(
                 np.float32),
             "layers.2.weight": (rng.standard_normal((N_MODELS, 10, 80)) / 9).astype(
                 np.float32)}
    result = analyze_full(state, population=True, device="cpu", randomize=False)
    accuracy = 0.9 - 0.05 * alphas + rng.normal(0, 0.01, N_MODELS)
    return result, accuracy


def assert_readable(fig: plt.Figure, names: list[str] = ()) -> None:
    """Every axis has both labels; every title lies inside the figure; each name given
    appears in full in some title (wrapping may break lines, never drop characters)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    titles = []
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
        for text in (ax.title, *([fig._suptitle] if fig._suptitle else [])):
            if text.get_text():
                extent = text.get_window_extent(renderer)
                assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, text.get_text()
                assert extent.y1 <= box.y1 + 1, text.get_text()
                titles.append(text.get_text().replace("\n", ""))
    for name in names:
        assert any(name in title for title in titles), name
    plt.close(fig)


def test_population_report_has_one_row_per_layer_and_readable_figures(population):
    result, accuracy = population
    layers = population_layers(result.table, accuracy)
    assert len(result.table) == 3 * N_MODELS
    assert len(layers) == 3 and list(layers["models"]) == [N_MODELS] * 3
    assert layers.loc[2, "models_fitted"] == 0 and "unfitted 100%" in layers.loc[2, "verdicts"]
    # α was planted to fall as accuracy rises on layer 0: ρ < 0 with an interval below 0.
    assert layers.loc[0, "spearman_hi"] < 0 < layers.loc[0, "spearman_alpha_accuracy"] + 2
    assert_readable(plot_population_alpha(layers, result.table))
    assert_readable(plot_alpha_vs_accuracy(layers, result.table, accuracy),
                    names=["layers.0", "layers.1"])
    page = population_report(result, accuracy).html()
    section = page[page.index("Per layer, across models"):]
    table = section[: section.index("</table>")]
    assert table.count("</tr>") == 1 + 3  # header + one row per layer, not per model
    assert page.count("model 1") == 0 and "192 models" in page  # no per-model legend/notes
    notes = re.findall(r'<p class="note">', page)
    assert len(notes) <= 2  # one note per distinct reason, not one per model


def test_single_model_figures_are_labelled_and_titles_whole():
    torch.manual_seed(0)
    model = nn.Sequential()
    for block in range(3):
        layer = nn.Module()
        layer.attention_output_dense_with_a_long_name = nn.Linear(96, 96)
        layer.intermediate = nn.Linear(96, 192)
        model.add_module(f"encoder_block_{block}", layer)
    result = analyze_full(model, device="cpu", uncertainty=True, n_bootstrap=50)
    groups = plot_layer_groups(result)
    assert [group for group, _ in groups] == [f"encoder_block_{b}" for b in range(3)]
    for _, fig in groups:
        assert_readable(fig)
    assert_readable(plot_alpha_by_depth(result.table))
    assert "alpha_lo" in result.table and result.table["alpha_lo"].notna().all()
    names = list(result.table["name"])
    fig = plt.figure()
    assert wrap(names[0]).replace("\n", "") == names[0]
    plt.close(fig)
    assert layer_group("encoder.layer.3.attention.self.query") == "encoder.layer.3"
    assert layer_group("embeddings.word_embeddings") == "embeddings"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="apt-get install chromium")
def test_population_report_renders_in_headless_chromium(population, tmp_path):
    result, accuracy = population
    path = population_report(result, accuracy).save(tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1200,2000", f"file://{path}"],
                   capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 20_000  # a page with figures, not blank


@pytest.mark.slow
def test_spectra_study_quick_is_resumable_with_intervals(tmp_path):
    import dataclasses

    from memlab.studies.spectra_study import RECIPE, SpectraStudyConfig, run

    population = dataclasses.replace(RECIPE, model_kwargs={"hidden": [64, 64]}, n_models=3,
                                     epochs=4)
    config = SpectraStudyConfig.quick(knobs={"label_noise": [0.0, 1.0]}, n_bootstrap=200,
                                      population=population)
    result = run(config, tmp_path / "study", progress=False)
    assert result.summary["base"] == {"hidden": 64, "batch_size": 64, "label_noise": 0.0,
                                      "epochs": 4, "weight_decay": 0.0}
    correlations = result.tables["correlations"]
    assert len(result.tables["models"]) == 6
    assert (correlations["spearman_lo"] <= correlations["spearman"]).all()
    assert (correlations["spearman"] <= correlations["spearman_hi"]).all()
    assert result.summary["alpha_spearman"]["label_noise"]["n_models"] == 6
    assert (tmp_path / "study" / "report.html").is_file()
    again = run(config, tmp_path / "study", progress=False)
    assert again.summary == result.summary  # loaded, not recomputed


def test_spectra_study_command_keeps_its_name_and_reads_knobs():
    """``memlab spectra-study`` is generated from the config: the base recipe's flags are the
    population's, ``--knob`` replaces the knobs, and the Reproduce line parses back."""
    from memlab.studies.base import command_line, get_study
    from memlab.studies.spectra_study import SpectraStudyConfig
    from memlab.testing import config_from_command

    study = get_study("spectra_study")
    assert study.command == "spectra-study"
    config = config_from_command(study, "memlab spectra-study --quick --models 3 --hidden 32,32 "
                                        "--knob epochs=2,4 --knob label_noise=0,0.5 --seed 2")
    assert config.knobs == {"epochs": [2, 4], "label_noise": [0, 0.5]}
    assert (config.population.n_models, config.population.model_kwargs["hidden"],
            config.population.seed) == (3, [32, 32], 2)
    assert [tag for _, _, tag, _ in config.configurations()][0] == {
        "hidden": 32, "batch_size": 64, "label_noise": 0.0, "epochs": 2,
        "weight_decay": 0.0}
    line = command_line(study, config)
    assert config_from_command(study, line) == config
    with pytest.raises(Exception, match="unknown knobs"):
        SpectraStudyConfig(knobs={"depth": [1, 2]}).validate()
    with pytest.raises(Exception, match="equal positive widths"):
        config_from_command(study, "memlab spectra-study --hidden 64,32")
