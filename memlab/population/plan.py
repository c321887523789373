"""Before a big run: how much disk, memory and time will it take?

The estimate counts bytes exactly from the run-directory format (docs/architecture.md).
Time is CPU time, start-up included, by default **measured here** (``calibrate=True``):

- start-up: a fresh Python process that imports memlab, builds the command line and loads
  the data (when it has a name or path), timed by the CPU time the child used;
- the run itself: short real runs of the user's own model (its dtype, chunk size, batch
  size and input shape; random data of that shape), in this process, timed by its CPU time
  (``time.process_time``, not the wall clock, which is the machine's load). Runs with one
  and with more epochs, with a larger test split and with two chunks separate the cost of
  a training step, of evaluating an example, of a chunk and of the run; each of the first
  two is measured twice and the spread is the plan's stated error.

Without calibration (``calibrate=False``, ``memlab plan --no-calibrate``) or where the
calibration would not fit (:data:`CALIBRATION_BYTES`, :data:`CALIBRATION_SECONDS`), time
is FLOPs over a throughput: given (``gflops_per_worker``, e.g. a GPU's), or assumed per
layer type and precision (:data:`ASSUMED_GFLOPS`) with an assumed start-up, and the plan
says that it is an assumption.

Everything is computed from *shapes*: a plan never allocates the dataset, the
population's weights or its records. The model is built on PyTorch's ``meta`` device
(parameters with shapes and no storage), so ``memlab plan --shape
1281167,50000,3x224x224,1000`` (ImageNet) or ``--hidden 100000000`` plans in seconds.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from memlab.data import Dataset
from memlab.engine.config import PopulationConfig, membership_mask
from memlab.engine.task import eval_batch_size  # the engine's own
from memlab.errors import ConfigError
from memlab.links import docs_page
from memlab.models import build_model
from memlab.validate import total_memory

# Bytes per (model, example) of the final records: correct (bool), margin and loss
# (float32), pred (int16), logodds (float32). Per epoch with record_epochs: correct (bool)
# + loss (float16). With compact_records: correct as bits, margin and loss as float16
# (logodds stays float32: store.HALF_RECORDS).
FINAL_RECORD_BYTES = 1 + 4 + 4 + 2 + 4
EPOCH_RECORD_BYTES = 1 + 2
COMPACT_FINAL_RECORD_BYTES = 1 / 8 + 2 + 2 + 2 + 4
COMPACT_EPOCH_RECORD_BYTES = 1 / 8 + 2

# Without a calibration: GFLOP/s one single-threaded CPU worker sustains, per layer kind
# and compute dtype, and the CPU seconds a run pays before its first step (process start,
# imports, data). From calibrations on a 2-core Intel Xeon with AVX512-BF16, no AMX
# (MLP 40-100-100-10 and CNN1d on MNIST-1D, chunks of 32, batch 128; the engine then
# trained MLPs at 58 / 42 GFLOP/s in float32 / bfloat16 and CNN1d at 16 / 9, and a run
# started in 3.5 CPU-s): assumptions anywhere else, and said so in the plan. float16 on
# a CPU is taken as bfloat16.
ASSUMED_GFLOPS = {
    ("linear", "float32"): 50.0, ("linear", "bfloat16"): 40.0,
    ("conv", "float32"): 12.0, ("conv", "bfloat16"): 8.0,
}
ASSUMED_STARTUP_SECONDS = 3.5
# A worker process beyond the first: fork, then read the run's dataset copy (modelled).
WORKER_START_SECONDS = 0.05
WORKER_READ_BYTES_PER_SECOND = 1e9

# A calibration may use at most this much memory (its random data, the chunk's weights,
# optimizer state and activations) and, by a FLOP estimate at the assumed rates, about
# this many CPU seconds; a larger one is not run and the plan says so.
CALIBRATION_BYTES = 512 * 2**20
CALIBRATION_SECONDS = 60.0
# CPU seconds the extra epochs (and the extra test examples) of a calibration aim for:
# long enough that the clock's noise (~0.02 s per run) is a few percent of it.
CALIBRATION_TARGET = 0.3


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
    multiply-adds for one example (forward order) and each layer's kind (``linear`` or
    ``conv``), activation values one example makes."""

    n_params: int
    macs: tuple[int, ...]
    activation_values: int
    kinds: tuple[str, ...] = ()

    @property
    def flops_per_step(self) -> float:
        """FLOPs of one example in one training step: 2 per multiply-add forward, 4
        backward (weight and input gradients), less the first layer's input gradient."""
        return 6 * sum(self.macs) - 2 * (self.macs[0] if self.macs else 0)

    @property
    def flops_per_eval(self) -> float:
        return 2 * sum(self.macs)

    def layer_flops(self) -> list[tuple[str, float, float]]:
        """(kind, training FLOPs, evaluation FLOPs) of each layer for one example."""
        kinds = self.kinds or ("linear",) * len(self.macs)
        return [(kind, (6 * m - (2 * m if i == 0 else 0)), 2.0 * m)
                for i, (kind, m) in enumerate(zip(kinds, self.macs, strict=True))]


