"""Memorization/influence estimators against brute force, the binomial formula, and known
answers; C-scores and proxies against loops over models."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from memlab.data import Dataset
from memlab.errors import ConfigError
from memlab.measures import cscores as cs
from memlab.measures import inout
from memlab.measures import memorization as mz
from memlab.population import train_population
from memlab.studies.memorize.removal import t_interval
from tests.conftest import make_blobs


def random_population(t=40, n=30, m=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((t, n)) < 0.6
    mask[0, 0], mask[1, 0] = True, False  # every example has IN and OUT models below
    mask[:2, 1:] = [[True], [False]]
    p = rng.random(n)
    correct = rng.random((t, n)) < np.where(mask, 0.5 + p / 2, p / 2)
    test_correct = rng.random((t, m)) < rng.random(m)
    return mask, correct, test_correct


def brute_force_memorization(mask, correct):
    rows = []
    for i in range(mask.shape[1]):
        inside = [correct[k, i] for k in range(mask.shape[0]) if mask[k, i]]
        outside = [correct[k, i] for k in range(mask.shape[0]) if not mask[k, i]]
        p_in, p_out = np.mean(inside), np.mean(outside)
        # Newcombe's hybrid-score interval (Wilson per side), as a half-width / 1.96
        lo, hi = mz.newcombe_interval(p_in, len(inside), p_out, len(outside))
        se = float((hi - lo) / (2 * mz.Z95))
        rows.append((p_in - p_out, se, len(inside), len(outside), p_in, p_out))
    return np.array(rows)


def test_estimator_equals_brute_force_loop():
    mask, correct, _ = random_population()
    expected = brute_force_memorization(mask, correct)
    got = mz.in_out(mask, correct)
    np.testing.assert_allclose(got.score, expected[:, 0], atol=1e-12)
    np.testing.assert_allclose(got.se, expected[:, 1], atol=1e-12)
    np.testing.assert_array_equal(got.n_in, expected[:, 2])
    np.testing.assert_array_equal(got.n_out, expected[:, 3])
    np.testing.assert_allclose(got.mean_in, expected[:, 4])
    np.testing.assert_allclose(got.mean_out, expected[:, 5])


def test_estimator_reads_in_blocks_of_models(monkeypatch):
    mask, correct, _ = random_population(t=50)
    whole = mz.in_out(mask, correct)
    monkeypatch.setattr(inout, "_BLOCK_BYTES", 64)  # blocks of one model
    blocked = mz.in_out(mask, correct)
    np.testing.assert_array_equal(blocked.score, whole.score)


def test_standard_error_is_calibrated_binomial():
    """Many examples with the same true IN/OUT rates: the spread of the estimates equals the
    binomial formula, and the per-example se estimates it."""
    rng = np.random.default_rng(1)
    t, n, p_in, p_out = 200, 4000, 0.9, 0.4
    mask = np.argsort(rng.random((t, n)), axis=0) < 140  # exactly 140 IN models per example
    correct = rng.random((t, n)) < np.where(mask, p_in, p_out)
    result = mz.in_out(mask, correct)
    true_se = math.sqrt(p_in * (1 - p_in) / 140 + p_out * (1 - p_out) / 60)
    assert np.std(result.score) == pytest.approx(true_se, rel=0.05)
    assert np.mean(result.se) == pytest.approx(true_se, rel=0.03)
    assert np.mean(result.score) == pytest.approx(p_in - p_out, abs=0.005)


def test_missing_in_or_out_models_give_nan():
    mask = np.array([[True, True], [True, False]])
    result = mz.in_out(mask, np.ones_like(mask))
    assert np.isnan(result.score[0]) and result.score[1] == 0


def dense_influence(mask, correct_test):
    m, c = mask.astype(float), correct_test.astype(float)
    return (m.T @ c) / m.sum(0)[:, None] - ((1 - m).T @ c) / (1 - m).sum(0)[:, None]


def test_influence_equals_brute_force_pairs():
    mask, _, test_correct = random_population()
    infl = mz.estimate_influence(mask, test_correct)
    for i, j in [(0, 0), (3, 7), (29, 11)]:
        inside = test_correct[mask[:, i], j].mean()
        outside = test_correct[~mask[:, i], j].mean()
        assert infl.values[i, j] == pytest.approx(inside - outside, abs=1e-6)
        n_in, n_out = mask[:, i].sum(), (~mask[:, i]).sum()
        lo, hi = mz.newcombe_interval(inside, n_in, outside, n_out)
        se = float((hi - lo) / (2 * mz.Z95))
        assert infl.se[i, j] == pytest.approx(se, abs=1e-6)


def test_influence_blockwise_equals_dense(tmp_path):
    mask, _, test_correct = random_population(t=60, n=37, m=23)
    expected = dense_influence(mask, test_correct)
    dense = mz.estimate_influence(mask, test_correct)
    assert dense.values.dtype == np.float32 and dense.paths is None
    np.testing.assert_allclose(dense.values, expected, atol=1e-6)
    blocked = mz.estimate_influence(mask, test_correct, block_rows=4, block_cols=5)
    np.testing.assert_array_equal(blocked.values, dense.values)
    np.testing.assert_array_equal(blocked.se, dense.se)
    # Written to a memory-mapped file, atomically, and re-openable.
    on_disk = mz.estimate_influence(mask, test_correct, out=tmp_path / "infl.npy",
                                    block_rows=7, block_cols=3)
    assert isinstance(on_disk.values, np.memmap)
    np.testing.assert_array_equal(on_disk.values, dense.values)
    reopened = mz.Influence.load(tmp_path / "infl.npy", mask)
    np.testing.assert_array_equal(reopened.se, dense.se)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["infl.npy", "infl_se.npy"]


def test_influence_larger_than_memory_streams_to_disk():
    mask, _, test_correct = random_population(t=30, n=50, m=40)
    with pytest.warns(UserWarning, match="streaming it"):
        streamed = mz.estimate_influence(mask, test_correct, max_memory=1000)
    assert streamed.paths is not None and streamed.paths[0].exists()
    np.testing.assert_allclose(streamed.values, dense_influence(mask, test_correct), atol=1e-6)
    # The scratch directory goes with the result (its arrays stay readable on Linux).
    import gc

    scratch, values = streamed.paths[0].parent, streamed.values
    del streamed
    gc.collect()
    assert not scratch.exists()
    np.testing.assert_allclose(values, dense_influence(mask, test_correct), atol=1e-6)


def test_influence_on_the_training_set_has_memorization_on_its_diagonal():
    mask, correct, _ = random_population()
    infl = mz.estimate_influence(mask, correct)
    np.testing.assert_allclose(np.diag(infl.values), mz.in_out(mask, correct).score,
                               atol=1e-6)


def test_error_bound_and_models_needed():
    # docs/science.md §1: 1000-4000 models give standard errors of about 0.07-0.035 at r = 0.7.
    assert mz.error_bound(1000, 0.7) == pytest.approx(0.069, abs=0.001)
    assert mz.error_bound(4000, 0.7) == pytest.approx(0.0345, abs=0.0005)
    assert mz.error_bound(1000, 0.3) == pytest.approx(mz.error_bound(1000, 0.7))
    for precision in (0.3, 0.1, 0.05):
        t = mz.models_needed(precision, 0.7)
        assert mz.error_bound(t, 0.7) <= precision < mz.error_bound(t - 1, 0.7)
    assert mz.precision_advice(1000, 0.7, 0.1) is None
    advice = mz.precision_advice(100, 0.7, 0.1)
    assert f"{mz.models_needed(0.1, 0.7)} models would reach it" in advice
    with pytest.raises(ConfigError):
        mz.models_needed(0, 0.7)


def simulated_population(t, n=600, seed=0):
    """Examples with true memorization spread over [0, 0.8]."""
    rng = np.random.default_rng(seed)
    p_out = rng.uniform(0.1, 0.9, n)
    p_in = np.minimum(1, p_out + rng.uniform(0, 0.8, n))
    mask = rng.random((t, n)) < 0.7
    correct = rng.random((t, n)) < np.where(mask, p_in, p_out)
    return mask, correct


def test_reliability_rises_with_the_number_of_models():
    mask, correct = simulated_population(512)
    curve = mz.reliability_curve(mask, correct, sizes=[16, 64, 256, 512], n_splits=4)
    rho = curve.spearman.to_numpy()
    assert (np.diff(rho) > 0).all(), curve
    assert rho[0] < 0.6 and rho[-1] > 0.85
    one = mz.split_half_reliability(mask, correct, 64, n_splits=4)
    assert one.spearman == pytest.approx(rho[1]) and one.n_splits == 4
    assert "split-half Spearman" in str(one)


def test_detection_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(300), 1)  # with ties
    positives = rng.random(300) < 0.2
    assert mz.detection_auroc(scores, positives) == pytest.approx(
        roc_auc_score(positives, scores))


def test_t_interval_matches_scipy():
    values = np.array([0.61, 0.63, 0.60, 0.64, 0.62])
    mean, low, high = t_interval(values)
    expected = stats.t.interval(0.95, 4, loc=values.mean(), scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    assert mean == pytest.approx(values.mean())


# ------------------------------------------------------------------ on a real (tiny) run


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory):
    data = make_blobs(n_train=200, n_test=50, spread=2.0).with_label_noise(0.1, seed=0)
    return train_population(data, model_kwargs={"hidden": [32]}, n_models=24,
                            subset_fraction=0.7, epochs=20, batch_size=16, optimizer="adam",
                            lr=0.01, record_epochs=True, chunk_size=8,
                            out=tmp_path_factory.mktemp("blobs") / "run", progress=False,
                            n_workers=1)


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value")
def test_memorization_of_a_run(blob_run):
    scores = mz.memorization(blob_run)
    mask = blob_run.membership_mask
    correct = blob_run.records("train_correct")
    expected = brute_force_memorization(mask, correct)
    np.testing.assert_allclose(scores["mem"], expected[:, 0])
    np.testing.assert_allclose(scores["se"], expected[:, 1])
    noise = blob_run.dataset.corruption["label_noise"]
    assert scores["corrupted"].sum() == len(noise["indices"])
    np.testing.assert_array_equal(scores.loc[noise["indices"], "original_label"],
                                  noise["original_labels"])
    # Split-half reliability against a hand computation of the documented splits.
    reliability = mz.run_reliability(blob_run, n_splits=3)
    expected = []
    for split in range(3):
        order = np.random.default_rng([blob_run.config.seed, split, 24]).permutation(24)
        a, b = order[:12], order[12:24]
        halves = [brute_force_memorization(mask[h], correct[h])[:, 0] for h in (a, b)]
        both = np.isfinite(halves[0]) & np.isfinite(halves[1])
        expected.append(stats.spearmanr(halves[0][both], halves[1][both]).statistic)
    assert reliability.n_models == 24
    assert reliability.spearman == pytest.approx(np.mean(expected), abs=1e-12)
    assert reliability.spearman_sd == pytest.approx(np.std(expected, ddof=1), abs=1e-12)
    # pred_out: majority vote of the OUT models' predictions.
    pred = blob_run.records("train_pred")
    for i in (0, 5, 17):
        votes = np.bincount(pred[~mask[:, i], i], minlength=3)
        assert scores.pred_out[i] == votes.argmax()
    # A subset of models gives the estimate from those models only (some examples then
    # lack IN or OUT models: NaN, with a warning).
    with pytest.warns(UserWarning, match="no IN or no OUT"):
        half = mz.memorization(blob_run, models=range(12))
    np.testing.assert_allclose(half["mem"], brute_force_memorization(mask[:12],
                                                                     correct[:12])[:, 0])


def test_high_influence_pairs_are_exactly_the_thresholded_pairs(blob_run):
    scores = mz.memorization(blob_run)
    infl = mz.influence(blob_run)
    dataset = blob_run.dataset
    pairs = mz.high_influence_pairs(blob_run, 0.25, 0.15, scores=scores, infl=infl)
    mem = scores["mem"].to_numpy()
    same = dataset.y_train[:, None] == dataset.y_test[None, :]
    expected = np.argwhere((mem[:, None] >= 0.25) & (infl.values >= 0.15) & same)
    assert sorted(map(tuple, pairs[["train", "test"]].to_numpy())) == sorted(
        map(tuple, expected))
    assert (np.diff(pairs["infl"]) <= 0).all()
    assert len(pairs) > 0
    loose = mz.high_influence_pairs(blob_run, 0.25, 0.15, same_label=False, scores=scores,
                                    infl=infl)
    expected = np.argwhere((mem[:, None] >= 0.25) & (infl.values >= 0.15))
    assert sorted(map(tuple, loose[["train", "test"]].to_numpy())) == sorted(
        map(tuple, expected))
    assert (loose.train_label != loose.test_label).any()  # the label condition bites here


def test_near_duplicates_are_flagged():
    data = make_blobs(n_train=100, n_test=30)
    x_test = data.x_test.copy()
    x_test[3] = data.x_train[42] * 1.01  # a near-copy of a training input
    data = Dataset("dup", data.x_train, data.y_train, x_test, data.y_test, data.class_names)
    found = mz.near_duplicates(data, 0.99)
    assert found.test.tolist() == [3] and found.train.tolist() == [42]
    assert found.cosine[0] > 0.999
    similarity = mz.Similarity.of(data)
    assert similarity.rank(np.array([42, 0]), np.array([3, 3]))[0] == 1


def test_cscores_equal_mean_held_out_accuracy(tmp_path, blob_run):
    data = blob_run.dataset
    other = train_population(data, model_kwargs={"hidden": [32]}, n_models=16,
                             subset_fraction=0.3, epochs=5, batch_size=16, out=tmp_path / "r3",
                             progress=False, n_workers=1)
    frame = cs.cscores([blob_run, other])
    expected = []
    for run in (other, blob_run):  # sorted by ratio: 0.3, 0.7
        mask, correct = run.membership_mask, run.records("train_correct")
        expected.append([correct[~mask[:, i], i].mean() for i in range(data.n_train)])
    np.testing.assert_allclose(frame["acc_0.30"], expected[0])
    np.testing.assert_allclose(frame["cscore"], np.mean(expected, axis=0))
    # Mislabeled examples are the least typical: low C-scores.
    corrupted = mz.memorization(blob_run)["corrupted"].to_numpy()
    assert frame.cscore[corrupted].mean() < frame.cscore[~corrupted].mean() - 0.3
    with pytest.raises(ConfigError, match="once"):
        cs.cscores([blob_run, blob_run])


def test_proxies_equal_loops_over_member_models(blob_run):
    frame = cs.proxies(blob_run)
    mask = blob_run.membership_mask
    history = blob_run.records("epoch_train_correct")
    loss = blob_run.records("train_loss")
    epochs = history.shape[1]
    for i in (0, 9, 33):
        members = np.flatnonzero(mask[:, i])
        firsts = []
        for k in members:
            hits = np.flatnonzero(history[k, :, i])
            firsts.append(hits[0] + 1 if len(hits) else epochs + 1)
        assert frame.first_learned[i] == pytest.approx(np.mean(firsts))
        assert frame.cumulative_accuracy[i] == pytest.approx(history[members, :, i].mean())
        assert frame.final_loss[i] == pytest.approx(loss[members, i].mean(), rel=1e-5)
    scores = mz.memorization(blob_run)
    table = cs.rank_correlations(frame, {"mem": scores["mem"]})
    assert set(table.proxy) == {"final_loss", "first_learned", "cumulative_accuracy"}
    # Slow learners are memorized: cumulative accuracy falls as mem rises.
    assert table.set_index("proxy").loc["cumulative_accuracy", "mem"] < -0.3


def test_cscore_sweep_reuses_and_validates(tmp_path, blob_run):
    with pytest.raises(ConfigError, match="ratios"):
        cs.cscore_sweep(blob_run.dataset, ratios=[1.2], out=tmp_path)
    runs = cs.cscore_sweep(blob_run.dataset, ratios=[0.7], reuse={0.7: blob_run})
    assert runs == [blob_run]


def test_warns_when_examples_lack_in_or_out_models(tmp_path, blobs):
    run = train_population(blobs, model_kwargs={"hidden": [8]}, n_models=2, epochs=1,
                           subset_fraction=0.5, out=tmp_path / "r", progress=False,
                           n_workers=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = mz.memorization(run)
    assert any("no IN or no OUT" in str(w.message) for w in caught)
    mask = run.membership_mask
    lacking = (mask.sum(0) == 0) | (mask.sum(0) == 2)  # with 2 models: in both or neither
    assert lacking.any()
    np.testing.assert_array_equal(scores["mem"].isna().to_numpy(), lacking)


# ------------------------------------------------------------------ real-valued scores


def test_real_valued_in_out_and_pairs_equal_a_brute_force_loop():
    """Counterfactual memorization/influence (Zhang et al.): the same masked means with a
    real-valued performance, and Welch's standard error."""
    rng = np.random.default_rng(0)
    t, n, m = 14, 6, 5
    mask = rng.random((t, n)) < 0.4
    mask[0], mask[1] = True, False  # every document has IN and OUT models
    perf_train = rng.random((t, n))
    perf_test = rng.random((t, m))

    mem = mz.in_out(mask, perf_train)
    infl = mz.in_out_pairs(mask, perf_test)
    for i in range(n):
        inside, outside = perf_train[mask[:, i], i], perf_train[~mask[:, i], i]
        assert mem.score[i] == pytest.approx(inside.mean() - outside.mean(), abs=1e-12)
        se = np.sqrt(inside.var(ddof=1) / len(inside) + outside.var(ddof=1) / len(outside))
        assert mem.se[i] == pytest.approx(se, abs=1e-12)
        for j in range(m):
            inside, outside = perf_test[mask[:, i], j], perf_test[~mask[:, i], j]
            assert infl.score[i, j] == pytest.approx(inside.mean() - outside.mean(), abs=1e-12)
            se = np.sqrt(inside.var(ddof=1) / len(inside) + outside.var(ddof=1) / len(outside))
            assert infl.se[i, j] == pytest.approx(se, abs=1e-12)


