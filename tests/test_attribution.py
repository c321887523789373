"""Known-answer tests of memlab.measures.attribution: LDS, datamodels, gradients, influence
functions, TRAK."""

import numpy as np
import pytest
import torch
from scipy import stats

from memlab.measures.attribution import datamodels as dm
from memlab.measures.attribution import methods as am
from memlab.measures.attribution.gradients import per_example_grads, stack_params
from memlab.measures.attribution.lds import lds
from memlab.models import build_model


def random_mask(t: int, n: int, seed: int = 0) -> np.ndarray:
    """(t, n) bool masks of exactly n/2 members each, like a population at fraction 0.5."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((t, n), bool)
    for row in mask:
        row[rng.choice(n, n // 2, replace=False)] = True
    return mask


def test_additive_target_gives_planted_weights_and_lds_one():
    t, n = 600, 40
    mask = random_mask(t, n)
    rng = np.random.default_rng(1)
    planted = rng.normal(size=(n, 3))
    outputs = mask @ planted + np.array([0.5, -1.0, 2.0])  # exactly additive, no noise
    fit, held = slice(0, 500), slice(500, None)
    model = dm.fit_datamodels(mask[fit], outputs[fit])
    # Fixed-size subsets cannot tell the weights from weights + a constant (every row of the
    # mask has n/2 members): they are identified up to their mean.
    np.testing.assert_allclose(model.weights - model.weights.mean(0),
                               planted - planted.mean(0), atol=1e-3)
    bernoulli = np.random.default_rng(8).random((t, n)) < 0.5  # subsets of varying size
    exact = dm.fit_datamodels(bernoulli[fit], (bernoulli @ planted)[fit])
    np.testing.assert_allclose(exact.weights, planted, atol=1e-3)
    result = lds(model.weights, mask[held], outputs[held])
    assert result.mean > 0.999
    # One sign convention: the negated attribution is perfectly wrong.
    assert lds(-planted, mask[held], outputs[held]).mean < -0.999
    # Difference in means estimates the same weights (scaled) for balanced masks.
    diff = dm.difference_in_means(mask[fit], outputs[fit])
    assert stats.spearmanr(diff[:, 0], planted[:, 0]).statistic > 0.9


def test_lds_per_target_is_spearman_over_models():
    mask = random_mask(30, 12, seed=2)
    rng = np.random.default_rng(3)
    scores, outputs = rng.normal(size=(12, 4)), rng.normal(size=(30, 4))
    result = lds(scores, mask, outputs, n_boot=20)
    predicted = mask @ scores
    expected = [stats.spearmanr(predicted[:, j], outputs[:, j]).statistic for j in range(4)]
    np.testing.assert_allclose(result.per_target, expected, atol=1e-12)
    assert result.mean == pytest.approx(np.mean(expected))


def test_random_scores_have_lds_zero_within_three_se():
    t, n, m = 200, 100, 50
    mask = random_mask(t, n, seed=4)
    rng = np.random.default_rng(5)
    outputs = mask @ rng.normal(size=(n, m)) + rng.normal(size=(t, m))
    result = lds(rng.normal(size=(n, m)), mask, outputs, n_boot=200)
    assert abs(result.mean) < 3 * result.se
    assert 0 < result.se < 0.05


def test_ridge_influence_function_and_leave_one_out_closed_forms():
    """Ridge regression, objective sum_i (x_i.theta - y_i)^2 / 2 + lam |theta|^2 / 2: the
    influence of up-weighting i on theta is -(X^T X + lam I)^-1 x_i r_i, and the exact
    leave-one-out refit moves theta by (X^T X + lam I)^-1 x_i r_i / (1 - h_ii)."""
    rng = np.random.default_rng(6)
    n, d, lam = 30, 5, 0.7
    x = torch.as_tensor(rng.normal(size=(n, d)))
    y = torch.as_tensor(rng.normal(size=n))
    a = x.T @ x + lam * torch.eye(d, dtype=x.dtype)
    theta = torch.linalg.solve(a, x.T @ y)

    def objective(params):
        residual = x @ params["theta"] - y
        return 0.5 * (residual**2).sum() + 0.5 * lam * (params["theta"] ** 2).sum()

    hessian = am.exact_hessian(objective, {"theta": theta})
    np.testing.assert_allclose(hessian.numpy(), a.numpy(), atol=1e-10)
    per_example = torch.func.vmap(torch.func.grad(
        lambda th, xi, yi: 0.5 * (xi @ th - yi) ** 2), in_dims=(None, 0, 0))(theta, x, y)
    influence = -torch.linalg.solve(hessian, per_example.T).T  # (n, d): d theta / d eps_i
    residual = x @ theta - y
    closed_form = -torch.linalg.solve(a, (x * residual[:, None]).T).T
    np.testing.assert_allclose(influence.numpy(), closed_form.numpy(), atol=1e-10)
    leverage = torch.einsum("ij,ij->i", x, torch.linalg.solve(a, x.T).T)
    for i in (0, 7, 29):
        keep = torch.arange(n) != i
        refit = torch.linalg.solve(x[keep].T @ x[keep] + lam * torch.eye(d, dtype=x.dtype),
                                   x[keep].T @ y[keep])
        # Removing i is up-weighting by -1; the first-order answer, leverage-corrected.
        np.testing.assert_allclose((refit - theta).numpy(),
                                   (-influence[i] / (1 - leverage[i])).numpy(), atol=1e-10)
        assert not np.allclose((refit - theta).numpy(), -influence[i].numpy(), atol=1e-6)


def _lr_task(n_train=120, n_target=15, d=8, c=3, n_models=1, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 1.5
    y = rng.integers(0, c, n_train + n_target)
    x = (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32)
    torch.manual_seed(seed)
    models = []
    for _ in range(n_models):
        model = build_model("mlp", (d,), c, hidden=())
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        xt, yt = torch.as_tensor(x[:n_train]), torch.as_tensor(y[:n_train])
        for _ in range(200):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt), yt).backward()
            opt.step()
        models.append(model)
    template = build_model("mlp", (d,), c, hidden=())
    return am.Problem(template, stack_params(models), x[:n_train], y[:n_train], x[n_train:],
                      y[n_train:])


def test_per_example_gradients_match_autograd_for_every_model():
    models = [build_model("mlp", (6,), 4, hidden=(5,)) for _ in range(3)]
    x, y = torch.randn(7, 6), torch.randint(0, 4, (7,))
    grads = per_example_grads(models[0], stack_params(models), x, y, "loss")
    for k in (0, 2):
        for i in (0, 6):
            models[k].zero_grad()
            torch.nn.functional.cross_entropy(models[k](x[i:i + 1]), y[i:i + 1]).backward()
            expected = torch.cat([p.grad.flatten() for p in models[k].parameters()])
            torch.testing.assert_close(grads[k, i], expected, atol=1e-6, rtol=1e-5)


def test_logistic_regression_hessian_closed_form_equals_autodiff():
    task = _lr_task()
    one = {n: t[0].double() for n, t in task.params.items()}
    probs = torch.softmax(am.logits_of(task.template, task.params, task.x_train)[0], 1)
    closed = am.linear_hessian(task.x_train, probs)
    auto = am.exact_hessian(am._mean_loss_fn(task.template, task.x_train, task.y_train), one)
    torch.testing.assert_close(closed, auto, atol=1e-5, rtol=1e-4)


def test_conjugate_gradients_reach_the_exact_influence_on_a_linear_model():
    task = _lr_task()
    exact = am.influence(task, solver="exact", damping=0.1)
    cg = am.influence(task, solver="cg", damping=0.1, cg_iter=200)
    np.testing.assert_allclose(cg, exact, atol=1e-4 * np.abs(exact).max())


def test_ekfac_is_the_fisher_diagonal_in_the_kronecker_eigenbasis():
    """Brute force on one layer: the sampled-label per-example gradients G_n = g_n a_n^T give
    the Fisher F = mean vec(G_n) vec(G_n)^T; EK-FAC's corrected eigenvalues are its diagonal
    in the basis Q_S kron Q_A, and its preconditioner is (that matrix + lam I)^-1."""
    task = _lr_task(n_train=50)
    one = {n: t[0] for n, t in task.params.items()}
    factors = am.ekfac_factors(task.template, one, task.x_train, seed=3, batch=1000)["layers.0"]
    x = torch.as_tensor(task.x_train)
    logits = am.logits_of(task.template, task.params, x)[0]
    sampled = torch.multinomial(torch.softmax(logits, 1), 1,
                                generator=torch.Generator().manual_seed(3))[:, 0]
    g = (torch.softmax(logits, 1) - torch.nn.functional.one_hot(sampled, 3)).double()
    a = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    per_example = torch.einsum("ni,nj->nij", g, a).reshape(len(x), -1)  # vec of [W | b]
    fisher = per_example.T @ per_example / len(x)
    basis = torch.kron(factors["QS"], factors["QA"])
    diagonal = torch.diagonal(basis.T @ fisher @ basis)
    torch.testing.assert_close(factors["L"].reshape(-1), diagonal, atol=1e-10, rtol=1e-8)
    vectors = torch.randn(4, 3 * 9)  # parameter layout: W (3, 8) row-major, then b (3,)
    lam = 0.1 * float(factors["L"].mean())
    ekfac = basis @ torch.diag(factors["L"].reshape(-1)) @ basis.T + lam * torch.eye(27)
    as_matrix = torch.cat([vectors[:, :24].reshape(4, 3, 8), vectors[:, 24:, None]], 2)
    expected = torch.linalg.solve(ekfac, as_matrix.reshape(4, -1).double().T).T.reshape(4, 3, 9)
    got = am.ekfac_precondition(task.template, one, {"layers.0": factors}, vectors, 0.1)
    torch.testing.assert_close(got[:, :24].reshape(4, 3, 8).double(), expected[:, :, :8],
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[:, 24:].double(), expected[:, :, 8], atol=1e-4, rtol=1e-4)


def test_trak_projection_converges_to_the_unprojected_estimator():
    task = _lr_task()
    exact = am.trak(task, proj_dim=None, damping=0.1)
    errors = []
    for k in (16, 256, 4096):
        projected = am.trak(task, proj_dim=k, damping=0.1, seed=1)
        errors.append(np.linalg.norm(projected - exact) / np.linalg.norm(exact))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_methods_beat_random_on_a_small_population():
    """Train 80 logistic regressions on half-subsets; influence and TRAK from model 0
    predict the held-out models' outputs, random scores do not."""
    from memlab.measures.attribution.gradients import logits_of

    task = _lr_task(n_train=60, n_target=10)
    mask = random_mask(80, 60, seed=7)
    models = []
    torch.manual_seed(1)
    x, y = torch.as_tensor(task.x_train), torch.as_tensor(task.y_train)
    for row in mask:
        model = build_model("mlp", (8,), 3, hidden=())
        opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=1e-2)
        for _ in range(100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[row]), y[row]).backward()
            opt.step()
        models.append(model)
    logits = logits_of(task.template, stack_params(models), task.x_target)
    yt = torch.as_tensor(task.y_target)
    outputs = np.stack([(lg.gather(1, yt[:, None])[:, 0] - torch.logsumexp(
        lg.scatter(1, yt[:, None], float("-inf")), 1)).numpy() for lg in logits])
    fitted = am.Problem(task.template, stack_params(models[:1]), task.x_train, task.y_train,
                        task.x_target, task.y_target, mask[:1])
    held = slice(20, None)
    influence = lds(am.influence(fitted, solver="exact", damping=0.1), mask[held],
                    outputs[held])
    control = lds(am.random_scores(fitted), mask[held], outputs[held])
    assert influence.mean > control.mean + 3 * max(influence.se, control.se)
    assert abs(control.mean) < 3 * control.se


