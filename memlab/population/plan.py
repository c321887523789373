"""Before a big run: how much disk, memory and time will it take?

The estimate counts bytes exactly from the run-directory format (docs/architecture.md)
and FLOPs from the architecture, then turns FLOPs into seconds with a throughput that is
either measured here (a short calibration: one chunk, one epoch, on random data of the
right shape) or given (e.g. what one GPU of a cluster sustains).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from memlab.data import Dataset
from memlab.models import build_model, layer_profile
from memlab.population.config import PopulationConfig, membership_mask
from memlab.population.engine import eval_batch_size

# Bytes per (model, example) of the final records: correct (bool), margin and loss
# (float32), pred (int16). Per epoch with record_epochs: correct (bool) + loss (float16).
# With compact_records: correct as bits, margin and loss as float16.
FINAL_RECORD_BYTES = 1 + 4 + 4 + 2
EPOCH_RECORD_BYTES = 1 + 2
COMPACT_FINAL_RECORD_BYTES = 1 / 8 + 2 + 2 + 2
COMPACT_EPOCH_RECORD_BYTES = 1 / 8 + 2


def flops_per_example_step(model: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one example in one training step: 2 per multiply-add forward, 4 backward
    (weight and input gradients), less the first layer's unneeded input gradient."""
    macs, _ = layer_profile(model, input_shape)
    return 6 * sum(macs) - 2 * macs[0]


@dataclass
class Plan:
    n_models: int
    disk_bytes: dict[str, float]
    worker_ram_bytes: dict[str, float]
    main_ram_bytes: float
    training_flops: float
    eval_flops: float
    gflops_per_worker: float
    workers: int
    calibrated: bool

    @property
    def seconds(self) -> float:
        return (self.training_flops + self.eval_flops) / (self.gflops_per_worker * 1e9
                                                          * self.workers)

    def describe(self) -> str:
        lines = [f"plan for {self.n_models:,} models"]
        lines.append(f"  disk   {_size(sum(self.disk_bytes.values())):>10s}  ("
                     + ", ".join(f"{k} {_size(v)}" for k, v in self.disk_bytes.items()) + ")")
        lines.append(f"  RAM    {_size(sum(self.worker_ram_bytes.values())):>10s}  per worker ("
                     + ", ".join(f"{k} {_size(v)}" for k, v in self.worker_ram_bytes.items())
                     + "), plus torch itself (~0.4 GB per process)")
        lines.append(f"         {_size(self.main_ram_bytes):>10s}  main process (membership "
                     "mask; records are consolidated through memory maps)")
        source = "measured here" if self.calibrated else "given"
        lines.append(f"  time   {_duration(self.seconds):>10s}  ({self.training_flops / 1e15:.3g} "
                     f"PFLOP training + {self.eval_flops / 1e15:.3g} PFLOP evaluation at "
                     f"{self.gflops_per_worker:.1f} GFLOP/s per worker ({source}) x "
                     f"{self.workers} workers)")
        return "\n".join(lines)


