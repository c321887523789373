"""Run a population's chunks as Ray tasks, on one machine or a cluster.

The chunk stays the unit of work: each Ray task trains one chunk (single-threaded on a
CPU, or on its worker's GPU) and returns its records; the driver commits them to the run
directory with the same atomic protocol as the local executor, so the run directory need
not be on a shared file system. A task whose worker dies is retried by Ray (its chunk is
trained again from its seeds, giving the same bits); finished chunks are never redone.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from memlab.errors import ConfigError
from memlab.population import store
from memlab.population.executor import (
    ChunkWork,
    Terminated,
    commit_chunk,
    reinstall_signal_handlers,
)

TASK_RETRIES = 3


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray executor needs Ray: pip install 'memlab[ray]' (or pip install "
            "'ray[default]'), or use --executor local"
        ) from None
    return ray


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A one-line ConfigError when ``address`` (``host:port`` or ``ray://host:port``) takes
    no TCP connection: ``ray.init`` would retry for minutes, printing its C++ core's log."""
    import socket

    host, _, port = (address or "").removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # None, "auto", "local": Ray finds (or starts) the cluster itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError, OverflowError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise ConfigError(f"cannot reach the Ray cluster at --ray-address {address} "
                          f"({reason}); start it (ray start --head), give its address, or "
                          "leave --ray-address out to start a local one") from None


def _train_chunk_task(dataset, work: bytes, chunk: store.ChunkPlan,
                      membership: np.ndarray, device: str):
    """Runs on a Ray worker: train one chunk, return its ChunkResult."""
    import torch

    from memlab.population.executor import retain_freed_memory

    if device == "cpu":
        torch.set_num_threads(1)  # one core per task, as the local executor does
        retain_freed_memory()
    return ChunkWork.loads(work).train(dataset, range(chunk.start, chunk.stop), membership,
                                       device)


def run_ray(run_dir: Path, dataset, work: ChunkWork, chunks: list[store.ChunkPlan],
            membership: np.ndarray, device: str, address: str | None,
            on_chunk: Callable[[dict], None], on_epoch: Callable[[int], None]) -> None:
    """Train ``chunks`` as Ray tasks; commit each result as it arrives.

    address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``) or
    None to start a private local one for this run (whatever RAY_ADDRESS says).
    """
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        check_reachable(address)
        try:
            # "local": a private instance for this run, even when RAY_ADDRESS is set or a
            # cluster started with `ray start` runs on this machine (None would join it)
            ray.init(address=address or "local", log_to_driver=False,
                     include_dashboard=False)
        except ConnectionError as error:
            raise ConfigError(f"cannot connect to the Ray cluster at --ray-address {address} "
                              f"({str(error).splitlines()[0]}); start it (ray start --head), "
                              "give its address, or leave --ray-address out to start a "
                              "local one") from None
    pending: dict = {}
    with _signals_between_calls() as received:
        try:
            task = ray.remote(_train_chunk_task).options(
                num_cpus=1, num_gpus=1 if device.startswith("cuda") else 0,
                max_retries=TASK_RETRIES, retry_exceptions=False)
            dataset_ref = ray.put(dataset)  # shipped to each node once, not once per task
            work_ref = ray.put(work.dumps())
            config = work.config
            pending.update({
                task.remote(dataset_ref, work_ref, chunk,
                            np.asarray(membership[chunk.start:chunk.stop]), device): chunk
                for chunk in chunks
            })
            while pending:
                _raise_if_signalled(received)
                finished, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
                for ref in finished:
                    chunk = pending.pop(ref)
                    info = commit_chunk(run_dir, chunk, ray.get(ref), device, "ray",
                                        config.compact_records)
                    on_epoch(chunk.size * config.epochs)
                    on_chunk(info)
        finally:
            for ref in pending:  # interrupted or failed: don't leave tasks running
                ray.cancel(ref, force=True)
            if started_here:
                ours = _descendants(os.getpid())
                try:
                    ray.shutdown()
                finally:
                    _reap(ours)


WAIT_SECONDS = 0.2  # how often the driver looks for a signal between Ray calls


@contextmanager
def _signals_between_calls():
    """While Ray runs, SIGTERM / SIGHUP / SIGINT are noted, and acted on between Ray calls
    (:func:`_raise_if_signalled`): an exception raised by a signal handler inside Ray's
    C++ core (a reply callback) aborts the process and skips every clean-up, leaving the
    Ray instance behind. Also replaces the handler ray.init installs, which aborts on
    SIGTERM. In another thread than the main one, nothing changes."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    signums = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in signums}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        reinstall_signal_handlers()  # ray.init replaced the outer ones at the C level
        if received:  # noted during the clean-up: act on it now
            _raise_if_signalled(received)


def _raise_if_signalled(received: list[int]) -> None:
    if received:
        signum = received[0]
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(128 + signum)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc; empty elsewhere): the Ray instance this
    run started (gcs_server, raylet, its workers and its dashboard agent)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _reap(pids: set[int], grace: float = 5.0) -> None:
    """After ray.shutdown: give the processes of the Ray instance this run started
    ``grace`` seconds to exit, then kill what is left (a dashboard agent still starting up
    can outlive its raylet). Nothing of a run is left behind."""
    deadline = time.monotonic() + grace
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _running(pid)}
        time.sleep(0.05)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; its parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
