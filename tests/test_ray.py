"""The Ray executor on a real local cluster (head + worker node on loopback)."""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from memlab.errors import ConfigError, RunError
from memlab.population import open_run, store, train_population
from memlab.population.executor import TEST_HOLD
from tests.conftest import make_blobs

ray = pytest.importorskip("ray", reason="the ray executor needs the 'ray' extra")
psutil = pytest.importorskip("psutil")

SETTINGS = dict(model="mlp", model_kwargs={"hidden": [32, 32]}, n_models=12, chunk_size=2,
                epochs=60, batch_size=32, progress=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_of(temp_dir: str) -> list:
    """The processes of the Ray cluster whose session lives under ``temp_dir`` (theirs
    only: every Ray process names its session directory on its command line)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if temp_dir in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


@dataclasses.dataclass
class Cluster:
    address: str
    temp_dir: str
    second_node: list  # its processes (its raylet among them)

    def raylet_of_second_node(self):
        return next(p for p in self.second_node if "raylet" in " ".join(p.cmdline()))


@contextlib.contextmanager
def _cluster():
    """A head node and one worker node, 1 CPU each, on 127.0.0.1, in a temp dir of their
    own; stopped by killing exactly their processes (``ray stop --force`` would kill every
    Ray cluster on the machine, a user's included)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        # A loopback-only test cluster: no token (a token left in ~/.ray by an earlier
        # local ray.init would otherwise be demanded by the head and missing on the worker
        # node).
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield from _started_cluster()


@pytest.fixture(scope="module")
def ray_cluster():
    """One cluster for the module's tests that leave it whole (~15 s to start)."""
    with _cluster() as cluster:
        yield cluster


@pytest.fixture
def fresh_ray_cluster():
    """A cluster of its own, for a test that kills one of its nodes."""
    with _cluster() as cluster:
        yield cluster


def _started_cluster():
    ray_cli = shutil.which("ray") or str(Path(os.sys.executable).parent / "ray")
    env = dict(os.environ)
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]

    def ray_start(*args: str) -> None:
        result = subprocess.run([ray_cli, "start", *args, *common], env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, f"ray start {args} failed:\n{result.stderr[-3000:]}"

    # short: Ray's socket paths inside it must stay under the 107-character limit
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    try:
        ray_start("--head", f"--port={port}", "--include-dashboard=false",
                  f"--temp-dir={temp_dir}")
        head = {p.pid for p in processes_of(temp_dir)}
        ray_start(f"--address={address}")
        # the second node's processes: the ones `ray start --address` added
        second = [p for p in processes_of(temp_dir) if p.pid not in head]
        yield Cluster(address, temp_dir, second)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        ours = processes_of(temp_dir)
        for process in ours:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(ours, timeout=10)
        assert not processes_of(temp_dir), "a process of the test's Ray cluster survived"
        shutil.rmtree(temp_dir, ignore_errors=True)


def kill_one_running_task(killed: list, stop: threading.Event) -> None:
    """SIGKILL the first worker process seen executing a chunk, as a crashed node would."""
    while not stop.is_set() and not killed:
        for process in psutil.process_iter(["name", "cmdline"]):
            title = " ".join(process.info["cmdline"] or []) + (process.info["name"] or "")
            if "ray::_train_chunk_task" in title:
                time.sleep(0.2)  # let it get into training
                try:
                    process.kill()
                    killed.append(process.pid)
                except psutil.NoSuchProcess:
                    continue
                return
        time.sleep(0.01)


def test_ray_run_with_a_killed_worker_equals_local_run(ray_cluster, tmp_path):
    dataset = make_blobs(n_train=1000, n_features=20)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_one_running_task, args=(killed, stop), daemon=True)
    killer.start()
    try:
        via_ray = train_population(dataset, **SETTINGS, out=tmp_path / "ray",
                                   executor="ray", ray_address=ray_cluster.address)
    finally:
        stop.set()
        killer.join()
    assert killed, "a worker must have been killed mid-run for this test to mean anything"
    local = train_population(dataset, **SETTINGS, out=tmp_path / "local", n_workers=1)
    for name in local.record_names:
        np.testing.assert_array_equal(via_ray.records(name), local.records(name), name)
    for name, array in local.weights().items():
        np.testing.assert_array_equal(via_ray.weights()[name], array)
    infos = [open_run(tmp_path / "ray").manifest["chunks"][str(i)] for i in range(6)]
    assert infos == ["done"] * 6
    assert not list((tmp_path / "ray").glob(".ray-probe*"))  # the driver's probe is gone


def test_without_an_address_a_private_instance_starts_whatever_ray_address_says(
        monkeypatch, tmp_path):
    # ray.init(address=None) would join the cluster RAY_ADDRESS names (or the last one
    # `ray start` made here); "local" always starts a private one (Ray's documented rule).
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    called = {}

    class Stop(Exception):
        pass

    def init(address=None, **options):
        called["address"] = address
        raise Stop

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(Stop):
        train_population(make_blobs(n_train=40), **{**SETTINGS, "epochs": 1},
                         out=tmp_path / "run", executor="ray")
    assert called["address"] == "local"


REPO = Path(__file__).resolve().parents[1]


def _memlab(args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "memlab", *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_lost_node_is_said_in_one_line_and_its_chunks_retrained(fresh_ray_cluster,
                                                                    tmp_path, capfd):
    """SIGKILL of the second node's raylet mid-run: the driver names the node, its chunk is
    trained again on the head node, and the run equals a local one."""
    dataset = make_blobs(n_train=1000, n_features=20)
    ray_cluster = fresh_ray_cluster
    raylet = ray_cluster.raylet_of_second_node()

    def kill_when_busy(stop: threading.Event) -> None:
        seen: dict[int, float] = {}  # worker pid -> when first seen running a chunk
        while not stop.is_set():  # once the second node has run a chunk for half a second
            busy = set()
            for child in raylet.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "ray::_train_chunk_task" in " ".join(child.cmdline()):
                        busy.add(child.pid)
            seen = {pid: seen.get(pid, time.time()) for pid in busy}  # running now only
            if any(time.time() - since > 0.5 for since in seen.values()):
                raylet.kill()
                return
            time.sleep(0.02)

    stop = threading.Event()
    killer = threading.Thread(target=kill_when_busy, args=(stop,), daemon=True)
    killer.start()
    try:
        via_ray = train_population(dataset, **SETTINGS, out=tmp_path / "ray",
                                   executor="ray", ray_address=ray_cluster.address)
    finally:
        stop.set()
        killer.join()
    err = capfd.readouterr().err
    # one line when its chunk is started again elsewhere (and one more if Ray's health
    # check declares the node dead before the run ends: not in this short run)
    retried = [line for line in err.splitlines() if "being trained again" in line]
    assert len(retried) == 1, err
    assert re.search(r"chunk \d+ is being trained again \(attempt 2 of 4\): its worker on "
                     r"Ray node \S+ \([0-9a-f]{8}\) was lost; same seeds, same bits$",
                     retried[0]), err
    assert len([line for line in err.splitlines() if line.startswith("memlab: Ray node")]) \
        <= 1, err
    assert "INFO" not in err, err  # ray.init's own log lines are not a user's business
    local = train_population(dataset, **SETTINGS, out=tmp_path / "local", n_workers=1)
    for name in local.record_names:
        np.testing.assert_array_equal(via_ray.records(name), local.records(name), name)


def test_exhausted_retries_end_in_one_line(ray_cluster, tmp_path, monkeypatch):
    """Every attempt of every chunk killed: one RunError naming the chunk and the fix.
    (One retry instead of three: each attempt starts a Ray worker, seconds apiece.)"""
    from memlab.population import ray_executor

    monkeypatch.setattr(ray_executor, "TASK_RETRIES", 1)
    stop = threading.Event()

    def kill_every_task() -> None:
        while not stop.is_set():
            for process in psutil.process_iter(["cmdline"]):
                if "ray::_train_chunk_task" in " ".join(process.info["cmdline"] or []):
                    with contextlib.suppress(psutil.Error):
                        process.kill()
            time.sleep(0.01)

    killer = threading.Thread(target=kill_every_task, daemon=True)
    killer.start()
    try:
        with pytest.raises(RunError) as raised:
            train_population(make_blobs(n_train=400), **{**SETTINGS, "n_models": 2},
                             out=tmp_path / "run", executor="ray",
                             ray_address=ray_cluster.address)
    finally:
        stop.set()
        killer.join()
    message = str(raised.value)
    assert "\n" not in message and message.startswith("chunk "), message
    assert "was lost 2 times on Ray" in message, message
    assert message.endswith("finished chunks are kept: run the same command again to resume")


def test_sigterm_with_ray_address_gives_143_the_line_and_no_process_left(ray_cluster,
                                                                          tmp_path):
    """SIGTERM (Slurm's, Kubernetes') to a driver of a cluster's run: rc 143, one line, and
    10 s later no process memlab started (the workers running its chunks) is alive. (With
    a private instance: tests/test_hardening.py, the same checks.)"""
    run_dir = tmp_path / "run"
    args = ["train", "--data", "digits", "--models", "8", "--chunk-size", "2", "--epochs",
            "3", "--hidden", "16", "--quiet", "--executor", "ray", "--out", str(run_dir),
            "--ray-address", ray_cluster.address]
    driver = _memlab(args, **{TEST_HOLD: f"2:{tmp_path / 'never'}"})
    deadline = time.time() + 120
    while time.time() < deadline and not store.chunk_is_complete(run_dir, 0):
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # the held chunks are running
    theirs = psutil.Process(driver.pid).children(recursive=True)
    tasks = [p for p in psutil.process_iter(["cmdline"])
             if "ray::_train_chunk_task" in " ".join(p.info["cmdline"] or [])]
    assert tasks, "the held chunks must be running when the signal lands"
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "memlab: terminated by signal 15; run the same command again to resume"), err
    assert "Traceback" not in err, err
    gone = time.time() + 10
    left = theirs + tasks
    while time.time() < gone and any(_running(p) for p in left):
        time.sleep(0.1)
    assert not [p for p in left if _running(p)], "a process memlab started survived"


def _running(process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _rss_probe(args: list[str]) -> str:
    """A driver that prints its resident memory after its imports and its peak (VmHWM: of
    this process image only; getrusage's maxrss would count the forking parent's)."""
    return (
        "import json, sys\n"
        "import ray, torch, memlab.population, memlab.studies.base\n"
        "from memlab.cli import main\n"
        "kib = lambda key: next(int(l.split()[1]) for l in open('/proc/self/status') "
        "if l.startswith(key))\n"
        "base = kib('VmRSS:') // 1024\n"
        f"code = main({args!r})\n"
        "print(json.dumps({'code': code, 'base': base, 'peak': kib('VmHWM:') // 1024}))\n")


def test_a_memory_mapped_dataset_of_1_gib_trains_with_the_driver_growing_under_256_mib(
        ray_cluster, tmp_path):
    """The dataset goes to the workers by path (the run directory is visible to every node
    of this one-machine cluster), not through the driver: its peak RSS, from after its
    imports to the end of the run, grows by less than 256 MiB."""
    data = tmp_path / "data"
    data.mkdir()
    n, dim = 16_384, 16_384  # x_train: 1 GiB of float32
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, n)
    centers = rng.normal(size=(4, dim)).astype(np.float32)
    x = np.lib.format.open_memmap(data / "x_train.npy", mode="w+", dtype=np.float32,
                                  shape=(n, dim))
    for start in range(0, n, 1024):
        x[start:start + 1024] = centers[y[start:start + 1024]] + rng.normal(
            size=(1024, dim)).astype(np.float32)
    x.flush()
    del x
    y_test = rng.integers(0, 4, 256)
    np.save(data / "y_train.npy", y)
    np.save(data / "x_test.npy", (centers[y_test] + rng.normal(size=(256, dim))).astype(
        np.float32))
    np.save(data / "y_test.npy", y_test)
    assert (data / "x_train.npy").stat().st_size >= 2**30
    args = ["train", "--data", str(data), "--models", "4", "--chunk-size", "2", "--epochs",
            "1", "--hidden", "8", "--batch-size", "512", "--quiet", "--executor", "ray",
            "--ray-address", ray_cluster.address, "--out", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-c", _rss_probe(args)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["code"] == 0
    growth = measured["peak"] - measured["base"]
    print(f"driver RSS {measured['base']} MiB after imports, peak {measured['peak']} MiB: "
          f"grew {growth} MiB for a 1 GiB memory-mapped dataset")
    assert growth < 256, measured
    run = open_run(tmp_path / "run")
    assert run.manifest["status"] == "complete" and run.dataset.memory_mapped


def test_gpu_workers_are_asked_of_the_cluster_not_of_this_machine(ray_cluster, tmp_path):
    """--device cuda with Ray: this CPU-only driver is not refused for lacking a GPU (its
    workers' GPUs count); a cluster without any GPU is one line, not a run that hangs."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: its private Ray instance would have one too")
    with pytest.raises(ConfigError) as raised:
        train_population(make_blobs(n_train=40), **{**SETTINGS, "epochs": 1, "n_models": 2},
                         out=tmp_path / "run", executor="ray", device="cuda",
                         ray_address=ray_cluster.address)
    assert "the Ray cluster has no GPU" in str(raised.value), raised.value
    assert "\n" not in str(raised.value)


def test_without_a_shared_run_directory_the_driver_commits_what_workers_return(
        ray_cluster, monkeypatch, tmp_path):
    """A node that cannot see the run directory: the dataset goes through the object store
    and the records come back to the driver, which commits them: the same bits."""
    from memlab.population import ray_executor

    monkeypatch.setattr(ray_executor, "_shared_run_dir", lambda ray, run_dir: False)
    settings = {**SETTINGS, "n_models": 4, "epochs": 2}
    data = make_blobs(n_train=200, n_features=20)
    via_ray = train_population(data, **settings, out=tmp_path / "ray", executor="ray",
                               ray_address=ray_cluster.address)
    local = train_population(data, **settings, out=tmp_path / "local", n_workers=1)
    for name in local.record_names:
        np.testing.assert_array_equal(via_ray.records(name), local.records(name), name)
    assert not list((tmp_path / "ray").glob(".ray-probe*"))  # (none written, none left)


def test_progress_moves_per_epoch_on_ray_workers(ray_cluster, monkeypatch, tmp_path):
    """The bar hears of every epoch of every chunk (through the driver's queue), not only
    of finished chunks: 2 chunks x 3 epochs are 6 updates of 2 model-epochs."""
    from memlab.population import train as lifecycle

    heard: list[int] = []
    monkeypatch.setattr(lifecycle._Progress, "epoch_done",
                        lambda self, n_models: heard.append(n_models))
    train_population(make_blobs(n_train=120), **{**SETTINGS, "n_models": 4, "epochs": 3},
                     out=tmp_path / "run", executor="ray", ray_address=ray_cluster.address)
    assert sorted(heard) == [2] * 6, heard
