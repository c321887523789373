"""GPU check: is the engine the same model by model on CUDA, and how fast is it there?

One prepared command for a lent GPU machine, sized to finish in about 5 minutes on one
H100 (an estimate from the sizes: no GPU has run this version yet), well under a lent
machine's 10-minute limit. It writes ``gpu_check.json`` and ``gpu_check.md`` after every
section, so that a run cut off by its time limit still reports what it measured; the
Markdown is ready to paste into the Results of docs/performance.md, after "### GPU check" (a
``###`` heading naming the device, the CPU, torch and the date, then ``####`` sections with
tables):

1. environment: device, capability, memory, CUDA/cuDNN, TF32 switches, CPU model and ISA
   flags, torch, the date;
2. invariance: models 0..63 trained on the device in chunks of 1, 8 and 64 (MLP fast path
   and a user CNN with BatchNorm on the generic path, float32 and bfloat16); model k's
   weights and every record array compared bit for bit with the 64-model chunk, and the
   largest differences found where they are not identical (the tolerance to state);
3. peak: the device's own GEMM rate in float32 and bfloat16 (a large square product,
   measured again before each rate), against which every rate below is also given as
   GFLOP/s and a fraction of that peak;
4. equivalence: the same chunk on the CPU and on the device for every engine path (MLP,
   CNN1d, a user module with BatchNorm, a language model): the tolerance CPU vs GPU;
5. rates: the MLP (float32, bfloat16) and a user CNN trained by the engine, by the
   torch.func ensembling recipe and by a per-model loop, all on the same device;
6. Feldman & Zhang's MNIST setting (2,000 784-512-256-10 MLPs, 70% of the 60,000 images,
   10 epochs, SGD momentum 0.9, lr 0.1, batch 128): one chunk timed for 2 epochs and the
   whole population extrapolated from it (said so in the output);
7. host copy: what the engine's per-epoch shuffles (numpy, one stream per model, then
   copied to the device) cost per epoch, against device-side draws;
8. spectra (``memlab.measures.spectra.analyze``) of a trained model on the device vs CPU.

Every time is the median of several timed runs after a warm-up run, with the device
synchronized around each; a rate is never a difference of two timings.

    python benchmarks/gpu_check.py --out gpu_check          # on the GPU machine
    python benchmarks/gpu_check.py --tiny --out /tmp/check  # about a minute on a CPU (tests)

On a machine without CUDA the device is the CPU: the equivalence section then compares the
CPU with itself (all differences 0), which is what the test suite checks runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import memlab
from memlab.data import load
from memlab.engine import loop as engine_loop
from memlab.engine.config import STREAM_SHUFFLE, PopulationConfig, membership_mask, model_rng
from memlab.engine.loop import ChunkResult, train_chunk
from memlab.engine.modelspec import ModelSpec
from memlab.engine.precision import cpu_flags, cpu_model, native_bfloat16, resolve_compute_dtype
from memlab.engine.task import task_for
from memlab.io import atomic_write_bytes, atomic_write_json
from memlab.population.plan import flops_per_example_step, suggest_chunk_size

# contenders.py sits next to this script; the test suite loads the script by path, where
# the script's folder is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import contenders  # noqa: E402  (registers the bench_user_* models)

FZ_MODELS = 2000  # the models of the full setting (the paper used 4,000)
FZ_EPOCHS = 10
FZ_HIDDEN = [512, 256]
DTYPES = ("float32", "bfloat16")


# ------------------------------------------------------------------ sizes


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size the check uses; one set for a GPU, one for a CPU run, one for --tiny."""

    repeats: int  # timed runs per measurement (after one warm-up run); the median counts
    # invariance
    inv_models: int
    inv_chunks: tuple[int, ...]
    inv_train: int
    inv_test: int
    inv_batch: int
    # GEMM peak
    gemm_n: int
    gemm_target_s: float  # how long one timed run of products lasts (several products)
    # equivalence
    eq_train: int
    eq_models: int
    eq_epochs: int
    # rates
    rate_train: int
    rate_test: int
    rate_batch: int
    rate_epochs: int
    mlp_models: int  # engine and recipe
    cnn_models: int
    loop_models: int  # a per-model loop's rate hardly depends on how many models it trains
    # Feldman & Zhang
    fz_train: int | None  # None: all 60,000 images
    fz_test: int | None
    fz_chunk_cap: int
    fz_epochs_measured: int


GPU_SIZES = Sizes(repeats=3, inv_models=64, inv_chunks=(1, 8, 64), inv_train=1000,
                  inv_test=500, inv_batch=128, gemm_n=8192, gemm_target_s=0.2,
                  eq_train=2000, eq_models=4, eq_epochs=2, rate_train=10000, rate_test=2000,
                  rate_batch=128, rate_epochs=2, mlp_models=256, cnn_models=128,
                  loop_models=8, fz_train=None, fz_test=None, fz_chunk_cap=500,
                  fz_epochs_measured=2)
