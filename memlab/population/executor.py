"""Run chunks of a population on this machine: in-process, or one single-thread worker per core.

Measured on a 2-core machine: torch with 2 threads in one process collapses when the other
core is busy, while one single-threaded process per core, each training a chunk of 16-64
models that fits in cache, is the fastest layout. Each worker reads the dataset and mask
from the run directory, trains a chunk, and commits it there itself (atomically); the main
process only tracks progress and updates the manifest.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memlab.engine.config import PopulationConfig
from memlab.engine.loop import ChunkResult, train_chunk
from memlab.engine.modelspec import ModelSpec
from memlab.engine.probe import user_model_errors
from memlab.engine.task import TASKS
from memlab.errors import ConfigError
from memlab.population import store
from memlab.population.provenance import chunk_provenance

# Test-only (the signal and kill tests): MEMLAB_TEST_HOLD="N" or "N:PATH" makes every
# chunk whose first model is N or later wait before training (until PATH exists, if
# given), so a test that signals a run once its first chunks are committed provably finds
# work left (a loaded machine once finished all 4 models first). Unset in real runs: one
# getenv per chunk.
TEST_HOLD = "MEMLAB_TEST_HOLD"


def _test_hold(models: range) -> None:
    value = os.environ.get(TEST_HOLD)
    if not value:
        return
    first, _, path = value.partition(":")
    if models.start >= int(first):
        while not (path and os.path.exists(path)):
            time.sleep(0.05)


@dataclass
class ChunkWork:
    """Everything a worker needs besides the data and the mask: the task, the recipe, the
    model, the callbacks and user transforms. Shipped to workers by value (cloudpickle),
    so a model or callback defined in a notebook or a script's __main__ works there."""

    task: str
    config: PopulationConfig
    spec: ModelSpec
    callbacks: list[Any] = field(default_factory=list)
    transforms: dict[str, Callable] = field(default_factory=dict)

    def dumps(self) -> bytes:
        import cloudpickle

        # cloudpickle sends classes and functions of __main__ (a script, a notebook) by
        # value, since a worker cannot re-import them; importable ones by reference.
        try:
            return cloudpickle.dumps(self)
        except Exception as error:  # e.g. a lock or an open file inside the user's model
            raise ConfigError(f"cannot send the model/callbacks to worker processes "
                              f"({type(error).__name__}: {error}); use n_workers=1") from None

    @staticmethod
    def loads(data: bytes) -> ChunkWork:
        import cloudpickle

        return cloudpickle.loads(data)

    def train(self, data, models: range, membership: np.ndarray, device: str,
              on_epoch: Callable[[int], None] | None = None) -> ChunkResult:
        _test_hold(models)
        with user_model_errors(self.spec, models):  # a user model's exception: one line
            result = train_chunk(TASKS[self.task], data, self.config, self.spec, models,
                                 membership, device=device, callbacks=self.callbacks,
                                 on_epoch=on_epoch, transforms=self.transforms)
        # taken here, in the process that trained it (a Ray node, a worker), not the driver
        result.provenance = chunk_provenance(device, result.compute_dtype)
        return result


def train_and_commit(run_dir: Path, data, work: ChunkWork, chunk: store.ChunkPlan,
                     membership: np.ndarray, device: str,
                     on_epoch: Callable[[int], None] | None = None) -> dict:
    """Train one chunk and commit its records to the run directory; returns its summary."""
    models = range(chunk.start, chunk.stop)
    result = work.train(data, models, np.asarray(membership[chunk.start:chunk.stop]), device,
                        on_epoch)
    return commit_chunk(run_dir, chunk, result, device, "local", work.config.compact_records)


def commit_chunk(run_dir: Path, chunk: store.ChunkPlan, result: ChunkResult, device: str,
                 executor: str, compact: bool) -> dict:
    """Write a trained chunk to the run directory (encoded if ``compact``); returns the
    summary stored with it."""
    info = {"chunk": chunk.index, "start": chunk.start, "stop": chunk.stop,
            "seconds": round(result.seconds, 3),
            "model_example_steps": result.model_example_steps,
            "device": str(device), "executor": executor, "provenance": result.provenance}
    if result.diverged is not None and result.diverged.any():  # (on_diverge="record")
        info["diverged"] = [chunk.start + int(i) for i in np.flatnonzero(result.diverged)]
    arrays = result.arrays
    if compact:
        arrays = {name: store.encode_record(name, array) for name, array in arrays.items()}
    store.write_chunk(run_dir, chunk.index, arrays, result.weights, info)
    return info


