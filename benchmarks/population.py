"""How fast is the population engine? Every way a user could train the same models, raced.

Contenders, all training the same models on the same subsets with SGD + momentum, batch 128,
and all computing the same final per-example records (loss, correctness and log-odds of
every model on every training and test example; ``contenders.records``):

  (a) the per-model loop a user writes first: nn.Module + torch.optim + DataLoader, torch's
      default thread count, one model after another;
  (b) the same loop tuned: batches by index, one thread per process, the models split
      over one process per core;
  (r) the PyTorch documentation's model-ensembling recipe (``torch.func.stack_module_state``
      + ``functional_call`` + ``vmap``), trained with torch.optim over the stacked
      parameters, split over one single-thread process per core like (b);
  (c) memlab's engine: chunks of models as one stacked model, one single-thread worker per
      core, every record written to a run directory; in float32 and (c-bf16) with
      ``compute_dtype="bfloat16"``.

Workloads: the MLP 40-100-100-10 and the MNIST-1D paper's CNN on MNIST-1D (the engine's
hand-written paths), a user's CNN with BatchNorm and a user's ResNet-style block on real
MNIST (the generic path: any nn.Module). Rounds are interleaved (peaks, ceiling, a, b, r,
c, c-bf16, then again) so that a busy machine slows all alike; each figure is the median
over rounds. Every contender is timed by wall clock *and* by CPU time (this process and its
children), so the rates per CPU-second hold on a shared machine where wall time does not;
``--cpu-time`` makes them the headline. Measured in the same rounds: the fp32 and bf16 GEMM
peak of one core, and the engine's products-only ceiling (``gemm_ceiling``: its step's
batched matrix products alone, every other pass free), which bounds what any stacked
formulation of these products could reach.

    python benchmarks/population.py              # the race, about 8 minutes on 2 cores
    python benchmarks/population.py --cpu-time   # ratios per CPU-second
    python benchmarks/population.py --only user  # one workload
    python benchmarks/population.py --full       # plus 2,000 MLPs x 30 epochs, timed
    python benchmarks/population.py --memory     # peak memory against the number of models
    python benchmarks/population.py --agreement  # bfloat16 vs float32 memorization scores
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contenders  # noqa: E402  (registers the bench_user_* models)
from contenders import loop_train, recipe_train  # noqa: E402

from memlab.data import load  # noqa: E402
from memlab.engine.config import PopulationConfig  # noqa: E402
from memlab.engine.precision import cpu_flags, cpu_model, resolve_compute_dtype  # noqa: E402
from memlab.models import build_model  # noqa: E402
from memlab.population import train_population  # noqa: E402
from memlab.population.executor import worker_start_method  # noqa: E402
from memlab.population.plan import flops_per_example_step  # noqa: E402

SUBSET, BATCH, LR = 0.5, 128, 0.05
UserCNN = contenders.UserCNN1d  # (the 1-D user CNN of earlier releases)


@dataclass(frozen=True)
class Workload:
    title: str
    data: str
    model: str
    n_models: int  # trained by (b), (r) and (c)
    n_naive: int  # trained by (a), whose rate is per model anyway
    epochs: int
    n_train: int | None = None  # the first n_train training examples (None: all)
    model_kwargs: dict = field(default_factory=dict)


WORKLOADS = {
    "mlp": Workload("MLP 40-100-100-10, MNIST-1D", "mnist1d", "mlp", 256, 4, 10,
                    model_kwargs={"hidden": [100, 100]}),
    "cnn1d": Workload("CNN1d (MNIST-1D paper, 25 channels), MNIST-1D", "mnist1d", "cnn1d",
                      32, 2, 4),
    "user_cnn": Workload("user CNN with BatchNorm (Conv2d 1-8-16 s2 + BN, Linear 784-10), "
                         "MNIST", "mnist", "bench_user_cnn2d", 16, 2, 2, n_train=10000),
    "user_resnet": Workload("user ResNet-style block (width 8, BN, residual, max pool), "
                            "MNIST", "mnist", "bench_user_resnet", 8, 1, 1, n_train=10000),
}


def cpu_description() -> str:
    """CPU model and the ISA flags that decide GEMM and bfloat16 speed."""
    model, flags = cpu_model(), cpu_flags()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return f"{model}; ISA: {' '.join(f for f in wanted if f in flags) or 'none of ' + str(wanted)}"


# ------------------------------------------------------------------ contenders split over cores


def _split_worker(args) -> None:
    torch.set_num_threads(1)
    trainer, dataset, config, models = args
    if trainer == "loop":
        loop_train(dataset, config, models, dataloader=False)
    else:
        recipe_train(dataset, config, models)


def split_over_cores(trainer: str, dataset, config: PopulationConfig, n_processes: int) -> None:
    """``trainer`` ("loop" or "recipe") on the models split over one single-thread process
    per core, started like the engine's workers."""
    models = list(range(config.n_models))
    shares = [models[i::n_processes] for i in range(n_processes)]
    context = multiprocessing.get_context(worker_start_method())
    with context.Pool(n_processes) as pool:
        pool.map(_split_worker, [(trainer, dataset, config, share) for share in shares])