def test_ceiling_is_one_for_identical_replicates_and_zero_for_pure_noise():
    from memlab.measures.attribution.ceiling import against_replicates, noise_ceiling

    rng = np.random.default_rng(11)
    outputs = rng.normal(size=(60, 40))
    same = noise_ceiling(outputs, outputs.copy(), n_boot=50)
    assert same.mean == pytest.approx(1.0) and same.single == pytest.approx(1.0)
    assert same.reliability == pytest.approx(1.0)
    # A method that predicts the outputs exactly is at 100% of that ceiling.
    perfect = against_replicates(outputs, outputs, outputs.copy(), n_boot=50)
    assert perfect["lds_replicates"] == pytest.approx(1.0)
    assert perfect["ceiling_ratio"] == pytest.approx(1.0)
    # Outputs that are seed noise alone: nothing a mask explains, a ceiling of 0 (the signed
    # square root keeps the negative per-target estimates, so the mean is centred on 0).
    noise = noise_ceiling(rng.normal(size=(60, 40)), rng.normal(size=(60, 40)), n_boot=100)
    assert abs(noise.mean) < 3 * noise.se and noise.se < 0.15
    assert abs(noise.reliability) < 0.05


def test_ceiling_of_a_known_reliability_and_a_perfect_method_at_its_ceiling():
    """f = T + e with var T = var e: Pearson reliability 1/2, Spearman r = (6/pi) asin(1/4),
    Spearman-Brown 2r/(1+r), ceiling its square root; the mean over seeds T, the best any
    attribution can do, reaches it (ratio 1), and the plain LDS's ceiling is sqrt(r)."""
    from memlab.measures.attribution.ceiling import against_replicates, noise_ceiling

    rng = np.random.default_rng(12)
    truth = rng.normal(size=(3000, 10))
    a = truth + rng.normal(size=truth.shape)
    b = truth + rng.normal(size=truth.shape)
    r = 6 / np.pi * np.arcsin(0.25)
    ceiling = noise_ceiling(a, b, n_boot=20)
    assert ceiling.reliability == pytest.approx(r, abs=0.02)
    assert ceiling.mean == pytest.approx(np.sqrt(2 * r / (1 + r)), abs=0.015)
    assert ceiling.single == pytest.approx(np.sqrt(r), abs=0.015)
    best = against_replicates(truth, a, b, n_boot=20)
    assert best["ceiling_ratio"] == pytest.approx(1.0, abs=0.02)
    half = against_replicates(truth + 2 * rng.normal(size=truth.shape), a, b, n_boot=20)
    assert 0.3 < half["ceiling_ratio"] < 0.6  # a noisier predictor: a fraction of it


