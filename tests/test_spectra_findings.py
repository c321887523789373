"""Spectra reports that say only what the data says (issue 31): the summary's verdict counts
and the reports' counts come from one function of the per-layer table, so they agree with
the per-layer verdicts (the issue's "n_no-power-law = 0" beside five "no power-law tail"
layers); the finding's sentences are computed, with planted cases both ways; and a
40-layer model gets a compact report whose tick labels cannot overlap."""

from __future__ import annotations

import itertools
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from memlab.measures.spectra import (  # noqa: E402
    SpectraResult,
    population_layers,
    summarize,
    verdict,
    verdict_counts,
)
from memlab.studies.spectra_study.figures import (  # noqa: E402
    MAX_ESD_PANELS,
    MAX_SCATTER_PANELS,
    correlation_finding,
    layer_finding,
    plot_alpha_by_depth,
    plot_alpha_vs_accuracy,
    plot_correlation_by_layer,
    plot_esd_overview,
    plot_population_alpha,
    population_finding,
    population_report,
    single_model_report,
    study_finding,
    verdict_table,
)

# verdict() inputs of each kind; the phase and text are verdict()'s own, not written here.
KINDS = {
    "heavy-tailed": dict(num_evals=200, alpha=3.0, sigma=0.1),
    "very-heavy-tailed": dict(num_evals=200, alpha=1.6, sigma=0.05),
    "bulk-decay": dict(num_evals=200, alpha=5.0, sigma=0.1),
    "undecided": dict(num_evals=200, alpha=3.9, sigma=0.2),  # spans 4: two bands
    # The case: an MP fit with spikes gives the phase "bulk+spikes", and the tail
    # test rejects the power law: the verdict reads "no power-law tail".
    "no-power-law": dict(num_evals=200, alpha=3.0, sigma=0.1, num_spikes=3, lambda_max=10.0,
                         bulk_max=2.0, tests={"exponential": (-2.5, 0.01)}),
    "no-fit": dict(num_evals=200, alpha=math.nan, sigma=math.nan, num_spikes=2,
                   lambda_max=10.0, bulk_max=2.0,
                   fit_reason="only 3 eigenvalues above the floor; too few for a tail fit"),
    "unfitted": dict(num_evals=10, alpha=math.nan, sigma=math.nan),
    "rank-collapse": dict(num_evals=200, alpha=math.nan, sigma=math.nan, rank_fraction=0.2),
    "random-like": dict(num_evals=200, alpha=math.nan, sigma=math.nan, num_spikes=0,
                        lambda_max=2.0, bulk_max=2.1),
}


def layer_row(kind: str, layer_id: int, bootstrap: bool = False, **changes) -> dict:
    """One per-layer table row as analyze() makes it, its verdict computed by verdict()."""
    args = {"fit_reason": "", "rank_fraction": 1.0, **KINDS[kind], **changes}
    if bootstrap and math.isfinite(args["alpha"]):  # a bootstrap interval ± 0.3
        args.update(alpha_lo=args["alpha"] - 0.3, alpha_hi=args["alpha"] + 0.3)
    phase, evidence, words = verdict(**args)
    row = {"layer_id": layer_id, "name": f"encoder.layer.{layer_id}.attention.self.value",
           "type": "linear", "shape": "384×384", "num_evals": args["num_evals"],
           "alpha": args["alpha"], "sigma": args["sigma"], "xmin": 1.0, "n_tail": 60,
           "reason": args["fit_reason"], "phase": phase, "evidence": evidence,
           "verdict": words}
    if bootstrap:
        row.update(alpha_lo=args.get("alpha_lo", math.nan), alpha_hi=args.get("alpha_hi",
                                                                            math.nan))
    return row


def table_of(kinds: list[str], bootstrap: bool = False) -> pd.DataFrame:
    return pd.DataFrame([layer_row(kind, i, bootstrap) for i, kind in enumerate(kinds)])


# ------------------------------------------------------------------ counts agree with verdicts


def test_summary_counts_agree_with_the_per_layer_verdicts():
    kinds = (["heavy-tailed"] * 4 + ["no-power-law"] * 5 + ["undecided"] * 2
             + ["unfitted", "no-fit", "rank-collapse", "random-like", "bulk-decay"])
    table = table_of(kinds)
    # The bug: five verdicts say "no power-law tail" while no phase is "no-power-law".
    said = table["verdict"].str.startswith("no power-law tail")
    assert said.sum() == 5 and (table["phase"] == "no-power-law").sum() == 0
    assert set(table.loc[said, "phase"]) == {"bulk+spikes"}
    summary = summarize(table).iloc[0]
    assert summary["n_no-power-law"] == 5
    expected = pd.Series(kinds).value_counts()
    for kind in KINDS:
        assert summary[f"n_{kind}"] == expected.get(kind, 0), kind
    assert sum(summary[f"n_{kind}"] for kind in KINDS) == summary["layers"] == len(table)
    # The report counts with the same function: its verdict table is the summary's counts.
    shown = verdict_table(table).set_index("verdict")["layers"]
    assert shown.to_dict() == {k: int(v) for k, v in expected.items()}
    assert verdict_counts(table)["no-power-law"] == 5
    # Each verdict's words agree with its kind.
    assert table.loc[[k == "undecided" for k in kinds], "verdict"].str.contains(
        "cannot decide").all()
    assert table.loc[[k == "unfitted" for k in kinds], "verdict"].str.startswith(
        "too few eigenvalues").all()
    page = single_model_report(SpectraResult(table, summarize(table), label="planted")).html()
    assert "5 have no power-law tail" in page
    verdicts = page[page.index("Layers per verdict"):]
    assert re.search(r"<td>no-power-law</td>\s*<td>5</td>", verdicts)