# ------------------------------------------------------------------ GEMM peak


def _rounds_per_second(products: list[tuple[torch.Tensor, torch.Tensor]],
                       seconds: float) -> float:
    """Rounds per second of computing every product ``a @ b`` of ``products`` (after one
    warm-up round), in this process's threads, for about ``seconds``."""
    for a, b in products:
        a @ b
    rounds, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for a, b in products:
            a @ b
        rounds += 1
    return rounds / (time.perf_counter() - started)


def _gemm_worker(seconds: float, dtype: torch.dtype = torch.float32) -> float:
    torch.set_num_threads(1)
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    return 2 * 2048**3 * _rounds_per_second([(a, b)], seconds) / 1e9


def gemm_peak(n_processes: int, seconds: float = 3.0, dtype: torch.dtype = torch.float32
              ) -> float:
    """Aggregate 2048^2 GEMM GFLOP/s of n single-thread processes running at once."""
    with multiprocessing.get_context("spawn").Pool(n_processes) as pool:
        return sum(pool.starmap(_gemm_worker, [(seconds, dtype)] * n_processes))


# ------------------------------------------------------------------ GEMM-only ceiling


def product_shapes(template: nn.Module, input_shape: tuple[int, ...], batch: int
                   ) -> list[tuple[int, int, int]]:
    """(M, K, N) of every matrix product in one training step of one model as the engine
    forms them: per linear / convolution layer the forward, the weight gradient and (not
    for the first layer) the input gradient; convolutions as im2col products. Pooling
    layers change the spatial size; a layer's input size is its predecessor's output (the
    modules in registration order: a residual block's convolutions keep the size)."""
    shapes, spatial, first = [], tuple(input_shape[1:]) or tuple(input_shape), True
    for layer in template.modules():
        if isinstance(layer, nn.Linear):
            rows, inner, cols = layer.out_features, layer.in_features, batch
        elif isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            kernel, stride = layer.kernel_size, layer.stride
            padding, dilation = layer.padding, layer.dilation
            spatial = tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size, k, s, p, d
                            in zip(spatial[-len(kernel):], kernel, stride, padding, dilation))
            rows = layer.out_channels
            inner = layer.in_channels * int(np.prod(kernel))
            cols = batch * int(np.prod(spatial))
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel = (layer.kernel_size,) * 2 if isinstance(layer.kernel_size, int) \
                else layer.kernel_size
            stride = layer.stride or kernel
            stride = (stride,) * 2 if isinstance(stride, int) else stride
            spatial = tuple((size - k) // s + 1 for size, k, s in zip(spatial[-2:], kernel,
                                                                       stride))
            continue
        else:
            continue
        shapes += [(rows, inner, cols), (rows, cols, inner)]  # forward, weight gradient
        if not first:
            shapes.append((inner, rows, cols))  # input gradient
        first = False
    return shapes


