"""The memorization study end to end: planted label noise is found, reliability grows with
the population, the removal study runs and resumes, the report renders in Chromium, and the
command line mirrors the API."""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import memlab
from memlab.cli import build_parser, main
from memlab.measures import memorization as mz
from memlab.population import open_run
from memlab.studies import memorize as study

# Digits with 10% of the training labels flipped. 32 models at r = 0.7 is CI size: the
# a-priori RMS bound of SCIENCE.md §1 is then loose (0.65, vs 0.07 at 1,000 models), but
# models that fit their subsets (≈99% training accuracy) separate flipped labels
# (mem ≈ 0.9) from clean ones (mem ≈ 0.09) by far more than the per-example standard
# errors (median < 0.05).
NOISY_DIGITS = dict(data="digits", label_noise=0.1, n_models=32, subset_fraction=0.7,
                    epochs=50, batch_size=32, optimizer="adam", lr=0.005,
                    model_kwargs={"hidden": [256]}, progress=False)


@pytest.fixture(scope="module")
def noisy_digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("memorize") / "digits"
    with pytest.warns(UserWarning, match="models would reach it"):
        return memlab.memorize(**NOISY_DIGITS, out=out, removal=True, removal_seeds=3)


def test_planted_label_noise_is_detected(noisy_digits):
    s = noisy_digits.summary
    assert mz.error_bound(32, 0.7) == pytest.approx(s["error_bound"])
    assert s["train_acc_in_mean"] > 0.97, "the test needs models that fit their subsets"
    assert s["noise_auroc"] >= 0.95, s
    scores = noisy_digits.scores
    assert scores.loc[scores.corrupted, "mem"].mean() > 0.7
    assert scores.loc[~scores.corrupted, "mem"].mean() < 0.2


def test_reliability_rises_with_the_number_of_models(noisy_digits):
    curve = noisy_digits.reliability_curve
    assert curve.n_models.tolist() == [8, 16, 32]
    assert (np.diff(curve.spearman) > 0).all(), curve
    assert curve.spearman.iloc[-1] == pytest.approx(noisy_digits.reliability.spearman)
    assert noisy_digits.reliability.spearman > 0.6


def test_result_object_and_files(noisy_digits, tmp_path):
    result, path = noisy_digits, noisy_digits.run.path
    run = result.run
    assert result.influence.shape == (run.dataset.n_train, run.dataset.n_test)
    assert result.influence.values.dtype == np.float32
    for name in ("memorization.parquet", "influence.npy", "influence_se.npy", "pairs.csv",
                 "reliability.csv", "summary.json", "report.html", "removal.csv"):
        assert (path / name).exists(), name
    saved = pd.read_parquet(path / "memorization.parquet")
    pd.testing.assert_frame_equal(saved, result.scores)
    assert {"index", "label", "original_label", "mem", "se", "n_in", "n_out", "acc_in",
            "acc_out"} <= set(saved.columns)
    np.testing.assert_array_equal(np.load(path / "influence.npy"), result.influence.values)
    pairs = pd.read_csv(path / "pairs.csv")
    assert len(pairs) == len(result.pairs) > 0
    assert (pairs.mem >= 0.25).all() and (pairs.infl >= 0.15).all()
    assert (pairs.train_label == pairs.test_label).all()
    assert "near_duplicate" in pairs
    summary = json.loads((path / "summary.json").read_text())
    assert summary["summary"]["noise_auroc"] == pytest.approx(result.summary["noise_auroc"])
    assert result.report(tmp_path / "elsewhere.html").exists()
    assert "MemorizationResult(" in repr(result)
    assert (result.memorized.mem >= 0.25).all()


def test_removal_study(noisy_digits, monkeypatch):
    removal = noisy_digits.removal
    scores = noisy_digits.scores
    np.testing.assert_array_equal(removal.removed, np.flatnonzero(scores.mem >= 0.25))
    table = removal.table
    n = noisy_digits.run.dataset.n_train
    assert sorted(table.groupby("arm").size().items()) == [("full", 3), ("memorized", 3),
                                                          ("random", 3)]
    assert set(table[table.arm == "full"].n_train) == {n}
    assert set(table[table.arm != "full"].n_train) == {n - removal.n_removed}
    assert (table.train_acc > 0.9).all()
    summary = removal.summary()
    finite = summary.dropna()
    assert ((finite.ci_low <= finite["mean"]) & (finite["mean"] <= finite.ci_high)).all()
    paired = summary.set_index(["comparison", "metric"]).loc[("memorized - random", "test_acc")]
    by_arm = table.pivot(index="seed", columns="arm", values="test_acc")
    assert paired["mean"] == pytest.approx((by_arm.memorized - by_arm.random).mean())
    # A second call reads the saved study instead of training again.
    import memlab.population.executor as executor

    monkeypatch.setattr(executor, "train_chunk", lambda *a, **k: pytest.fail("retrained"))
    again = study.removal_study(noisy_digits.run, scores, noisy_digits.pairs, seeds=3)
    pd.testing.assert_frame_equal(again.table, table)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_headless_chromium(noisy_digits, tmp_path):
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium binary (Debian/Ubuntu: apt-get install -y chromium)")
    page = noisy_digits.run.path / "report.html"
    text = page.read_text()
    # Overview (histogram, IN/OUT, reliability), examples, pairs, removal: each a plot.
    figures = text.split("<figure>")[1:]
    assert len(figures) == 4
    assert all("<svg" in f.split("</figure>")[0] or "<img" in f.split("</figure>")[0]
               for f in figures)
    for heading in ("Memorization scores", "Most memorized examples", "High-influence pairs",
                    "Reliability", "Marginal utility", "Reproduce"):
        assert f"<h2>{heading}" in text, heading
    # Self-contained: nothing is loaded from anywhere else.
    assert not re.search(r'(src|href)\s*=\s*["\'](https?:|//|file:|[\w./-]+\.(png|svg|js|css))',
                         text)
    assert "<script" not in text and "<link" not in text
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp(dir=tmp_path)
    done = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--enable-logging=stderr", f"--user-data-dir={profile}",
         f"--screenshot={shot}", "--window-size=1200,3000", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CONSOLE" not in done.stderr and "Uncaught" not in done.stderr, done.stderr[-2000:]
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert image.shape == (3000, 1200)
    ink = image < 200
    assert ink.mean() > 0.03, "the page looks blank"
    assert image.std() > 20
    # Plots, not just text: some rows hold long dark runs (axes, images, curves).
    assert (ink.sum(1) > 300).sum() > 20