def test_real_valued_scores_read_in_blocks_equal_one_pass(monkeypatch):
    rng = np.random.default_rng(5)
    mask = rng.random((40, 7)) < 0.5
    perf = rng.normal(size=(40, 7))
    whole = mz.in_out(mask, perf)
    monkeypatch.setattr(inout, "_BLOCK_BYTES", 9 * 7 * 3)  # three models per block
    blocked = mz.in_out(mask, perf)
    np.testing.assert_allclose(blocked.score, whole.score, rtol=1e-12)
    np.testing.assert_allclose(blocked.se, whole.se, rtol=1e-9)


def test_reliability_of_real_valued_scores_rises_with_models_on_planted_scores():
    rng = np.random.default_rng(2)
    t, n = 256, 200
    mask = rng.random((t, n)) < 0.25
    true_mem = rng.random(n)
    perf = 0.3 + mask * true_mem + rng.normal(0, 0.3, (t, n))
    curve = mz.reliability_curve(mask, perf, sizes=[8, 32, 256])
    assert list(curve.n_models) == [8, 32, 256]
    assert curve.spearman.is_monotonic_increasing
    assert curve.spearman.iloc[-1] > 0.9
    assert mz.split_half_reliability(mask, perf, 16).spearman < curve.spearman.iloc[-1]


