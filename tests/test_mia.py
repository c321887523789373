"""Known-answer tests of memlab.measures.mia: analytic ROC of Gaussians, brute-force shadow
sums, LiRA on a synthetic population with a known membership effect, RMIA by hand."""

import numpy as np
import pytest
from scipy import stats

from memlab.errors import ConfigError
from memlab.measures import mia


def gaussian_population(t=200, n=400, d=1.0, spread=3.0, n_aug=1, seed=0):
    """Scores φ[k, i] = μ_i + d·M[k, i] + N(0, 1) noise: per-example offsets μ_i ~
    N(0, spread²) (example difficulty) and a membership shift d."""
    rng = np.random.default_rng(seed)
    mask = rng.random((t, n)) < 0.5
    mu = rng.normal(0, spread, n)
    shape = (t, n) if n_aug == 1 else (t, n, n_aug)
    noise = rng.normal(size=shape)
    shift = (mu[None] + d * mask)
    phi = (shift if n_aug == 1 else shift[..., None]) + noise
    return mask, phi


def test_two_gaussians_give_the_analytic_auc_and_tpr():
    rng = np.random.default_rng(1)
    d = 1.0
    mask = rng.random((100, 2000)) < 0.5
    scores = rng.normal(size=mask.shape) + d * mask
    m = mia.roc_metrics(scores, mask, n_bootstrap=200)
    auc = stats.norm.cdf(d / np.sqrt(2))
    # Sampling error: the bootstrap interval (over 100 models) covers Φ(d/√2) and
    # the point estimate is within 3 standard errors.
    assert m["auc_ci_low"] <= auc <= m["auc_ci_high"] or abs(m["auc"] - auc) < 3 * m["auc_se"]
    assert abs(m["auc"] - auc) < 0.005
    for alpha in (0.001, 0.01):
        tpr = 1 - stats.norm.cdf(stats.norm.ppf(1 - alpha) - d)
        got = m[f"tpr_at_fpr_{alpha:g}"]
        assert abs(got - tpr) < 4 * m[f"tpr_at_fpr_{alpha:g}_se"] + 1e-3, (alpha, got, tpr)
    # Balanced accuracy of the best threshold (at d/2): Φ(d/2).
    assert m["balanced_accuracy"] == pytest.approx(stats.norm.cdf(d / 2), abs=0.004)


def test_roc_metrics_match_brute_force_with_ties():
    rng = np.random.default_rng(2)
    mask = rng.random((30, 50)) < 0.4
    scores = np.round(rng.normal(size=mask.shape) + mask, 1)  # many ties
    m = mia.roc_metrics(scores, mask, n_bootstrap=0, fprs=(0.01, 0.05))
    pos, neg = scores[mask], scores[~mask]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert m["auc"] == pytest.approx(pairs, abs=1e-12)
    for alpha in (0.01, 0.05):  # the largest TPR over thresholds with FPR ≤ alpha
        best = max(((pos >= th).mean() for th in np.unique(scores) if (neg >= th).mean()
                    <= alpha), default=0.0)
        assert m[f"tpr_at_fpr_{alpha:g}"] == pytest.approx(best)


def test_bootstrap_interval_covers_chance_under_permuted_membership():
    mask, phi = gaussian_population(t=100, n=300, d=1.0, seed=3)
    rng = np.random.default_rng(4)
    null = np.stack([rng.permutation(col) for col in mask.T], 1)  # permuted across models
    _, metrics = mia.audit_metrics(mia.AttackInputs(phi, null), ("lira_online", "loss"),
                                   n_bootstrap=200)
    for name, m in metrics.items():
        assert m["auc_ci_low"] <= 0.5 <= m["auc_ci_high"], (name, m["auc"])
        assert abs(m["auc"] - 0.5) < 0.01


