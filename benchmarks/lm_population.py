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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import numpy as np
import torch

from memlab.data.text import synthetic_corpus
from memlab.models.lm import build_lm
from memlab.population.config import (
    STREAM_SHUFFLE,
    PopulationConfig,
    membership_mask,
    model_rng,
)
from memlab.population.engine import cpu_flags, cpu_model, native_bfloat16, train_chunk
from memlab.population.modelspec import ModelSpec
from memlab.population.task import TASKS, token_loss


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
    """(b)/(c): memlab's one training loop (``engine.train_chunk``, the language-model
    task), chunk by chunk; its end-of-training evaluation is included."""
    task = TASKS["language_model"]
    spec = ModelSpec.resolve(config.model, config.model_kwargs, task)
    for start_model in range(models.start, models.stop, chunk):
        block = range(start_model, min(start_model + chunk, models.stop))
        train_chunk(task, documents, config, spec, block,
                    membership_mask(config, documents.n_train, block))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="documents per step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    documents = synthetic_corpus()
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
