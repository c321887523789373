"""How fast can *any* stacked engine train the user CNN with BatchNorm? A design ceiling.

The race (`population.py`) measures memlab's engine on the user CNN at about 1.0x the tuned
per-model loop, and issue 32 asked for 2x. This script measures what stacking itself allows
on this CPU, with none of memlab's machinery: the K models written by hand as one plain
PyTorch module (a convolution with ``groups=K`` over the K*C channels held channels-last,
torch's own BatchNorm over K*C channels, one batched product for the K linear heads), no
vmap, no run directory, no records files — trained eagerly, under bfloat16 autocast, and
with its training step compiled by ``torch.compile`` (steady state; the compile's own CPU
time is reported apart). Every contender trains the same K models on the same subsets for
the same epochs and computes the same records (loss, correctness, log-odds on 20,000
examples); each round runs the contenders one after another in one process on one thread,
rates per CPU-second of this process, median of the rounds.

    python benchmarks/stacking_ceiling.py            # about 2 minutes on 2 cores
    python benchmarks/stacking_ceiling.py --no-compile

If the hand-stacked module is not 2x the loop, no engine that stacks models in eager
PyTorch is: the small-channel convolutions and the BatchNorm and ReLU passes around them
are memory-bound, and stacking K models moves K times the bytes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contenders import loop_train, records  # noqa: E402

from memlab.data import load  # noqa: E402
from memlab.engine.config import PopulationConfig, membership_mask  # noqa: E402
from memlab.engine.precision import cpu_flags, cpu_model  # noqa: E402

K, N_TRAIN, EPOCHS, BATCH, EVAL_BATCH, LR = 8, 10_000, 2, 128, 256, 0.05


class HandStackedCNN(nn.Module):
    """K copies of ``contenders.UserCNN2d`` as one module: input (b, K, 28, 28), one channel
    per model, output (K, b, 10)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.conv1 = nn.Conv2d(k, 8 * k, 3, stride=2, padding=1, bias=False, groups=k)
        self.norm1 = nn.BatchNorm2d(8 * k)
        self.conv2 = nn.Conv2d(8 * k, 16 * k, 3, stride=2, padding=1, bias=False, groups=k)
        self.norm2 = nn.BatchNorm2d(16 * k)
        self.weight = nn.Parameter(torch.randn(k, 16 * 7 * 7, 10) / 28)
        self.bias = nn.Parameter(torch.zeros(k, 1, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = F.relu(self.norm2(self.conv2(h)))
        h = h.reshape(h.shape[0], self.k, -1).transpose(0, 1)  # (K, b, 784)
        return torch.baddbmm(self.bias, h, self.weight)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def hand_stacked(dataset, config: PopulationConfig, mode: str) -> float:
    """Train and record the K models as one hand-written module; the CPU seconds of the
    steps on which ``torch.compile`` compiled (the first of each batch shape; 0 unless mode
    is "compiled")."""
    mask = membership_mask(config, dataset.n_train)
    x = torch.from_numpy(np.ascontiguousarray(dataset.x_train))
    y = torch.from_numpy(dataset.y_train.astype(np.int64))
    x_test = torch.from_numpy(np.ascontiguousarray(dataset.x_test))
    y_test = torch.from_numpy(dataset.y_test.astype(np.int64))
    model = HandStackedCNN(K).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=config.momentum)
    members = torch.as_tensor(np.stack([np.flatnonzero(mask[k]) for k in range(K)]))
    low = mode == "bf16"

    def loss_of(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16, enabled=low):
            logits = model(inputs).float()
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                               reduction="none").view(labels.shape).mean(1).sum()

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> None:
        loss_of(inputs, labels).backward()

    if mode == "compiled":
        step = torch.compile(step)
    compile_cpu, shapes_seen = 0.0, set()
    model.train()
    for _ in range(config.epochs):
        order = torch.gather(members, 1, torch.argsort(torch.rand(members.shape), dim=1))
        for start in range(0, members.shape[1], BATCH):
            index = order[:, start:start + BATCH]  # (K, b)
            inputs = x[index.T].reshape(index.shape[1], K, 28, 28).contiguous(
                memory_format=torch.channels_last)
            optimizer.zero_grad()
            before = cpu_seconds()
            step(inputs, y[index])
            if mode == "compiled" and index.shape not in shapes_seen:  # a (re)compile
                compile_cpu += cpu_seconds() - before
            shapes_seen.add(index.shape)
            optimizer.step()
    model.eval()

    def shared(inputs: torch.Tensor) -> torch.Tensor:
        stacked = inputs.expand(-1, K, -1, -1).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", torch.bfloat16, enabled=low):
            return model(stacked).float()
    records(shared, x, y, EVAL_BATCH)
    records(shared, x_test, y_test, EVAL_BATCH)
    return compile_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out the torch.compile contender (needs a C++ compiler)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import contenders  # noqa: F401  (registers bench_user_cnn2d)

    dataset = load("mnist").subset(range(N_TRAIN))
    config = PopulationConfig(model="bench_user_cnn2d", n_models=K, subset_fraction=0.5,
                              epochs=EPOCHS, batch_size=BATCH, lr=LR)
    steps = K * EPOCHS * config.subset_size(dataset.n_train)
    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    print(f"CPU: {cpu_model()}; ISA: {' '.join(f for f in wanted if f in flags)}; "
          f"torch {torch.__version__}; 1 thread; load average {os.getloadavg()[0]:.1f}")
    print(f"{K} user CNNs with BatchNorm, {config.subset_size(dataset.n_train)} MNIST "
          f"examples each, {EPOCHS} epochs, batch {BATCH}, records on "
          f"{dataset.n_train + dataset.n_test} examples; median of {args.rounds} rounds")
    contenders_ = {
        "(b) per-model loop, tuned": lambda: loop_train(dataset, config, list(range(K)),
                                                       dataloader=False) or 0.0,
        "(s) hand-stacked module, eager fp32": lambda: hand_stacked(dataset, config, "eager"),
        "(s-bf16) hand-stacked module, eager bf16": lambda: hand_stacked(dataset, config,
                                                                         "bf16"),
    }
    if not args.no_compile:
        contenders_["(s-compiled) hand-stacked module, torch.compile step (compile time "
                    "left out)"] = lambda: hand_stacked(dataset, config, "compiled")
    rates: dict[str, list[float]] = {name: [] for name in contenders_}
    compile_cpu: list[float] = []
    for _ in range(args.rounds):
        for name, run in contenders_.items():
            before = cpu_seconds()
            left_out = run()
            if left_out:
                compile_cpu.append(left_out)
            rates[name].append(steps / (cpu_seconds() - before - left_out))
    loop = statistics.median(rates["(b) per-model loop, tuned"])
    print("\n| contender | k model-example-steps per CPU-s | of loop (b) |\n|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate / 1e3:.1f} | {rate / loop:.2f}x |")
    if compile_cpu:
        print(f"\ntorch.compile's compiling steps took {statistics.median(compile_cpu):.2f} CPU-s "
              "(left out of its rate above; inductor reuses its on-disk cache between runs)")


if __name__ == "__main__":
    main()
