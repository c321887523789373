"""Known answers for the locally elastic stability estimates (memlab.measures.stability)."""

import math

import numpy as np
import pytest

from memlab.errors import ConfigError, DataError
from memlab.measures import stability as S
from tests.conftest import make_blobs


def test_loss_influence_matches_brute_force():
    rng = np.random.default_rng(0)
    mask = rng.random((30, 7)) < 0.5
    mask[:3], mask[3:6] = True, False  # every example has >= 3 models in and out
    loss = rng.exponential(size=(30, 5))
    est = S.loss_influence(mask, loss)
    for i in range(7):
        for j in range(5):
            a, b = loss[mask[:, i], j], loss[~mask[:, i], j]
            assert est.delta[i, j] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
            se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
            assert est.se[i, j] == pytest.approx(se, abs=1e-12)


def test_planted_effect_recovered_and_permuted_mask_is_a_noise_floor():
    # 400 models; example 0 in the subset lowers the loss at evaluation points 0..9 by 0.2.
    rng = np.random.default_rng(1)
    t, n, m = 400, 50, 40
    mask = rng.random((t, n)) < 0.5
    loss = rng.normal(1.0, 0.3, (t, m))
    loss[:, :10] -= 0.2 * mask[:, :1]
    est = S.loss_influence(mask, loss)
    z = (est.delta[0, :10] + 0.2) / est.se[0, :10]
    assert np.abs(z).max() < 4
    assert (est.delta[0, :10] < -0.1).all()
    others = est.delta[1:] / est.se[1:]  # no effect planted: z-scores ~ N(0, 1)
    assert abs(others.mean()) < 0.05 and abs(others.std() - 1) < 0.05
    const = S.stability_constants(est.delta)
    assert const["argmax_le"] == 0
    assert const["beta_le_signed"] == pytest.approx(0.2 * 10 / m, abs=0.02)
    perm = S.permuted_mask(mask, seed=0)
    assert (perm.sum(0) == mask.sum(0)).all() and (perm.sum(1) != mask.sum(1)).any()
    floor = S.stability_constants(S.loss_influence(perm, loss).delta)
    # the floor is what |Δ̂| averages to by noise alone: E|N(0, se)| = se √(2/π)
    assert floor["beta_mean"] == pytest.approx(est.se.mean() * math.sqrt(2 / math.pi),
                                               rel=0.05)
    assert const["beta_le"] > floor["beta_le"]


def test_stability_bound_formula():
    # 2β + (4mβ + M)√(ln(1/δ)/(2m)) by hand: β = 0.001, m = 500, M = 1, δ = 0.05
    expected = 0.002 + (2.0 + 1.0) * math.sqrt(math.log(20) / 1000)
    assert S.stability_bound(0.001, 500, 1.0, 0.05) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError):
        S.stability_bound(0.1, 0, 1.0)


def test_bad_input():
    with pytest.raises(DataError):
        S.loss_influence(np.ones((4, 3), bool), np.zeros((4, 2)))
    with pytest.raises(DataError):
        S.loss_influence(np.zeros((4, 3), bool), np.zeros((5, 2)))


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    from memlab.population import train_population

    data = make_blobs(n_train=150, n_test=60, spread=2.5, seed=3)
    return train_population(data, model_kwargs={"hidden": [32]}, n_models=48,
                            subset_fraction=0.5, epochs=30, batch_size=16, optimizer="adam",
                            lr=0.01, chunk_size=16, out=tmp_path_factory.mktemp("s") / "run",
                            progress=False, n_workers=1)


def test_on_a_trained_population(population):
    mask = population.membership_mask
    train_loss = population.records("train_loss").astype(np.float64)
    test_loss = population.records("test_loss").astype(np.float64)
    # Self-influence on the training points: training on z lowers its own loss, and on
    # average by the measured gap between non-members and members (the same quantity,
    # computed per example instead of per model).
    self_est = S.loss_influence(mask, train_loss)
    own = np.diag(self_est.delta)
    z = own / np.diag(self_est.se)
    assert (z > 3).sum() == 0 and (z < -3).mean() > 0.1
    out_minus_in = np.mean([train_loss[k, ~mask[k]].mean() - train_loss[k, mask[k]].mean()
                            for k in range(len(mask))])
    assert -own.mean() == pytest.approx(out_minus_in, rel=0.1)
    gap, gap_se = S.generalization_gap(mask, train_loss, test_loss)
    assert gap > 3 * gap_se  # these MLPs overfit 75 blobs
    # On test points the real constants exceed the permuted-mask floor, and the averaged
    # (locally elastic) constant is far below the pairwise supremum.
    clipped = np.minimum(test_loss, 10.0)
    real = S.stability_constants(S.loss_influence(mask, clipped).delta)
    floor = S.stability_constants(S.loss_influence(S.permuted_mask(mask), clipped).delta)
    assert real["beta_mean"] > floor["beta_mean"]
    assert real["beta_le"] < real["beta_uniform"] / 3
    m = int(mask.sum(1)[0])
    assert S.stability_bound(real["beta_le"], m, 10.0) < S.stability_bound(
        real["beta_uniform"], m, 10.0)