def brute_force_shadows(values, side, cap, order):
    """For every (k, i): the shadows on ``side`` by the documented rule, by loops."""
    t, n = side.shape
    count = np.zeros((t, n), int)
    total = np.zeros((t, n))
    position = np.argsort(order)
    for i in range(n):
        listed = [m for m in order if side[m, i]]  # side models in the cyclic order
        for k in range(t):
            if cap is None:
                chosen = [m for m in listed if m != k]
            else:
                # the side models following k's position in the order, cyclically
                after = [order[(position[k] + j) % t] for j in range(1, t)]
                chosen = [m for m in after if side[m, i]][:cap]
            count[k, i] = len(chosen)
            total[k, i] = values[chosen, i].sum()
    return count, total


@pytest.mark.parametrize("cap", [None, 1, 2, 3])
def test_capped_shadow_sums_equal_brute_force(cap):
    rng = np.random.default_rng(5)
    t, n = 9, 6
    side = rng.random((t, n)) < 0.6
    side[:, 0] = True  # an example every model trained on
    side[:, 1] = False  # and one none did
    values = rng.normal(size=(t, n))
    order = rng.permutation(t)
    got = mia._side_stats([values], side, cap, order if cap is not None else None)
    count, total = brute_force_shadows(values, side, cap, order)
    np.testing.assert_array_equal(got.count, count)
    np.testing.assert_allclose(got.sums[0], total, atol=1e-12)


def test_lira_reaches_the_oracle_and_beats_the_loss_threshold():
    d, spread = 1.0, 3.0
    mask, phi = gaussian_population(t=200, n=400, d=d, spread=spread, seed=6)
    scores = mia.attack_scores(mia.AttackInputs(phi, mask), ("lira_online_fixed", "loss"))
    lira = mia.roc_metrics(scores["lira_online_fixed"], mask, n_bootstrap=0)["auc"]
    loss = mia.roc_metrics(scores["loss"], mask, n_bootstrap=0)["auc"]
    # Oracle (known μ_i): Φ(d/√2). ~100 shadows per side add variance 2/100 to the
    # statistic's unit noise: Φ(d/√(2·1.02)) within sampling error.
    assert lira == pytest.approx(stats.norm.cdf(d / np.sqrt(2 * 1.02)), abs=0.006)
    # A global threshold sees the per-example spread too: Φ(d/√(2(1 + spread²))).
    assert loss == pytest.approx(stats.norm.cdf(d / np.sqrt(2 * (1 + spread**2))), abs=0.006)


def test_augmented_queries_add_up_like_independent_evidence():
    d, a = 0.5, 4
    mask, phi = gaussian_population(t=200, n=400, d=d, n_aug=a, seed=7)
    one = mia.lira(mia.AttackInputs(phi[..., 0], mask), variants=("lira_online_fixed",))
    four = mia.lira(mia.AttackInputs(phi, mask), variants=("lira_online_fixed",))
    auc1 = mia.roc_metrics(one["lira_online_fixed"], mask, n_bootstrap=0)["auc"]
    auc4 = mia.roc_metrics(four["lira_online_fixed"], mask, n_bootstrap=0)["auc"]
    assert auc1 == pytest.approx(stats.norm.cdf(d / np.sqrt(2 * 1.02)), abs=0.008)
    assert auc4 == pytest.approx(stats.norm.cdf(d * np.sqrt(a) / np.sqrt(2 * 1.02)), abs=0.008)


def test_more_shadows_help_and_one_shadow_still_works():
    mask, phi = gaussian_population(t=100, n=300, d=1.0, seed=8)
    inputs = mia.AttackInputs(phi, mask)
    auc = {cap: mia.roc_metrics(mia.lira(inputs, cap, variants=("lira_online",))
                                ["lira_online"], mask, n_bootstrap=0)["auc"]
           for cap in (1, 4, 16, None)}
    assert 0.55 < auc[1] < auc[4] < auc[16] < auc[None]