def retain_freed_memory() -> None:
    """Make this process's allocator (glibc) keep freed memory for reuse, in a worker.

    Why: a training step allocates the same large tensors (stacked activations, im2col
    patches) every step. glibc returns blocks above its mmap threshold to the kernel when
    freed, so every step page-faulted them in again: measured, the im2col copy of a small
    CNN's second convolution (14 MB) ran at 2.2 GB/s into a fresh buffer and 7.4 GB/s into
    a reused one. A worker's peak memory is unchanged (each step needs the same sizes); only
    memlab's own worker processes get this (a user's process keeps its allocator's
    settings). A no-op where glibc's mallopt is not available."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 2**30)  # M_MMAP_THRESHOLD: big blocks from the heap, not mmap
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: never give the heap back
    except (OSError, AttributeError):
        pass


@contextmanager
def single_thread():
    """Train with one intra-op thread: the fastest layout, and bitwise repeatable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_local(run_dir: Path, dataset, work: ChunkWork, chunks: list[store.ChunkPlan],
              membership: np.ndarray, device: str, n_workers: int,
              on_chunk: Callable[[dict], None], on_epoch: Callable[[int], None]) -> None:
    """Train ``chunks``; call ``on_chunk(info)`` as each commits, ``on_epoch(k)`` as k models
    finish an epoch. ``n_workers`` > 1 (CPU only) uses that many worker processes."""
    if n_workers <= 1 or torch.device(device).type != "cpu" or len(chunks) <= 1:
        context = single_thread() if torch.device(device).type == "cpu" else nullcontext()
        with context:
            for chunk in chunks:
                on_chunk(train_and_commit(run_dir, dataset, work, chunk, membership, device,
                                          on_epoch))
        return

    mp_context = multiprocessing.get_context(worker_start_method())
    progress_queue = mp_context.Queue()
    pool = ProcessPoolExecutor(
        max_workers=min(n_workers, len(chunks)), mp_context=mp_context,
        initializer=_init_worker,
        initargs=(str(run_dir), work.dumps(), progress_queue, os.getpid()),
    )
    try:
        pending = {pool.submit(_worker_chunk, chunk) for chunk in chunks}
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_queue, on_epoch)
            for future in finished:
                on_chunk(future.result())  # re-raises a worker's error here
        _drain(progress_queue, on_epoch)
        pool.shutdown()
    except BaseException:
        # Ctrl-C, SIGTERM or a failed chunk: stop the other workers now and wait until
        # they are gone; finished chunks are kept.
        _stop_pool(pool)
        progress_queue.cancel_join_thread()
        raise
    progress_queue.close()


def worker_start_method() -> str:
    """``fork`` on Linux: a worker then starts in milliseconds with torch already imported
    (``spawn`` re-imports it: 1.1 s of every run, 9% of a 1,024-model bfloat16 run). Safe
    here because a worker sets one OpenMP/MKL thread before its first torch operation, as
    torch's DataLoader workers do, so it never enters the parent's OpenMP thread pool.
    ``spawn`` elsewhere (macOS and Windows cannot fork safely), while other (non-daemon)
    threads run, or when ``MEMLAB_START_METHOD=spawn`` asks for it."""
    method = os.environ.get("MEMLAB_START_METHOD")
    if method is None:
        # A fork copies only the calling thread (and any lock another thread holds): a
        # program training from several threads at once gets spawned workers.
        others = [t for t in threading.enumerate()
                  if t is not threading.current_thread() and not t.daemon]
        method = "fork" if sys.platform.startswith("linux") and not others else "spawn"
    if method not in multiprocessing.get_all_start_methods():
        raise ConfigError(f"MEMLAB_START_METHOD={method!r} is not available here; use one of "
                          f"{', '.join(multiprocessing.get_all_start_methods())}")
    return method


def _stop_pool(pool: ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Terminate every worker of ``pool`` (SIGTERM, then SIGKILL after ``grace`` seconds)
    and reap them, so none outlives the call."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0.0))
        if process.is_alive():
            process.kill()
            process.join(1.0)


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM or SIGHUP while a population trains, so the
    clean-up of every ``finally`` runs (workers, Ray, the run's lock) before exiting with
    status 128 + the signal number."""


@contextmanager
def exit_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)):
    """While the block runs, turn ``signals`` into :class:`Terminated` (only where Python
    would otherwise die at once: in the main thread, for signals with the default
    handler; a handler someone else installed is left alone). Ctrl-C already raises
    KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated(128 + signum)

    previous = {}
    for signum in signals:
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, terminate)
    _ACTIVE_HANDLERS.update(dict.fromkeys(previous, terminate))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            _ACTIVE_HANDLERS.pop(signum, None)
            signal.signal(signum, handler)


_ACTIVE_HANDLERS: dict = {}


def reinstall_signal_handlers() -> None:
    """Put back the handlers of :func:`exit_on_signals` after a library replaced them at
    the C level (ray.init installs one that aborts on SIGTERM, skipping all clean-up)."""
    if threading.current_thread() is threading.main_thread():
        for signum, handler in _ACTIVE_HANDLERS.items():
            signal.signal(signum, handler)


def _drain(progress_queue, on_epoch: Callable[[int], None]) -> None:
    while True:
        try:
            on_epoch(progress_queue.get_nowait())
        except queue.Empty:
            return


_WORKER: dict = {}


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when its parent dies (even by SIGKILL or an OOM
    kill), so no worker outlives the run it trains for."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the pool's own shutdown has to do
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(run_dir: str, work: bytes, progress_queue, parent: int | None = None) -> None:
    if parent is not None:
        _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    # A forked worker inherits the main process's handlers (exit_on_signals turns SIGTERM
    # into an exception, which the pool would report as a chunk's error and keep running):
    # the pool's terminate() must end a worker at once.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    # A worker has nothing left to flush when the pool shuts it down (chunks are committed,
    # fsynced, before their result is returned), so skip the interpreter's teardown of
    # torch (0.5 s, which the end of every run waited for); registered last, runs first.
    atexit.register(os._exit, 0)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    retain_freed_memory()
    run_path = Path(run_dir)
    work = ChunkWork.loads(work)
    _WORKER.update(
        run_dir=run_path,
        work=work,
        dataset=TASKS[work.task].load(run_path / "dataset.npz"),
        membership=np.load(run_path / "membership_mask.npy", mmap_mode="r"),
        queue=progress_queue,
    )


def _worker_chunk(chunk: store.ChunkPlan) -> dict:
    w = _WORKER
    return train_and_commit(w["run_dir"], w["dataset"], w["work"], chunk, w["membership"],
                            "cpu", on_epoch=w["queue"].put)