def profile_model(config: PopulationConfig, shape: DataShape) -> Profile:
    """Build the population's architecture on the meta device (no memory for weights) and
    run one meta example through it, counting Linear/Conv multiply-adds and outputs. A
    model that cannot take these inputs (``cnn1d`` on images) is a one-line ConfigError."""
    with torch.device("meta"):
        template = build_model(config.model, shape.input_shape, shape.n_classes,
                               **config.model_kwargs)
    from memlab.models import layer_profile

    kinds: list[str] = []

    def hook(module, inputs, output):  # the same layers layer_profile counts, in order
        kinds.append("linear" if isinstance(module, torch.nn.Linear) else "conv")

    handles = [m.register_forward_hook(hook) for m in template.modules()
               if isinstance(m, torch.nn.Linear | torch.nn.Conv1d | torch.nn.Conv2d)]
    try:
        macs, outputs = layer_profile(template, shape.input_shape, device="meta")
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        first = (str(error).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"model {config.model!r} cannot take inputs of shape "
                          f"{shape.input_shape} ({first}); choose a model for this data "
                          "(mlp takes any shape, cnn1d signals, cnn2d images)") from None
    finally:
        for handle in handles:
            handle.remove()
    n_params = sum(p.numel() for p in template.parameters())
    return Profile(n_params, tuple(macs), outputs,
                   tuple(kinds) if len(kinds) == len(macs) else ())


