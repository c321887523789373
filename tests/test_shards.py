"""Shards: several processes train one run (a Slurm job array), the result equals one
process's run bit for bit, a missing or killed shard is named and re-run, and the Slurm
and submitit recipes of docs/scaling.md run as shown."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from memlab.cli import main
from memlab.errors import ConfigError, RunError
from memlab.population import consolidate, open_run, store, train_population
from memlab.population.executor import TEST_HOLD
from tests.conftest import make_blobs

REPO = Path(__file__).resolve().parents[1]
ARGS = ["train", "--data", "digits", "--models", "12", "--chunk-size", "2", "--epochs", "2",
        "--hidden", "16", "--workers", "1", "--quiet"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def memlab(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "memlab", *args], cwd=REPO,
                            env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return open_run(out)


def assert_same_run(run, reference) -> None:
    assert run.manifest["status"] == "complete"
    for name in reference.record_names:
        np.testing.assert_array_equal(run.records(name), reference.records(name), name)
    for name, array in reference.weights().items():
        np.testing.assert_array_equal(run.weights()[name], array, name)
    assert run.models_table().equals(reference.models_table())


def test_three_concurrent_shards_and_a_consolidator_equal_one_process(one_process, tmp_path):
    run_dir = tmp_path / "run"
    shards = [memlab(*ARGS, "--shard", f"{i}/3", "--out", str(run_dir)) for i in range(3)]
    results = [finished(p) for p in shards]
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    # exactly one shard found every chunk in and built the records; the others said so
    assert sum("run directory:" in out for _, out, _ in results) == 1, results
    assert sum("the run waits for" in err for _, _, err in results) == 2, results
    code, out, err = finished(memlab("consolidate", str(run_dir)))
    assert code == 0 and "run directory:" in out, err
    assert_same_run(open_run(run_dir), one_process)
    assert open_run(run_dir).manifest["shards"] == 3


def test_a_missing_shard_is_named_and_a_killed_shard_rerun_completes_the_run(
        one_process, tmp_path):
    run_dir = tmp_path / "run"
    shards = [memlab(*ARGS, "--shard", f"{i}/3", "--out", str(run_dir)) for i in (0, 1)]
    assert [finished(shard)[0] for shard in shards] == [0, 0]
    code, _, err = finished(memlab("consolidate", str(run_dir)))
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"memlab: error: {run_dir} is not complete: 2 of 6 chunks are missing (chunks 2, 5); "
        "run shard 2/3 again (memlab train ... --shard i/3), or the train command without "
        "--shard")
    code, out, _ = finished(memlab("info", str(run_dir)))
    assert code == 0 and "(4/6 chunks committed)" in out and "trained as 3 shards" in out
    # shard 2 commits chunk 2, then holds before chunk 5 (models 10..) until killed
    held = memlab(*ARGS, "--shard", "2/3", "--out", str(run_dir),
                  env={**ENV, TEST_HOLD: f"10:{tmp_path / 'never'}"})
    deadline = time.time() + 120
    while time.time() < deadline and not store.chunk_is_complete(run_dir, 2):
        time.sleep(0.05)
    assert held.poll() is None, held.communicate()
    # while it runs: the same shard again, the whole run, or another N are refused in one
    # line (one at a time: each opens the run under its lock for a moment, and a second
    # opener at that moment is told the run is in use)
    code, _, err = finished(memlab(*ARGS, "--shard", "2/3", "--out", str(run_dir)))
    assert code == 2 and "(shard 2/3) is in use by pid" in err and "Traceback" not in err
    code, _, err = finished(memlab(*ARGS, "--out", str(run_dir)))
    assert code == 2 and "is being trained by shard 2/3" in err, err
    code, out, _ = finished(memlab("info", str(run_dir)))
    assert "training now: 2/3" in out, out
    code, _, err = finished(memlab(*ARGS, "--shard", "0/4", "--out", str(run_dir)))
    assert code == 2 and "run every shard with the same N (--shard i/3)" in err, err
    held.send_signal(signal.SIGKILL)
    held.wait(30)
    code, _, err = finished(memlab("consolidate", str(run_dir)))
    assert code == 2 and "1 of 6 chunks are missing (chunks 5); run shard 2/3 again" in err
    code, out, err = finished(memlab(*ARGS, "--shard", "2/3", "--out", str(run_dir)))
    assert code == 0 and "run directory:" in out, err  # the last shard consolidates
    assert_same_run(open_run(run_dir), one_process)


def test_the_python_api_returns_the_run_from_the_shard_that_completes_it(tmp_path):
    settings = dict(model="mlp", model_kwargs={"hidden": [8]}, n_models=4, chunk_size=1,
                    epochs=1, n_workers=1, progress=False, out=tmp_path / "run")
    data = make_blobs(n_train=60)
    assert train_population(data, **settings, shard=(1, 2)) is None
    with pytest.raises(RunError, match=r"2 of 4 chunks are missing \(chunks 0, 2\); run "
                                       r"shard 0/2 again"):
        consolidate(tmp_path / "run")
    run = train_population(data, **settings, shard="0/2")
    assert run is not None and run.manifest["status"] == "complete"
    assert consolidate(tmp_path / "run").manifest == run.manifest  # intact: left as it is
    reference = train_population(data, **{**settings, "out": tmp_path / "ref"})
    for name in reference.record_names:
        np.testing.assert_array_equal(run.records(name), reference.records(name))


@pytest.mark.parametrize("shard, message", [
    ("3/3", "--shard's i must be an integer in [0, 2], got 3"),
    ("1", "--shard must be i/N, got '1'"),
    ("a/2", "--shard must be i/N, got 'a/2'"),
    ("0/0", "--shard's N must be a positive integer, got 0")])
def test_a_bad_shard_is_one_line(shard, message, tmp_path, capsys):
    assert main([*ARGS, "--shard", shard, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_shard_needs_a_run_directory():
    with pytest.raises(ConfigError, match="shard needs out"):
        train_population(make_blobs(n_train=40), n_models=2, epochs=1, shard=(0, 2))


def test_the_slurm_array_script_of_the_docs_trains_the_run(one_process, tmp_path):
    """examples/slurm/train_array.sh, run as sbatch --array=0-2 would: three tasks at once,
    each with its SLURM_ARRAY_TASK_ID."""
    run_dir = tmp_path / "run"
    env = {**ENV, "RUN": str(run_dir), "SLURM_ARRAY_TASK_COUNT": "3",
           "MEMLAB_ARGS": " ".join(a for a in ARGS[1:] if a not in ("--workers", "1")),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    tasks = [subprocess.Popen(["bash", str(REPO / "examples/slurm/train_array.sh")], cwd=REPO,
                              env={**env, "SLURM_ARRAY_TASK_ID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    results = [finished(task) for task in tasks]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert_same_run(open_run(run_dir), one_process)


def test_the_submitit_example_trains_the_run_as_local_jobs(tmp_path):
    pytest.importorskip("submitit")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "examples/submitit_shards.py", "--local", "--shards", "2",
         "--models", "4", "--epochs", "1", "--out", str(run_dir)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "of 2 shards found the run complete" in result.stdout, result.stdout
    assert open_run(run_dir).manifest["status"] == "complete"


def test_info_piped_into_head_ends_quietly(one_process):
    """`memlab info RUN | head -1`: the reader closes the pipe early; no traceback."""
    result = subprocess.run(f"{sys.executable} -m memlab info {one_process.path} | head -1",
                            shell=True, cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.startswith("Run(") and "Traceback" not in result.stderr, result
