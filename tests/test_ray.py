"""The Ray executor on a real local cluster (head + worker node on loopback)."""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from memlab.population import open_run, train_population
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


@pytest.fixture
def ray_cluster(tmp_path, monkeypatch):
    """A head node and one worker node, 1 CPU each, on 127.0.0.1, in a temp dir of their
    own; stopped by killing exactly their processes (``ray stop --force`` would kill every
    Ray cluster on the machine, a user's included)."""
    ray_cli = shutil.which("ray") or str(Path(os.sys.executable).parent / "ray")
    # A loopback-only test cluster: no token (a token left in ~/.ray by an earlier local
    # ray.init would otherwise be demanded by the head and missing on the worker node).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
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
        ray_start(f"--address={address}")
        yield address
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
                                   executor="ray", ray_address=ray_cluster)
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