def flops_per_example_step(model: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one example in one training step of ``model`` (see :class:`Profile`)."""
    from memlab.models import layer_profile

    macs, _ = layer_profile(model, input_shape)
    return 6 * sum(macs) - 2 * macs[0]


@dataclass(frozen=True)
class Calibration:
    """CPU seconds (wall seconds on a GPU) of one worker on this machine for one recipe,
    from short real runs of one or two chunks of ``models`` models.

    step: one optimizer step of a full chunk; example: evaluating one example (train or
    test split) with a full chunk, records and their consolidation included; chunk: a
    chunk's fixed cost (models built, files written); run: the run's fixed cost (run
    directory, mask, manifest, consolidation). spread: relative difference between the
    two measurements of the step (and of the evaluation); seconds: the calibration's
    own cost."""

    models: int
    step: float
    example: float
    chunk: float
    run: float
    spread: float
    seconds: float
    clock: str = "CPU time"


@dataclass
class Plan:
    n_models: int
    disk_bytes: dict[str, float]
    worker_ram_bytes: dict[str, float]
    main_ram_bytes: float
    training_flops: float
    eval_flops: float
    gflops_per_worker: float  # training FLOPs per second of one worker's training time
    workers: int
    calibrated: bool
    source: str = ""  # where the rates came from: given, assumed, measured here
    # CPU seconds (start-up and the run's fixed costs on the main process, the rest on
    # the workers): see cpu_seconds and seconds.
    startup_seconds: float = 0.0   # process start, imports, data load
    fixed_seconds: float = 0.0     # run directory, mask, consolidation
    chunk_seconds: float = 0.0     # every chunk's fixed cost together
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    worker_start_seconds: float = 0.0  # each extra worker process
    n_chunks: int = 1
    relative_error: float = float("nan")  # the timing's own error, as a fraction
    notes: list[str] = field(default_factory=list)
    # what `memlab memorize` adds beside the run: influence.npy and influence_se.npy
    influence_bytes: float = 0.0

    @property
    def parallel_workers(self) -> int:
        return max(1, min(self.workers, self.n_chunks))

    @property
    def worker_seconds(self) -> float:
        """CPU seconds of all chunks (training, evaluation, their fixed costs)."""
        return self.chunk_seconds + self.train_seconds + self.eval_seconds

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the whole run on all processes, start-up included."""
        extra = (self.parallel_workers - 1) * self.worker_start_seconds if (
            self.parallel_workers > 1) else 0.0
        return self.startup_seconds + self.fixed_seconds + self.worker_seconds + extra

    @property
    def seconds(self) -> float:
        """Wall-clock seconds with ``workers`` single-threaded workers (one per core,
        chunks spread evenly), start-up included."""
        parallel = self.parallel_workers
        start = self.worker_start_seconds if parallel > 1 else 0.0
        return (self.startup_seconds + self.fixed_seconds + start
                + self.worker_seconds / parallel)

    def describe(self) -> str:
        lines = [f"plan for {self.n_models:,} models"]
        lines.append(f"  disk   {_size(sum(self.disk_bytes.values())):>10s}  ("
                     + ", ".join(f"{k} {_size(v)}" for k, v in self.disk_bytes.items()) + ")")
        if self.influence_bytes:
            lines.append(f"       + {_size(self.influence_bytes):>8s}  if memlab memorize writes "
                         "its influence matrix (influence.npy + influence_se.npy: float32, "
                         "test x train each; streamed, never held in memory)")
        lines.append(f"  RAM    {_size(sum(self.worker_ram_bytes.values())):>10s}  per worker ("
                     + ", ".join(f"{k} {_size(v)}" for k, v in self.worker_ram_bytes.items())
                     + "), plus torch itself (~0.4 GB per process)")
        lines.append(f"         {_size(self.main_ram_bytes):>10s}  main process (membership "
                     "mask; records are consolidated through memory maps)")
        source = self.source or ("measured here" if self.calibrated else "given")
        workers = f"{self.workers} worker" + ("" if self.workers == 1 else "s")
        error = (f"±{100 * self.relative_error:.0f}%" if math.isfinite(self.relative_error)
                 else "error unknown")
        lines.append(f"  time   {_duration(self.seconds):>10s}  wall on {workers}, "
                     f"{_duration(self.cpu_seconds)} CPU in all ({error}): start-up "
                     f"{_duration(self.startup_seconds)}, run {_duration(self.fixed_seconds)}"
                     f" + {self.n_chunks:,} chunk" + ("" if self.n_chunks == 1 else "s")
                     + f" {_duration(self.chunk_seconds)}, training "
                     f"{_duration(self.train_seconds)}, evaluation "
                     f"{_duration(self.eval_seconds)}")
        lines.append(f"         ({self.training_flops / 1e15:.3g} PFLOP training + "
                     f"{self.eval_flops / 1e15:.3g} PFLOP evaluation; training at "
                     f"{self.gflops_per_worker:.1f} GFLOP/s per worker ({source}) x "
                     f"{workers})")
        lines.extend(f"  note: {note}" for note in self.notes)
        memory = total_memory()
        worker_total = sum(self.worker_ram_bytes.values())
        if worker_total * self.workers + self.main_ram_bytes > memory:
            lines.append(f"  note: that is more than the {_size(memory)} of memory here; "
                         "lower --chunk-size or the number of workers, or use larger machines")
        return "\n".join(lines)


def plan_run(data: Dataset | DataShape, config: PopulationConfig, workers: int = 1,
             gflops_per_worker: float | None = None, calibrate: bool = True,
             data_source: str | None = None, device: str = "cpu") -> Plan:
    """Estimate disk, memory and time of training ``config`` on ``data`` (a Dataset, or
    just its :class:`DataShape`), without allocating any of it.

    Time, by default (``calibrate``): measured here, see the module's docstring (a few
    seconds; ``data_source``, a dataset name or path, is loaded in the timed start-up).
    gflops_per_worker: sustained GFLOP/s of one worker instead (another machine's, e.g. a
    GPU's), with an assumed start-up. ``calibrate=False``: FLOPs at
    :data:`ASSUMED_GFLOPS`; the plan says which.
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
    n_models = int(config.n_total)
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
    eval_batch = eval_batch_size(profile.activation_values)
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
    plan = Plan(n_models, disk, worker, float(n_models) * shape.n_train, training_flops,
                eval_flops, 0.0, workers, False)
    plan.n_chunks = int(config.n_values * math.ceil(config.n_models / config.chunk_size))
    plan.influence_bytes = 2 * 4.0 * shape.n_test * shape.n_train
    plan.worker_start_seconds = WORKER_START_SECONDS + (shape.data_bytes
                                                       / WORKER_READ_BYTES_PER_SECOND)
    skipped = None
    if gflops_per_worker is None and calibrate:
        skipped = calibration_problem(shape, config, profile, device)
        if skipped is None:
            _time_by_calibration(plan, shape, config, profile, data_source, device)
            return plan
    if gflops_per_worker is not None:
        plan.source = "given"
        plan.train_seconds = training_flops / (gflops_per_worker * 1e9)
        plan.eval_seconds = eval_flops / (gflops_per_worker * 1e9)
    else:
        dtype = "float32" if config.compute_dtype in ("float32", "auto") else "bfloat16"
        plan.train_seconds = plan.eval_seconds = 0.0
        for kind, train, evaluate in profile.layer_flops():
            rate = ASSUMED_GFLOPS[kind, dtype] * 1e9
            plan.train_seconds += float(n_models) * config.epochs * subset * train / rate
            plan.eval_seconds += float(n_models) * evaluations * n_examples * evaluate / rate
        plan.source = ("assumed for a CPU core, per layer kind and precision; "
                       "calibration measures it here, --gflops gives it")
    gflops = training_flops / max(plan.train_seconds, 1e-30) / 1e9
    plan.gflops_per_worker = gflops_per_worker or gflops
    plan.startup_seconds = ASSUMED_STARTUP_SECONDS
    plan.notes.append(f"start-up assumed {ASSUMED_STARTUP_SECONDS:g} CPU-s (process, imports, "
                      "data), chunk and run overheads left out; the time is FLOPs over a "
                      + ("given throughput" if gflops_per_worker is not None else
                         "assumed throughput: off by 1.5-10x on other models and machines"))
    if skipped:
        plan.notes.append(f"not calibrated: {skipped}")
    return plan


def calibration_problem(shape: DataShape, config: PopulationConfig, profile: Profile,
                        device: str = "cpu") -> str | None:
    """Why a calibration of this recipe would not run here (too much memory or time, or
    another device), or None."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        return f"--device {device} is not on this machine; give --gflops for it"
    if kind not in ("cpu", "cuda"):
        return f"calibration runs on a CPU or a CUDA GPU, not {device}"
    size = _calibration_size(shape, config, profile)
    if size["bytes"] > CALIBRATION_BYTES:
        return (f"a chunk of {size['models']} models on {size['examples']:,} random examples "
                f"needs ~{_size(size['bytes'])}, over the {_size(CALIBRATION_BYTES)} a "
                "calibration may use; lower --chunk-size, or give --gflops")
    if size["seconds"] > CALIBRATION_SECONDS:
        return (f"it would take ~{_duration(size['seconds'])} here (estimated from FLOPs); "
                "lower --chunk-size or --batch-size, or give --gflops")
    return None


def _calibration_size(shape: DataShape, config: PopulationConfig, profile: Profile) -> dict:
    """The calibration's chunk, training examples (two full batches per epoch where the
    data has them), memory and estimated CPU seconds."""
    k = min(config.chunk_size, config.n_models)
    fraction = config.subset_fraction if config.subsets == "random" else 0.5
    n_train = int(min(shape.n_train, max(2, math.ceil(2 * config.batch_size / fraction))))
    n_test = 8
    eval_batch = eval_batch_size(profile.activation_values)
    memory = ((n_train + n_test + 2 * eval_batch) * shape.example_bytes
              + 16.0 * k * profile.n_params
              + 12.0 * k * max(config.batch_size, eval_batch) * profile.activation_values)
    # About ten one-epoch runs and the extra epochs' target, at the assumed rates.
    dtype = "float32" if config.compute_dtype in ("float32", "auto") else "bfloat16"
    subset = max(1, round(fraction * n_train))
    seconds = 4 * CALIBRATION_TARGET + sum(
        10 * k * (subset * train + (n_train + n_test) * evaluate)
        / (1e9 * ASSUMED_GFLOPS[kind, dtype]) for kind, train, evaluate in profile.layer_flops())
    return {"models": k, "examples": n_train, "test": n_test, "bytes": memory,
            "seconds": seconds}


def _time_by_calibration(plan: Plan, shape: DataShape, config: PopulationConfig,
                         profile: Profile, data_source: str | None, device: str) -> None:
    calibration = calibrate(shape, config, profile, device)
    k = calibration.models
    n_examples = shape.n_train + shape.n_test
    subset = config.subset_size(shape.n_train)
    steps = math.ceil(subset / config.batch_size)
    evaluations = (config.epochs + 1) if config.record_epochs else 1
    full_chunks = float(plan.n_models) / k  # a partial chunk costs its share of a full one
    plan.train_seconds = full_chunks * config.epochs * steps * calibration.step
    plan.eval_seconds = full_chunks * evaluations * n_examples * calibration.example
    plan.chunk_seconds = plan.n_chunks * calibration.chunk
    mask_seconds = _mask_seconds(config, shape.n_train)
    plan.fixed_seconds = calibration.run + mask_seconds
    plan.startup_seconds, startup_spread = startup_seconds(data_source)
    plan.gflops_per_worker = plan.training_flops / max(plan.train_seconds, 1e-30) / 1e9
    plan.calibrated = True
    dtype = config.compute_dtype
    plan.source = (f"measured here: {calibration.clock} of short runs of this model, {dtype}, "
                   f"chunks of {k}, batch {config.batch_size}")
    # The spreads of the two start-ups and of the two calibrations, weighted by their
    # shares, never under 5%; the plan itself is checked against real runs by
    # tests/test_plan_accuracy.py (within 1.5x).
    rest = plan.cpu_seconds - plan.startup_seconds
    plan.relative_error = max(0.05, math.hypot(startup_spread * plan.startup_seconds,
                                               calibration.spread * rest) / plan.cpu_seconds)
    loaded = f"loading {data_source}" if data_source else "no data load (none named)"
    plan.notes.append(f"start-up measured twice: a fresh process's imports and {loaded}; "
                      f"calibration took {_duration(calibration.seconds)} CPU; checked "
                      "against real runs within 1.5x (tests/test_plan_accuracy.py)")
    if plan.parallel_workers > 1:
        plan.notes.append("more workers assumed to scale linearly (2 workers on 2 shared "
                          f"cores measured 1.4-1.6x, {docs_page('scaling')})")


def _mask_seconds(config: PopulationConfig, n_train: int) -> float:
    """CPU seconds of drawing the membership mask (timed on up to 16 models)."""
    if config.subsets != "random":
        return 0.0
    sample = min(config.n_total, 16)
    started = time.process_time()
    membership_mask(config, n_train, range(sample))
    return (time.process_time() - started) * config.n_total / sample


# What `memlab train` does before its first step: parse the command line, import the engine
# (the command line alone no longer imports torch) and load the data.
_STARTUP = """\
import sys
from memlab.cli import build_parser
build_parser()
import memlab.population
if len(sys.argv) > 1:
    from memlab.data import load
    load(sys.argv[1])
"""


@functools.lru_cache(maxsize=16)
def startup_seconds(data_source: str | None = None) -> tuple[float, float]:
    """(mean, relative spread) of two :func:`measure_startup` (once per process and
    source)."""
    first, second = measure_startup(data_source), measure_startup(data_source)
    mean = (first + second) / 2
    return mean, abs(first - second) / max(mean, 1e-12)


def measure_startup(data_source: str | None = None) -> float:
    """CPU seconds (user + system) of a fresh Python process that imports memlab, builds
    its command line and loads ``data_source`` (a name or path; None: none), exit
    included: what a run pays before its first step."""
    import memlab

    root = os.path.dirname(os.path.dirname(os.path.abspath(memlab.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-c", _STARTUP, *([str(data_source)] if data_source else [])]
    with tempfile.TemporaryFile() as errors:
        if hasattr(os, "wait4"):
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors,
                                     env=env)
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            seconds = usage.ru_utime + usage.ru_stime
        else:  # no per-child CPU time: the wall clock
            started = time.perf_counter()
            child = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=errors,
                                   env=env, check=False)
            seconds = time.perf_counter() - started
        if child.returncode != 0:
            errors.seek(0)
            last = (errors.read().decode(errors="replace").strip().splitlines() or [""])[-1]
            raise ConfigError(f"measuring the start-up (a fresh process loading "
                              f"{data_source}) failed: {last[:200]}; plan with --no-calibrate")
    return seconds


def calibrate(data: Dataset | DataShape, config: PopulationConfig,
              profile: Profile | None = None, device: str = "cpu") -> Calibration:
    """Time short real runs of ``config``'s model (one worker, a chunk of
    min(chunk_size, n_models) models, its dtype and batch size) on random data of the
    right shape by this process's CPU time (a GPU's by the wall clock): one epoch (twice),
    1 + E epochs (twice, E grown until the extra epochs take about
    :data:`CALIBRATION_TARGET` seconds), a larger test split and two chunks. A few
    seconds for small models; :func:`calibration_problem` says when it would not fit."""
    from memlab.population.train import train_population

    shape = DataShape.of(data)
    profile = profile or profile_model(config, shape)
    size = _calibration_size(shape, config, profile)
    k, n_train, n_test = size["models"], size["examples"], size["test"]
    on_cpu = torch.device(device).type == "cpu"
    clock = time.process_time if on_cpu else time.perf_counter
    spent = time.process_time()
    rng = np.random.default_rng(0)
    eval_batch = eval_batch_size(profile.activation_values)
    x_train = rng.standard_normal((n_train, *shape.input_shape), dtype=np.float32)
    x_test = rng.standard_normal((n_test, *shape.input_shape), dtype=np.float32)
    names = [str(c) for c in range(shape.n_classes)]

    def sample(x: np.ndarray) -> Dataset:
        return Dataset(name="calibration", x_train=x_train,
                       y_train=np.arange(n_train) % shape.n_classes, x_test=x,
                       y_test=np.arange(len(x)) % shape.n_classes, class_names=names)

    base = {**config.to_dict(), "sweep": {}, "n_models": k, "chunk_size": k,
            "subsets": "random", "subset_fraction": (
                config.subset_fraction if config.subsets == "random" else 0.5)}

    def seconds_for(epochs: int = 1, test: np.ndarray = x_test, chunks: int = 1) -> float:
        settings = {**base, "epochs": epochs, "n_models": chunks * k}
        if config.schedule.startswith("warmup"):  # warm-up must stay inside the epochs
            settings["warmup_epochs"] = min(config.warmup_epochs, epochs / 2)
        if config.schedule == "step":
            settings["lr_step_epochs"] = min(config.lr_step_epochs, epochs)
        with tempfile.TemporaryDirectory(prefix="memlab-calibrate-") as out:
            started = clock()
            train_population(sample(test), **settings, out=out, device=device,
                             n_workers=1, progress=False)
            return clock() - started

    seconds_for()  # warm-up: first calls into the BLAS and the allocator are slow
    one = [seconds_for()]
    extra = 1
    while True:
        longer = seconds_for(1 + extra) - one[0]
        if longer >= CALIBRATION_TARGET / 2 or extra >= 256:
            break
        grow = CALIBRATION_TARGET / max(longer, CALIBRATION_TARGET / 64)
        extra = int(min(256, max(2 * extra, extra * grow)))
    one.append(seconds_for())
    longer2 = seconds_for(1 + extra) - one[1]
    epochs = [max(longer, 1e-9) / extra, max(longer2, 1e-9) / extra]
    epoch = sum(epochs) / 2
    subset = base_subset(config, n_train)
    steps = math.ceil(subset / config.batch_size)
    # Evaluation: the test split grown until its extra examples take about the target
    # (as far as the calibration's memory allows).
    per_example = epoch / subset / 3  # a forward pass: about a third of a training step
    room = (CALIBRATION_BYTES - size["bytes"]) // shape.example_bytes
    more = int(max(min(room, 64 * eval_batch, CALIBRATION_TARGET / max(per_example, 1e-12)),
                   min(room, eval_batch), 1))
    x_more = np.concatenate([x_test, rng.standard_normal((more, *shape.input_shape),
                                                         dtype=np.float32)])
    evaluated = [(seconds_for(test=x_more) - min(one)) / more for _ in range(2)]
    del x_more
    example = max(sum(evaluated) / 2, 0.0)
    two = seconds_for(chunks=2)
    single = sum(one) / 2
    per_chunk_work = epoch + example * (n_train + n_test)
    chunk = max(two - single - per_chunk_work, 0.0)
    run = max(single - chunk - per_chunk_work, 0.0)
    spread = max(abs(epochs[0] - epochs[1]) / max(epoch, 1e-12),
                 abs(evaluated[0] - evaluated[1]) / max(abs(example), 1e-12)
                 * min(1.0, example * (n_train + n_test) / max(per_chunk_work, 1e-12)))
    return Calibration(k, epoch / steps, example, chunk, run, spread,
                       time.process_time() - spent,
                       "CPU time" if on_cpu else "wall clock")


def base_subset(config: PopulationConfig, n_train: int) -> int:
    fraction = config.subset_fraction if config.subsets == "random" else 0.5
    return max(1, round(fraction * n_train))


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


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n_bytes < 1024 or unit == "PB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{n_bytes:.0f} B"
        n_bytes /= 1024
    return ""


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 3 * 365 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / (365.25 * 86400):.3g} years"
