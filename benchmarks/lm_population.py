"""How much does training language models as a stacked population save over a per-model loop?

  (a) loop: one ``nn.Module`` per model, plain autograd and ``torch.optim.Adam``, models
      trained one after another (what a user writes by hand);
  (b) engine, chunk of 1: memlab's LM chunk trainer (vmap over functional_call) one model at
      a time: the cost of the machinery alone;
  (c) engine, chunk of K: the K models trained together as one stacked model, in float32
      and with ``compute_dtype="bfloat16"`` (autocast: bfloat16 products, float32 masters).

All train the same models (synthetic corpus, 25% subsets, batch 32 documents, Adam) on one
thread, training only (no evaluation). Rounds are interleaved (a, b, c, a, b, c, ...) so a
busy machine slows all three alike; the median of each is reported, in tokens per second
(target tokens, summed over models).

    python benchmarks/lm_population.py                   # transformer and MLP, K = 16
    python benchmarks/lm_population.py --batch-size 8       # small steps: overhead-bound
    python benchmarks/lm_population.py --roofline           # where a step's time goes

``--roofline`` profiles one model's training step (the loop's), splits it into matrix
products (their FLOPs), the other kernels (the bytes their tensors span: a lower bound on
their traffic) and the time outside any kernel (Python, dispatch), and measures on one
thread in the same run the GEMM rate (at the model's own shape and at 2048²) and the
memory bandwidth at the size of one activation (in cache); the best rates seen, the loop's
own kernels included, count. The fastest
a stacked step could be per model is FLOPs / GEMM rate + bytes / bandwidth: stacking
removes dispatch and can feed larger GEMMs, but every model's arithmetic and elementwise
traffic stay. The loop's step time divided by that bounds what any stacking can gain; the
engine's stacked step (K models, unprofiled) is timed beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import time

import numpy as np
import torch

from memlab.data.text import synthetic_corpus
from memlab.engine.config import (
    STREAM_SHUFFLE,
    PopulationConfig,
    membership_mask,
    model_rng,
)
from memlab.engine.loop import train_chunk
from memlab.engine.modelspec import ModelSpec
from memlab.engine.precision import cpu_flags, cpu_model, native_bfloat16
from memlab.engine.task import TASKS, token_loss
from memlab.models.lm import build_lm


def loop_train(documents, config: PopulationConfig, models: range) -> None:
    """(a): one ordinary model at a time."""
    tokens = torch.as_tensor(documents.tokens_train)
    weight = torch.as_tensor(documents.target_mask("train")).float()
    mask = membership_mask(config, documents.n_train, models)
    for row, k in enumerate(models):
        model = build_lm(config.model, documents.n_vocab, documents.context,
                         **config.model_kwargs)
        spec = ModelSpec.resolve(config.model, config.model_kwargs, TASKS["language_model"])
        model.load_state_dict(spec.initial_state(config, (documents.context,),
                                                 documents.n_vocab, k))
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
        members = np.flatnonzero(mask[row])
        rng = model_rng(config.seed, k, STREAM_SHUFFLE)
        for _ in range(config.epochs):
            order = torch.as_tensor(members[rng.permutation(len(members))])
            for start in range(0, len(order), config.batch_size):
                batch = order[start:start + config.batch_size]
                losses = token_loss(model(tokens[batch, :-1]), tokens[batch, 1:])
                loss = (losses * weight[batch]).sum() / weight[batch].sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


def engine_train(documents, config: PopulationConfig, models: range, chunk: int) -> None:
    """(b)/(c): memlab's one training loop (``loop.train_chunk``, the language-model
    task), chunk by chunk; its end-of-training evaluation is included."""
    task = TASKS["language_model"]
    spec = ModelSpec.resolve(config.model, config.model_kwargs, task)
    for start_model in range(models.start, models.stop, chunk):
        block = range(start_model, min(start_model + chunk, models.stop))
        train_chunk(task, documents, config, spec, block,
                    membership_mask(config, documents.n_train, block))


GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def _time_steps(step, n_steps: int = 20) -> float:
    """Seconds per ``step()``: best of 5 blocks of ``n_steps``, after 5 warm-up steps."""
    for _ in range(5):
        step()
    blocks = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n_steps):
            step()
        blocks.append((time.perf_counter() - started) / n_steps)
    return min(blocks)


def _profile_steps(step, n_steps: int = 20) -> dict:
    """Per ``step()``: the FLOPs of its matrix products and the bytes its other leaf kernels'
    tensors span, and the shares of a profiled block's time spent in matrix products, in
    the other kernels and outside any kernel (Python, dispatch, autograd bookkeeping)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        started = time.perf_counter()
        for _ in range(n_steps):
            step()
        wall = time.perf_counter() - started
    gemm_s = gemm_flops = other_s = other_bytes = 0.0
    for event in prof.events():
        if event.self_cpu_time_total <= 0 or not event.name.startswith("aten::"):
            continue
        if event.name in GEMM_OPS:
            gemm_s += event.self_cpu_time_total / 1e6
            gemm_flops += event.flops or 0
        elif not event.cpu_children:
            other_s += event.self_cpu_time_total / 1e6
            # its tensor arguments read and the largest one written: a lower bound on the
            # kernel's memory traffic (so the time bound below is a lower bound too)
            sizes = [int(np.prod(shape)) for shape in event.input_shapes if shape]
            other_bytes += 4 * (sum(sizes) + max(sizes, default=0))
    return {"gemm_flops": gemm_flops / n_steps, "other_bytes": other_bytes / n_steps,
            "gemm_share": gemm_s / wall, "other_share": other_s / wall,
            "outside_share": max(0.0, 1 - (gemm_s + other_s) / wall)}


