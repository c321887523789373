"""Known answers for the LE-SDE simulator (memlab.measures.lesde)."""

import numpy as np
import pytest

from memlab.errors import ConfigError, DataError
from memlab.measures import lesde as L

K = 3
LABELS = np.repeat(np.arange(K), 60)


def test_ou_stationary_mean_and_variance():
    # dX = θ(μ − X)dt + σ dB: stationary N(μ, σ²/(2θ)); the Euler–Maruyama chain's own
    # stationary variance is σ²/(θ(2 − θ dt)) (an AR(1) with coefficient 1 − θ dt).
    theta, mu, sigma, dt = 2.0, 1.5, 0.8, 0.01
    n = 40_000
    _, xs = L.euler_maruyama(lambda x, t: theta * (mu - x), sigma, np.zeros(n), dt, 500,
                             seed=1, record_every=500)
    x = xs[-1]  # t = 5 = 10 relaxation times: the start is forgotten to e^-20
    var = sigma ** 2 / (theta * (2 - theta * dt))
    assert abs(x.mean() - mu) < 4 * np.sqrt(var / n)
    # se of a sample variance of n normals: var·√(2/n)
    assert abs(x.var() - var) < 4 * var * np.sqrt(2 / n)
    assert abs(x.var() - sigma ** 2 / (2 * theta)) < 0.02  # and the SDE's own, within O(dt)