def test_population_layers_share_the_verdict_kinds():
    table = pd.concat([table_of(["no-power-law", "heavy-tailed"]).assign(model=m)
                       for m in range(4)], ignore_index=True)
    layers = population_layers(table)
    assert list(layers["verdicts"]) == ["no-power-law 100%", "heavy-tailed 100%"]


# ------------------------------------------------------------------ the finding, both ways


def test_layer_finding_reports_decided_bands_with_their_intervals():
    table = pd.DataFrame([layer_row("heavy-tailed", i, bootstrap=True, alpha=a)
                          for i, a in enumerate([2.5, 3.0, 3.5])])
    sentences = layer_finding(table)
    assert sentences[0].startswith("3 of 3 weight matrices have a phase the data decide")
    assert "3 heavy-tailed (α 2–4), α from 2.50 [2.20, 2.80] to 3.50 [3.20, 3.80]" in sentences[0]
    assert not any("cannot decide" in s for s in sentences)
    assert not any("--uncertainty" in s for s in sentences)  # bootstrap intervals: no pointer


def test_layer_finding_cannot_decide_when_intervals_span_bands():
    table = pd.DataFrame([layer_row("undecided", i, alpha=a, sigma=0.5)
                          for i, a in enumerate([2.1, 3.9, 5.9])])
    assert (table["phase"] == "undecided").all()
    sentences = layer_finding(table)
    assert sentences[0].startswith("None of the 3 weight matrices has a phase the data "
                                   "decide: cannot decide")
    assert "For 3 the interval of α spans two bands: cannot decide their phase" in sentences[1]
    # x_min-fixed intervals and no GOF: the finding points to --uncertainty.
    assert "--uncertainty" in sentences[2]


def test_population_finding_with_and_without_accuracy():
    rng = np.random.default_rng(0)
    n_models = 40
    accuracy = rng.uniform(0.5, 0.9, n_models)
    rows = []
    for model in range(n_models):
        planted = 5.0 - 3.0 * accuracy[model] + rng.normal(0, 0.02)  # α falls with accuracy
        for layer_id, alpha in enumerate([planted, 3.0 + rng.normal(0, 0.3)]):
            rows.append({**layer_row("heavy-tailed", layer_id, alpha=alpha), "model": model})
    table = pd.DataFrame(rows)
    layers = population_layers(table, accuracy)
    sentence = correlation_finding(layers)
    assert layers.loc[0, "spearman_hi"] < 0  # planted: resolved, negative
    assert "lower α in more accurate models on" in sentence
    assert "encoder.layer.0.attention.self.value" in sentence  # the strongest
    assert "by chance alone about 0.1 would" in sentence
    # A null population: every interval contains 0 -> cannot decide.
    null = layers.assign(spearman_alpha_accuracy=[0.05, -0.02], spearman_lo=[-0.3, -0.35],
                         spearman_hi=[0.35, 0.3])
    assert correlation_finding(null).startswith("On none of the 2 fitted layers")
    assert "cannot decide" in correlation_finding(null)
    no_accuracy = population_finding(table, population_layers(table), None)
    assert no_accuracy[0].startswith(f"Of {len(table)} fits (40 models × 2 layers)")
    assert "memlab spectra RUN_DIR" in no_accuracy[1]  # the pointer to what can answer


