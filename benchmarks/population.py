"""How fast is the population engine? Three ways to train the same models, side by side.

  (a) the per-model loop a user writes today: nn.Module + torch.optim + DataLoader,
      torch's default thread count, one model after another;
  (b) the same loop tuned: one thread per process, batches by index (no DataLoader),
      the models split over one process per core (started like the engine's workers), and
      as many models as the engine trains, so that both amortize their start-up alike;
  (c) memlab's engine: chunks of models trained as one stacked model, one single-thread
      worker per core, every record written to a run directory; in float32 and (c-bf16)
      with ``compute_dtype="bfloat16"`` (bfloat16 products, float32 master weights).

Earlier releases timed (b) on 32 MLPs only (16 per process, about 4 s): its process
start-up and first optimizer construction (torch.optim imports torch._dynamo, about 1 s)
were then most of its time, and the engine's ratios to (b) came out about 3x too high.

All three train MNIST-1D models on 50% subsets with batch 128 and SGD+momentum. Rounds are
interleaved (a, b, c, a, b, c, ...) so that a busy machine slows all three alike; the
median of each is reported, with the fp32 and bf16 GEMM peaks of all cores measured in the
same run, and the engine's ceiling: the rate at which it would train if its batched matrix
products were all it did (``gemm_ceiling``; every other pass and all dispatch free), which
bounds any speed-up over loop (b) that stacking alone can give.

    python benchmarks/population.py              # MLP 40-100-100-10 and the 1-D CNN
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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memlab.data import load
from memlab.engine.config import PopulationConfig, membership_mask
from memlab.engine.precision import cpu_flags, cpu_model, resolve_compute_dtype
from memlab.models import MODELS, build_model
from memlab.population import train_population
from memlab.population.executor import worker_start_method
from memlab.population.plan import flops_per_example_step

SUBSET, BATCH, LR = 0.5, 128, 0.05


class UserCNN(nn.Module):
    """A user's 1-D CNN with BatchNorm (not a memlab model): how the generic path fares."""

    def __init__(self, input_shape, n_classes, channels: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Unflatten(1, (1, input_shape[-1])),
            nn.Conv1d(1, channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm1d(channels), nn.ReLU(), nn.Flatten(),
            nn.Linear(channels * ((input_shape[-1] + 3) // 4), n_classes))

    def forward(self, x):
        return self.body(x)


MODELS.setdefault("bench_user_cnn", UserCNN)  # the per-model loops build it by name


def cpu_description() -> str:
    """CPU model and the ISA flags that decide GEMM and bfloat16 speed."""
    model, flags = cpu_model(), cpu_flags()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return f"{model}; ISA: {' '.join(f for f in wanted if f in flags) or 'none of ' + str(wanted)}"


# ------------------------------------------------------------------ (a) and (b): per-model loops


def loop_train(dataset, config: PopulationConfig, models: list[int], dataloader: bool) -> None:
    mask = membership_mask(config, dataset.n_train)
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    for k in models:
        model = build_model(config.model, dataset.input_shape, dataset.n_classes,
                            **config.model_kwargs)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        members = torch.from_numpy(np.flatnonzero(mask[k]))
        if dataloader:
            loader = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(x[members], y[members]),
                batch_size=config.batch_size, shuffle=True)
        for _ in range(config.epochs):
            if dataloader:
                batches = iter(loader)
            else:
                order = members[torch.randperm(len(members))]
                batches = ((x[i], y[i]) for i in order.split(config.batch_size))
            for inputs, labels in batches:
                loss = F.cross_entropy(model(inputs), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


def _tuned_worker(args) -> None:
    torch.set_num_threads(1)
    dataset, config, models = args
    loop_train(dataset, config, models, dataloader=False)


def loop_tuned(dataset, config: PopulationConfig, n_processes: int) -> None:
    models = list(range(config.n_models))
    shares = [models[i::n_processes] for i in range(n_processes)]
    context = multiprocessing.get_context(worker_start_method())  # as the engine's workers
    with context.Pool(n_processes) as pool:
        pool.map(_tuned_worker, [(dataset, config, share) for share in shares])


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
    forms them: per linear / 1-D convolution layer the forward, the weight gradient and
    (not for the first layer) the input gradient; convolutions as im2col products."""
    shapes, length, first = [], input_shape[-1], True
    for layer in template.modules():
        if isinstance(layer, nn.Linear):
            rows, inner, cols = layer.out_features, layer.in_features, batch
        elif isinstance(layer, nn.Conv1d):
            (kernel,), (stride,), (padding,) = layer.kernel_size, layer.stride, layer.padding
            length = (length + 2 * padding - kernel) // stride + 1
            rows, inner, cols = layer.out_channels, layer.in_channels * kernel, batch * length
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


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


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


def compare(dataset, model: str, model_kwargs: dict, epochs: int, n_engine: int, n_tuned: int,
            n_naive: int, rounds: int, chunk_size: int, workers: int,
            baseline: str | None = None) -> dict:
    template = build_model(model, dataset.input_shape, dataset.n_classes, **model_kwargs)
    flops = flops_per_example_step(template, dataset.input_shape)
    subset = PopulationConfig(subset_fraction=SUBSET).subset_size(dataset.n_train)

    def config(n_models):
        return PopulationConfig(model=model, model_kwargs=model_kwargs, n_models=n_models,
                                subset_fraction=SUBSET, epochs=epochs, batch_size=BATCH, lr=LR)

    def engine(compute_dtype: str = "float32"):
        with tempfile.TemporaryDirectory() as out:
            train_population(dataset, model=model, model_kwargs=model_kwargs, n_models=n_engine,
                             subset_fraction=SUBSET, epochs=epochs, batch_size=BATCH, lr=LR,
                             chunk_size=chunk_size, out=os.path.join(out, "run"),
                             n_workers=workers, progress=False, save_weights=False,
                             compute_dtype=compute_dtype)

    runs = {
        "(a) per-model loop, DataLoader, default threads":
            (n_naive, lambda: loop_train(dataset, config(n_naive), list(range(n_naive)), True)),
        "(b) tuned loop, 1 thread x 1 process per core":
            (n_tuned, lambda: loop_tuned(dataset, config(n_tuned), workers)),
        "(c) memlab engine": (n_engine, engine),
        "(c-bf16) memlab engine, compute_dtype=bfloat16":
            (n_engine, lambda: engine("bfloat16")),
    }
    if baseline and not model.startswith("bench_"):
        runs["(c0) memlab engine of " + os.path.basename(baseline.rstrip("/"))] = (
            n_engine, lambda: baseline_engine(baseline, model, n_engine, epochs, chunk_size,
                                              workers))
    rates: dict[str, list[float]] = {name: [] for name in runs}
    peaks, peaks_bf16, loads = [], [], []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        peaks.append(gemm_peak(workers))  # in every round: the machine's load drifts
        peaks_bf16.append(gemm_peak(workers, dtype=torch.bfloat16))
        for name, (n_models, fn) in runs.items():
            seconds = fn() if name.startswith("(c0)") else timed(fn)
            rates[name].append(n_models * epochs * subset / seconds)
    median = {name: statistics.median(values) for name, values in rates.items()}
    ceilings = {dtype: gemm_ceiling(template, dataset.input_shape, chunk_size, workers, dtype)
                for dtype in (torch.float32, torch.bfloat16)}
    return {"flops_per_example_step": flops, "rates": median, "ceilings": ceilings,
            "models": {name: n_models for name, (n_models, _) in runs.items()},
            "gemm_peak": statistics.median(peaks), "gemm_peak_bf16": statistics.median(peaks_bf16),
            "load_averages": loads}


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
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=32)
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
    dataset = load("mnist1d")
    print(f"CPU: {cpu_description()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"machine: {workers} cores, torch {torch.__version__}, "
          f"compute_dtype='auto' here: {resolve_compute_dtype('auto', 'cpu')}, "
          f"{torch.backends.cpu.get_cpu_capability()}; threads: (a) {workers}, (b)/(c) 1 per "
          f"process x {workers} processes")
    print()

    settings = {
        "MLP 40-100-100-10": dict(model="mlp", model_kwargs={"hidden": [100, 100]},
                                  n_engine=1024, n_tuned=1024, n_naive=4),
        "CNN1d (MNIST-1D paper, 25 channels)": dict(model="cnn1d", model_kwargs={},
                                                    n_engine=64, n_tuned=64, n_naive=2),
        "user CNN with BatchNorm (generic path)": dict(model="bench_user_cnn", model_kwargs={},
                                                       n_engine=64, n_tuned=64, n_naive=2),
    }
    if args.only:
        settings = {k: v for k, v in settings.items() if args.only.lower() in k.lower()}
    tuned_mlp = None
    for title, setting in settings.items():
        result = compare(dataset, epochs=args.epochs, rounds=args.rounds,
                         chunk_size=args.chunk_size, workers=workers, baseline=args.baseline,
                         **setting)
        rates = result["rates"]
        engine_rate = rates["(c) memlab engine"]
        print(f"{title}: 50% subsets ({dataset.n_train // 2} examples), batch {BATCH}, "
              f"{args.epochs} epochs, median of {args.rounds} interleaved rounds")
        bf16_rate = rates["(c-bf16) memlab engine, compute_dtype=bfloat16"]
        if title.startswith("MLP"):
            tuned_mlp = rates["(b) tuned loop, 1 thread x 1 process per core"]
        print(f"  load average at each round: {result['load_averages']}")
        for name, rate in rates.items():
            print(f"  {name:50s} {result['models'][name]:5d} models {rate / 1e6:8.3f} M "
                  "model-example-steps/s"
                  f"   engine is {engine_rate / rate:5.2f}x, bf16 engine {bf16_rate / rate:5.2f}x")
        gflops = engine_rate * result["flops_per_example_step"] / 1e9
        gflops_bf16 = bf16_rate * result["flops_per_example_step"] / 1e9
        peak, peak_bf16 = result["gemm_peak"], result["gemm_peak_bf16"]
        print(f"  2048^2 GEMM peak, {workers} single-thread processes at once: fp32 {peak:.1f}, "
              f"bf16 {peak_bf16:.1f} GFLOP/s")
        print(f"  engine fp32: {gflops:.1f} GFLOP/s = {100 * gflops / peak:.0f}% of the fp32 peak; "
              f"bf16: {gflops_bf16:.1f} GFLOP/s = {100 * gflops_bf16 / peak_bf16:.0f}% of the "
              f"bf16 peak ({result['flops_per_example_step'] / 1e3:.0f} kFLOP per "
              "example-step, process start-up and record writing included)")
        tuned = rates["(b) tuned loop, 1 thread x 1 process per core"]
        for dtype, ceiling in result["ceilings"].items():
            engine = engine_rate if dtype == torch.float32 else bf16_rate
            print(f"  ceiling, {str(dtype)[6:]}: the step's batched products alone (chunks of "
                  f"{args.chunk_size}, nothing else, no dispatch) {ceiling / 1e6:.3f} M "
                  f"model-example-steps/s = {ceiling / tuned:.2f}x loop (b); the engine "
                  f"reaches {100 * engine / ceiling:.0f}% of it")
        print()

    if args.full:
        subset = PopulationConfig(subset_fraction=SUBSET).subset_size(dataset.n_train)

        def full_run(compute_dtype: str) -> float:
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                train_population(dataset, n_models=2000, subset_fraction=SUBSET, epochs=30,
                                 batch_size=BATCH, lr=LR, chunk_size=args.chunk_size,
                                 out=os.path.join(out, "run"), n_workers=workers,
                                 progress=False, compute_dtype=compute_dtype)
                return time.perf_counter() - started

        runs = {"float32": lambda: full_run("float32"), "bfloat16": lambda: full_run("bfloat16")}
        if args.baseline:  # before and after in the same run
            runs["float32, engine of " + os.path.basename(args.baseline.rstrip("/"))] = (
                lambda: baseline_engine(args.baseline, "mlp", 2000, 30, args.chunk_size,
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