def _strong_errors(drift, diffusion, exact, x0, levels, n_paths=3000, n_fine=2 ** 11, seed=0):
    rng = np.random.default_rng(seed)
    db = rng.standard_normal((n_fine, n_paths)) * np.sqrt(1.0 / n_fine)
    target = exact(db)
    errors = []
    for level in levels:
        n = 2 ** level
        coarse = db.reshape(n, n_fine // n, n_paths).sum(1)  # the same Brownian path
        _, xs = L.euler_maruyama(drift, diffusion, np.full(n_paths, x0), 1.0 / n, n,
                                 increments=coarse, record_every=n)
        errors.append(np.abs(xs[-1] - target).mean())
    return np.polyfit(np.log(1.0 / 2.0 ** np.array(levels)), np.log(errors), 1)[0]


def test_strong_order_half_on_geometric_brownian_motion():
    mu, sigma = 1.0, 0.8  # X_T = exp((μ − σ²/2)T + σ B_T)
    order = _strong_errors(lambda x, t: mu * x, lambda x, t: sigma * x,
                           lambda db: np.exp((mu - sigma ** 2 / 2) + sigma * db.sum(0)),
                           1.0, levels=[4, 5, 6, 7, 8])
    assert 0.4 < order < 0.6, order


def test_strong_order_one_with_additive_noise():
    theta, sigma = 1.0, 0.5
    n_fine = 2 ** 11
    s = (np.arange(n_fine) + 0.5) / n_fine
    kernel = np.exp(-theta * (1.0 - s))  # X_1 = e^-θ X_0 + σ ∫ e^{-θ(1-s)} dB_s, X_0 = 1

    def exact(db):
        return np.exp(-theta) + sigma * (kernel[:, None] * db).sum(0)

    order = _strong_errors(lambda x, t: -theta * x, sigma, exact, 1.0, levels=[3, 4, 5, 6, 7],
                           n_fine=n_fine)
    assert 0.85 < order < 1.15, order


def test_zero_inter_coupling_separates():
    traj = L.simulate(LABELS, L.strength_matrix(K, 10.0, 0.0), noise=0.1, t_end=20, dt=0.05,
                      n_runs=8, seed=0)
    first = L.head_stats(traj.features[0], LABELS, traj.heads[0])
    last = L.head_stats(traj.features[-1], LABELS, traj.heads[-1])
    assert first["accuracy"].max() < 0.6  # random initial features: not separated
    assert (last["accuracy"] == 1).all() and (last["min_margin"] > 0).all()
    assert last["loss"].max() < 0.05
    assert L.nc_stats(traj.features[-1], LABELS, K)["nc1"].max() < 0.1
    assert L.linear_separability(traj.features[-1][0], LABELS) > 0


def test_equal_coupling_moves_every_example_alike():
    # E = α 11ᵀ: the drift does not depend on the example, so h_i − h_j is noise alone:
    # its mean over runs stays at its start and separation never happens.
    x0 = np.random.default_rng(5).standard_normal((len(LABELS), K))
    traj = L.simulate(LABELS, L.strength_matrix(K, 10.0, 10.0), noise=0.2, t_end=20,
                      dt=0.05, n_runs=64, x0=x0, seed=1)
    diff = traj.features[-1] - traj.features[-1][:, :1]  # (R, n, d) h_i − h_0
    start = x0 - x0[:1]
    se = np.sqrt(2 * 0.2 ** 2 * 20 / 64)
    assert np.abs(diff.mean(0) - start).max() < 5 * se
    last = L.head_stats(traj.features[-1], LABELS, traj.heads[-1])
    assert last["accuracy"].max() < 0.6 and last["loss"].min() > 0.5
    assert L.linear_separability(traj.features[-1][0], LABELS) <= 1e-9


@pytest.mark.parametrize("k", [3, 5])
def test_threshold_at_equal_strengths(k):
    # Predicted: the mean margin grows iff α > β (module doc). Locate the sign change of its
    # initial rate on a grid of α/β and interpolate; tolerance 0.02 in the ratio.
    labels = np.repeat(np.arange(k), 40)
    ratios = np.linspace(0.8, 1.2, 9)
    rates = []
    for r in ratios:
        traj = L.simulate(labels, L.strength_matrix(k, 3 * r, 3.0), noise=0.05, t_end=1.0,
                          dt=0.01, n_runs=16, seed=3, n_records=10)
        margin = [L.head_stats(f, labels, traj.heads[0])["mean_margin"].mean()
                  for f in traj.features]
        rates.append(np.polyfit(traj.times, margin, 1)[0])
    rates = np.array(rates)
    assert (np.diff(rates) > 0).all()
    assert abs(np.interp(0.0, rates, ratios) - 1.0) < 0.02


def test_linear_drift_mode_rates():
    # Noise-free, class means exactly on their own simplex directions with equal amplitude:
    # the symmetric mode, amplitude (1 + rate·dt)^steps under forward Euler.
    alpha, beta, dt, steps = 2.0, 0.5, 0.01, 200
    d = np.eye(K) - 1.0 / K
    x0 = 0.1 * (d / np.linalg.norm(d, axis=1, keepdims=True))[LABELS]
    traj = L.simulate(LABELS, L.strength_matrix(K, alpha, beta), noise=0.0, t_end=dt * steps,
                      dt=dt, x0=x0, drift="linear", n_records=1)
    sym, anti = L.linear_mode_rates(alpha, beta, K)
    np.testing.assert_allclose(traj.features[-1][0], x0 * (1 + sym * dt) ** steps, rtol=1e-10)
    # the zero-sum mode: amplitudes (2, −1, −1)
    amp = np.array([2.0, -1.0, -1.0])[LABELS][:, None]
    traj = L.simulate(LABELS, L.strength_matrix(K, alpha, beta), noise=0.0, t_end=dt * steps,
                      dt=dt, x0=x0 * amp, drift="linear", n_records=1)
    # (the features also gain parts along the other classes' directions; the amplitudes
    # along their own directions follow the mode)
    v = L.margin_directions(L.identity_head(K))[LABELS]
    own = lambda f: (f * v).sum(-1)  # noqa: E731
    np.testing.assert_allclose(own(traj.features[-1][0]),
                               own(x0 * amp) * (1 + anti * dt) ** steps, rtol=1e-10)


def test_strength_estimator_recovers_planted_matrix():
    planted = np.array([[3.0, 0.5, 1.0], [0.2, 2.0, 0.8], [1.5, 0.3, 4.0]])
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(K), 300)
    # A common offset toward class 0 makes p̄ ≠ class frequencies, so the K class gradients
    # are not collinear and every entry (not only the differences) is identified.
    x0 = rng.standard_normal((len(labels), K)) + np.array([3.0, 0.0, 0.0])
    traj = L.simulate(labels, planted, noise=0.05, t_end=2.0, dt=0.01, x0=x0, n_records=200,
                      seed=4)
    feats = traj.features[:, 0]
    gbar = np.stack([L.class_gradients(L.loss_gradients(f, labels, h), labels, K)
                     for f, h in zip(feats, traj.heads)])
    fit = L.estimate_strengths(traj.times, feats, labels, gbar)
    # Column 0 (the gradient of the class the offset favours) is the least identified.
    assert fit.se.max() < 0.15
    assert np.abs(fit.matrix - planted).max() < 0.4
    assert (np.abs(fit.matrix - planted) < 4 * fit.se).all()
    assert abs(fit.noise - 0.05) < 0.005
    assert abs(fit.intra - np.diag(planted).mean()) < 0.1


def test_nc_stats_on_a_planted_simplex_etf():
    means = np.eye(K) - 1.0 / K  # a simplex ETF
    h = np.repeat(means, 10, axis=0)
    labels = np.repeat(np.arange(K), 10)
    s = L.nc_stats(h, labels, K)
    assert s["nc1"] < 1e-12 and s["etf_angle"] < 1e-12 and s["etf_norm"] < 1e-12
    # within-class spread ε·u (u ⟂ to nothing special): NC1 = tr(Σ_W Σ_B⁺)/K by hand
    noise = np.random.default_rng(0).standard_normal(h.shape) * 0.1
    noise -= np.repeat(np.stack([noise[labels == c].mean(0) for c in range(K)]), 10, axis=0)
    s = L.nc_stats(h + noise, labels, K)
    sw = noise.T @ noise / len(h)
    sb = (means - means.mean(0)).T @ (means - means.mean(0)) / K
    assert abs(s["nc1"] - np.trace(sw @ np.linalg.pinv(sb)) / K) < 1e-10


