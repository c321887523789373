"""DP-SGD speed: the engine's DP step against its own non-DP step and against Opacus.

Workload: MLP 40-100-100-10 on MNIST-1D, 2,000 examples per model, batch 128 (expected, with
Poisson sampling under DP), σ = 1.0, C = 1.0. Contenders, each in this one process on one
thread, per CPU-second, interleaved over rounds (median):

- (c) the engine without DP, K models in one chunk;
- (c-dp) the engine with DP-SGD (Poisson batches, per-example clipping by norms, noise);
- (o) Opacus 1.x training the same models one at a time, as its tutorials do
  (``PrivacyEngine.make_private`` with Poisson sampling, a DataLoader over the model's subset).

The engine's rate is per training epoch: the difference between a chunk trained for 2E and
for E epochs, so set-up and the final records (the same with and without DP) drop out. Opacus
is timed over its E epochs of training alone (no records).

    python benchmarks/dp_population.py            # about 1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from memlab.data import load
from memlab.engine.config import PopulationConfig, membership_mask
from memlab.engine.loop import train_chunk
from memlab.engine.modelspec import ModelSpec
from memlab.engine.precision import cpu_flags, cpu_model
from memlab.engine.task import task_for
from memlab.models import build_model

SIGMA, CLIP, BATCH, LR, HIDDEN = 1.0, 1.0, 128, 0.05, [100, 100]


def engine_epoch_seconds(dataset, k: int, epochs: int, dp: bool) -> float:
    """CPU seconds of one training epoch of K models in one chunk (2E epochs minus E)."""
    seconds = []
    for n_epochs in (epochs, 2 * epochs):
        settings = dict(dp_noise_multiplier=SIGMA, dp_max_grad_norm=CLIP) if dp else {}
        settings["dp_canaries"] = 0  # the DP-SGD step alone (no audit canaries)
        config = PopulationConfig(model="mlp", model_kwargs={"hidden": HIDDEN}, n_models=k,
                                  epochs=n_epochs, batch_size=BATCH, lr=LR,
                                  save_weights=False, **settings)
        task = task_for(dataset, config.task)
        spec = ModelSpec.resolve(config.model, config.model_kwargs, task)
        mask = membership_mask(config, dataset.n_train)
        started = time.process_time()
        train_chunk(task, dataset, config, spec, range(k), mask)
        seconds.append(time.process_time() - started)
    return (seconds[1] - seconds[0]) / epochs


def opacus_epoch_seconds(dataset, k: int, epochs: int) -> float:
    """CPU seconds of one training epoch per model × k: Opacus, one model after another."""
    from opacus import PrivacyEngine

    config = PopulationConfig(n_models=k, batch_size=BATCH)
    mask = membership_mask(config, dataset.n_train)
    x = torch.from_numpy(np.ascontiguousarray(dataset.x_train))
    y = torch.from_numpy(dataset.y_train.astype(np.int64))
    started = time.process_time()
    for model_index in range(k):
        torch.manual_seed(model_index)
        model = build_model("mlp", dataset.input_shape, dataset.n_classes, hidden=HIDDEN)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        members = torch.from_numpy(np.flatnonzero(mask[model_index]))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x[members], y[members]), batch_size=BATCH)
        with warnings.catch_warnings():  # (Opacus warns about secure RNG and hooks)
            warnings.simplefilter("ignore")
            model, optimizer, loader = PrivacyEngine().make_private(
                module=model, optimizer=optimizer, data_loader=loader,
                noise_multiplier=SIGMA, max_grad_norm=CLIP, poisson_sampling=True)
            model.train()
            for _ in range(epochs):
                for inputs, labels in loader:
                    if len(labels) == 0:
                        continue
                    optimizer.zero_grad()
                    torch.nn.functional.cross_entropy(model(inputs), labels).backward()
                    optimizer.step()
    return (time.process_time() - started) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--opacus-models", type=int, default=4,
                        help="models Opacus trains (its rate is per model anyway)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load("mnist1d")
    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    print(f"CPU: {cpu_model()}; ISA: {' '.join(f for f in wanted if f in flags)}; "
          f"torch {torch.__version__}; 1 thread; load average {os.getloadavg()[0]:.1f}")
    per_model_epoch: dict[str, list[float]] = {"(c) engine, no DP": [],
                                               "(c-dp) engine, DP-SGD": [],
                                               "(o) Opacus, one model at a time": []}
    for _ in range(args.rounds):
        per_model_epoch["(c) engine, no DP"].append(
            engine_epoch_seconds(dataset, args.models, args.epochs, dp=False) / args.models)
        per_model_epoch["(c-dp) engine, DP-SGD"].append(
            engine_epoch_seconds(dataset, args.models, args.epochs, dp=True) / args.models)
        per_model_epoch["(o) Opacus, one model at a time"].append(
            opacus_epoch_seconds(dataset, args.opacus_models, args.epochs)
            / args.opacus_models)
    subset = PopulationConfig().subset_size(dataset.n_train)
    print(f"MLP 40-{'-'.join(map(str, HIDDEN))}-10, MNIST-1D, {subset} examples per model, "
          f"batch {BATCH}, sigma {SIGMA}, C {CLIP}; engine chunk of {args.models}; median of "
          f"{args.rounds} rounds; load average now {os.getloadavg()[0]:.1f}\n")
    medians = {name: statistics.median(v) for name, v in per_model_epoch.items()}
    dp_engine = medians["(c-dp) engine, DP-SGD"]
    print("| contender | CPU-ms per model-epoch | the DP engine's speed against it |\n"
          "|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {1e3 * seconds:.2f} | {seconds / dp_engine:.2f}x |")
    print(f"\nDP step / non-DP step: {dp_engine / medians['(c) engine, no DP']:.2f}x "
          "(bar: at most 3x)")
    print(f"Opacus / DP engine per model: "
          f"{medians['(o) Opacus, one model at a time'] / dp_engine:.1f}x (bar: at least 5x)")


if __name__ == "__main__":
    sys.exit(main())