CPU_SIZES = dataclasses.replace(GPU_SIZES, inv_models=16, inv_chunks=(1, 4, 16),
                                gemm_n=1024, gemm_target_s=0.1, rate_train=4000,
                                rate_test=1000, mlp_models=32, cnn_models=16, loop_models=4,
                                fz_chunk_cap=4)
TINY_SIZES = Sizes(repeats=3, inv_models=4, inv_chunks=(1, 2, 4), inv_train=300, inv_test=200,
                   inv_batch=32, gemm_n=1024, gemm_target_s=0.05, eq_train=256, eq_models=2,
                   eq_epochs=1, rate_train=256, rate_test=128, rate_batch=32, rate_epochs=3,
                   mlp_models=4, cnn_models=4, loop_models=2, fz_train=1000, fz_test=200,
                   fz_chunk_cap=2, fz_epochs_measured=2)


# ------------------------------------------------------------------ report


class Report:
    """Sections of results, rewritten to JSON and Markdown after each one (atomically)."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.results: dict = {"complete": False, "sections": {}}
        self.heading: list[str] = ["### memlab GPU check", ""]
        self.sections: list[str] = []
        self.started = time.perf_counter()

    def add(self, name: str, title: str, data: dict, lines: list[str]) -> None:
        data = {**data, "elapsed_s": round(time.perf_counter() - self.started, 1)}
        self.results["sections"][name] = data
        self.sections += [f"#### {title}", "", *lines, "",
                          f"(check elapsed: {data['elapsed_s']} s)", ""]
        self.write()
        print(f"[{data['elapsed_s']:7.1f} s] {name}: {json.dumps(data, default=str)[:240]}",
              flush=True)

    def finish(self) -> None:
        self.results["complete"] = True
        self.sections.append("(complete: every section ran)")
        self.write()

    def write(self) -> None:
        atomic_write_json(self.out / "gpu_check.json", self.results)
        text = "\n".join([*self.heading, *self.sections]) + "\n"
        atomic_write_bytes(self.out / "gpu_check.md", text.encode())


def fmt(value: Any) -> str:
    """A table cell: 4 significant digits, thousands separated, booleans as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]]


# ------------------------------------------------------------------ timing


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: CUDA calls return before their kernels finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1
          ) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (the first call
    pays for CUDA context, cuBLAS handles, allocator growth and lazy imports)."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def spread(seconds: list[float]) -> dict:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds),
            "max_s": max(seconds), "runs_s": seconds}


# ------------------------------------------------------------------ engine runs


def small(data: Any, n_train: int | None, n_test: int | None) -> Any:
    """The first n_train training and n_test test examples (None: all)."""
    if n_train is not None and n_train < data.n_train:
        data = data.subset(np.arange(n_train))
    if n_test is not None and n_test < len(data.y_test):
        data = dataclasses.replace(data, x_test=data.x_test[:n_test], y_test=data.y_test[:n_test])
    return data


def spec_for(data: Any, config: PopulationConfig, model: Any) -> tuple[Any, ModelSpec]:
    task = task_for(data, config.task)
    kwargs = config.model_kwargs if not isinstance(model, type) else None
    return task, ModelSpec.resolve(model, kwargs, task)


def model_flops(data: Any, config: PopulationConfig, model: Any) -> float:
    """FLOPs of one example in one training step of one model (the plan's count)."""
    task, spec = spec_for(data, config, model)
    return flops_per_example_step(spec.build(task.input_shape(data), task.outputs(data)),
                                  task.input_shape(data))


@dataclasses.dataclass
class EngineRun:
    result: ChunkResult
    seconds: float  # the whole call: set-up, every epoch, final records
    epoch_seconds: list[float]  # each epoch alone, from the engine's on_epoch hook


def run_engine(data: Any, config: PopulationConfig, model: Any, models: range,
               device: torch.device) -> EngineRun:
    """Train ``models`` as one chunk with the engine, timing the call and every epoch."""
    task, spec = spec_for(data, config, model)
    mask = membership_mask(config, task.n_examples(data, "train"), models)
    stamps: list[float] = []

    def on_epoch(_: int) -> None:
        synchronize(device)  # (the engine has read the epoch's loss: already in sync)
        stamps.append(time.perf_counter())

    synchronize(device)
    started = time.perf_counter()
    result = train_chunk(task, data, config, spec, models, mask, device=device,
                         on_epoch=on_epoch)
    synchronize(device)
    seconds = time.perf_counter() - started
    # the first epoch's start is not stamped: set-up ends inside train_chunk. Its first
    # epoch is therefore left out of the epoch times (it also pays for warm-up kernels).
    epochs = [b - a for a, b in zip(stamps, stamps[1:])]
    return EngineRun(result, seconds, epochs)