def test_damping_on_the_grid_edge_extends_the_grid_until_the_optimum_is_interior():
    import math
    import warnings

    from memlab.studies.attribute import DampingEdgeWarning
    from memlab.studies.attribute.scoring import choose_damping, warn_damping_edges

    grid = (0.01, 0.1, 1.0, 10.0)
    tried = []

    def peak_at_100(damping):  # rises over the whole grid, peaks one decade past its edge
        tried.append(damping)
        return -abs(math.log10(damping) - 2)

    choice = choose_damping({d: peak_at_100(d) for d in grid}, peak_at_100, extensions=3)
    assert choice.damping == 100.0 and choice.edge is None and choice.warning("trak") is None
    assert choice.extended == (100.0, 1000.0) and tried[len(grid):] == [100.0, 1000.0]
    # Interior from the start: nothing extended, nothing said.
    interior = choose_damping({0.01: 0.5, 0.1: 0.7, 1.0: 0.6}, peak_at_100, extensions=3)
    assert interior.damping == 0.1 and interior.extended == () and interior.edge is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_damping_edges({"trak": {"damping": 0.1, "damping_edge": None}}) == []
    # Still rising after every extension (the large-damping limit): warned and recorded.
    rising = choose_damping({d: math.log(d) for d in grid}, math.log, extensions=3)
    assert rising.damping == 1e4 and rising.edge == "upper"
    message = rising.warning("if_exact")
    assert "if_exact" in message and "upper edge" in message and "10000" in message
    with pytest.warns(DampingEdgeWarning, match="if_exact.*upper edge"):
        edges = warn_damping_edges({"if_exact": {"damping": 1e4, "damping_edge": "upper",
                                                 "damping_warning": message}})
    assert edges == [{"method": "if_exact", "edge": "upper", "damping": 1e4,
                      "warning": message}]
    # Extension impossible: nothing below 0, or no finite LDS beyond the edge.
    assert choose_damping({0.0: 0.9, 1.0: 0.5}, math.log, 3).edge == "lower"
    nan = choose_damping({0.01: 0.9, 1.0: 0.5}, lambda d: float("nan"), 3)
    assert nan.damping == 0.01 and nan.edge == "lower" and "not finite" in nan.reason