def test_head_stats_and_separability_known_answers():
    h = np.array([[2.0, 0.0], [0.0, 2.0]])
    s = L.head_stats(h, np.array([0, 1]), L.identity_head(2))
    assert abs(s["loss"] - np.log(1 + np.exp(-2.0))) < 1e-12
    assert s["accuracy"] == 1 and s["min_margin"] == 2.0
    xor = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], float)
    assert L.linear_separability(xor, np.array([0, 0, 1, 1])) <= 1e-9
    assert L.linear_separability(xor, np.array([0, 1, 0, 1])) > 0.1


def test_bad_input():
    with pytest.raises(ConfigError):
        L.simulate(LABELS, L.strength_matrix(K, 1, 0), noise=-1, t_end=1)
    with pytest.raises(DataError):
        L.simulate(LABELS, np.ones((2, 2)), noise=0, t_end=1)
    with pytest.raises(ConfigError):
        L.lesde_drift(np.zeros((1, 3, K)), LABELS[:3], np.eye(K), L.identity_head(K), "x")


# ------------------------------------------------------------------ the study and the command


def test_command_phase_part(tmp_path, capsys):
    from memlab.cli import main
    from memlab.io import loads_strict

    out = tmp_path / "lesde"
    assert main(["lesde", "--quick", "--out", str(out), "--parts", "phase", "--quiet"]) == 0
    summary = loads_strict((out / "summary.json").read_text())
    assert abs(summary["phase"]["ce"]["threshold"] - 1.0) < 0.05
    assert summary["phase"]["ce"]["separated_at_or_below"] == 0
    assert (out / "report.html").stat().st_size > 10_000
    assert "start to separate" in capsys.readouterr().out  # the finding, printed
    assert main(["lesde", "--out", str(out), "--parts", "nope"]) == 2


@pytest.mark.slow
def test_study_end_to_end_and_resume(tmp_path, monkeypatch):
    import dataclasses

    from memlab.studies import lesde as study_package
    from memlab.studies.lesde import RECIPE, LESDEConfig, run
    from memlab.studies.lesde import study as lesde_study

    config = LESDEConfig.quick(
        ratios=(0.5, 1.0, 2.0), noises=(0.0, 0.3), n_runs=2, scan_ratios=(0.9, 1.0, 1.1),
        fit_datasets=("digits",), fit_n_train=200, fit_models=2, fit_epochs=6, fit_runs=2,
        stab_datasets=("digits",), stab_n_train=300, n_permutations=2,
        population=dataclasses.replace(RECIPE, n_models=16, epochs=10))
    result = run(config, tmp_path / "out", progress=False, n_workers=1)
    s = result.summary
    fit = s["fit"]["digits"]
    assert fit["models"] == 2 and fit["epochs"] == 6
    # the simulated training loss follows the real one to within 20% of its change
    assert fit["error_fitted"]["loss"]["relative_to_range"] < 0.2
    row = s["stability"]["digits/zero_one"]
    assert row["beta_le"] < row["beta_uniform"] and row["bound_le"] < row["bound_uniform"]
    assert row["m"] == 150 and row["n_models"] == 16
    assert set(result.figures()) == {"phase", "phase_trajectories", "fit", "stability",
                                     "stability_examples"}
    # resume: nothing is recomputed
    monkeypatch.setattr(lesde_study, "phase_diagram", lambda c: 1 / 0)
    again = run(config, tmp_path / "out", progress=False)
    assert again.summary == s and study_package.STUDY.name == "lesde"


def test_config_drifts_are_the_simulators():
    from memlab.studies.lesde.config import DRIFTS

    assert DRIFTS == L.DRIFTS


def test_bad_settings_are_config_errors():
    import dataclasses

    from memlab.studies.lesde import RECIPE, LESDEConfig

    with pytest.raises(ConfigError, match="unknown parts"):
        LESDEConfig(parts=("nope",)).validate()
    with pytest.raises(ConfigError, match="parts is empty"):
        LESDEConfig(parts=()).validate()
    with pytest.raises(ConfigError, match=">= 8"):
        LESDEConfig(population=dataclasses.replace(RECIPE, n_models=4)).validate()
    with pytest.raises(ConfigError, match="no --sweep"):
        LESDEConfig(population=dataclasses.replace(RECIPE, sweep={"lr": [0.1]})).validate()
