"""Before a big run: how much disk, memory and time will it take?

The estimate counts bytes exactly from the run-directory format (docs/architecture.md)
and FLOPs from the architecture, then turns FLOPs into seconds with a throughput that is
either given (``gflops_per_worker``: e.g. what one GPU of a cluster sustains), assumed
(:data:`ASSUMED_GFLOPS`, a CPU core's figure, by default), or measured here
(``calibrate=True``: two short runs on random data of the right shape).

Everything is computed from *shapes*: a plan never allocates the dataset, the
population's weights or its records. The model is built on PyTorch's ``meta`` device
(parameters with shapes and no storage), so ``memlab plan --shape
1281167,50000,3x224x224,1000`` (ImageNet) or ``--hidden 100000000`` plans in a second.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from memlab.data import Dataset
from memlab.engine.config import PopulationConfig
from memlab.engine.task import eval_batch_size  # the engine's own
from memlab.errors import ConfigError
from memlab.models import build_model
from memlab.validate import fits_in_memory, total_memory

# Bytes per (model, example) of the final records: correct (bool), margin and loss
# (float32), pred (int16), logodds (float32). Per epoch with record_epochs: correct (bool)
# + loss (float16). With compact_records: correct as bits, margin and loss as float16
# (logodds stays float32: store.HALF_RECORDS).
FINAL_RECORD_BYTES = 1 + 4 + 4 + 2 + 4
EPOCH_RECORD_BYTES = 1 + 2
COMPACT_FINAL_RECORD_BYTES = 1 / 8 + 2 + 2 + 2 + 4
COMPACT_EPOCH_RECORD_BYTES = 1 / 8 + 2

# GFLOP/s one single-threaded CPU worker sustains when no throughput is given: the
# engine's MLP figure on this project's machine (91.9 GFLOP/s from 2 workers on an Intel
# Xeon with AVX-512, README "Performance"). An assumption, and said so in the plan.
ASSUMED_GFLOPS = 45.0

# Random data for a calibration run may use at most this much memory.
CALIBRATION_BYTES = 512 * 2**20


@dataclass(frozen=True)
class DataShape:
    """What a plan needs to know about a dataset: its sizes, never its values.

    input_shape: one example's shape, e.g. (3, 224, 224); inputs are float32."""

    n_train: int
    n_test: int
    input_shape: tuple[int, ...]
    n_classes: int
    name: str = "data"

    @classmethod
    def of(cls, data: Dataset | DataShape) -> DataShape:
        if isinstance(data, DataShape):
            return data
        return cls(data.n_train, data.n_test, tuple(data.input_shape), data.n_classes,
                   data.name)

    @property
    def example_bytes(self) -> int:
        return 4 * math.prod(self.input_shape)

    @property
    def data_bytes(self) -> int:
        """Bytes of both splits' inputs as float32."""
        return (self.n_train + self.n_test) * self.example_bytes


@dataclass(frozen=True)
class Profile:
    """One model of the architecture, counted on the meta device: parameters, per-layer
    multiply-adds for one example (forward order), activation values one example makes."""

    n_params: int
    macs: tuple[int, ...]
    activation_values: int

    @property
    def flops_per_step(self) -> float:
        """FLOPs of one example in one training step: 2 per multiply-add forward, 4
        backward (weight and input gradients), less the first layer's input gradient."""
        return 6 * sum(self.macs) - 2 * (self.macs[0] if self.macs else 0)

    @property
    def flops_per_eval(self) -> float:
        return 2 * sum(self.macs)


def profile_model(config: PopulationConfig, shape: DataShape) -> Profile:
    """Build the population's architecture on the meta device (no memory for weights) and
    run one meta example through it, counting Linear/Conv multiply-adds and outputs. A
    model that cannot take these inputs (``cnn1d`` on images) is a one-line ConfigError."""
    with torch.device("meta"):
        template = build_model(config.model, shape.input_shape, shape.n_classes,
                               **config.model_kwargs)
    from memlab.models import layer_profile

    try:
        macs, outputs = layer_profile(template, shape.input_shape, device="meta")
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        first = (str(error).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"model {config.model!r} cannot take inputs of shape "
                          f"{shape.input_shape} ({first}); choose a model for this data "
                          "(mlp takes any shape, cnn1d signals, cnn2d images)") from None
    n_params = sum(p.numel() for p in template.parameters())
    return Profile(n_params, tuple(macs), outputs)