def test_rmia_counts_dominated_population_points():
    rng = np.random.default_rng(9)
    t, n, m = 6, 5, 7
    mask = rng.random((t, n)) < 0.5
    mask[0, :] = ~mask[1, :]  # every example has IN and OUT shadows
    log_prob = np.log(rng.uniform(0.05, 0.95, (t, n)))
    population = np.log(rng.uniform(0.05, 0.95, (t, m)))
    inputs = mia.AttackInputs(log_prob, mask, log_prob=log_prob, population=population)
    a, gamma = 0.4, 1.5
    got = mia.rmia(inputs, a=a, gamma=gamma, variants=("rmia_offline",))["rmia_offline"]
    p, pz = np.exp(log_prob), np.exp(population)
    for k in range(t):
        others = [j for j in range(t) if j != k]
        for i in range(n):
            out = [j for j in others if not mask[j, i]]
            ref = 0.5 * (1 + a) * p[out, i].mean() + 0.5 * (1 - a)
            ref_z = 0.5 * (1 + a) * pz[others].mean(0) + 0.5 * (1 - a)
            lr_x, lr_z = p[k, i] / ref, pz[k] / ref_z
            fraction = (lr_x / lr_z >= gamma).mean()
            # The score is the fraction of z dominated, up to a tie-breaker below 1/m.
            assert abs(got[k, i] * (m + 1) - 0.5 - fraction * m) < 0.5, (k, i)


def test_example_vulnerability_by_hand():
    mask = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]], bool)
    scores = np.array([[5.0, 0.0], [1.0, 4.0], [0.5, 3.0], [2.0, 0.2], [3.0, 0.1]])
    # Non-member scores: 0.0, 0.5, 2.0, 0.2, 0.1; at FPR 0.2 one may lie above: τ = 0.5.
    v = mia.example_vulnerability(scores, mask, fpr=0.2)
    assert v["threshold"][0] == 0.5
    np.testing.assert_allclose(v["vulnerability"], [3 / 3, 2 / 2])
    np.testing.assert_allclose(v["example_fpr"], [1 / 2, 0 / 3])
    np.testing.assert_allclose(v["example_auc"], [5 / 6, 1.0])


def test_bad_inputs_are_refused():
    mask = np.ones((3, 4), bool)
    with pytest.raises(ConfigError, match="NaN or inf"):
        mia.AttackInputs(np.full((3, 4), np.inf), mask)
    with pytest.raises(ConfigError, match="at least 2 models"):
        mia.AttackInputs(np.zeros((1, 4)), mask[:1])
    with pytest.raises(ConfigError, match="unknown attacks"):
        mia.attack_scores(mia.AttackInputs(np.zeros((3, 4)), mask), ("lira_magic",))


def brute_force_resample_shadows(values, side, cap, order, weights):
    """The shadows of every target in one resample of the models, by loops: the resample
    is a population in which model m appears weights[m] times (copies adjacent in the
    cyclic order) and no copy of the target is its own shadow."""
    t, n = side.shape
    position = np.argsort(order)
    count, total = np.zeros((t, n)), np.zeros((t, n))
    for i in range(n):
        for k in range(t):
            after = [order[(position[k] + j) % t] for j in range(1, t)]
            copies = [m for m in after if side[m, i] for _ in range(int(weights[m]))]
            chosen = copies if cap is None else copies[:cap]
            count[k, i], total[k, i] = len(chosen), values[chosen, i].sum()
    return count, total


@pytest.mark.parametrize("cap", [None, 1, 2, 3, 5])
def test_resampled_shadow_sums_equal_brute_force(cap):
    rng = np.random.default_rng(15)
    t, n = 9, 7
    side = rng.random((t, n)) < 0.6
    side[:, 0], side[:, 1] = True, False
    values = rng.normal(size=(t, n))
    order = rng.permutation(t)
    weights = mia.bootstrap_weights(t, 6, seed=3)
    weights[0] = 1  # the population itself
    weights[1] = 0
    weights[1, [2, 4]] = 5, 4  # two models, many copies
    got = mia._side_stats([values], side, cap, order if cap is not None else None, weights)
    for b, w in enumerate(weights):
        count, total = brute_force_resample_shadows(values, side, cap, order, w)
        drawn = w > 0  # the scores of targets not drawn are never used
        np.testing.assert_array_equal(got.count[b][drawn], count[drawn])
        np.testing.assert_allclose(got.sums[0][b][drawn], total[drawn], atol=1e-12)