def test_real_valued_estimator_rejects_bad_shapes_and_nan():
    with pytest.raises(ConfigError, match="same shape"):
        mz.in_out_pairs(np.ones((3, 2), bool), np.ones((4, 2)))
    with pytest.raises(ConfigError, match="NaN"):
        mz.in_out(np.ones((3, 2), bool), np.full((3, 2), np.nan))


# ------------------------------------------------------------------ planted answers


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    """Well-separated blobs with 8 flipped training labels, and test example 7 an exact copy
    of the first flipped example carrying its (flipped) label: models that trained on it
    answer the copy with that label, models that did not answer the cluster's class."""
    import dataclasses

    data = make_blobs(n_train=200, n_test=50, spread=0.6).with_label_noise(0.04, seed=0)
    flipped = np.sort(np.asarray(data.corruption["label_noise"]["indices"]))
    x_test, y_test = data.x_test.copy(), data.y_test.copy()
    x_test[7], y_test[7] = data.x_train[flipped[0]], data.y_train[flipped[0]]
    data = dataclasses.replace(data, x_test=x_test, y_test=y_test)
    run = train_population(data, model_kwargs={"hidden": [128]}, n_models=32,
                           subset_fraction=0.5, epochs=80, batch_size=16, optimizer="adam",
                           lr=0.01, out=tmp_path_factory.mktemp("planted") / "run",
                           progress=False, n_workers=1)
    return run, flipped