def flops_per_example_step(model: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one example in one training step of ``model`` (see :class:`Profile`)."""
    from memlab.models import layer_profile

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
    source: str = ""  # where gflops_per_worker came from: given, assumed, measured here

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
        source = self.source or ("measured here" if self.calibrated else "given")
        workers = f"{self.workers} worker" + ("" if self.workers == 1 else "s")
        lines.append(f"  time   {_duration(self.seconds):>10s}  ({self.training_flops / 1e15:.3g} "
                     f"PFLOP training + {self.eval_flops / 1e15:.3g} PFLOP evaluation at "
                     f"{self.gflops_per_worker:.1f} GFLOP/s per worker ({source}) x "
                     f"{workers})")
        memory = total_memory()
        worker_total = sum(self.worker_ram_bytes.values())
        if worker_total * self.workers + self.main_ram_bytes > memory:
            lines.append(f"  note: that is more than the {_size(memory)} of memory here; "
                         "lower --chunk-size or the number of workers, or use larger machines")
        return "\n".join(lines)


def plan_run(data: Dataset | DataShape, config: PopulationConfig, workers: int = 1,
             gflops_per_worker: float | None = None, calibrate: bool = False) -> Plan:
    """Estimate disk, memory and time of training ``config`` on ``data`` (a Dataset, or
    just its :class:`DataShape`), without allocating any of it.

    gflops_per_worker: sustained GFLOP/s of one worker. None: measured here when
    ``calibrate`` (a few seconds: a chunk of at most 8 models for a few steps on random
    data of the right shape), else :data:`ASSUMED_GFLOPS`, and the plan says which.
    """
    from memlab.validate import integer, real

    workers = integer(workers, "workers", minimum=1)
    if gflops_per_worker is not None:
        gflops_per_worker = real(gflops_per_worker, "gflops_per_worker", minimum=0,
                                 open_low=True, fix="give the sustained GFLOP/s of one worker")
    shape = DataShape.of(data)
    profile = profile_model(config, shape)
    n_examples = shape.n_train + shape.n_test
    subset = config.subset_size(shape.n_train)
    # Python integers and floats: 10**12 models x 10**6 examples must not overflow.
    n_models = int(config.n_models)
    training_flops = float(n_models) * config.epochs * subset * profile.flops_per_step
    evaluations = (config.epochs + 1) if config.record_epochs else 1
    eval_flops = float(n_models) * evaluations * n_examples * profile.flops_per_eval

    final_bytes, epoch_bytes = ((COMPACT_FINAL_RECORD_BYTES, COMPACT_EPOCH_RECORD_BYTES)
                                if config.compact_records
                                else (FINAL_RECORD_BYTES, EPOCH_RECORD_BYTES))
    records = float(n_models) * n_examples * final_bytes
    disk = {"records": 2.0 * records}  # once in chunks/, once consolidated in records/
    if config.record_epochs:
        disk["per-epoch records"] = 2.0 * n_models * config.epochs * n_examples * epoch_bytes
    if config.save_weights:
        disk["weights"] = 4.0 * n_models * profile.n_params
    disk["mask + data"] = float(n_models) * shape.n_train + shape.data_bytes

    # Layer outputs and their gradients for a chunk's batch, with room for temporaries.
    chunk = min(config.chunk_size, n_models)
    eval_batch = eval_batch_size(chunk, profile.activation_values)
    activations = 4.0 * 3 * chunk * max(config.batch_size, eval_batch) * (
        profile.activation_values)
    worker = {
        "data": float(shape.data_bytes),
        "weights+optimizer": 4.0 * 4 * chunk * profile.n_params,
        "activations": activations,
        "chunk records": float(chunk * n_examples * (
            FINAL_RECORD_BYTES + (config.epochs * EPOCH_RECORD_BYTES
                                  if config.record_epochs else 0))),
    }
    if gflops_per_worker is not None:
        source = "given"
    elif calibrate:
        gflops_per_worker, source = calibrate_gflops(shape, config, profile), "measured here"
    else:
        gflops_per_worker = ASSUMED_GFLOPS
        source = "assumed: a CPU core; --calibrate measures it here, --gflops gives it"
    return Plan(n_models, disk, worker, float(n_models) * shape.n_train, training_flops,
                eval_flops, gflops_per_worker, workers, source == "measured here", source)


def suggest_chunk_size(data: Dataset | DataShape, config: PopulationConfig,
                       device: str = "cpu", free_bytes: int | None = None,
                       fraction: float = 0.7) -> int:
    """Models per chunk for ``device``. On a CPU, 32: a chunk's working set then stays
    in cache, and throughput is flat from 16 models on (benchmarks/scaling.py). On a GPU,
    as many as fit in ``fraction`` of its free memory (``free_bytes``, default: asked of
    the device), counting each model's weights, gradients and optimizer state and its
    activations for a training or evaluation batch, after the dataset itself."""
    kind = torch.device(device).type
    if kind == "cpu":
        return 32
    if free_bytes is None:
        if kind != "cuda" or not torch.cuda.is_available():
            raise ConfigError(f"--chunk-size auto for --device {device} reads the GPU's free "
                              "memory, and this machine has no such device; give "
                              "--chunk-size N, or plan on the GPU machine")
        free_bytes, _ = torch.cuda.mem_get_info(torch.device(device))
    shape = DataShape.of(data)
    profile = profile_model(config, shape)
    per_model = 4.0 * (4 * profile.n_params + 3 * max(config.batch_size, 256)
                       * profile.activation_values)
    budget = fraction * free_bytes - shape.data_bytes
    return int(max(1, min(config.n_models, budget // per_model)))


def calibrate_gflops(data: Dataset | DataShape, config: PopulationConfig,
                     profile: Profile | None = None, seconds: float = 2.0) -> float:
    """GFLOP/s of one single-threaded worker on this machine for this architecture, from
    real training runs (a chunk of at most 8 models, one worker) on random data of the
    right shape: a 1-epoch run and a longer one, sized to about ``seconds`` of extra
    training at :data:`ASSUMED_GFLOPS`; their difference cancels start-up and evaluation.
    Takes a few times ``seconds`` in all."""
    from memlab.population.train import train_population

    shape = DataShape.of(data)
    profile = profile or profile_model(config, shape)
    k = min(8, config.chunk_size, config.n_models)
    n_train = max(2, min(shape.n_train, int(4 * config.batch_size / config.subset_fraction)
                         + 1))
    n_test = 8
    fits_in_memory((n_train + n_test) * shape.example_bytes
                   + 16.0 * k * profile.n_params, "calibrating this architecture",
                   "give the throughput instead (--gflops)", limit=CALIBRATION_BYTES)
    subset = config.subset_size(n_train)
    flops_per_epoch = k * subset * profile.flops_per_step
    extra_epochs = int(min(200, max(1, seconds * ASSUMED_GFLOPS * 1e9 / flops_per_epoch)))
    rng = np.random.default_rng(0)
    sample = Dataset(
        name="calibration",
        x_train=rng.standard_normal((n_train, *shape.input_shape), dtype=np.float32),
        y_train=np.arange(n_train) % shape.n_classes,
        x_test=rng.standard_normal((n_test, *shape.input_shape), dtype=np.float32),
        y_test=np.arange(n_test) % shape.n_classes,
        class_names=[str(c) for c in range(shape.n_classes)],
    )
    settings = {**config.to_dict(), "n_models": k, "chunk_size": k, "save_weights": False,
                "record_epochs": False}

    def seconds_for(epochs: int) -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with tempfile.TemporaryDirectory(prefix="memlab-calibrate-") as out:
                started = time.perf_counter()
                train_population(sample, **{**settings, "epochs": epochs}, out=out,
                                 n_workers=1, progress=False)
                return time.perf_counter() - started
        finally:
            torch.set_num_threads(threads)

    base = seconds_for(1)  # also the warm-up: first calls into the BLAS are slow
    long = seconds_for(1 + extra_epochs)
    base = min(base, seconds_for(1))
    if long <= base:
        raise ConfigError("calibration could not separate training from start-up time on "
                          "this machine (busy?); give the throughput with --gflops")
    return extra_epochs * flops_per_epoch / (long - base) / 1e9


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n_bytes < 1024 or unit == "PB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{n_bytes:.0f} B"
        n_bytes /= 1024
    return ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 3 * 365 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / (365.25 * 86400):.3g} years"
