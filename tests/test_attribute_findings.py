"""The attribution report's finding, planted both ways: a ranking that says which of its
differences the data resolves, the methods that do not beat the random control, the
ceiling for scale; one colour per method in every panel; the report's shape.

Populations here are synthetic and exact: outputs f = M @ tau + noise for a planted tau,
so a method's quality is set by how much noise its scores add to tau (seconds to run).
"""

import numpy as np
import pandas as pd
import pytest

from memlab.measures.attribution.lds import lds
from memlab.measures.stats import UNDECIDED, Z95
from memlab.studies.attribute import figures as af
from memlab.studies.attribute import scoring as sc


def planted(n_models: int = 80, n_train: int = 60, n_targets: int = 20, seed: int = 0,
            **quality: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """(scores, held-out mask, outputs): method ``name=sd`` scores tau plus Gaussian noise of
    that sd (None: pure noise, no tau at all); 'random' always pure noise."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_models, n_train)) < 0.5
    tau = rng.normal(size=(n_train, n_targets))
    outputs = mask @ tau + 2.0 * rng.normal(size=(n_models, n_targets))
    scores = {}
    for name, sd in {**quality, "random": None}.items():
        noise = rng.normal(size=tau.shape)
        scores[name] = noise if sd is None else tau + sd * noise
    return scores, mask, outputs


def summary_of(scores: dict, mask: np.ndarray, outputs: np.ndarray, **extra) -> dict:
    _, ranking = sc.ranking(scores, mask, outputs, seed=0)
    return {"ranking": ranking, "ceiling": None, **extra}


def test_methods_clearly_above_random_are_ranked_and_better_than_random():
    s = summary_of(*planted(good=0.3, fair=3.0))
    r = s["ranking"]
    assert r["best"] == "good" and r["runner_up"] == "fair" and r["tied_with_best"] == []
    assert r["better_than_control"] == ["good", "fair"]
    assert r["undecided_vs_control"] == r["worse_than_control"] == []
    sentence = af.ranking_sentence(s)
    assert sentence.startswith("good ranks first with LDS ")
    assert "resolved from the runner-up fair" in sentence and "[" in sentence
    assert af.control_sentence(s).startswith("Against the random control (LDS ")
    assert "every method is better: the closest, fair, by +" in af.control_sentence(s)


def test_a_method_whose_interval_overlaps_the_random_control_is_not_called_better():
    s = summary_of(*planted(good=0.3, null=None))
    r = s["ranking"]
    assert r["better_than_control"] == ["good"]
    assert "null" in r["undecided_vs_control"] + r["worse_than_control"]
    rows = {row["method"]: row for row in r["rows"]}
    assert rows["null"]["vs_control_low"] < 0 < rows["null"]["vs_control_high"]
    assert rows["null"]["vs_control_verdict"] == UNDECIDED
    sentence = af.control_sentence(s)
    assert "1 of 2 methods are better" in sentence
    assert "cannot decide whether null (" in sentence and "beats it" in sentence


def test_no_method_resolved_from_random_means_no_ranking():
    s = summary_of(*planted(null_a=None, null_b=None))
    assert s["ranking"]["better_than_control"] == []
    assert af.ranking_sentence(s).startswith("No method is resolved from the random control")
    assert "cannot rank" in af.ranking_sentence(s)


def test_two_methods_with_overlapping_intervals_cannot_be_ranked():
    s = summary_of(*planted(twin_a=1.5, twin_b=1.5, weak=4.0))
    r = s["ranking"]
    assert set(r["better_than_control"]) == {"twin_a", "twin_b", "weak"}
    best, other = r["best"], ({"twin_a", "twin_b"} - {r["best"]}).pop()
    assert r["tied_with_best"] == [other]  # the weak one is resolved below both
    rows = {row["method"]: row for row in r["rows"]}
    assert rows[best]["vs_next_verdict"] == UNDECIDED and rows[best]["next_method"] == other
    assert rows[other]["vs_next_verdict"] == "higher"  # the twin is resolved from weak
    sentence = af.ranking_sentence(s)
    assert sentence.startswith(f"Cannot decide between {best} (LDS ")
    assert f"and {other} (LDS " in sentence and "the paired difference, -" in sentence
    assert "includes 0" in sentence
    # Three of a kind: one sentence names all three.
    s = summary_of(*planted(a=1.5, b=1.5, c=1.5))
    assert len(s["ranking"]["tied_with_best"]) == 2
    sentence = af.ranking_sentence(s)
    assert sentence.startswith("Cannot decide between ") and sentence.count("(LDS ") == 3
    assert f"every paired difference from {s['ranking']['best']} includes 0" in sentence


def test_the_ranking_interval_is_the_lds_interval_and_differences_are_paired():
    """Each method's interval is lds ± 1.96 lds_se of memlab's LDS (the same resamples);
    the paired difference of two methods is narrower than their two intervals combined."""
    scores, mask, outputs = planted(good=0.3, fair=3.0)
    table, _ = sc.ranking(scores, mask, outputs, seed=0)
    for row in table.itertuples():
        alone = lds(scores[row.method], mask, outputs, seed=0)
        assert row.lds == pytest.approx(alone.mean)
        assert row.lds_low == pytest.approx(alone.mean - Z95 * alone.se)
        assert row.lds_high == pytest.approx(alone.mean + Z95 * alone.se)
    good = table.set_index("method").loc["good"]
    unpaired = np.hypot(good.lds_high - good.lds,
                        table.set_index("method").loc["fair"].lds_high - table.set_index(
                            "method").loc["fair"].lds)
    assert good.vs_next_high - good.vs_next < unpaired


def test_without_a_random_control_the_lds_is_compared_with_zero_and_says_how_to_add_one():
    scores, mask, outputs = planted(good=0.3, null=None)
    del scores["random"]
    s = summary_of(scores, mask, outputs)
    assert s["ranking"]["control"] is None
    assert s["ranking"]["better_than_control"] == ["good"]
    sentence = af.control_sentence(s)
    assert sentence.startswith("No random control was scored (add random to --methods)")
    assert "cannot decide whether null (" in sentence


def test_ceiling_sentence_gives_scale_or_says_it_cannot_decide():
    s = summary_of(*planted(good=0.3, fair=3.0))
    for row in s["ranking"]["rows"]:
        row.update(ceiling_ratio=0.8, ceiling_ratio_low=0.7, ceiling_ratio_high=0.9)
    s["ceiling"] = {"ceiling": 0.9, "ceiling_se": 0.01, "ceiling_single": 0.82}
    sentence = af.ceiling_sentence(s)
    assert sentence.startswith("For scale, training noise caps the LDS at 0.820 against one")
    assert "good reaches 0.80 [0.70, 0.90] of the reachable LDS" in sentence
    s["ceiling"] = {"ceiling": 0.03, "ceiling_se": 0.05, "ceiling_single": 0.02}
    assert "cannot decide whether training noise leaves anything" in af.ceiling_sentence(s)
    s["ceiling"] = None
    assert af.ceiling_sentence(s) is None
    assert len(af.finding_sentences(s)) == 2


def test_a_result_without_a_ranking_says_so():
    assert "no ranking with intervals" in af.ranking_sentence({"ranking": None})
    assert af.control_sentence({}) is None


# ------------------------------------------------------------------ colours and the page


def test_every_method_has_one_colour_of_its_own():
    from memlab.studies.attribute.config import METHODS

    assert af.REFERENCE == sc.REFERENCES and af.CONTROL == sc.CONTROL
    names = (*METHODS, *sc.REFERENCES)
    colours = [af.method_color(name) for name in names]
    assert len(set(colours)) == len(names) and af.OTHER_COLOR not in colours


def synthetic_result(tmp_path=None):
    """A Result with every table and summary key the report reads, from a planted ranking."""
    from memlab.studies.attribute import AttributeConfig
    from memlab.studies.base import Result

    scores, mask, outputs = planted(trak=0.3, grad_dot=1.5, knn=None)
    table, ranking = sc.ranking(scores, mask, outputs, seed=0)
    rows = {row["method"]: row for row in ranking["rows"]}
    methods = pd.DataFrame([{"method": name, "lds": rows[name]["lds"], "lds_se": 0.02,
                             "seconds": 1.0 + i, "flops": 1e6 * (i + 1), "n_models_used": 2}
                            for i, name in enumerate(scores)])
    top = pd.DataFrame([{"target": 0, "target_label": 1, "method": name, "rank": k,
                         "train_index": k, "train_label": 0, "score": 1.0}
                        for name in (*scores, "datamodels") for k in range(5)])
    curve = pd.DataFrame({"n_models": [10, 20], "datamodels_lds": [0.1, 0.2],
                          "datamodels_lds_se": [0.01, 0.01], "diff_means_lds": [0.1, 0.15],
                          "diff_means_lds_se": [0.012, 0.011]})
    summary = {
        "ranking": ranking, "ceiling": None, "damping_edges": [], "output": "test_logodds",
        "n_heldout_models": 80, "n_targets": 20, "n_validation_models": 10,
        "n_fit_models": 100, "self_influence": None,
        "removal": {"trak": {"effect_vs_random": -0.5, "se": 0.1, "k": 20, "n_targets": 3,
                             "seeds": 2}},
        "population": {"dataset": "planted", "n_models": 190, "n_train": 60,
                       "test_acc_mean": 0.9, "train_seconds": 3.0, "train_flops": 1e9,
                       "config": {"model": "mlp", "subset_fraction": 0.5, "epochs": 4}}}
    return Result("attribute", AttributeConfig.tiny().to_dict(),
                  {"methods": methods, "ranking": table, "top_examples": top,
                   "models_curve": curve}, summary, out=tmp_path)


def test_one_colour_per_method_in_every_panel():
    import matplotlib.colors as mcolors

    result = synthetic_result()
    figures = af.draw_figures(result)
    seen: dict[str, set] = {}
    for name in ("ranking", "pareto"):
        for ax in figures[name].axes:
            for text in ax.texts + ax.get_yticklabels():
                if text.get_text() in af.METHOD_COLORS:
                    seen.setdefault(text.get_text(), set()).add(
                        mcolors.to_hex(text.get_color()))
            for line in ax.lines:  # the errorbar markers
                if line.get_marker() not in (None, "None", ""):
                    colour = mcolors.to_hex(line.get_color())
                    assert colour in {af.method_color(m) for m in af.METHOD_COLORS}
    for name, colours in seen.items():
        assert colours == {af.method_color(name)}, name
    assert set(seen) >= {"trak", "grad_dot", "knn", "random"}
    # The pareto figure's two panels name each method once, in the same colour.
    pareto = figures["pareto"].axes
    left = {t.get_text(): t.get_color() for t in pareto[0].texts if t.get_text() in seen}
    right = {t.get_text(): t.get_color() for t in pareto[1].texts if t.get_text() in seen}
    assert left == right and len(left) == 4


def test_report_leads_with_the_finding_and_ends_with_reproduce(tmp_path):
    html = af.build_report(synthetic_result(tmp_path)).html()
    finding = html.index('<div class="finding">')
    assert finding < html.index("<section>")
    assert "trak ranks first with LDS" in html or "Cannot decide between" in html
    assert html.rindex("<h2>") == html.index("<h2>Reproduce</h2>")  # the last section
    assert "memlab attribute" in html[html.index("<h2>Reproduce</h2>"):]
    # Rounded to their intervals, never dumped: no 16-digit floats, no JSON.
    assert "lds_low" not in html and '"rows"' not in html
    assert not any(len(word.strip("[],")) > 12 and word.strip("[],").replace(".", "").replace(
        "-", "").isdigit() for word in html.split())
