"""Run a population's chunks as Ray tasks, on one machine or a cluster.

The chunk stays the unit of work: each Ray task trains one chunk (single-threaded on a
CPU, or on its worker's GPU) and returns its records; the driver commits them to the run
directory with the same atomic protocol as the local executor, so the run directory need
not be on a shared file system. A task whose worker dies is retried by Ray (its chunk is
trained again from its seeds, giving the same bits); finished chunks are never redone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from memlab.errors import ConfigError
from memlab.population import store
from memlab.population.executor import ChunkWork, commit_chunk, reinstall_signal_handlers

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


def _train_chunk_task(dataset, work: bytes, chunk: store.ChunkPlan,
                      membership: np.ndarray, device: str):
    """Runs on a Ray worker: train one chunk, return its ChunkResult."""
    import torch

    if device == "cpu":
        torch.set_num_threads(1)  # one core per task, as the local executor does
    return ChunkWork.loads(work).train(dataset, range(chunk.start, chunk.stop), membership,
                                       device)


def run_ray(run_dir: Path, dataset, work: ChunkWork, chunks: list[store.ChunkPlan],
            membership: np.ndarray, device: str, address: str | None,
            on_chunk: Callable[[dict], None], on_epoch: Callable[[int], None]) -> None:
    """Train ``chunks`` as Ray tasks; commit each result as it arrives.

    address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``) or
    None to start a local one for this run.
    """
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
        reinstall_signal_handlers()  # so SIGTERM still shuts this Ray instance down
    pending: dict = {}
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
            finished, _ = ray.wait(list(pending), num_returns=1)
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
            ray.shutdown()
