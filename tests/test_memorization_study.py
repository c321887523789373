"""The memorization study end to end: planted label noise is found, reliability grows with
the population, the removal arms are the planted sets, the result round-trips and resumes
without training, the report renders in Chromium, and the command line builds the API's
config."""

import re
import shutil
import subprocess
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch

from memlab.cli import build_parser, main
from memlab.io import loads_strict
from memlab.measures import memorization as mz
from memlab.population import open_run
from memlab.studies import memorize
from memlab.studies.base import Result
from memlab.studies.memorize import RECIPE, MemorizeConfig
from memlab.studies.memorize import removal as rm

# The quick preset: digits with 10% of the training labels flipped, 32 models at r = 0.7.
# The a-priori RMS bound of docs/science.md §1 is then loose (0.65, vs 0.07 at 1,000
# models), but models that fit their subsets (≈99% training accuracy) separate flipped
# labels (mem ≈ 0.9) from clean ones (mem ≈ 0.09) by far more than the per-example
# standard errors.
CONFIG = MemorizeConfig.quick(removal=True, removal_seeds=3)


@pytest.fixture(scope="module")
def noisy_digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("memorize") / "digits"
    state = torch.get_rng_state()
    with pytest.warns(memorize.TargetSEWarning, match="models would reach it"):
        result = memorize.run(CONFIG, out, progress=False, n_workers=1)
    assert torch.equal(torch.get_rng_state(), state), "the study touched torch's global RNG"
    return result


def test_planted_label_noise_is_detected(noisy_digits):
    s = noisy_digits.summary
    assert s["error_bound"] == pytest.approx(mz.error_bound(32, 0.7))
    assert s["train_acc_in_mean"] > 0.97, "the test needs models that fit their subsets"
    assert s["noise_auroc"] >= 0.95, s
    scores = noisy_digits.tables["scores"]
    assert scores.corrupted.sum() == round(0.1 * s["n_train"])
    assert scores.loc[scores.corrupted, "mem"].mean() > 0.7
    assert scores.loc[~scores.corrupted, "mem"].mean() < 0.2
    # The most memorized examples drawn in the report are memorized by the definition
    # (acc_in − acc_out ≥ 0.9), and mostly flipped labels: the rest are clean examples
    # memorized just as much (mem_binary 1 too; which of the ties at 1 come first is the
    # estimator's tie-break: 20 of 24 flipped with the probit, 23 with the binary).
    examples = noisy_digits.tables["examples"]
    assert (examples["mem_binary"] >= 0.9).all()
    assert examples["corrupted"].mean() >= 0.8
    assert (scores.se > 0).all(), "Newcombe's se never collapses to 0"


def test_reliability_rises_with_the_number_of_models(noisy_digits):
    curve = noisy_digits.tables["reliability"]
    assert curve.n_models.tolist() == [8, 16, 32]
    assert (np.diff(curve.spearman) > 0).all(), curve
    assert noisy_digits.summary["reliability"] > 0.6


def test_result_round_trips_and_matches_the_run(noisy_digits):
    out = noisy_digits.out
    loaded = Result.load(out)
    assert loaded.study == "memorize" and loaded.config == CONFIG.to_dict()
    assert set(loaded.tables) == set(noisy_digits.tables)
    for name, table in noisy_digits.tables.items():
        pd.testing.assert_frame_equal(loaded.tables[name], table, check_dtype=False,
                                      obj=name)
    # summary.json holds the results; the measured durations are kept in timings.json
    assert loaded.summary == {**loads_strict((out / "summary.json").read_text()),
                              **loads_strict((out / "timings.json").read_text())}
    assert "seconds" not in loads_strict((out / "summary.json").read_text())
    assert sorted(loaded.figures()) == ["examples", "overview", "pairs", "reliability",
                                        "removal"]
    # The influence matrix beside the tables is the population's, recomputed from records
    # with the estimator the study chose (the probit's where the margins fit it).
    run = open_run(noisy_digits.summary["run_dir"])
    assert noisy_digits.summary["influence_estimator"] == "probit"
    dense = mz.in_out_pairs_margin(run.membership_mask, run.records("test_margin"))
    np.testing.assert_array_equal(np.load(out / "influence.npy"),
                                  dense.score.astype(np.float32))
    np.testing.assert_array_equal(np.load(out / "influence_se.npy"),
                                  dense.se.astype(np.float32))
    # The inputs stored for the figures are the dataset's.
    top = noisy_digits.tables["examples"]
    for row in top.head(3).itertuples():
        np.testing.assert_array_equal(np.asarray(row.input, np.float32),
                                      run.dataset.x_train[row.index].ravel())