def timed_engine(data: Any, config: PopulationConfig, model: Any, models: range,
                 device: torch.device, repeats: int) -> dict:
    """Median whole-call time and median epoch time (epochs 2.. of every run) of the
    engine over ``repeats`` runs after a warm-up run."""
    run_engine(data, config, model, models, device)  # warm-up
    seconds, epochs = [], []
    for _ in range(repeats):  # (results not kept: a large chunk's records are GBs)
        run = run_engine(data, config, model, models, device)
        seconds.append(run.seconds)
        epochs += run.epoch_seconds
    return {**spread(seconds),
            "epoch_median_s": statistics.median(epochs) if epochs else None,
            "epoch_runs_s": epochs,
            "model_example_steps": run.result.model_example_steps,
            "compute_dtype": run.result.compute_dtype}


# ------------------------------------------------------------------ invariance


def merged(parts: list[ChunkResult]) -> tuple[dict, dict]:
    """Weights and records of consecutive chunks, joined on the model axis."""
    arrays = {name: np.concatenate([p.arrays[name] for p in parts]) for name in parts[0].arrays}
    weights = {name: np.concatenate([p.weights[name] for p in parts])
               for name in parts[0].weights}
    return arrays, weights


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b|; NaN in both places counts as equal, NaN in one as infinite."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    difference = np.where(both_nan, 0.0, np.abs(a - b))
    return float(np.nan_to_num(difference, nan=np.inf).max(initial=0.0))


def compare(reference: dict, other: dict) -> dict:
    """Bit-for-bit comparison of two name -> array dicts, and the largest differences."""
    identical = [name for name in reference
                 if reference[name].dtype == other[name].dtype
                 and reference[name].shape == other[name].shape
                 and reference[name].tobytes() == other[name].tobytes()]
    differing = sorted(set(reference) - set(identical))
    return {"bit_identical": not differing, "differing": differing,
            "max_abs": max((max_abs_difference(reference[n], other[n]) for n in differing),
                           default=0.0)}


def invariance(data: Any, config: PopulationConfig, model: Any, n_models: int,
               chunk_sizes: tuple[int, ...], device: torch.device) -> dict:
    """Train models 0..n_models-1 in chunks of each size; compare with the largest."""
    found: dict[int, tuple[dict, dict]] = {}
    for size in chunk_sizes:
        parts = [run_engine(data, config, model, range(start, min(start + size, n_models)),
                            device).result for start in range(0, n_models, size)]
        found[size] = merged(parts)
    largest = max(chunk_sizes)
    arrays, weights = found[largest]
    out: dict[str, Any] = {"reference_chunk": largest, "models": n_models, "by_chunk": {}}
    for size in chunk_sizes:
        if size == largest:
            continue
        w = compare(weights, found[size][1])
        r = compare(arrays, found[size][0])
        out["by_chunk"][str(size)] = {"weights_bit_identical": w["bit_identical"],
                                      "weights_max_abs": w["max_abs"],
                                      "records_bit_identical": r["bit_identical"],
                                      "records_max_abs": r["max_abs"],
                                      "differing": w["differing"] + r["differing"]}
    chunks = out["by_chunk"].values()
    out["bit_identical"] = all(c["weights_bit_identical"] and c["records_bit_identical"]
                               for c in chunks)
    out["weights_max_abs"] = max(c["weights_max_abs"] for c in chunks)
    out["records_max_abs"] = max(c["records_max_abs"] for c in chunks)
    return out


# ------------------------------------------------------------------ peak


def gemm_peak(a: torch.Tensor, b: torch.Tensor, repeats: int, target_s: float) -> dict:
    """GFLOP/s of the square product a @ b on their device: median of ``repeats`` timed
    runs, each of enough products to last about ``target_s`` (a single product of a fast
    GPU is too short to time against launch and synchronization)."""
    n, device = a.shape[0], a.device
    out = torch.empty_like(a)
    one = statistics.median(timed(lambda: torch.mm(a, b, out=out), device, repeats=3))
    count = max(1, math.ceil(target_s / max(one, 1e-6)))

    def products() -> None:
        for _ in range(count):
            torch.mm(a, b, out=out)

    seconds = timed(products, device, repeats)
    flops = 2.0 * n ** 3 * count
    return {"n": n, "products_per_run": count, "gflops": flops / statistics.median(seconds) / 1e9,
            "gflops_min": flops / max(seconds) / 1e9, "gflops_max": flops / min(seconds) / 1e9}