def test_resampled_metrics_equal_the_metrics_of_the_copied_trials():
    """A resample's metrics are those of the pooled ROC with target k's trials copied
    weights[k] times (ties, NaN scores included)."""
    rng = np.random.default_rng(2)
    mask = rng.random((30, 50)) < 0.4
    scores = np.round(rng.normal(size=mask.shape) + mask, 1)
    scores[3, :5] = np.nan
    fprs = (0.01, 0.05)
    weights = mia.bootstrap_weights(30, 6, seed=1)
    fixed = mia._weighted_metrics(scores, mask, weights, fprs)  # ranked once
    per_row = mia._weighted_metrics(np.broadcast_to(scores, (6, *scores.shape)), mask,
                                    weights, fprs)
    for b, w in enumerate(weights):
        rows = np.repeat(np.arange(30), w.astype(int))
        want = mia.roc_metrics(scores[rows], mask[rows], n_bootstrap=0, fprs=fprs)
        for name, values in fixed.items():
            assert values[b] == pytest.approx(want[name], abs=1e-12), (name, b)
            assert per_row[name][b] == pytest.approx(want[name], abs=1e-12), (name, b)


@pytest.mark.parametrize("cap", [None, 2])
def test_audit_resamples_score_the_attacks_again(cap):
    """Every model drawn once is the population itself; a model left out is the population
    without it (shadows and trials alike), for every attack."""
    mask, phi = gaussian_population(t=12, n=40, d=1.0, seed=16)
    rng = np.random.default_rng(17)
    inputs = mia.AttackInputs(phi, mask, log_prob=-np.logaddexp(0, -phi),
                              population=-np.logaddexp(0, -rng.normal(size=(12, 30))))
    attacks = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed",
               "rmia_online", "rmia_offline", "loss")
    point = mia.attack_scores(inputs, attacks, cap=cap, seed=4)
    weights = np.ones((2, 12))
    weights[1, 5] = 0
    again = mia.attack_scores(inputs, attacks, cap=cap, seed=4, weights=weights)
    for name in attacks:
        np.testing.assert_allclose(np.broadcast_to(again[name], (2, 12, 40))[0], point[name],
                                   atol=1e-9, err_msg=name)
    if cap is None:  # a capped order depends on the number of models: only all shadows
        keep = np.arange(12) != 5
        smaller = mia.AttackInputs(phi[keep], mask[keep], log_prob=inputs.log_prob[keep],
                                   population=inputs.population[keep])
        for name, score in mia.attack_scores(smaller, attacks, seed=4).items():
            np.testing.assert_allclose(np.broadcast_to(again[name], (2, 12, 40))[1][keep],
                                       score, atol=1e-9, err_msg=name)


def test_audit_intervals_are_seeded_and_paired():
    mask, phi = gaussian_population(t=24, n=60, d=0.5, seed=18)
    inputs = mia.AttackInputs(phi, mask)
    attacks = ("lira_online", "loss")
    _, first = mia.audit_metrics(inputs, attacks, n_bootstrap=50, seed=5)
    _, again = mia.audit_metrics(inputs, attacks, n_bootstrap=50, seed=5)
    _, other = mia.audit_metrics(inputs, attacks, n_bootstrap=50, seed=6)
    for name in attacks:
        np.testing.assert_array_equal(first[name]["_samples"]["auc"],
                                      again[name]["_samples"]["auc"])
        assert first[name]["auc_ci_low"] < first[name]["auc"] < first[name]["auc_ci_high"]
    assert not np.array_equal(first["loss"]["_samples"]["auc"], other["loss"]["_samples"]["auc"])
    # The loss threshold reads no shadow: its replicates are those of roc_metrics, which
    # holds the scores fixed, on the same resamples.
    fixed = mia.roc_metrics(phi, mask, n_bootstrap=50, seed=5, return_samples=True)
    np.testing.assert_allclose(first["loss"]["_samples"]["auc"], fixed["_samples"]["auc"])
    diff = mia.paired_difference(first["lira_online"], first["loss"])
    assert diff["ci_low"] < diff["difference"] < diff["ci_high"]
