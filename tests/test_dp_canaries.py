"""The DP audit from privacy canaries (issue: differential privacy).

Known answers: a non-private population's canaries give ε̂ ≥ 2; a DP run whose noise is
switched off (its accountant still claiming ε = 1) is caught, ε̂ > 1, over 1,600 canary
trials; correct DP runs at ε = 1 stay below their ε (20 seeds: at most one above, none above
1.2 ε). End to end: `memlab audit RUN --dp` on a DP run with its default canaries.
"""

import dataclasses
import json

import numpy as np
import pytest

from memlab.cli import main
from memlab.engine import dp
from memlab.engine.config import PopulationConfig, membership_mask
from memlab.errors import ConfigError
from memlab.measures.dp_canaries import audit_variants
from memlab.population import train_population
from tests.conftest import chunk_of, make_blobs

N_CANARIES = 100
CLAIM = dict(dp_epsilon=1.0, dp_delta=1e-5, dp_max_grad_norm=3.0)


def canary_audit(seed: int, dp_settings: dict, noise_off: bool = False,
                 clipping_off: bool = False, monkeypatch=None) -> dict:
    """32 MLPs on 200 blobs (100 each) plus 100 privacy canaries (and, with DP, 100
    gradient canaries), 40 epochs; their audit."""
    config = PopulationConfig(model="mlp", model_kwargs={"hidden": [32]}, n_models=32,
                              epochs=40, batch_size=32, lr=0.3, seed=seed,
                              dp_canaries=N_CANARIES, **dp_settings)
    data = make_blobs(n_train=200, n_features=10).with_privacy_canaries(N_CANARIES, seed)
    mask = membership_mask(config, data.n_train)
    if noise_off:  # the bug: noise skipped, the accountant's claim unchanged
        real = dp.privatize
        monkeypatch.setattr(dp, "privatize", lambda grads, noise, plan: real(
            grads, noise, dataclasses.replace(plan, noise_multiplier=0.0)))
    if clipping_off:  # the bug: every clip factor 1 (examples and gradient canaries)
        monkeypatch.setattr(dp, "clip_factors", lambda squared, weight, c: weight)
    result = chunk_of(data, config, range(32), mask)
    canaries = data.corruption["privacy_canaries"]["indices"]
    plan = dp.plan(config, config.subset_size(200), N_CANARIES)
    variants = {"blackbox": (result.arrays["train_logodds"][:, canaries], mask[:, canaries])}
    if plan is not None:
        variants["whitebox"] = (result.arrays["dp_gradient_canary_score"],
                                result.arrays["dp_gradient_canary_in"])
    return audit_variants(variants, plan.epsilon if plan else None,
                          plan.delta if plan else 1e-5, seed=seed,
                          independent_inclusion=plan is not None)


def test_a_non_private_population_gets_an_epsilon_lower_bound_of_at_least_2():
    audit = canary_audit(0, {})
    assert audit["epsilon"] is None and audit["epsilon_lower_bound"] >= 2
    assert audit["canary_accuracy_in"] > 0.9 > 0.5 > audit["canary_accuracy_out"]


def test_noise_switched_off_is_caught_at_a_claimed_epsilon_of_1(monkeypatch):
    audit = canary_audit(0, CLAIM, noise_off=True, monkeypatch=monkeypatch)
    assert audit["n_models"] * audit["n_canaries"] >= 1000  # canary trials
    assert abs(audit["epsilon"] - 1.0) < 0.01
    assert audit["epsilon_lower_bound"] > 1, audit
    assert audit["verdict"].startswith("violated")


def test_clipping_skipped_is_caught_white_box_with_gradient_canaries(monkeypatch):
    audit = canary_audit(0, CLAIM, clipping_off=True, monkeypatch=monkeypatch)
    assert dp.GRADIENT_CANARY_NORM >= 10  # canaries of norm 10 C
    assert audit["whitebox_canaries"] * audit["n_models"] >= 1000
    assert audit["epsilon_lower_bound_whitebox_one_run"] > 1, audit
    assert audit["verdict"].startswith("violated")