def _gemm_rate(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Single-thread float32 GEMM FLOP/s at one shape."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b, out=out)
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - started)


def _bandwidth(n_floats: int, seconds: float = 1.0) -> float:
    """Single-thread bytes/s of c = a + b on float32 tensors of n_floats each (3 streams)."""
    a, b, c = torch.randn(n_floats), torch.randn(n_floats), torch.empty(n_floats)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.add(a, b, out=c)
        count += 1
    return 3 * 4 * n_floats * count / (time.perf_counter() - started)


def roofline(documents, name: str, n_models: int, batch_size: int) -> dict:
    """The loop's and the stacked engine's step of the ``name`` LM, split as in the module
    docstring, and the bound on what stacking can gain (see there)."""
    from memlab.engine import recipe
    from memlab.engine.loop import StackedParameters, _GenericStep

    config = PopulationConfig(model=name, n_models=n_models, subset_fraction=0.25, epochs=1,
                              batch_size=batch_size, optimizer="adam", lr=3e-3, momentum=0.0)
    tokens = torch.as_tensor(documents.tokens_train)
    weight = torch.as_tensor(documents.target_mask("train")).float()
    batch = torch.arange(batch_size)
    model = build_lm(name, documents.n_vocab, documents.context)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)

    def loop_step():
        losses = token_loss(model(tokens[batch, :-1]), tokens[batch, 1:])
        loss = (losses * weight[batch]).sum() / weight[batch].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    task = TASKS["language_model"]
    spec = ModelSpec.resolve(name, {}, task)
    template = spec.build((documents.context,), documents.n_vocab)
    state = {key: torch.stack([value] * n_models) for key, value in template.state_dict().items()}
    stacked = StackedParameters(state)
    engine_step = _GenericStep(stacked, {}, template, task, 0.0)
    engine_optimizer = recipe.make_optimizer(stacked.leaves, config,
                                             {n: len(s) for n, s in stacked.shapes.items()})
    split = task.tensors(documents, torch.device("cpu"))["train"]
    x, y = task.batch(split, torch.arange(n_models * batch_size).view(n_models, batch_size)
                      % documents.n_train)

    def stacked_step():
        engine_step(x, y)
        engine_optimizer.step()

    rows = batch_size * (documents.context - 1)
    d_model = template.head.in_features
    # Three interleaved rounds, so that all see the same machine; the fastest loop step and
    # the highest rates count (the highest rates make the bound the most generous).
    loop_s = engine_s = math.inf
    gemm_model_shape = gemm_peak = bandwidth_cache = bandwidth_memory = 0.0
    for _ in range(3):
        loop_s = min(loop_s, _time_steps(loop_step))
        engine_s = min(engine_s, _time_steps(stacked_step, n_steps=4))
        gemm_model_shape = max(gemm_model_shape, _gemm_rate(rows, d_model, 4 * d_model))
        gemm_peak = max(gemm_peak, _gemm_rate(2048, 2048, 2048))
        bandwidth_cache = max(bandwidth_cache, _bandwidth(rows * 4 * d_model))  # in cache
        bandwidth_memory = max(bandwidth_memory, _bandwidth(n_models * rows * 4 * d_model))
    loop = _profile_steps(loop_step)
    achieved_gemm = loop["gemm_flops"] / (loop["gemm_share"] * loop_s)
    achieved_bandwidth = loop["other_bytes"] / (loop["other_share"] * loop_s)
    # The best rates seen anywhere (the loop's own kernels included): a generous bound.
    gemm = max(gemm_model_shape, gemm_peak, achieved_gemm)
    bandwidth = max(bandwidth_cache, achieved_bandwidth)
    best = loop["gemm_flops"] / gemm + loop["other_bytes"] / bandwidth
    return {
        "model": name, "n_models": n_models, "batch_size": batch_size,
        "loop_step_ms": 1e3 * loop_s,
        "loop_share_matrix_products": loop["gemm_share"],
        "loop_share_other_kernels": loop["other_share"],
        "loop_share_outside_kernels": loop["outside_share"],
        "loop_gemm_gflops": achieved_gemm / 1e9,
        "loop_other_kernels_gb_per_s": achieved_bandwidth / 1e9,
        "loop_mflop_per_step": loop["gemm_flops"] / 1e6,
        "loop_other_mb_per_step": loop["other_bytes"] / 1e6,
        "gemm_gflops_at_model_shape": gemm_model_shape / 1e9,
        "gemm_gflops_2048": gemm_peak / 1e9,
        "bandwidth_gb_per_s_in_cache": bandwidth_cache / 1e9,
        "bandwidth_gb_per_s_beyond_cache": bandwidth_memory / 1e9,
        "bound_ms_per_model": 1e3 * best,
        "max_speedup_from_stacking": loop_s / best,
        f"engine_chunk_{n_models}_step_ms_per_model": 1e3 * engine_s / n_models,
        "measured_speedup": loop_s / (engine_s / n_models),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="documents per step")
    parser.add_argument("--roofline", action="store_true",
                        help="only the step profile and the bound on stacking's gain")
    args = parser.parse_args()
    torch.set_num_threads(1)
    documents = synthetic_corpus()
    if args.roofline:
        print(json.dumps({"cpu": cpu_model(), "torch": torch.__version__, "threads": 1,
                          "isa": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16",
                                                       "amx_bf16"}),
                          "load_average": os.getloadavg()[0]}))
        for name in ("transformer", "mlp"):
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in
                              roofline(documents, name, args.models, args.batch_size).items()},
                             indent=1), flush=True)
        return
    models = range(args.models)
    results = {"models": args.models, "epochs": args.epochs, "rounds": args.rounds,
               "batch_size": args.batch_size,
               "load_average_before": os.getloadavg()[0], "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "isa": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
               "native_bfloat16": native_bfloat16("cpu"), "cpu": cpu_model()}
    print(json.dumps(results), flush=True)
    for name, kwargs in (("transformer", {}), ("mlp", {})):
        config = PopulationConfig(model=name, model_kwargs=kwargs, n_models=args.models,
                                  subset_fraction=0.25, epochs=args.epochs,
                                  batch_size=args.batch_size,
                                  optimizer="adam", lr=3e-3, momentum=0.0)
        bf16_config = dataclasses.replace(config, compute_dtype="bfloat16")
        mask = membership_mask(config, documents.n_train)
        tokens = int((mask * documents.lengths_train).sum()) * args.epochs
        ways = {"loop": lambda c=config: loop_train(documents, c, models),
                "engine_chunk_1": lambda c=config: engine_train(documents, c, models, 1),
                f"engine_chunk_{args.models}":
                    lambda c=config: engine_train(documents, c, models, args.models),
                f"engine_chunk_{args.models}_bf16":
                    lambda c=bf16_config: engine_train(documents, c, models, args.models)}
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.rounds):
            for way, train in ways.items():
                started = time.perf_counter()
                train()
                times[way].append(time.perf_counter() - started)
        medians = {way: statistics.median(t) for way, t in times.items()}
        results[name] = {
            "tokens_per_round": tokens,
            **{f"{way}_tokens_per_s": round(tokens / s) for way, s in medians.items()},
            "speedup_vs_loop": round(medians["loop"] / medians[f"engine_chunk_{args.models}"],
                                     2),
            "speedup_vs_chunk_1": round(medians["engine_chunk_1"]
                                        / medians[f"engine_chunk_{args.models}"], 2),
            "bf16_speedup_vs_loop": round(medians["loop"]
                                          / medians[f"engine_chunk_{args.models}_bf16"], 2),
        }
        print(name, json.dumps(results[name]), flush=True)
    results["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
