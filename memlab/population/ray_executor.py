"""Run a population's chunks as Ray tasks, on one machine or a cluster.

The chunk stays the unit of work: each Ray task trains one chunk (single-threaded on a
CPU, or on the GPU Ray gives it) where it runs, resolving the device and precision there.
When every node sees the run directory (one machine, a shared file system), a task reads
the dataset from it (memory-mapped when large) and commits its chunk there itself; when a
node does not, the dataset travels through Ray's object store and the records back to the
driver, which commits them with the same atomic protocol. A task whose worker or node dies
is retried by Ray (its chunk is trained again from its seeds, giving the same bits) and the
driver says so; finished chunks are never redone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from memlab import io
from memlab.errors import ConfigError, MemlabError, RunError
from memlab.population import store
from memlab.population.executor import (
    TEST_HOLD,
    ChunkWork,
    Terminated,
    commit_chunk,
    reinstall_signal_handlers,
)
from memlab.population.messages import say

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


# Per Ray worker process: the run's dataset read from its path, once (a worker trains many
# chunks; a memory-mapped dataset is mapped, never copied).
_DATASETS: dict[str, object] = {}


def _sees_run(path: str, token: str) -> bool:
    """Runs on each node (no CPU reserved): whether this node sees the driver's run
    directory, i.e. the probe file (``path``) the driver wrote there, with its content."""
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def _train_chunk_task(dataset, work: bytes, chunk: store.ChunkPlan, membership: np.ndarray,
                      device: str, run_dir: str | None, progress):
    """Runs on a Ray worker: train one chunk. With ``run_dir`` (a directory every node
    sees) the dataset is read from it and the chunk committed into it here, and only the
    chunk's summary travels back; without, ``dataset`` came through the object store and
    the ChunkResult goes back for the driver to commit. ``progress``: a Ray queue told when
    the chunk starts (a second start is a retry) and as models finish epochs."""
    import ray
    import torch

    from memlab.population.executor import retain_freed_memory

    def tell(message: tuple) -> None:  # progress is news, never a reason to fail a chunk
        try:
            progress.put(message)
        except ray.exceptions.RayError:
            pass

    # first: a worker lost from here on is a retry the driver can name
    tell(("start", (chunk.index, ray.get_runtime_context().get_node_id())))
    if device == "cpu":
        torch.set_num_threads(1)  # one core per task, as the local executor does
        retain_freed_memory()
    work = ChunkWork.loads(work)
    if run_dir is not None:
        if run_dir not in _DATASETS:
            from memlab.engine.task import TASKS

            _DATASETS[run_dir] = TASKS[work.task].load(Path(run_dir) / "dataset.npz")
        dataset = _DATASETS[run_dir]

    def on_epoch(n_models: int) -> None:
        tell(("epoch", n_models))

    result = work.train(dataset, range(chunk.start, chunk.stop), membership, device, on_epoch)
    if run_dir is None:
        return result
    return commit_chunk(Path(run_dir), chunk, result, device, "ray",
                        work.config.compact_records)


def run_ray(run_dir: Path, dataset, work: ChunkWork, chunks: list[store.ChunkPlan],
            membership: np.ndarray, device: str, address: str | None,
            on_chunk: Callable[[dict], None], on_epoch: Callable[[int], None]) -> None:
    """Train ``chunks`` as Ray tasks; each is committed as it finishes.

    address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``) or
    None to start a private local one for this run (whatever RAY_ADDRESS says). When every
    node sees ``run_dir`` (one machine, or a shared file system), workers read the dataset
    from it and commit their chunks there; otherwise the dataset goes through Ray's object
    store (once per node) and each chunk's records come back to be committed here.
    """
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        check_reachable(address)
        try:
            # "local": a private instance for this run, even when RAY_ADDRESS is set or a
            # cluster started with `ray start` runs on this machine (None would join it)
            ray.init(address=address or "local", log_to_driver=False,
                     include_dashboard=False, logging_level=logging.WARNING)
        except ConnectionError as error:
            raise ConfigError(f"cannot connect to the Ray cluster at --ray-address {address} "
                              f"({str(error).splitlines()[0]}); start it (ray start --head), "
                              "give its address, or leave --ray-address out to start a "
                              "local one") from None
    pending: dict = {}
    with _signals_between_calls() as received:
        try:
            from ray.util.queue import Queue

            if device.startswith("cuda") and not ray.cluster_resources().get("GPU"):
                raise ConfigError(f"--device {device}: the Ray cluster has no GPU (its chunks "
                                  "would wait forever); start the GPU nodes with ray start "
                                  "--num-gpus=N, or use --device cpu")
            shared = _shared_run_dir(ray, run_dir)
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # on the driver's node: it lives exactly as long as the driver's connection
            progress = Queue(actor_options={
                "num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(
                    ray.get_runtime_context().get_node_id(), soft=False)})
            task = ray.remote(_train_chunk_task).options(
                num_cpus=1, num_gpus=1 if device.startswith("cuda") else 0,
                max_retries=TASK_RETRIES, retry_exceptions=False, **_test_hold_env())
            # by path, or shipped to each node once (not once per task)
            dataset_ref = None if shared else ray.put(dataset)
            work_ref = ray.put(work.dumps())
            config = work.config
            pending.update({
                task.remote(dataset_ref, work_ref, chunk,
                            np.asarray(membership[chunk.start:chunk.stop]), device,
                            str(run_dir) if shared else None, progress): chunk
                for chunk in chunks
            })
            watch = _Watch(ray)
            while pending:
                _raise_if_signalled(received)
                finished, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
                watch.progress(progress, on_epoch)
                for ref in finished:
                    chunk = pending.pop(ref)
                    result = _result(ray, ref, chunk)
                    info = result if shared else commit_chunk(
                        run_dir, chunk, result, device, "ray", config.compact_records)
                    on_chunk(info)
                watch.nodes()
            watch.progress(progress, on_epoch)
        finally:
            for ref in pending:  # interrupted or failed: don't leave tasks running
                ray.cancel(ref, force=True)
            (run_dir / probe_name()).unlink(missing_ok=True)
            if started_here:
                ours = _descendants(os.getpid())
                try:
                    ray.shutdown()
                finally:
                    _reap(ours)


def _test_hold_env() -> dict:
    """The signal tests' hold (:data:`memlab.population.executor.TEST_HOLD`) reaches the
    workers of a cluster started elsewhere only through the tasks' environment."""
    value = os.environ.get(TEST_HOLD)
    return {"runtime_env": {"env_vars": {TEST_HOLD: value}}} if value else {}