def test_correct_dp_runs_stay_below_their_epsilon_over_20_seeds():
    bounds = [canary_audit(seed, CLAIM)["epsilon_lower_bound"] for seed in range(20)]
    assert sum(b > 1.0 for b in bounds) <= 1, bounds
    assert max(bounds) <= 1.2, bounds


def test_privacy_canaries_drawn_per_model_independently_with_dp_and_by_half_without():
    with_dp = PopulationConfig(n_models=64, dp_noise_multiplier=1.0, dp_canaries=50)
    without = PopulationConfig(n_models=64, dp_canaries=50)
    for config, independent in ((with_dp, True), (without, False)):
        mask = membership_mask(config, 250)
        base, canaries = mask[:, :200], mask[:, 200:]
        assert (base.sum(1) == 100).all()  # the subset is of the original examples
        counts = canaries.sum(1)
        if independent:
            assert counts.std() > 1 and abs(canaries.mean() - 0.5) < 0.03
        else:
            assert (counts == 25).all()
        # model k's canaries do not depend on the other models
        np.testing.assert_array_equal(membership_mask(config, 250, range(7, 8))[0], mask[7])


def test_audit_dp_end_to_end_and_its_errors(tmp_path, capsys):
    data = make_blobs(n_train=200, n_features=10)
    run = train_population(data, model="mlp", model_kwargs={"hidden": [16]}, n_models=8,
                           epochs=2, batch_size=32, dp_noise_multiplier=1.0,
                           dp_delta=1e-4, out=tmp_path / "dp", progress=False)
    assert run.manifest["dataset"]["n_train"] == 200 + 100  # the default canaries
    assert run.manifest["dataset"]["corruption"]["privacy_canaries"]["n"] == 100
    assert len(run.manifest["chunk_plan"]) == 1  # canary counts differ; chunks stay whole
    models = run.models_table()
    epsilon = run.manifest["dp"][0]["dp_epsilon"]
    assert np.allclose(models["dp_epsilon"], epsilon) and 0 < epsilon < np.inf
    assert main(["audit", str(tmp_path / "dp"), "--dp", "--bootstrap", "0",
                 "--out", str(tmp_path / "audit")]) == 0
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())["dp"]
    assert summary["epsilon"] == pytest.approx(epsilon)
    variants = [f"epsilon_lower_bound_{kind}_{estimator}" for kind in ("blackbox", "whitebox")
                for estimator in ("population", "one_run")]
    for key in ("epsilon_lower_bound", *variants):
        assert 0 <= summary[key] < np.inf
    assert summary["epsilon_lower_bound"] == max(summary[key] for key in variants)
    for kind in ("blackbox", "whitebox"):  # one model alone, for comparison
        assert 0 <= summary[kind]["one_run"]["single_model_median"] < np.inf
    # a run without privacy canaries: one line naming the fix
    train_population(data, model="mlp", model_kwargs={"hidden": [16]}, n_models=4, epochs=1,
                     out=tmp_path / "plain", progress=False)
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "plain"), "--dp", "--bootstrap", "0",
                 "--out", str(tmp_path / "audit2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no privacy canaries" in err and "--dp-canaries" in err and "\n" not in err


def test_canaries_are_refused_for_a_language_model_run_in_one_line(tmp_path):
    from tests.test_lm import tiny_corpus

    with pytest.raises(ConfigError, match="--dp-canaries 0") as error:
        train_population(tiny_corpus(), model="mlp", model_kwargs={"window": 3, "d_embed": 8,
                                                                   "hidden": 16},
                         n_models=2, epochs=1, dp_canaries=5, out=tmp_path / "lm",
                         progress=False)
    assert "\n" not in str(error.value)