def test_noise_floors_count_with_the_studys_rule(noisy_digits):
    """The permuted-mask floors count what the study counts: on the real mask the same
    counters give exactly n_memorized and n_pairs; the planted flips are memorized above
    their floor, and the scores are reliable enough to rank."""
    from memlab.studies.memorize.floors import ABOVE_NOISE, RELIABLE, count_memorized, count_pairs

    s = noisy_digits.summary
    run = open_run(s["run_dir"])
    mask = np.asarray(run.membership_mask)
    records = {name: np.asarray(run.records(name)) for name in ("train_correct",
                                                                "train_margin")}
    assert count_memorized(mask, records, s["estimator"]["estimator"], s["mem_min"]) == \
        s["n_memorized"]
    memorized = np.flatnonzero(noisy_digits.tables["scores"]["mem"].to_numpy() >= s["mem_min"])
    test = np.asarray(run.records("test_margin" if s["influence_estimator"] == "probit"
                                  else "test_correct"))
    ds = run.dataset
    assert count_pairs(mask[:, memorized], test, s["infl_min"], s["influence_estimator"],
                       ds.y_train[memorized], ds.y_test) == s["n_pairs"]
    assert s["null_permutations"] == len(s["n_pairs_null_counts"]) == 5
    assert s["n_memorized_null"] < s["n_memorized"] / 2
    assert s["memorized_verdict"] == ABOVE_NOISE and s["reliability_verdict"] == RELIABLE
    assert s["pairs_verdict"] in (ABOVE_NOISE, "cannot decide")
    assert s["noise_auroc_lo"] > 0.5 and s["label_error_auroc_lo"] > 0.5


def test_removal_arms_are_the_planted_sets(noisy_digits):
    s, tables = noisy_digits.summary, noisy_digits.tables
    scores = tables["scores"]
    removed = np.flatnonzero(scores.mem >= 0.25)
    assert s["removal"]["n_removed"] == len(removed) > 0
    table = tables["removal"]
    n = s["n_train"]
    assert sorted(table.groupby("arm").size().items()) == [("full", 3), ("memorized", 3),
                                                          ("random", 3)]
    digest = rm.sets_digest(removed, np.unique(tables["pairs"]["test"]))
    for arm in rm.ARMS:
        mask = open_run(noisy_digits.out / "removal" / f"{digest}-{arm}").membership_mask
        if arm == "full":
            assert mask.all()
        elif arm == "memorized":
            assert (np.flatnonzero(~mask[0]) == removed).all() and (mask == mask[0]).all()
        else:  # a fresh random set of the same size per seed
            assert (mask.sum(1) == n - len(removed)).all()
            assert not (mask == mask[0]).all()
    # Paired differences: recomputed from the per-seed table.
    by_arm = table.pivot(index="seed", columns="arm", values="test_acc")
    diff = (by_arm.memorized - by_arm.random).to_numpy()
    row = tables["removal_summary"].set_index(["comparison", "metric"]).loc[
        ("memorized - random", "test_acc")]
    mean, low, high = rm.t_interval(diff)
    assert (row["mean"], row.ci_low, row.ci_high) == pytest.approx((mean, low, high))


def test_t_interval_matches_scipy():
    from scipy import stats

    values = np.array([0.61, 0.63, 0.60, 0.64, 0.62])
    mean, low, high = rm.t_interval(values)
    assert (low, high) == pytest.approx(stats.t.interval(0.95, 4, loc=values.mean(),
                                                         scale=stats.sem(values)))
    assert np.isnan(rm.t_interval(np.array([0.5]))[1])


def test_verdict_reads_the_paired_interval():
    frame = pd.DataFrame({"comparison": ["memorized - random"] * 3,
                          "metric": ["test_acc", "high_influence_acc", "train_acc"],
                          "mean": [0.01, -0.1, 0.0], "ci_low": [-0.01, -0.13, np.nan],
                          "ci_high": [0.03, -0.06, np.nan], "seeds": 8})
    assert rm.verdict(frame, "test_acc") == "cannot decide"
    assert rm.verdict(frame, "high_influence_acc") == "lower"
    assert rm.verdict(frame, "train_acc") == "cannot decide"


def test_second_run_trains_nothing(noisy_digits, monkeypatch):
    import memlab.population as population

    monkeypatch.setattr(population, "train_population",
                        lambda *a, **k: pytest.fail("retrained"))
    again = memorize.run(CONFIG, noisy_digits.out, progress=False)
    pd.testing.assert_frame_equal(again.tables["scores"], noisy_digits.tables["scores"])


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_headless_chromium(noisy_digits, tmp_path):
    page = noisy_digits.out / "report.html"
    text = page.read_text()
    figures = text.split("<figure>")[1:]
    assert len(figures) == 4  # overview, examples, pairs, removal
    for heading in ("Memorization scores", "Most memorized examples", "High-influence pairs",
                    "Reliability", "Marginal utility", "Reproduce"):
        assert f"<h2>{heading}" in text, heading
    # The finding comes first, computed from the summary: the flipped labels are found.
    start = text.index('<div class="finding">')
    finding = text[start:text.index("</div>", start)]
    assert start < text.index("<h2>")
    assert re.search(r"mem ranks the [\d,]+ flipped labels above the clean ones", finding)
    assert "memlab attribute" not in finding  # the models fit: no pointer elsewhere
    assert '<details><summary><h2>Reproduce' in text  # collapsed
    assert not re.search(r'(src|href)\s*=\s*["\'](https?:|//|file:|[\w./-]+\.(png|svg|js|css))',
                         text)
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium binary (Debian/Ubuntu: apt-get install -y chromium)")
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
         f"--screenshot={shot}", "--window-size=1200,3000", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr, done.stderr[-2000:]
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    ink = image < 200
    assert ink.mean() > 0.03, "the page looks blank"
    assert (ink.sum(1) > 300).sum() > 20  # plots, not just text