@pytest.mark.filterwarnings("ignore:.*no IN or no OUT model")  # 8 models: some lack one
def test_command_line_trains_resumes_and_writes_everything(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["memorize", "--data", "digits", "--models", "8", "--epochs", "3", "--hidden", "16",
            "--workers", "1", "--quiet", "--removal", "--removal-seeds", "2", "--threshold",
            "0.3", "--cscores", "--cscore-models", "4", "--cscore-ratios", "0.3,0.7",
            "--record-epochs", "--figures", str(tmp_path / "figures"), "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    needed = mz.models_needed(0.1, 0.7)
    assert f"{needed} models would reach it (--models {needed})" in captured.err
    assert "report:" in captured.out and str(out) in captured.out
    for name in ("memorization.parquet", "influence.npy", "pairs.csv", "report.html",
                 "removal.json", "cscores.parquet", "proxies.parquet"):
        assert (out / name).exists(), name
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        f"memorization_{name}.png" for name in sorted(
            ["overview", "examples", "reliability", "removal", "cscores"]
            + (["pairs"] if len(pd.read_csv(out / "pairs.csv")) else []))]
    assert (out / "cscores" / "subset_0.30" / "manifest.json").exists()
    assert not (out / "cscores" / "subset_0.70").exists(), "the population is reused at 0.7"
    cscores = pd.read_parquet(out / "cscores.parquet")
    assert {"acc_0.30", "acc_0.70", "cscore"} <= set(cscores.columns)
    proxies = pd.read_parquet(out / "proxies.parquet")
    assert {"first_learned", "cumulative_accuracy", "final_loss"} <= set(proxies.columns)
    html = (out / "report.html").read_text()
    assert "C-score" in html and "--removal --removal-seeds 2" in html
    # Resuming: the same command reuses the trained population and removal study.
    before = (out / "removal.csv").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "removal.csv").stat().st_mtime_ns == before
    assert open_run(out).n_models == 8


@pytest.mark.parametrize("extra, message", [
    (["--precision", "0"], "--precision must be a positive number"),
    (["--removal", "--removal-seeds", "1"], "--removal-seeds must be at least 2"),
    (["--cscore-ratios", "a,b"], "comma-separated"),
    (["--subset", "1.5"], "--subset must be a number in (0, 1)"),
])
def test_command_line_reports_bad_input_in_one_line(tmp_path, capsys, extra, message):
    code = main(["memorize", "--data", "digits", "--models", "4", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "r"), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("memlab: error:")


def test_command_line_defaults_are_the_api_defaults():
    args = build_parser().parse_args(["memorize"])
    assert (args.data, args.models, args.subset, args.epochs, args.batch_size, args.optimizer,
            args.lr) == ("mnist1d", *(study.RECIPE[k] for k in (
                "n_models", "subset_fraction", "epochs", "batch_size", "optimizer", "lr")))
    assert (args.precision, args.threshold, args.infl_min, args.duplicate_threshold,
            args.removal_seeds) == (study.PRECISION, mz.MEMORIZED, mz.HIGH_INFLUENCE,
                                    mz.NEAR_DUPLICATE, study.REMOVAL_SEEDS)
    from memlab.measures.cscores import RATIOS

    assert [float(r) for r in args.cscore_ratios.split(",")] == list(RATIOS)
    assert args.out == "runs/memorize" and not args.removal
    # The defaults reach the requested precision: no warning for the main job.
    assert mz.precision_advice(args.models, args.subset, args.precision) is None


def test_signals_are_drawn_as_curves_and_images_as_images():
    import matplotlib.pyplot as plt

    from memlab.data import load

    fig, (a, b) = plt.subplots(1, 2)
    study.draw_input(a, np.sin(np.linspace(0, 6, 40)), "signal", vertical=True)
    study.draw_input(b, load("digits").x_train[0], "image")
    assert len(a.lines) == 1 and a.get_ylim()[0] > a.get_ylim()[1]  # position runs down
    assert len(b.images) == 1 and b.images[0].get_array().shape == (8, 8)
    plt.close(fig)
    assert study._input_kind(load("digits")) == "image"
    assert study._input_kind(load("mnist1d")) == "signal"


@pytest.mark.filterwarnings("ignore:.*no IN or no OUT model")
def test_report_figure_functions_work_without_pairs_or_noise(tmp_path, blobs):
    result = memlab.memorize(blobs, n_models=6, subset_fraction=0.5, epochs=2,
                             model_kwargs={"hidden": [8]}, out=tmp_path / "r", progress=False,
                             n_workers=1, infl_min=2.0, precision=10)
    assert len(result.pairs) == 0
    assert "No pair passes the thresholds" in Path(result.run.path / "report.html").read_text()
