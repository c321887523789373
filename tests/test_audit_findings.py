"""The audit report's finding (issue 31): every headline sentence computed from the data
with its 95% interval, planted both ways — an attack above chance against a null
population, memorized examples that are (and are not) the exposed ones, LiRA that beats
the loss threshold and one the data cannot tell from it — and the pointers a population
that cannot answer gets. Synthetic summaries, and two tiny synthetic populations (32
models × 300 examples, no training) audited by the study's own ``audit``: seconds."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from memlab.measures import audit as au
from memlab.measures import mia, stats
from memlab.studies.audit import RECIPE, AuditConfig
from memlab.studies.audit import figures as af
from memlab.studies.audit.study import (
    NEGLIGIBLE,
    audit,
    mem_exposure,
    mem_exposure_verdict,
)
from memlab.studies.base import Result

MODELS, EXAMPLES = 32, 300
CONFIG = AuditConfig(
    attacks=("lira_online", "lira_offline_fixed", "loss"), n_bootstrap=20,
    shadow_caps=(1, 2), curve_attacks=("lira_online", "lira_offline_fixed"),
    curve_examples=None, vulnerability_fpr=0.05,
    population=dataclasses.replace(RECIPE, n_models=MODELS, subset_fraction=0.5))


# ------------------------------------------------------------------ synthetic summaries


def metrics(auc: float, low: float, high: float, tpr: float = 0.05, tpr_low: float = 0.03,
            tpr_high: float = 0.07, trials: int = 100_000) -> dict:
    """One attack's summary entry: AUC and TPR at 0.1% / 1% FPR with intervals (TPR at 1%:
    twice that at 0.1%)."""
    def double(x: float | None) -> float | None:
        return None if x is None else 2 * x

    return {"auc": auc, "auc_ci_low": low, "auc_ci_high": high,
            "tpr_at_fpr_0.001": tpr, "tpr_at_fpr_0.001_ci_low": tpr_low,
            "tpr_at_fpr_0.001_ci_high": tpr_high, "tpr_at_fpr_0.01": 2 * tpr,
            "tpr_at_fpr_0.01_ci_low": double(tpr_low), "tpr_at_fpr_0.01_ci_high": double(tpr_high),
            "n_trials": trials, "shadows_in_mean": 69.3, "shadows_out_mean": 29.7}


def summary(**attacks: dict) -> dict:
    return {"attacks": list(attacks), **attacks,
            "population": {"n_models": 100, "train_acc_in_mean": 0.99},
            "shadows": {"all_vs_one": {"lira_online": {}}}}


def difference(value: float, low: float, high: float) -> dict:
    return {"difference": value, "ci_low": low, "ci_high": high, "se": (high - low) / 4}


def result_of(s: dict) -> Result:
    return Result("audit", AuditConfig().to_dict(), {}, s)


def test_an_attack_clearly_above_chance_is_said_to_be():
    s = summary(lira_online=metrics(0.70, 0.68, 0.72), loss=metrics(0.55, 0.54, 0.56))
    sentence = af.attack_sentence(s)
    assert sentence.startswith("LiRA online (the strongest of 2 attacks) tells members from "
                               "non-members above chance: AUC 0.700 [0.680, 0.720]")
    assert "at 0.1% FPR it finds 5.0% [3.0%, 7.0%] of member trials (above chance" in sentence
    assert stats.UNDECIDED not in sentence
    assert not af.null_like(s)
    assert not any("holds 0.5" in p for p in af.pointer_sentences(result_of(s)))


def test_a_null_population_cannot_decide_and_points_to_what_would():
    s = summary(lira_online=metrics(0.512, 0.48, 0.54, 0.0012, 0.0002, 0.004),
                loss=metrics(0.503, 0.49, 0.52))
    sentence = af.attack_sentence(s)
    assert sentence.startswith("The data cannot decide whether any attack tells members from "
                               "non-members better than chance")
    assert "0.512 [0.480, 0.540], an interval that holds 0.5" in sentence
    assert "above chance" not in sentence
    assert af.null_like(s)
    pointer = " ".join(af.pointer_sentences(result_of(s)))
    assert "holds 0.5" in pointer
    for flag in ("--models N", "--epochs", "--label-noise"):
        assert flag in pointer
    # Auditing RUN: the training options go without it.
    audited = Result("audit", AuditConfig(run_dir="runs/x").to_dict(), {}, s)
    assert "without RUN" in " ".join(af.pointer_sentences(audited))


def test_an_interval_below_chance_and_no_interval_are_not_called_above_chance():
    below = af.attack_sentence(summary(loss=metrics(0.40, 0.38, 0.42, 0.001, 0.0, 0.003)))
    assert below.startswith("Loss threshold ranks members below non-members")
    assert "below chance" in below and "above chance" not in below
    s = summary(lira_online=metrics(0.9, None, None, 0.5, None, None))
    assert "--bootstrap 0" in af.attack_sentence(s)
    assert stats.UNDECIDED in af.attack_sentence(s)
    assert any("--bootstrap 100" in p for p in af.pointer_sentences(result_of(s)))


def test_tpr_is_read_where_enough_non_members_pass_the_threshold():
    many, few = metrics(0.7, 0.68, 0.72), metrics(0.7, 0.68, 0.72, trials=3_000)
    assert af.low_fpr(many) == 0.001  # ~30,000 non-member trials: 30 false positives
    assert af.low_fpr(few) == 0.01  # ~900: 0.9 false positives at 0.1%
    assert "at 1% FPR (too few non-member trials for 0.1%)" in af.attack_sentence(
        summary(lira_online=few))


def test_lira_against_the_loss_threshold_both_ways():
    s = summary(lira_online=metrics(0.7, 0.68, 0.72), loss=metrics(0.55, 0.54, 0.56))
    s["lira_online_vs_loss"] = {"auc": difference(0.15, 0.14, 0.16),
                                "tpr_at_fpr_0.001": difference(0.04, 0.03, 0.05)}
    sentence = af.lira_sentence(s)
    assert sentence.startswith("LiRA online beats the loss threshold: AUC +0.150 [+0.140, "
                               "+0.160], TPR at 0.1% FPR +4.0 [+3.0, +5.0] percentage points")
    s["lira_online_vs_loss"] = {"auc": difference(0.004, -0.006, 0.014),
                                "tpr_at_fpr_0.001": difference(0.001, -0.002, 0.004)}
    sentence = af.lira_sentence(s)
    assert sentence.startswith("The data cannot decide whether LiRA online beats the loss "
                               "threshold") and "(every interval holds 0)" in sentence
    s["lira_online_vs_loss"]["auc"] = difference(0.02, 0.01, 0.03)
    mixed = af.lira_sentence(s)
    assert "AUC +0.020 [+0.010, +0.030]: higher" in mixed and "cannot decide" in mixed
    s["lira_online_vs_loss"] = {}  # --bootstrap 0
    assert "--bootstrap 0" in af.lira_sentence(s)
    assert af.lira_sentence(summary(lira_online=metrics(0.7, 0.68, 0.72))) is None


def test_few_shadows_point_to_the_fixed_variance_variants():
    few = metrics(0.7, 0.68, 0.72)
    few.update(shadows_in_mean=10.5, shadows_out_mean=4.5)
    s = summary(lira_online=few)
    pointer = " ".join(af.pointer_sentences(result_of(s)))
    assert "fixed-variance" in pointer and "--models N" in pointer
    s["shadows"]["all_vs_one"] = {}
    assert "two shadows per side" in " ".join(af.pointer_sentences(result_of(s)))


def test_canary_sentence_both_ways():
    def canaries(diff, low, high):
        return {"n_canaries": 30, "vulnerability": {
            "canary": {"mean": 0.1 + diff}, "clean": {"mean": 0.1}, "difference": diff,
            "difference_ci": [low, high]},
            "pooled_tpr_vulnerability_fpr_0.001": {"canary": 0.3, "clean": 0.004},
            "canaries_rank_above_clean": 0.93}

    exposed = af.canary_sentence(canaries(0.7, 0.6, 0.8))
    assert exposed.startswith("The 30 planted mislabeled canaries are more exposed than clean")
    undecided = af.canary_sentence(canaries(0.02, -0.05, 0.09))
    assert undecided.startswith("The data cannot decide whether the 30 planted")
    assert af.canary_sentence(None) is None


# ------------------------------------------------------------------ memorization and exposure


def relation_of(mem: np.ndarray, vulnerability: np.ndarray) -> dict:
    examples = pd.DataFrame({"mem": mem, "vulnerability": vulnerability,
                             "example_auc": 0.5})
    relation, _ = au.mem_relation(examples)
    return {**relation, **mem_exposure(examples)}


def test_memorized_examples_more_exposed_only_when_the_interval_says_so():
    rng = np.random.default_rng(0)
    mem = rng.random(500)
    exposed = relation_of(mem, mem + 0.3 * rng.standard_normal(500))
    assert exposed["verdict"] == stats.HIGHER and exposed["spearman_ci_low"] > 0.5
    sentence = af.memorization_sentence(exposed)
    assert sentence.startswith("Memorized examples are more exposed: Spearman "
                               "ρ(mem, vulnerability) = 0.")
    assert sentence.endswith("over 500 examples.")

    unrelated = relation_of(mem, rng.random(500))
    assert unrelated["spearman_ci_low"] < 0 < unrelated["spearman_ci_high"]
    sentence = af.memorization_sentence(unrelated)
    assert sentence.startswith("The data cannot decide whether memorized examples are more "
                               "exposed") and "an interval that holds 0" in sentence
    assert "unreliable" not in sentence
    assert "unreliable" in af.memorization_sentence(unrelated, reliability=0.25)

    less = relation_of(mem, -mem + 0.3 * rng.standard_normal(500))
    assert af.memorization_sentence(less).startswith("Memorized examples are less exposed")


def test_a_tiny_relation_resolved_by_many_examples_is_negligible():
    """ρ = 0.04 over 20,000 examples lies off 0 ([0.026, 0.054]) but is too weak to be
    called "memorized examples are more exposed"."""
    assert mem_exposure_verdict(0.026, 0.054) == NEGLIGIBLE
    assert mem_exposure_verdict(0.05, 0.30) == stats.HIGHER
    assert mem_exposure_verdict(-0.02, 0.10) == stats.UNDECIDED
    assert mem_exposure_verdict(None, None) == stats.UNDECIDED
    sentence = af.memorization_sentence({"spearman_mem_vulnerability": 0.04,
                                         "spearman_ci_low": 0.026, "spearman_ci_high": 0.054,
                                         "n_examples": 20_000})
    assert sentence.startswith("Memorization and exposure are related only negligibly")


def test_mem_exposure_is_the_relation_spearman_with_its_interval():
    """One ρ: the interval sits around the summary's spearman_mem_vulnerability, and a
    result saved without the interval gets it from its examples table."""
    rng = np.random.default_rng(1)
    mem = rng.random(200)
    examples = pd.DataFrame({"mem": mem, "vulnerability": mem + rng.random(200),
                             "example_auc": 0.5})
    relation, _ = au.mem_relation(examples)
    rho = stats.spearman_with_interval(mem, examples["vulnerability"].to_numpy())
    assert rho["rho"] == pytest.approx(relation["spearman_mem_vulnerability"])
    saved = Result("audit", {}, {"examples": examples}, {"memorization": relation})
    filled = af.mem_relation(saved)
    assert filled["spearman_ci_low"] == pytest.approx(rho["ci_low"])
    assert filled["spearman_ci_low"] < filled["spearman_mem_vulnerability"] \
        < filled["spearman_ci_high"]
    undefined = relation_of(mem, np.zeros(200))  # vulnerability the same everywhere
    assert "undefined" in af.memorization_sentence(undefined)


# ------------------------------------------------------------------ tiny populations


def population(per_mem: float, seed: int, config: AuditConfig = CONFIG) -> Result:
    """32 models × 300 examples: φ = μ_i + per_mem · mem_i · M + noise, μ_i ~ N(0, 3²)
    (heterogeneous examples: a global loss threshold is weak, per-example LiRA is not),
    mem_i uniform on [0, 1]. per_mem = 0 is a null population; per_mem = 4 plants
    exposure that grows with memorization."""
    rng = np.random.default_rng(seed)
    mask = rng.random((MODELS, EXAMPLES)) < 0.5
    mem = rng.random(EXAMPLES)
    phi = 3 * rng.standard_normal(EXAMPLES) + per_mem * mem * mask \
        + rng.standard_normal(mask.shape)
    memo = pd.DataFrame({"index": np.arange(EXAMPLES), "mem": mem, "mem_se": 0.05,
                         "canary": False})
    tables, s = audit(mia.AttackInputs(phi, mask), memo, config)
    s["population"] = {"run_dir": "synthetic", "n_models": MODELS, "n_train": EXAMPLES,
                       "dataset": "synthetic", "task": "classification",
                       "config": {"model": "none", "subset_fraction": 0.5, "epochs": 0},
                       "test_acc_mean": 0.5, "train_acc_in_mean": 0.5, "input_shape": []}
    return Result("audit", config.to_dict(), tables, s)


@pytest.fixture(scope="module")
def planted():
    return population(per_mem=4.0, seed=0)


@pytest.fixture(scope="module")
def null():
    # (Seed 1: in seed 0's null population two of the three AUC intervals miss 0.5 by
    # chance, [0.504, 0.536] and [0.502, 0.523]; 95% intervals do that. Seeds 1-3 hold it.)
    return population(per_mem=0.0, seed=1)


def test_planted_population_gets_the_finding(planted):
    s = planted.summary
    assert s["memorization"]["verdict"] == stats.HIGHER
    finding = af.finding_sentences(planted)
    assert len(finding) == 3
    assert "above chance: AUC" in finding[0]
    assert finding[1].startswith("LiRA online beats the loss threshold")
    assert finding[2].startswith("Memorized examples are more exposed")
    html = af.build_report(planted).html()
    assert "Memorized examples are more exposed" in html


def test_null_population_cannot_decide_and_never_claims_it(null):
    s = null.summary
    assert af.null_like(s)
    finding = af.finding_sentences(null)
    assert finding[0].startswith("The data cannot decide whether any attack")
    assert finding[2].startswith("The data cannot decide whether memorized examples")
    html = af.build_report(null).html()
    assert "<h2>Memorization and exposure</h2>" in html
    assert "⇒" not in html and "Memorized examples are more exposed" not in html
    assert "--models N" in html  # the pointer


def test_report_shape_no_json_reproduce_last(planted):
    html = af.build_report(planted).html()
    assert '"auc_ci_low"' not in html and "auc_ci_low" not in html  # no summary dump
    assert html.index('<div class="finding">') < html.index("<h2>Attacks</h2>")
    headings = [part.split("</h2>")[0] for part in html.split("<h2>")[1:]]
    assert headings[0] == "Attacks" and headings[-1] == "Reproduce"
    assert "<details><summary><h2>Reproduce" in html  # collapsed
    assert "memlab audit" in html
    lines = af.headline_lines(planted)
    assert lines[0] == af.finding_sentences(planted)[0]
    assert any(line.startswith("lira_online ") for line in lines)
    assert not any(line.lstrip().startswith(("{", '"')) for line in lines)


def test_no_intervals_and_one_attack_still_make_a_report_that_cannot_decide():
    """--bootstrap 0 --attacks loss: no interval, no LiRA sentence, the pointer to
    --bootstrap; memorization keeps its own (Fisher) interval."""
    bare = population(4.0, 0, CONFIG.replace(attacks=("loss",), curve_attacks=("loss",),
                                             n_bootstrap=0))
    finding = af.finding_sentences(bare)
    assert len(finding) == 2 and "--bootstrap 0" in finding[0]
    assert finding[1].startswith("Memorized examples are more exposed")
    html = af.build_report(bare).html()
    assert "--bootstrap 100" in html and "non-members above chance" not in html
