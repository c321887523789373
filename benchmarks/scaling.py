"""How does the engine scale? By chunk size on one core, and with 1 and 2 Ray workers.

    python benchmarks/scaling.py            # MLP 40-100-100-10 on MNIST-1D, 50% subsets

(1) One single-thread process trains chunks of K models in turn: throughput against K.
(2) The same population through a local Ray cluster with 1 and 2 worker CPUs, against the
    local executor with 1 and 2 processes. Each figure is the median of interleaved rounds;
    start-up (processes, Ray) is included, as a user would see it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from memlab.data import load
from memlab.engine.config import PopulationConfig, membership_mask
from memlab.engine.loop import train_chunk
from memlab.population import train_population
from memlab.population.executor import single_thread

SUBSET, BATCH, LR = 0.5, 128, 0.05


def chunk_size_sweep(dataset, sizes: list[int], epochs: int, rounds: int) -> None:
    print(f"(1) one process, one thread: chunks of K models, {epochs} epochs, "
          f"median of {rounds}")
    print(f"  {'K':>4s} {'M model-example-steps/s':>24s} {'per model (ms/epoch)':>21s}")
    subset = PopulationConfig(subset_fraction=SUBSET).subset_size(dataset.n_train)
    rates: dict[int, list[float]] = {k: [] for k in sizes}
    warm_up = PopulationConfig(n_models=2, subset_fraction=SUBSET, epochs=1, save_weights=False)
    train_chunk(dataset, warm_up, range(2), membership_mask(warm_up, dataset.n_train))
    for _ in range(rounds):
        for k in sizes:
            config = PopulationConfig(n_models=k, subset_fraction=SUBSET, epochs=epochs,
                                      batch_size=BATCH, lr=LR, save_weights=False)
            mask = membership_mask(config, dataset.n_train)
            with single_thread():
                started = time.perf_counter()
                train_chunk(dataset, config, range(k), mask)
                seconds = time.perf_counter() - started
            rates[k].append(k * epochs * subset / seconds)
    for k in sizes:
        rate = statistics.median(rates[k])
        print(f"  {k:>4d} {rate / 1e6:>24.3f} {1e3 * subset / rate:>21.2f}")


def executors(dataset, n_models: int, epochs: int, rounds: int) -> None:
    import ray

    subset = PopulationConfig(subset_fraction=SUBSET).subset_size(dataset.n_train)
    settings = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]
    rates: dict[tuple, list[float]] = {s: [] for s in settings}
    for _ in range(rounds):
        for executor, workers in settings:
            if executor == "ray":
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, private cluster
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                train_population(dataset, n_models=n_models, subset_fraction=SUBSET,
                                 epochs=epochs, batch_size=BATCH, lr=LR, save_weights=False,
                                 out=os.path.join(out, "run"), executor=executor,
                                 n_workers=workers, progress=False)
                seconds = time.perf_counter() - started
            if executor == "ray":
                ray.shutdown()
            rates[(executor, workers)].append(n_models * epochs * subset / seconds)
    print(f"\n(2) {n_models} models x {epochs} epochs, chunks of 32, start-up included, "
          f"median of {rounds}")
    base = statistics.median(rates[("local", 1)])
    for (executor, workers), values in rates.items():
        rate = statistics.median(values)
        print(f"  {executor:5s} x {workers} worker(s): {rate / 1e6:6.3f} M model-example-steps/s"
              f"  ({rate / base:4.2f}x local x 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--models", type=int, default=1024,
                        help="population size for the executor comparison")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load("mnist1d")
    load_average = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, load average at start "
          f"{load_average:.2f}; every worker single-threaded\n")
    chunk_size_sweep(dataset, [1, 4, 8, 16, 32, 64, 128], epochs=3, rounds=args.rounds)
    if not args.skip_ray:
        executors(dataset, n_models=args.models, epochs=10, rounds=args.rounds)


if __name__ == "__main__":
    main()