def _ceiling_worker(shapes, n_models: int, batch: int, dtype: torch.dtype,
                    seconds: float) -> float:
    """Model-example-steps/s of one single-thread process doing nothing but the step's
    batched products (each of ``n_models`` models its own GEMMs, as in the engine)."""
    torch.set_num_threads(1)
    operands = [(torch.randn(n_models, m, k).to(dtype), torch.randn(n_models, k, n).to(dtype))
                for m, k, n in shapes]  # (K, m, k) @ (K, k, n): a batched product, as bmm
    return n_models * batch * _rounds_per_second(operands, seconds)


def gemm_ceiling(template: nn.Module, input_shape: tuple[int, ...], n_models: int,
                 n_processes: int, dtype: torch.dtype, seconds: float = 3.0) -> float:
    """The fastest the engine could train: its products alone, every other pass (ReLU,
    loss, optimizer, batching, records) and all dispatch taken as free, on all cores."""
    shapes = product_shapes(template, input_shape, BATCH)
    with multiprocessing.get_context("spawn").Pool(n_processes) as pool:
        return sum(pool.starmap(_ceiling_worker,
                                [(shapes, n_models, BATCH, dtype, seconds)] * n_processes))


# ------------------------------------------------------------------ driver


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn()``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


BASELINE_SCRIPT = """
import sys, tempfile, time, os
from memlab.data import load
from memlab.population import train_population
dataset = load("mnist1d")
with tempfile.TemporaryDirectory() as out:
    started = time.perf_counter()
    train_population(dataset, model=sys.argv[1], n_models=int(sys.argv[2]),
                     subset_fraction={subset}, epochs=int(sys.argv[3]), batch_size={batch},
                     lr={lr}, chunk_size=int(sys.argv[4]), out=os.path.join(out, "run"),
                     n_workers=int(sys.argv[5]), progress=False,
                     save_weights=sys.argv[6] == "1")
    print(time.perf_counter() - started)
"""


def baseline_engine(tree: str, model: str, n_models: int, epochs: int, chunk_size: int,
                    workers: int, save_weights: bool = False) -> float:
    """Seconds of the engine of another checkout (``tree``), timed inside its process."""
    script = BASELINE_SCRIPT.format(subset=SUBSET, batch=BATCH, lr=LR)
    result = subprocess.run(
        [sys.executable, "-c", script, model, str(n_models), str(epochs), str(chunk_size),
         str(workers), "1" if save_weights else "0"], capture_output=True, text=True,
        check=True, cwd=tree,
        env={**os.environ, "PYTHONPATH": tree})
    return float(result.stdout.strip().splitlines()[-1])


NAIVE, TUNED, RECIPE = ("(a) per-model loop, DataLoader, default threads",
                        "(b) tuned loop, 1 thread x 1 process per core",
                        "(r) torch.func ensembling recipe, 1 process per core")
ENGINE, ENGINE_BF16 = "(c) memlab engine", "(c-bf16) memlab engine, bfloat16"