def test_planted_mislabeled_examples_get_the_highest_memorization(planted_run):
    run, flipped = planted_run
    scores = mz.memorization(run)
    top = scores.sort_values("mem", ascending=False)["index"].to_numpy()[:len(flipped)]
    assert sorted(top) == flipped.tolist()
    # The models fit the flipped labels (IN) and the held-out models answer the cluster.
    assert scores.mem[flipped].min() > 0.8
    assert (scores.acc_out[flipped] < 0.2).all()


def test_planted_duplicate_is_the_top_influence_pair(planted_run):
    run, flipped = planted_run
    scores = mz.memorization(run)
    infl = mz.influence(run)
    pairs = mz.high_influence_pairs(run, scores=scores, infl=infl)
    top = pairs.iloc[0]
    assert (top.train, top.test) == (flipped[0], 7)
    assert top.near_duplicate and top.cosine == pytest.approx(1.0, abs=1e-6)
    assert top.nn_rank == 1
    assert top.infl > 0.8
    # Its only strong pair: no other test example depends on it that much.
    row = np.asarray(infl.values[flipped[0]])
    assert np.sort(row)[-2] < 0.5 * row[7]


def test_cscore_standard_errors_are_never_zero_unless_no_model_held_it_out():
    """The Wilson-based se of a C-score is positive at held-out accuracy 0 and 1, equals
    the closed form there, and is NaN only where a ratio has no held-out model."""
    from types import SimpleNamespace

    class FakeRun(SimpleNamespace):
        def records(self, name):
            return self.correct

    n = 6
    dataset = Dataset("toy", np.zeros((n, 2), np.float32), np.zeros(n, np.int64),
                      np.zeros((1, 2), np.float32), np.zeros(1, np.int64), ["a", "b"])
    runs = []
    for ratio, t in ((0.3, 10), (0.7, 20)):
        mask = np.zeros((t, n), bool)
        mask[: t // 2] = True  # half the models train on every example
        correct = np.zeros((t, n), bool)
        correct[:, 0] = True  # example 0: every model right (acc_out = 1)
        correct[:, 2] = np.arange(t) % 2 == 0  # example 2: half right
        if ratio == 0.7:
            mask[:, 5] = True  # example 5: no held-out model at this ratio
        runs.append(FakeRun(membership_mask=mask, correct=correct, dataset=dataset,
                            manifest={"dataset": {"fingerprint": "x"}},
                            config=SimpleNamespace(subset_fraction=ratio)))
    frame = cs.cscores(runs)
    se = frame["se"].to_numpy()
    assert np.isnan(se[5]) and not np.isnan(se[:5]).any()
    assert (se[:5] > 0).all()
    # Closed form at acc = 1 and acc = 0 with m held-out models: the Wilson interval is
    # [m / (m + z²), 1] and [0, z² / (m + z²)]; each ratio's se is its width / (2 z).
    z2 = mz.Z95**2
    per_ratio = [(z2 / (m + z2)) / (2 * mz.Z95) for m in (5, 10)]
    expected = math.sqrt(sum(v * v for v in per_ratio)) / 2
    assert se[0] == pytest.approx(expected, rel=1e-12)  # all right
    assert se[1] == pytest.approx(expected, rel=1e-12)  # all wrong: the mirror image
    assert frame["cscore"][0] == 1 and frame["cscore"][1] == 0