class Peak:
    """The device's GEMM peak per dtype, measured again right before each rate it is
    compared with: on a shared machine the load drifts from one minute to the next, and
    load only ever slows a product, so the highest median measured so far is the
    estimate (each rate records the peak it was compared with)."""

    def __init__(self, device: torch.device, sizes: Sizes):
        self.device, self.sizes = device, sizes
        self.operands: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.found: dict[str, list[dict]] = {dtype: [] for dtype in DTYPES}

    @property
    def repeats(self) -> int:
        return max(self.sizes.repeats, 5)

    def measure(self, dtypes: tuple[str, ...] = DTYPES) -> dict:
        for dtype in dtypes:
            if dtype not in self.operands:  # (random 8192^2 matrices take a while: once)
                generator = torch.Generator().manual_seed(0)
                n = self.sizes.gemm_n
                self.operands[dtype] = tuple(
                    torch.randn(n, n, generator=generator).to(self.device, getattr(torch, dtype))
                    for _ in range(2))
            self.found[dtype].append(gemm_peak(*self.operands[dtype], self.repeats,
                                               self.sizes.gemm_target_s))
        return {dtype: self.found[dtype][-1] for dtype in dtypes}

    def gflops(self, dtype: str) -> float:
        return max(m["gflops"] for m in self.found[dtype])

    def summary(self) -> dict:
        return {dtype: {"gflops": self.gflops(dtype), "measurements": len(found),
                        "medians": [m["gflops"] for m in found]}
                for dtype, found in self.found.items()}


# ------------------------------------------------------------------ equivalence