def race(workload: Workload, rounds: int, workers: int, chunk_size: int | None = None,
         baseline: str | None = None) -> dict:
    """Every contender on ``workload``, interleaved over ``rounds``, with the GEMM peaks
    and the engine's products-only ceiling measured in every round."""
    dataset = load(workload.data)
    if workload.n_train is not None:
        dataset = dataset.subset(range(workload.n_train))
    template = build_model(workload.model, dataset.input_shape, dataset.n_classes,
                           **workload.model_kwargs)
    flops = flops_per_example_step(template, dataset.input_shape)
    subset = PopulationConfig(subset_fraction=SUBSET).subset_size(dataset.n_train)
    n_models = workload.n_models
    chunk = chunk_size or max(1, min(32, n_models // workers))

    def config(models: int) -> PopulationConfig:
        return PopulationConfig(model=workload.model, model_kwargs=workload.model_kwargs,
                                n_models=models, subset_fraction=SUBSET,
                                epochs=workload.epochs, batch_size=BATCH, lr=LR)

    def engine(compute_dtype: str):
        with tempfile.TemporaryDirectory() as out:
            train_population(dataset, model=workload.model,
                             model_kwargs=workload.model_kwargs, n_models=n_models,
                             subset_fraction=SUBSET, epochs=workload.epochs,
                             batch_size=BATCH, lr=LR, chunk_size=chunk,
                             out=os.path.join(out, "run"), n_workers=workers, progress=False,
                             save_weights=False, compute_dtype=compute_dtype)

    runs = {
        NAIVE: (workload.n_naive, lambda: loop_train(dataset, config(workload.n_naive),
                                                     list(range(workload.n_naive)), True)),
        TUNED: (n_models, lambda: split_over_cores("loop", dataset, config(n_models),
                                                   workers)),
        RECIPE: (n_models, lambda: split_over_cores("recipe", dataset, config(n_models),
                                                    workers)),
        ENGINE: (n_models, lambda: engine("float32")),
        ENGINE_BF16: (n_models, lambda: engine("bfloat16")),
    }
    if baseline and workload.data == "mnist1d" and not workload.model.startswith("bench_"):
        runs["(c0) memlab engine of " + os.path.basename(baseline.rstrip("/"))] = (
            n_models, lambda: (baseline_engine(baseline, workload.model, n_models,
                                               workload.epochs, chunk, workers),) * 2)
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    measured: dict[str, list[float]] = {"peak": [], "peak_bf16": [], "ceiling": [],
                                        "ceiling_bf16": [], "load": []}
    for _ in range(rounds):
        measured["load"].append(os.getloadavg()[0])
        # per core: n single-thread processes at once, divided by n
        measured["peak"].append(gemm_peak(workers, 1.5) / workers)
        measured["peak_bf16"].append(gemm_peak(workers, 1.5, torch.bfloat16) / workers)
        for key, dtype in (("ceiling", torch.float32), ("ceiling_bf16", torch.bfloat16)):
            measured[key].append(gemm_ceiling(template, dataset.input_shape, chunk, workers,
                                              dtype, 1.5) / workers)
        for name, (models, fn) in runs.items():
            if name.startswith("(c0)"):
                seconds, used = fn()[0], float("nan")
            else:
                seconds, used = timed(fn)
            steps = models * workload.epochs * subset
            wall[name].append(steps / seconds)
            cpu[name].append(steps / used)
    return {"workload": workload, "flops": flops, "subset": subset, "chunk": chunk,
            "models": {name: models for name, (models, _) in runs.items()},
            "wall": {name: statistics.median(v) for name, v in wall.items()},
            "cpu": {name: statistics.median(v) for name, v in cpu.items()},
            **{key: statistics.median(v) if key != "load" else v
               for key, v in measured.items()}}


def report(result: dict, rounds: int, cpu_time: bool) -> list[str]:
    """The race's table (markdown, ready for docs/performance.md) and its verdict lines."""
    workload: Workload = result["workload"]
    headline = result["cpu" if cpu_time else "wall"]
    per = "CPU-second" if cpu_time else "wall-second"
    engine, engine_bf16 = headline[ENGINE], headline[ENGINE_BF16]
    lines = [f"#### {workload.title}",
             "",
             f"{result['subset']:,} examples per model, batch {BATCH}, {workload.epochs} "
             f"epochs, engine chunks of {result['chunk']}; median of {rounds} interleaved "
             f"rounds; load average at each round: "
             f"{', '.join(f'{x:.1f}' for x in result['load'])}",
             "",
             "| contender | models | M model-example-steps per wall-s | per CPU-s | "
             "GFLOP per CPU-s | of the fp32 GEMM peak | engine fp32 is | engine bf16 is |",
             "|---|---|---|---|---|---|---|---|"]
    for name in headline:
        rate_cpu = result["cpu"][name]
        gflops = rate_cpu * result["flops"] / 1e9
        peak = result["peak_bf16"] if "bf16" in name else result["peak"]
        lines.append(
            f"| {name} | {result['models'][name]} | {result['wall'][name] / 1e6:.3f} | "
            f"{rate_cpu / 1e6:.3f} | {gflops:.1f} | {100 * gflops / peak:.0f}%"
            f"{' (bf16 peak)' if 'bf16' in name else ''} | "
            f"{engine / headline[name]:.2f}x | {engine_bf16 / headline[name]:.2f}x |")
    lines.append("")
    for key, label in (("ceiling", "fp32"), ("ceiling_bf16", "bf16")):
        ceiling = result[key]  # model-example-steps per CPU-second
        rate = result["cpu"][ENGINE if label == "fp32" else ENGINE_BF16]
        lines.append(f"- products-only ceiling, {label} (the engine's batched products "
                     f"alone, chunks of {result['chunk']}): {ceiling / 1e6:.3f} M per CPU-s "
                     f"= {ceiling / result['cpu'][TUNED]:.2f}x loop (b), "
                     f"{ceiling / result['cpu'][RECIPE]:.2f}x the recipe; the engine "
                     f"reaches {100 * rate / ceiling:.0f}% of it")
    lines.append(f"- GEMM peak of one core (2048^2, median of rounds): fp32 "
                 f"{result['peak']:.1f}, bf16 {result['peak_bf16']:.1f} GFLOP/s; "
                 f"{result['flops'] / 1e3:.0f} kFLOP per example-step")
    lines.append(f"- ratios above per {per}; records and start-up included for every "
                 "contender")
    return lines


def memory_probe(n_models: int, chunk_size: int) -> None:
    """Train n_models for one epoch; print the peak RSS of this process and of the workers."""
    with tempfile.TemporaryDirectory() as out:
        train_population(load("mnist1d"), n_models=n_models, subset_fraction=SUBSET, epochs=1,
                         batch_size=BATCH, chunk_size=chunk_size, out=os.path.join(out, "run"),
                         progress=False)
    print(json.dumps({
        "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def memory_table(chunk_sizes: list[int], model_counts: list[int]) -> None:
    print("peak resident memory (MB), MLP 40-100-100-10 on MNIST-1D, 2 workers:")
    print(f"  {'chunk size':>10s} {'models':>7s} {'main process':>13s} {'per worker':>11s}")
    for chunk_size in chunk_sizes:
        for n_models in model_counts:
            probe = subprocess.run(
                [sys.executable, __file__, "--memory-probe", str(n_models), str(chunk_size)],
                capture_output=True, text=True, check=True)
            peak = json.loads(probe.stdout.strip().splitlines()[-1])
            print(f"  {chunk_size:>10d} {n_models:>7d} {peak['main_mb']:>13.0f} "
                  f"{peak['worker_mb']:>11.0f}")


# ------------------------------------------------------------------ precision agreement


AGREEMENT = {  # dataset -> settings long enough for the planted noisy labels to be memorized
    "mnist1d": dict(model_kwargs={"hidden": [100, 100]}, epochs=30, batch_size=64, lr=0.05),
    "digits": dict(model_kwargs={"hidden": [128]}, epochs=30, batch_size=32, lr=0.1),
}


def precision_agreement(name: str, n_models: int, workers: int) -> dict:
    """Memorization scores of a bfloat16 and a float32 population with the same seeds, and
    of a float32 population with another seed (the yardstick: two independent estimates),
    on the dataset with 10% planted label noise."""
    from memlab.measures.memorization import detection_auroc, memorization, spearman

    dataset = load(name).with_label_noise(0.1, seed=0)
    noisy = np.zeros(dataset.n_train, bool)
    noisy[dataset.corruption["label_noise"]["indices"]] = True
    frames, seconds = {}, {}
    with tempfile.TemporaryDirectory() as out:
        for key, extra in (("fp32", {}), ("bf16", {"compute_dtype": "bfloat16"}),
                           ("fp32_seed1", {"seed": 1})):
            started = time.perf_counter()
            run = train_population(dataset, model="mlp", n_models=n_models, subset_fraction=0.5,
                                   out=os.path.join(out, key), n_workers=workers,
                                   progress=False, save_weights=False,
                                   **AGREEMENT[name], **extra)
            seconds[key] = time.perf_counter() - started
            frames[key] = memorization(run)

    def compare(a, b):
        mem_a, mem_b = frames[a]["mem"].to_numpy(), frames[b]["mem"].to_numpy()
        se = np.median(np.r_[frames[a]["se"].to_numpy(), frames[b]["se"].to_numpy()])
        return {"mean_abs_delta_over_median_se": float(np.nanmean(np.abs(mem_a - mem_b)) / se),
                "spearman": spearman(mem_a, mem_b), "median_se": float(se)}

    return {"dataset": name, "n_models": n_models, **AGREEMENT[name],
            "bf16_vs_fp32": compare("fp32", "bf16"), "seed_vs_seed": compare("fp32", "fp32_seed1"),
            "auroc": {key: detection_auroc(frame["mem"].to_numpy(), noisy)
                      for key, frame in frames.items()},
            "seconds": seconds, "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every workload (default: each workload's own)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="the engine's chunk size (default: the models split over the "
                             "workers, at most 32)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="ratios per CPU-second (this process and its children) instead "
                             "of per wall-second; both rates are printed either way")
    parser.add_argument("--full", action="store_true",
                        help="also time 2,000 MLPs x 30 epochs with the engine")
    parser.add_argument("--memory", action="store_true",
                        help="only measure peak memory against chunk size and model count")
    parser.add_argument("--memory-probe", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--agreement", action="store_true",
                        help="only measure bfloat16 vs float32 memorization agreement")
    parser.add_argument("--agreement-models", type=int, default=128)
    parser.add_argument("--only", default=None, help="only the settings whose title has this")
    parser.add_argument("--baseline", default=None, metavar="CHECKOUT",
                        help="also time the engine of another checkout (e.g. a git worktree "
                             "of an older commit), interleaved in the same rounds")
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(*args.memory_probe)
    if args.memory:
        return memory_table([16, 64], [128, 2048])
    if args.agreement:
        print(f"CPU: {cpu_description()}; torch {torch.__version__}")
        for name in AGREEMENT:
            print(json.dumps(precision_agreement(name, args.agreement_models,
                                                 os.cpu_count() or 1)), flush=True)
        return None
    workers = os.cpu_count() or 1
    torch.set_num_threads(workers)  # (a) uses torch's default: all cores
    print(f"CPU: {cpu_description()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"machine: {workers} cores, torch {torch.__version__}, "
          f"compute_dtype='auto' here: {resolve_compute_dtype('auto', 'cpu')}, "
          f"{torch.backends.cpu.get_cpu_capability()}; threads: (a) {workers}, (b)/(r)/(c) 1 "
          f"per process x {workers} processes")
    print()
    workloads = {key: w for key, w in WORKLOADS.items()
                 if args.only is None or args.only.lower() in (key + w.title).lower()}
    if args.epochs is not None:
        workloads = {key: Workload(**{**w.__dict__, "epochs": args.epochs})
                     for key, w in workloads.items()}
    tuned_mlp = None
    for key, workload in workloads.items():
        result = race(workload, args.rounds, workers, args.chunk_size, args.baseline)
        if key == "mlp":
            tuned_mlp = result["wall"][TUNED]
        print("\n".join(report(result, args.rounds, args.cpu_time)), flush=True)
        print()

    if args.full:
        dataset = load("mnist1d")
        subset = PopulationConfig(subset_fraction=SUBSET).subset_size(dataset.n_train)

        def full_run(compute_dtype: str) -> float:
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                train_population(dataset, n_models=2000, subset_fraction=SUBSET, epochs=30,
                                 batch_size=BATCH, lr=LR, chunk_size=args.chunk_size or 32,
                                 out=os.path.join(out, "run"), n_workers=workers,
                                 progress=False, compute_dtype=compute_dtype)
                return time.perf_counter() - started

        runs = {"float32": lambda: full_run("float32"), "bfloat16": lambda: full_run("bfloat16")}
        if args.baseline:  # before and after in the same run
            runs["float32, engine of " + os.path.basename(args.baseline.rstrip("/"))] = (
                lambda: baseline_engine(args.baseline, "mlp", 2000, 30, args.chunk_size or 32,
                                        workers, save_weights=True))
        for label, run in runs.items():
            seconds = run()
            rate = 2000 * 30 * subset / seconds
            versus = (f", {rate / tuned_mlp:.2f}x the tuned loop (b) of this run"
                      if tuned_mlp else "")
            print(f"2,000 MLPs x 30 epochs, {label} (records and weights written): "
                  f"{seconds:.0f} s ({seconds / 60:.2f} min), {rate / 1e6:.3f} M "
                  f"model-example-steps/s{versus}; load average {os.getloadavg()[0]:.2f}",
                  flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