def plan_run(dataset: Dataset, config: PopulationConfig, workers: int = 1,
             gflops_per_worker: float | None = None) -> Plan:
    """Estimate disk, memory and time of training ``config`` on ``dataset``.

    gflops_per_worker: sustained GFLOP/s of one worker; None measures it here with one
    single-threaded chunk of at most 8 models for one epoch on random data.
    """
    template = build_model(config.model, dataset.input_shape, dataset.n_classes,
                           **config.model_kwargs)
    n_params = sum(p.numel() for p in template.parameters())
    n_examples = dataset.n_train + dataset.n_test
    subset = config.subset_size(dataset.n_train)
    per_step = flops_per_example_step(template, dataset.input_shape)
    macs, activation_values = layer_profile(template, dataset.input_shape)
    per_eval = 2 * sum(macs)
    training_flops = float(config.n_models) * config.epochs * subset * per_step
    evaluations = (config.epochs + 1) if config.record_epochs else 1
    eval_flops = float(config.n_models) * evaluations * n_examples * per_eval

    final_bytes, epoch_bytes = ((COMPACT_FINAL_RECORD_BYTES, COMPACT_EPOCH_RECORD_BYTES)
                                if config.compact_records
                                else (FINAL_RECORD_BYTES, EPOCH_RECORD_BYTES))
    records = config.n_models * n_examples * final_bytes
    disk = {"records": 2.0 * records}  # once in chunks/, once consolidated in records/
    if config.record_epochs:
        disk["per-epoch records"] = 2.0 * config.n_models * config.epochs * n_examples * (
            epoch_bytes)
    if config.save_weights:
        disk["weights"] = 4.0 * config.n_models * n_params
    disk["mask + data"] = config.n_models * dataset.n_train + dataset.x_train.nbytes + (
        dataset.x_test.nbytes)

    # Layer outputs and their gradients for a chunk's batch, with room for temporaries.
    eval_batch = eval_batch_size(config.chunk_size, activation_values)
    activations = 4.0 * 3 * config.chunk_size * max(config.batch_size, eval_batch) * (
        activation_values)
    worker = {
        "data": float(dataset.x_train.nbytes + dataset.x_test.nbytes),
        "weights+optimizer": 4.0 * 4 * config.chunk_size * n_params,
        "activations": activations,
        "chunk records": float(config.chunk_size * n_examples * (
            FINAL_RECORD_BYTES + (config.epochs * EPOCH_RECORD_BYTES
                                  if config.record_epochs else 0))),
    }
    calibrated = gflops_per_worker is None
    if calibrated:
        gflops_per_worker = calibrate(dataset, config, per_step)
    return Plan(config.n_models, disk, worker, float(config.n_models * dataset.n_train),
                training_flops, eval_flops, gflops_per_worker, workers, calibrated)


def suggest_chunk_size(dataset: Dataset, config: PopulationConfig, device: str = "cpu",
                       free_bytes: int | None = None, fraction: float = 0.7) -> int:
    """Models per chunk for ``device``. On a CPU, 32: a chunk's working set then stays
    in cache, and throughput is flat from 16 models on (benchmarks/scaling.py). On a GPU,
    as many as fit in ``fraction`` of its free memory (``free_bytes``, default: asked of
    the device), counting each model's weights, gradients and optimizer state and its
    activations for a training or evaluation batch, after the dataset itself."""
    if torch.device(device).type == "cpu":
        return 32
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(torch.device(device))
    template = build_model(config.model, dataset.input_shape, dataset.n_classes,
                           **config.model_kwargs)
    n_params = sum(p.numel() for p in template.parameters())
    _, activation_values = layer_profile(template, dataset.input_shape)
    per_model = 4.0 * (4 * n_params + 3 * max(config.batch_size, 256) * activation_values)
    budget = fraction * free_bytes - dataset.x_train.nbytes - dataset.x_test.nbytes
    return int(max(1, min(config.n_models, budget // per_model)))


def calibrate(dataset: Dataset, config: PopulationConfig, flops_per_step: float) -> float:
    """GFLOP/s of one single-threaded worker on this machine for this architecture."""
    from memlab.population.engine import train_chunk
    from memlab.population.executor import single_thread

    # Enough examples for 8 steps per epoch: per-epoch overheads must not dominate.
    n_train = min(dataset.n_train, int(8 * config.batch_size / config.subset_fraction) + 1)
    rng = np.random.default_rng(0)
    sample = Dataset(
        name="calibration",
        x_train=rng.standard_normal((n_train, *dataset.input_shape)).astype(np.float32),
        y_train=rng.integers(0, dataset.n_classes, n_train),
        x_test=rng.standard_normal((8, *dataset.input_shape)).astype(np.float32),
        y_test=rng.integers(0, dataset.n_classes, 8),
        class_names=dataset.class_names,
    )
    k = min(config.chunk_size, config.n_models)

    def seconds_for(epochs: int) -> float:
        trial = PopulationConfig.from_dict({**config.to_dict(), "n_models": k,
                                            "epochs": epochs, "save_weights": False,
                                            "record_epochs": False})
        mask = membership_mask(trial, n_train)
        with single_thread():
            started = time.perf_counter()
            train_chunk(sample, trial, range(k), mask)
            return time.perf_counter() - started

    seconds_for(1)  # warm-up: first calls into the BLAS and allocator are slow
    # Two lengths, so that set-up and evaluation (same in both) cancel out.
    seconds = max(seconds_for(3) - seconds_for(1), 1e-6)
    steps = k * 2 * config.subset_size(n_train) * n_train / dataset.n_train
    return steps * flops_per_step / seconds / 1e9


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1024 or unit == "TB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{n_bytes:.0f} B"
        n_bytes /= 1024
    return ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