@pytest.mark.filterwarnings("ignore:.*no IN or no OUT model")  # 8 models: some lack one
def test_command_line_trains_resumes_and_writes_everything(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["memorize", "--data", "digits", "--n-train", "300", "--models", "8", "--epochs",
            "3", "--hidden", "16", "--workers", "1", "--quiet", "--removal", "--removal-seeds",
            "2", "--threshold", "0.3", "--cscores", "--cscore-models", "4", "--cscore-ratios",
            "0.3,0.7", "--record-epochs", "--figures", str(tmp_path / "figures"), "--out",
            str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    needed = mz.models_needed(0.1, 0.7)
    assert f"{needed} models would reach it (--models {needed})" in captured.err
    assert "report:" in captured.out and str(out) in captured.out
    for name in ("summary.json", "report.html", "influence.npy", "tables/scores.parquet",
                 "tables/cscores.parquet", "tables/removal.parquet", "population/manifest.json",
                 "cscores/subset_0.30/manifest.json"):
        assert (out / name).exists(), name
    assert not (out / "cscores" / "subset_0.70").exists(), "the population is reused at 0.7"
    result = Result.load(out)
    names = sorted(["overview", "examples", "reliability", "removal", "cscores"]
                   + (["pairs"] if len(result.tables["top_pairs"]) else []))
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        f"memorization_{name}.png" for name in names]
    assert {"first_learned", "cumulative_accuracy", "final_loss"} <= set(
        result.tables["proxies"].columns)
    html = (out / "report.html").read_text()
    assert "C-score" in html and "--removal-seeds 2" in html
    # Resuming: the same command reads the saved result.
    before = (out / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "summary.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("extra, message", [
    (["--target-se", "0"], "--target-se must be a positive number"),
    (["--removal", "--removal-seeds", "1"], "--removal-seeds must be an integer >= 2"),
    (["--cscores", "--cscore-ratios", "a,b"], "--cscore-ratios takes a number, got 'a'"),
    (["--subset", "1.5"], "--subset must be a number in (0, 1)"),
    (["--membership", "mask.npy"], "draws random subsets for one recipe: no membership mask"),
])
def test_command_line_reports_bad_input_in_one_line(tmp_path, capsys, extra, message):
    code = main(["memorize", "--data", "digits", "--models", "4", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "r"), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("memlab: error:")
    assert not (tmp_path / "r").exists()  # refused before any work


def test_precision_was_renamed_target_se(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["memorize", "--precision", "0.1"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --precision" in capsys.readouterr().err


def test_command_line_defaults_are_the_api_defaults():
    from memlab.measures.cscores import RATIOS
    from memlab.testing import config_from_command

    assert config_from_command(memorize.STUDY, "memlab memorize") == MemorizeConfig()
    assert config_from_command(memorize.STUDY, "memlab memorize --quick") == \
        MemorizeConfig.quick()
    assert config_from_command(memorize.STUDY, "memlab memorize --full") == \
        MemorizeConfig.full()
    assert MemorizeConfig().cscore_ratios == RATIOS
    # The demo reaches the requested standard error: no warning for the main job.
    config = MemorizeConfig()
    p = config.population
    assert mz.precision_advice(p.n_models, p.subset_fraction, config.target_se) is None


@pytest.mark.filterwarnings("ignore:.*no IN or no OUT model")
def test_a_python_dataset_without_pairs_reports_both(tmp_path, blobs):
    import dataclasses

    # mem = infl = 1 would need all 8 IN models right and all 8 OUT models wrong: none.
    config = MemorizeConfig(data=None, mem_min=1.0, infl_min=1.0, target_se=10,
                            population=dataclasses.replace(
                                RECIPE, n_models=16, subset_fraction=0.5, epochs=2,
                                model_kwargs={"hidden": [8]}))
    result = memorize.run(config, tmp_path / "r", progress=False, n_workers=1,
                          dataset=blobs)
    assert len(result.tables["pairs"]) == 0 and "pairs" not in result.figures()
    html = (tmp_path / "r" / "report.html").read_text()
    assert "No pair passes the thresholds" in html
    assert "No memlab memorize command recreates this config" in html
    assert "passed to run() as a Python object" in html
    # Another dataset under the same config is not mistaken for the saved result: the
    # population directory refuses it.
    from memlab.errors import RunError

    with pytest.raises(RunError):
        memorize.run(config, tmp_path / "r", progress=False,
                     dataset=blobs.with_label_noise(0.2, seed=1))