class BatchNormCNN(nn.Module):
    """A user's 1-D CNN with BatchNorm (not a memlab model): the generic vmap path."""

    def __init__(self, input_shape, n_classes, channels: int = 8):
        super().__init__()
        length = input_shape[-1]
        self.body = nn.Sequential(
            nn.Unflatten(1, (1, length)),
            nn.Conv1d(1, channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm1d(channels), nn.ReLU(), nn.Flatten(),
            nn.Linear(channels * ((length + 1) // 2), n_classes))

    def forward(self, x):
        return self.body(x)


def differences(cpu: ChunkResult, dev: ChunkResult) -> dict:
    """Largest CPU-vs-device differences of one chunk's weights and records."""
    weight_rel = max(float(np.abs(cpu.weights[n] - dev.weights[n]).max()
                           / max(np.abs(cpu.weights[n]).max(), 1e-12)) for n in cpu.weights)
    out = {"weights_max_rel": weight_rel}
    for name in ("test_loss", "train_loss"):
        if name in cpu.arrays:
            out[f"{name}_max_abs"] = max_abs_difference(cpu.arrays[name], dev.arrays[name])
    for name in ("test_correct", "train_correct"):
        if name in cpu.arrays and cpu.arrays[name].dtype == bool:
            out[f"{name}_agreement"] = float((cpu.arrays[name] == dev.arrays[name]).mean())
    return out


# ------------------------------------------------------------------ rates


def rates(title: str, data: Any, config: PopulationConfig, model: str, sizes: Sizes,
          device: torch.device, peak_gflops: float) -> list[dict]:
    """The engine, the torch.func recipe and (float32) a per-model loop training the same
    models on ``device``: one row each, rates in model-example-steps/s and GFLOP/s."""
    dtype = config.compute_dtype
    flops = model_flops(data, config, model)
    members = int(membership_mask(config, data.n_train, range(1))[0].sum())
    n_models, epochs, repeats = config.n_models, config.epochs, sizes.repeats

    def row(trainer: str, k: int, seconds: float, steps: int, measured: dict) -> dict:
        rate = steps / seconds
        gflops = rate * flops / 1e9
        return {"model": title, "dtype": dtype, "trainer": trainer, "models": k,
                "seconds": seconds, **measured, "rate": rate, "gflops": gflops,
                "peak_gflops": peak_gflops, "fraction_of_peak": gflops / peak_gflops,
                "flops_per_example_step": flops}

    engine = timed_engine(data, config, model, range(n_models), device, repeats)
    found = [row("engine", n_models, engine["median_s"], n_models * members * epochs, engine),
             # one epoch's steps in the median later epoch: the steady training rate
             row("engine, epochs only", n_models, engine["epoch_median_s"],
                 n_models * members, {})]
    recipe = spread(timed(partial(contenders.recipe_train, data, config, list(range(n_models)),
                                  device=str(device), compute_dtype=getattr(torch, dtype)),
                          device, repeats))
    found.append(row("torch.func recipe", n_models, recipe["median_s"],
                     n_models * members * epochs, recipe))
    if dtype == "float32":  # the per-model loop has no autocast: float32 only
        k = min(sizes.loop_models, n_models)
        per_model = spread(timed(partial(contenders.loop_train, data, config, list(range(k)),
                                         dataloader=False, device=str(device)),
                                 device, repeats))
        found.append(row("per-model loop", k, per_model["median_s"], k * members * epochs,
                         per_model))
    for r in found:
        # whole calls against whole calls; the epochs-only row has nothing to compare with
        r["engine_speedup"] = (None if r["trainer"] == "engine, epochs only"
                               else found[0]["rate"] / r["rate"])
    return found


# ------------------------------------------------------------------ host copy


def host_copy(config: PopulationConfig, n_train: int, models: range, device: torch.device,
              repeats: int) -> dict:
    """Seconds per epoch of the engine's shuffles for a chunk: numpy draws from each model's
    own stream, the copy of the (K, m) order to the device, and two device-side ways."""
    mask = membership_mask(config, n_train, models)
    members = np.stack([np.flatnonzero(row) for row in mask])
    replicates = [config.model_key(k)[1] for k in models]

    def shufflers() -> list[np.random.Generator]:
        return [model_rng(config.seed, r, STREAM_SHUFFLE) for r in replicates]

    rngs = shufflers()
    n_members = members.shape[1]
    out: dict[str, Any] = {"models": len(models), "members": n_members,
                           "order_mib": members.size * 8 / 2**20}
    epoch_order = getattr(engine_loop, "_epoch_order", None)
    if epoch_order is not None:  # what the engine runs, copy included
        out["engine_s"] = statistics.median(
            timed(lambda: epoch_order(members, rngs, device), device, repeats))
    out["numpy_draws_s"] = statistics.median(timed(
        lambda: np.stack([row[g.permutation(n_members)] for row, g in zip(members, rngs)]),
        device, repeats))
    order = np.stack([row[g.permutation(n_members)] for row, g in zip(members, rngs)])
    out["copy_s"] = statistics.median(timed(lambda: torch.as_tensor(order, device=device),
                                            device, repeats))
    on_device = torch.as_tensor(members, device=device)
    # per-model streams kept on the device: one generator per model, one randperm each
    generators = [torch.Generator(device=device).manual_seed(1000 + r) for r in replicates]
    out["device_per_model_s"] = statistics.median(timed(
        lambda: torch.stack([row[torch.randperm(n_members, generator=g, device=device)]
                             for row, g in zip(on_device, generators)]), device, repeats))
    # one batched draw for all models (the recipe's way): no per-model streams
    out["device_batched_s"] = statistics.median(timed(
        lambda: torch.gather(on_device, 1, torch.argsort(
            torch.rand(on_device.shape, device=device), dim=1)), device, repeats))
    return out


# ------------------------------------------------------------------ main


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check", help="folder for gpu_check.json/.md")
    parser.add_argument("--device", default="auto", help="auto (cuda if any) | cuda | cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CPU test)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    tiny = args.tiny
    sizes = TINY_SIZES if tiny else (GPU_SIZES if device.type == "cuda" else CPU_SIZES)
    if device.type == "cpu":
        torch.set_num_threads(1)  # as the engine's CPU workers run: one thread each
    report = Report(Path(args.out))
    repeats = sizes.repeats

    # 1. environment ----------------------------------------------------------------
    env: dict[str, Any] = {
        "device": str(device), "date": datetime.date.today().isoformat(),
        "torch": torch.__version__, "memlab": memlab.__version__,
        "python": sys.version.split()[0], "cpu": cpu_model(),
        "threads": torch.get_num_threads(), "tiny": tiny,
        "cpu_flags": sorted(cpu_flags() & {"avx2", "fma", "avx512f", "avx512_bf16",
                                           "amx_bf16", "amx_tile"}),
        "native_bfloat16": native_bfloat16(device),
        "auto_compute_dtype": str(resolve_compute_dtype("auto", device)),
        "repeats": repeats}
    name, details = f"CPU {cpu_model()}", ""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = props.name
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(),
                   # float32 products: torch's default is no TF32 for matmul (the GEMM peak
                   # and the engine alike) but TF32 for cuDNN convolutions (the loop's)
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn=torch.backends.cudnn.allow_tf32)
        details = (f"{name} (capability {env['capability']}, {env['memory_gib']} GiB, "
                   f"CUDA {torch.version.cuda}); host CPU {env['cpu']}; ")
    report.heading = [
        f"### GPU check on {name}" + (", --tiny" if tiny else ""), "",
        f"{details}torch {torch.__version__}; memlab {memlab.__version__}; {env['date']}. "
        f"`python benchmarks/gpu_check.py{' --tiny' if tiny else ''}`: every time is the "
        f"median of {repeats} timed runs after a warm-up run, the device synchronized "
        "around each.", ""]
    report.add("environment", "Environment", env,
               table(["item", "value"], [[k, v] for k, v in env.items()]))

    # 2. invariance across chunk sizes -----------------------------------------------
    mnist = load("mnist")
    inv_data = small(mnist, sizes.inv_train, sizes.inv_test)
    inv_base = PopulationConfig(n_models=sizes.inv_models, epochs=2, subset_fraction=0.7,
                                batch_size=sizes.inv_batch, lr=0.1, momentum=0.9)
    paths = {"MLP fast path": ("mlp", {"hidden": FZ_HIDDEN}),
             "user CNN with BatchNorm (generic path)": ("bench_user_cnn2d", {})}
    inv_out, rows = {}, []
    for title, (model, kwargs) in paths.items():
        for dtype in DTYPES:
            config = dataclasses.replace(inv_base, model=model, model_kwargs=kwargs,
                                         compute_dtype=dtype)
            found = invariance(inv_data, config, model, sizes.inv_models, sizes.inv_chunks,
                               device)
            inv_out[f"{title} {dtype}"] = found
            rows.append([title, dtype, ", ".join(map(str, sizes.inv_chunks)),
                         found["bit_identical"], found["weights_max_abs"],
                         found["records_max_abs"],
                         ", ".join(sorted({n for c in found["by_chunk"].values()
                                           for n in c["differing"]})) or "none"])
    inv_out["bit_identical"] = all(v["bit_identical"] for v in inv_out.values())
    report.add("invariance", "Invariance across chunk sizes", inv_out, [
        f"Models 0..{sizes.inv_models - 1} trained on {device} in chunks of "
        f"{', '.join(map(str, sizes.inv_chunks))} (MNIST, {inv_data.n_train} training "
        f"images, 70% subsets, 2 epochs, batch {sizes.inv_batch}); model k's weights and "
        f"every record array compared with the {max(sizes.inv_chunks)}-model chunk, bit "
        "for bit. Where not bit-identical, the largest absolute difference is the "
        "tolerance to state.", "",
        *table(["path", "compute dtype", "chunk sizes", "bit-identical",
                "weights max abs diff", "records max abs diff", "arrays that differ"], rows)])

    # 3. the device's own peak ------------------------------------------------------
    peak = Peak(device, sizes)
    first = peak.measure()
    report.add("peak", "Device peak (GEMM)", first, [
        f"A {sizes.gemm_n} x {sizes.gemm_n} x {sizes.gemm_n} matrix product on {device}, "
        f"median of {peak.repeats} timed runs; every rate below is also given as a "
        "fraction of the peak of its dtype (measured again right before each rate; the "
        "highest median so far counts, since load only ever slows a product).", "",
        *table(["dtype", "GFLOP/s (median)", "min", "max", "products per run"],
               [[d, p["gflops"], p["gflops_min"], p["gflops_max"], p["products_per_run"]]
                for d, p in first.items()])])

    # 4. equivalence of every engine path, CPU vs device ------------------------------
    from memlab.data.text import synthetic_corpus

    mnist1d = small(load("mnist1d"), sizes.eq_train, None)
    eq_paths = {
        "MLP fast path": (mnist1d, dict(model="mlp", model_kwargs={"hidden": [100, 100]}),
                          "mlp"),
        "CNN1d": (mnist1d, dict(model="cnn1d"), "cnn1d"),
        "user module with BatchNorm": (mnist1d, dict(model="BatchNormCNN"), BatchNormCNN),
        "language model": (synthetic_corpus(), dict(model="transformer",
                                                    task="language_model", optimizer="adam",
                                                    lr=3e-3, batch_size=32,
                                                    subset_fraction=0.25), "transformer"),
    }
    rows, equivalent = [], {}
    for title, (data, settings, model) in eq_paths.items():
        config = PopulationConfig(n_models=sizes.eq_models, epochs=sizes.eq_epochs, **settings)
        models = range(sizes.eq_models)
        cpu = run_engine(data, config, model, models, torch.device("cpu")).result
        dev = run_engine(data, config, model, models, device).result
        equivalent[title] = differences(cpu, dev)
        rows.append([title, *[equivalent[title].get(k, "") for k in
                              ("weights_max_rel", "test_loss_max_abs", "test_correct_agreement")]])
    report.add("equivalence", "CPU vs device", equivalent, [
        f"The same chunk on the CPU and on {device} (float32); largest differences found:", "",
        *table(["path", "weights max rel diff", "test loss max abs diff",
                "test correct agreement"], rows)])

    # 5. rates: engine vs the torch.func recipe vs a per-model loop ---------------------
    rate_data = small(mnist, sizes.rate_train, sizes.rate_test)
    rate_out: dict[str, Any] = {"rows": []}
    for title, model, kwargs, n_models in (
            ("MLP 784-512-256-10", "mlp", {"hidden": FZ_HIDDEN}, sizes.mlp_models),
            ("user CNN (UserCNN2d, BatchNorm)", "bench_user_cnn2d", {}, sizes.cnn_models)):
        for dtype in DTYPES:
            config = PopulationConfig(model=model, model_kwargs=kwargs, n_models=n_models,
                                      subset_fraction=0.5, epochs=sizes.rate_epochs,
                                      batch_size=sizes.rate_batch, lr=0.1, momentum=0.9,
                                      compute_dtype=dtype)
            peak.measure((dtype,))
            rate_out["rows"] += rates(title, rate_data, config, model, sizes, device,
                                      peak.gflops(dtype))
    rate_out["peak"] = peak.summary()
    rows = [[r["model"], r["dtype"], r["trainer"], r["models"], r["seconds"], r["rate"] / 1e6,
             r["gflops"], 100 * r["fraction_of_peak"], r["engine_speedup"]]
            for r in rate_out["rows"]]
    report.add("rates", "Training rates: engine, torch.func recipe, per-model loop", rate_out, [
        f"MNIST ({rate_data.n_train} training images, {len(rate_data.y_test)} test images), "
        f"50% subsets, {sizes.rate_epochs} epochs, batch {sizes.rate_batch}, SGD momentum "
        f"0.9, on {device}. Each trainer's rate is model-example-steps per second of the "
        "whole call (set-up, training and the final per-example records, which every "
        "trainer computes), so set-up and records count against it; 'engine, epochs only' "
        "is the median epoch after the first. GFLOP/s counts training steps only "
        "(`plan.flops_per_example_step`), so it is a lower bound; % of peak is against the "
        "GEMM peak of the same dtype measured right before (at the end: float32 "
        f"{peak.gflops('float32'):,.0f}, bfloat16 {peak.gflops('bfloat16'):,.0f} GFLOP/s). "
        "The per-model loop trains fewer models (its rate "
        "hardly depends on how many) and has no bfloat16 variant.", "",
        *table(["model", "dtype", "trainer", "models", "s (median of runs)",
                "M model-example-steps/s", "GFLOP/s", "% of peak", "engine speed-up"],
               rows)])

    # 6. Feldman & Zhang's MNIST setting, extrapolated from one chunk --------------------
    fz_data = small(mnist, sizes.fz_train, sizes.fz_test)
    fz = PopulationConfig(model="mlp", model_kwargs={"hidden": FZ_HIDDEN}, n_models=FZ_MODELS,
                          subset_fraction=0.7, epochs=FZ_EPOCHS, batch_size=128, lr=0.1,
                          momentum=0.9)
    if device.type == "cuda":  # memory the caching allocator holds counts as taken
        torch.cuda.empty_cache()
    fz_auto = suggest_chunk_size(fz_data, fz, str(device))
    fz_chunk = max(1, min(fz_auto, sizes.fz_chunk_cap))
    measured_epochs = sizes.fz_epochs_measured
    n_chunks = -(-FZ_MODELS // fz_chunk)
    flops = model_flops(fz_data, fz, "mlp")
    fz_out: dict[str, Any] = {"chunk_size_auto": fz_auto, "chunk": fz_chunk,
                              "chunks": n_chunks, "epochs_measured": measured_epochs,
                              "flops_per_example_step": flops, "extrapolated": True}
    fz_rows = []
    for dtype in DTYPES:
        config = dataclasses.replace(fz, compute_dtype=dtype, epochs=measured_epochs)
        peak.measure((dtype,))
        measured = timed_engine(fz_data, config, "mlp", range(fz_chunk), device, repeats)
        # A chunk of the full run: what was measured (set-up, the measured epochs, the
        # records) plus its remaining epochs at the median later-epoch time.
        per_chunk = measured["median_s"] + (FZ_EPOCHS - measured_epochs) * measured[
            "epoch_median_s"]
        projected = n_chunks * per_chunk
        steps_per_epoch = measured["model_example_steps"] / measured_epochs
        gflops = steps_per_epoch / measured["epoch_median_s"] * flops / 1e9
        fz_out[dtype] = {**measured, "per_chunk_s": per_chunk,
                         "projected_2000_models_s": projected,
                         "models_per_s": FZ_MODELS / projected, "gflops": gflops,
                         "peak_gflops": peak.gflops(dtype),
                         "fraction_of_peak": gflops / peak.gflops(dtype)}
        fz_rows.append([dtype, fz_chunk, measured["median_s"], measured["epoch_median_s"],
                        per_chunk, projected / 60, FZ_MODELS / projected, gflops,
                        100 * gflops / peak.gflops(dtype)])
    report.add("feldman_zhang_mnist", "Feldman & Zhang's MNIST setting (extrapolated)", fz_out, [
        f"{FZ_MODELS:,} 784-512-256-10 MLPs, 70% of {fz_data.n_train:,} MNIST images, "
        f"{FZ_EPOCHS} epochs, SGD momentum 0.9, lr 0.1, batch 128, on {device}. "
        f"**Extrapolated**: one chunk of {fz_chunk} models (`--chunk-size auto` would take "
        f"{fz_auto}) was trained for {measured_epochs} of the {FZ_EPOCHS} epochs; a chunk "
        f"of the full run is that whole call plus {FZ_EPOCHS - measured_epochs} more epochs "
        f"at the median later-epoch time, times {n_chunks} chunks. GFLOP/s: the later "
        f"epochs' training steps; % of peak against the GEMM peak measured right before "
        f"(float32 {fz_out['float32']['peak_gflops']:,.0f}, bfloat16 "
        f"{fz_out['bfloat16']['peak_gflops']:,.0f} GFLOP/s).", "",
        *table(["dtype", "chunk", f"s for {measured_epochs} epochs + records",
                "s per epoch", "s per chunk of 10 epochs", "projected 2,000 models (min)",
                "models/s", "GFLOP/s (epochs)", "% of peak"], fz_rows)])

    # 7. host-side shuffles and their copy ----------------------------------------------
    copy = host_copy(fz, fz_data.n_train, range(fz_chunk), device, repeats)
    copy_rows = []
    for label, key in (("engine: numpy draws + copy (`_epoch_order`)", "engine_s"),
                       ("numpy draws alone", "numpy_draws_s"),
                       ("copy of the order to the device", "copy_s"),
                       ("device: one randperm per model (own generators)",
                        "device_per_model_s"),
                       ("device: one batched argsort (no per-model streams)",
                        "device_batched_s")):
        if key not in copy:
            continue
        copy_rows.append([label, 1000 * copy[key],
                          *[100 * copy[key] / fz_out[d]["epoch_median_s"] for d in DTYPES]])
    for dtype in DTYPES:
        host = copy.get("engine_s", copy["numpy_draws_s"] + copy["copy_s"])
        copy[f"fraction_of_{dtype}_epoch"] = host / fz_out[dtype]["epoch_median_s"]
    report.add("host_copy", "Per-epoch shuffles on the host and their copy", copy, [
        f"The engine draws each model's epoch order with numpy from the model's own stream "
        f"and copies the ({copy['models']}, {copy['members']:,}) order "
        f"({copy['order_mib']:.1f} MiB) to {device} once per epoch, while the device waits "
        "(the previous epoch ended with a synchronizing read of its loss). Measured for the "
        "Feldman & Zhang chunk above, against device-side alternatives:", "",
        *table(["per epoch", "ms", "% of a float32 epoch", "% of a bfloat16 epoch"],
               copy_rows)])

    # 8. spectra of a trained model on the device vs CPU --------------------------------
    from memlab.measures.spectra import analyze

    trained = run_engine(fz_data, dataclasses.replace(fz, n_models=1, epochs=1 if tiny else 2),
                         "mlp", range(1), device).result
    state = {name: torch.as_tensor(w[0]) for name, w in trained.weights.items()}
    spectra, alphas = {}, {}
    for where in ("cpu", str(device)):
        started = time.perf_counter()
        frame = analyze(state, device=where, randomize=False)
        spectra[f"{where}_seconds"] = time.perf_counter() - started
        alphas[where] = frame["alpha"].to_numpy(dtype=float)
    spectra["alpha_cpu"] = alphas["cpu"].tolist()
    spectra["alpha_max_abs_difference"] = float(np.nanmax(np.abs(alphas["cpu"]
                                                                 - alphas[str(device)])))
    report.add("spectra", "Spectra on the device vs CPU", spectra, [
        f"alpha per layer (CPU): {np.round(alphas['cpu'], 3).tolist()}; largest |alpha_cpu - "
        f"alpha_{device}|: {spectra['alpha_max_abs_difference']:.2g}; "
        f"seconds: CPU {spectra['cpu_seconds']:.2f}, {device} "
        f"{spectra[f'{device}_seconds']:.2f}"])

    report.finish()
    print(f"wrote {report.out / 'gpu_check.json'} and {report.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