def probe_name() -> str:
    """The file this driver writes and each node reads (is the run directory shared?), one
    per driver: the shards of one run may each drive Ray at once."""
    return f".ray-probe-{os.getpid()}"


def _shared_run_dir(ray, run_dir: Path) -> bool:
    """Whether every live node sees ``run_dir`` (asked of each node by a task pinned to it;
    a node that joins later is not asked)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = f"{os.getpid()} {time.time_ns()}"
    io.atomic_write_bytes(run_dir / probe_name(), token.encode())
    probe = ray.remote(num_cpus=0)(_sees_run)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(str(run_dir / probe_name()), token)
        for node in nodes])
    blind = [node.get("NodeManagerAddress", node["NodeID"][:8])
             for node, sees in zip(nodes, answers) if not sees]
    if blind:
        say(f"Ray node {blind[0]} does not see the run directory {run_dir}: the dataset "
             "goes through Ray's object store and every chunk's records through this "
             "process (put the run on a file system every node mounts to avoid both)")
    return not blind


def _result(ray, ref, chunk: store.ChunkPlan):
    """A finished task's value, or its failure as one line: a memlab error raised on the
    worker as itself, a worker or node lost more often than Ray retries as a RunError."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, MemlabError):
            raise cause from None
        what = f"{type(cause).__name__}: {cause}" if cause is not None else \
            str(error).strip().splitlines()[-1]
        raise RunError(f"chunk {chunk.index} failed on a Ray worker ({_first_line(what)}); "
                       "finished chunks are kept: run the same command again to resume") \
            from None
    except ray.exceptions.RayError as error:  # a worker, node or object lost for good
        raise RunError(f"chunk {chunk.index} was lost {TASK_RETRIES + 1} times on Ray "
                       f"({type(error).__name__}: {_first_line(str(error))}); finished "
                       "chunks are kept: run the same command again to resume") from None


def _first_line(text: str, limit: int = 160) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


class _Watch:
    """What the driver says while Ray trains: models' epochs (the progress bar), a chunk
    started again (Ray retrying it), a node lost; each once, in one line."""

    def __init__(self, ray):
        self.ray = ray
        self.where: dict[int, str] = {}  # chunk -> the node it last started on
        self.attempts: dict[int, int] = {}
        self.alive = self._alive()
        self.known = dict(self.alive)  # node id -> address, the lost ones included
        self.last_look = time.monotonic()

    def _alive(self) -> dict[str, str]:
        return {node["NodeID"]: node.get("NodeManagerAddress", "?")
                for node in self.ray.nodes() if node.get("Alive")}

    def progress(self, queue, on_epoch: Callable[[int], None]) -> None:
        waiting = queue.qsize()  # (each call is a round trip to the queue's actor)
        for kind, value in queue.get_nowait_batch(waiting) if waiting else ():
            if kind == "epoch":
                on_epoch(value)
            elif kind == "start":
                chunk, node = value
                if chunk in self.where:  # Ray retries it: where it ran is gone
                    before = self.where[chunk]
                    self.attempts[chunk] = self.attempts.get(chunk, 1) + 1
                    say(f"chunk {chunk} is being trained again (attempt "
                         f"{self.attempts[chunk]} of {TASK_RETRIES + 1}): its worker on Ray "
                         f"node {self.known.get(before, '?')} ({before[:8]}) was lost; "
                         "same seeds, same bits")
                self.where[chunk] = node

    def nodes(self, every: float = 2.0) -> None:
        if time.monotonic() - self.last_look < every:
            return
        self.last_look = time.monotonic()
        alive = self._alive()
        self.known.update(alive)
        for node, address in self.alive.items():
            if node not in alive:
                say(f"Ray node {address} ({node[:8]}) was lost; its chunks are trained "
                     "again on the other nodes")
        self.alive = alive



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