def test_study_finding_resolved_and_undecided_knobs():
    summary = {"alpha_spearman": {
        "label_noise": {"rho": -0.8, "low": -0.95, "high": -0.5, "n_models": 8},
        "epochs": {"rho": 0.1, "low": -0.5, "high": 0.6, "n_models": 8}}}
    correlations = pd.DataFrame([
        {"knob": k, "metric": m, "spearman": r, "spearman_lo": lo, "spearman_hi": hi}
        for k, m, r, lo, hi in [("label_noise", "alpha", -0.8, -0.95, -0.5),
                                ("epochs", "alpha", 0.1, -0.5, 0.6),
                                ("label_noise", "log_norm", -0.9, -0.97, -0.7),
                                ("epochs", "log_norm", -0.7, -0.9, -0.3),
                                ("label_noise", "stable_rank", 0.1, -0.4, 0.5),
                                ("epochs", "stable_rank", 0.0, -0.5, 0.5)]])
    first, second = study_finding(summary, correlations)
    assert "varying label_noise (8 models), ρ = -0.80 [-0.95, -0.50]: α is lower in the more " \
           "accurate models" in first
    assert "varying epochs (8 models), ρ = 0.10 [-0.50, 0.60]: cannot decide" in first
    assert "on every knob: log_norm; on some: alpha (1 of 2); on none (cannot decide): " \
           "stable_rank" in second
    # Narrow MLPs: no layer reaches 50 eigenvalues, no α, no correlation to decide.
    narrow = {"alpha_spearman": {"epochs": {"rho": None, "low": None, "high": None,
                                            "n_models": 0}}}
    models = pd.DataFrame({"knob": ["epochs"] * 4})
    sentence = study_finding(narrow, correlations.iloc[:0], models)[0]
    assert "varying epochs, only 0 of 4 models have a layer with at least 50 eigenvalues" \
           in sentence and "cannot decide" in sentence and "--hidden 64,64" in sentence


# ------------------------------------------------------------------ a many-layer model


def tick_overlaps(fig: plt.Figure) -> list[str]:
    """Pairs of visible tick labels of one axis whose drawn boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in labels]
            for (a, ta), (b, tb) in itertools.combinations(zip(boxes, labels), 2):
                if a.overlaps(b):
                    found.append(f"{ax.get_title()[:30]}: {ta.get_text()} / {tb.get_text()}")
    return found


def test_tick_overlap_check_finds_crowded_labels():
    fig, ax = plt.subplots(figsize=(3, 2))  # the check itself: 40 long labels in 3 inches
    ax.set_xticks(range(40), [f"encoder.layer.{i}.value" for i in range(40)])
    assert tick_overlaps(fig)
    plt.close(fig)


@pytest.fixture(scope="module")
def deep_model() -> SpectraResult:
    """40 layers of every verdict kind, each with a power-law ESD of 200 eigenvalues."""
    rng = np.random.default_rng(1)
    kinds = list(itertools.islice(itertools.cycle(KINDS), 40))
    table = table_of(kinds, bootstrap=True)
    eigenvalues = {i: np.sort((1 - rng.random(200)) ** (-1 / 2.0)) for i in range(40)}
    return SpectraResult(table, summarize(table), eigenvalues, label="a 40-layer model",
                         order="module")


def open_part(page: str) -> str:
    """The page without its collapsed sections (what a reader sees before clicking)."""
    return re.sub(r"<details>.*?</details>", "", page, flags=re.S)


def test_a_deep_model_gets_a_compact_report(deep_model, tmp_path):
    page = single_model_report(deep_model).html()
    assert page.count("<figure>") <= 3  # α by depth, one ESD overview; no figure per block
    visible = open_part(page)
    assert visible.count("<figure>") == 1  # the α-by-depth summary; ESDs collapsed
    assert visible.count("<tr>") <= 12  # the verdict table; the 40-row table collapsed
    fig = plot_esd_overview(deep_model)
    assert len(fig.axes) <= MAX_ESD_PANELS
    shown = {title.get_text().split(", ")[-1] for title in (ax.title for ax in fig.axes)}
    assert len(shown) >= 5  # the panels show several verdict kinds, not the first 12 layers
    for figure in (fig, plot_alpha_by_depth(deep_model.table)):
        assert not tick_overlaps(figure)
        plt.close(figure)
    path = tmp_path / "report.html"
    path.write_text(page)
    from memlab.testing import check_report

    check_report(path, "40-layer spectra report")


def test_a_deep_population_gets_a_compact_report():
    rng = np.random.default_rng(2)
    n_models, n_layers = 10, 40
    accuracy = rng.uniform(0.6, 0.9, n_models)
    rows = [{**layer_row("heavy-tailed", layer, alpha=3 + rng.normal(0, 0.2)), "model": m}
            for m in range(n_models) for layer in range(n_layers)]
    table = pd.DataFrame(rows)
    result = SpectraResult(table, summarize(table), label="population")
    page = population_report(result, accuracy).html()
    assert page.count("<figure>") <= 4
    assert open_part(page).count("<tr>") <= 2  # the 40-row table collapsed
    layers = population_layers(table, accuracy)
    for fig in (plot_population_alpha(layers, table), plot_correlation_by_layer(layers)):
        assert not tick_overlaps(fig)
        plt.close(fig)
    scatter = plot_alpha_vs_accuracy(layers, table, accuracy, limit=MAX_SCATTER_PANELS)
    assert len(scatter.axes) == MAX_SCATTER_PANELS  # of 40 layers, the six largest |ρ|
    plt.close(scatter)