def test_checkpoint_learning_rates_are_the_mean_rate_of_the_steps_each_stands_for():
    rates = [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]  # a rate per step
    assert am.checkpoint_learning_rates(rates.__getitem__, [2, 3, 6]) == pytest.approx(
        [0.75, 0.25, (0.125 + 0.0625 + 0.03125) / 3])
    assert am.checkpoint_learning_rates(lambda step: 0.3, [3, 6, 9]) == [0.3] * 3  # exactly
    # The initial weights (step 0) stand for the first step; steps must increase.
    assert am.checkpoint_learning_rates(rates.__getitem__, [0, 2]) == [1.0, 0.75]
    from memlab.errors import ConfigError

    with pytest.raises(ConfigError, match="increase"):
        am.checkpoint_learning_rates(rates.__getitem__, [3, 3])


def _torch_schedule(schedule: str, lr: float, total: int) -> list[float]:
    """The rate of every step from torch's own scheduler (not memlab's schedule code)."""
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
                 if schedule == "cosine" else None)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_tracin_weights_each_checkpoint_by_the_learning_rate_it_was_trained_with(tmp_path,
                                                                                 schedule):
    """Two logistic regressions trained with a cosine (or constant) schedule and checkpoints
    after epochs 1, 2 and 4: the study's TracIn equals the hand-computed
    sum_c lr_c (-grad l_i(w_c) . grad f_z(w_c)), mean over models, with per-example
    gradients from plain autograd and lr_c the mean rate of the checkpoint's steps from
    torch's CosineAnnealingLR. Constant: every lr_c is the base rate (TracIn as before)."""
    from torch.func import functional_call

    from memlab.measures.attribution.gradients import params_from_weights
    from memlab.measures.callbacks.checkpoints import Checkpoints
    from memlab.population import train_population
    from memlab.studies.attribute import AttributeConfig
    from memlab.studies.attribute.retrain import build_template, tracin_checkpoints
    from memlab.studies.base import Execution
    from tests.conftest import make_blobs

    data = make_blobs(n_train=40, n_test=6, n_features=5)
    lr, epochs, batch = 0.3, (1, 2, 4), 8  # 20 members: 3 steps an epoch, 12 in all
    run = train_population(data, n_models=2, subset_fraction=0.5, epochs=4, batch_size=batch,
                           optimizer="sgd", momentum=0.0, lr=lr, schedule=schedule,
                           model_kwargs={"hidden": []}, callbacks=[Checkpoints(epochs)],
                           out=tmp_path / "run", progress=False, n_workers=1)
    template = build_template(run)
    # The run's own checkpoints are read, at the epochs its manifest says they were saved
    # (not the study's --tracin-checkpoints, which only says where to replay).
    config = AttributeConfig.tiny().replace(tracin_checkpoints=(3,))
    trajectories, used, deviation = tracin_checkpoints(run, template, config, [0, 1],
                                                       Execution())
    assert used == list(epochs) and deviation == 0.0

    per_step = _torch_schedule(schedule, lr, total=12)
    bounds = [0, 3, 6, 12]  # the steps taken when each checkpoint was saved
    rates = [float(np.mean(per_step[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
    for trajectory in trajectories:
        assert [rate for _, rate in trajectory] == pytest.approx(rates, rel=1e-6)
        if schedule == "constant":  # the base rate itself, as the old TracIn used
            assert [rate for _, rate in trajectory] == [lr] * 3
    if schedule == "cosine":
        assert rates[0] > rates[1] > rates[2] > 0  # the decay the old TracIn ignored

    names = [name for name, _ in template.named_parameters()]
    records = {name: np.asarray(run.records(f"ckpt_{name.replace('.', '__')}"))
               for name in names}

    def gradients(params, x, y, output):  # (n, p) per-example gradients by plain autograd
        rows = []
        for xi, yi in zip(torch.as_tensor(x), torch.as_tensor(y)):
            logits = functional_call(template, params, (xi[None],))[0]
            if output == "loss":
                value = torch.nn.functional.cross_entropy(logits[None], yi[None])
            else:  # log-odds: the true logit minus logsumexp of the others
                others = torch.cat([logits[:yi], logits[yi + 1:]])
                value = logits[yi] - torch.logsumexp(others, 0)
            grads = torch.autograd.grad(value, list(params.values()))
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        return torch.stack(rows).double()

    expected = torch.zeros(40, 6, dtype=torch.float64)
    base = torch.zeros_like(expected)  # every checkpoint weighted by the base rate
    for model in (0, 1):
        for c, rate in enumerate(rates):
            params = {name: torch.tensor(records[name][model, c], requires_grad=True)
                      for name in names}
            dot = -(gradients(params, data.x_train, data.y_train, "loss")
                    @ gradients(params, data.x_test, data.y_test, "logodds").T)
            expected += rate * dot / 2
            base += lr * dot / 2
    problem = am.Problem(template, params_from_weights(template, run.weights([0, 1])),
                         data.x_train, data.y_train, data.x_test, data.y_test,
                         checkpoints=trajectories)
    scores = am.tracin(problem)
    scale = float(expected.abs().max())
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-4, atol=1e-5 * scale)
    if schedule == "constant":  # the old TracIn's result
        np.testing.assert_allclose(scores, base.numpy(), rtol=1e-4, atol=1e-5 * scale)
    else:
        assert not np.allclose(scores, base.numpy(), rtol=1e-2, atol=1e-2 * scale)
