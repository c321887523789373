"""Train a chunk of K language models at once, each on its own subset of documents.

The sequence-model counterpart of ``memlab.population.engine.train_chunk``, built from the
same parts: weights stacked with a leading model axis (``stack_initial_weights``), one
optimizer over all of them (``make_optimizer``), K forward passes as one through
``functional_call`` under ``vmap`` (``stacked_forward``), and per-model shuffling from model k's
own stream (``model_rng(seed, k, STREAM_SHUFFLE)``). Model k's loss depends only on its own
weights and batch, so the gradient of the summed loss is, slice by slice, each model's own
gradient: K models trained together equal K models trained alone.

Loss: teacher-forced next-token cross-entropy, the mean over the real (non-padding) target
tokens of the model's batch. Records at the end, for every model and every document:

    {split}_acc          (K, n) float32  per-token accuracy: argmax == next token, mean over
                                         the document's real tokens
    {split}_loss         (K, n) float32  mean next-token cross-entropy, nats per token
    train_token_correct  (K, n_train, context) bool  per-token correctness (False at padding)
    epoch_train_loss_mean (K, epochs) float32

(split ``test`` holds the validation documents, to match the run store's names.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from memlab.errors import ConfigError
from memlab.lm.models import build_lm
from memlab.population.config import (
    STREAM_DROPOUT,
    STREAM_SHUFFLE,
    PopulationConfig,
    model_rng,
    model_seed,
)
from memlab.population.engine import (
    ChunkResult,
    make_optimizer,
    stack_initial_weights,
    stacked_forward,
)
from memlab.text import Documents

EVAL_FLOATS = 3 * 2**21  # logits per evaluation pass (K * docs * T * V): cache-sized, ~25 MiB


def build_template(documents: Documents, config: PopulationConfig) -> torch.nn.Module:
    return build_lm(config.model, documents.n_vocab, documents.context, **config.model_kwargs)


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per token: logits (..., T, V), targets (..., T) -> (..., T) nats."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(),
                           reduction="none").view(targets.shape)


def train_lm_chunk(documents: Documents, config: PopulationConfig, models: range,
                   membership: np.ndarray, device: str | torch.device = "cpu",
                   on_epoch: Callable[[int], None] | None = None) -> ChunkResult:
    """Train language models ``models`` (a range of model indices) and record them.

    membership: (K, n_train) bool rows of the population's membership mask for these models.
    config.batch_size counts documents; on_epoch is called with K after every epoch.
    """
    started = time.perf_counter()
    device = torch.device(device)
    template = build_template(documents, config)
    params = stack_initial_weights(template, config, models, device)
    for tensor in params.values():
        tensor.requires_grad_(True)
    forward = stacked_forward(template, train=True)
    optimizer = make_optimizer(list(params.values()), config)

    tokens = torch.as_tensor(documents.tokens_train, device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (n, T) each
    target_mask = torch.as_tensor(documents.target_mask("train"), device=device)

    members = np.stack([np.flatnonzero(row) for row in membership])  # (K, m), sorted
    shufflers = [model_rng(config.seed, k, STREAM_SHUFFLE) for k in models]
    n_members = members.shape[1]
    torch.manual_seed(model_seed(config.seed, models.start, STREAM_DROPOUT))
    epoch_losses = []
    for epoch in range(config.epochs):
        order = np.stack([row[rng.permutation(n_members)] for row, rng in zip(members, shufflers)])
        order = torch.as_tensor(order, device=device)
        loss_sum = torch.zeros(len(models), device=device)
        token_sum = torch.zeros(len(models), device=device)
        for start in range(0, n_members, config.batch_size):
            batch = order[:, start:start + config.batch_size]  # (K, b) document indices
            flat = batch.flatten()
            x = inputs.index_select(0, flat).view(*batch.shape, -1)  # (K, b, T)
            y = targets.index_select(0, flat).view(*batch.shape, -1)
            weight = target_mask.index_select(0, flat).view(*batch.shape, -1).float()
            losses = token_loss(forward(params, {}, x), y)  # (K, b, T)
            n_tokens = weight.sum((1, 2))  # (K,)
            per_model = (losses * weight).sum((1, 2)) / n_tokens
            for tensor in params.values():
                tensor.grad = None
            per_model.sum().backward()  # summing over models keeps their gradients apart
            optimizer.step()
            loss_sum += per_model.detach() * n_tokens
            token_sum += n_tokens
        epoch_loss = (loss_sum / token_sum).cpu()
        if not torch.isfinite(epoch_loss).all():
            diverged = [models[i] for i in np.flatnonzero(~torch.isfinite(epoch_loss).numpy())]
            raise ConfigError(f"training diverged: the loss of language model(s) "
                              f"{diverged[:5]} became non-finite in epoch {epoch + 1}; lower "
                              f"the learning rate (lr={config.lr})")
        epoch_losses.append(epoch_loss)
        if on_epoch is not None:
            on_epoch(len(models))

    arrays = {"epoch_train_loss_mean": torch.stack(epoch_losses, 1).numpy()}
    for split in ("train", "test"):
        records = evaluate_lm(template, params, documents, split, device)
        arrays[f"{split}_acc"] = records["acc"]
        arrays[f"{split}_loss"] = records["loss"]
        if split == "train":
            arrays["train_token_correct"] = records["token_correct"]
    weights = None
    if config.save_weights:
        weights = {name: t.detach().cpu().numpy() for name, t in params.items()}
    tokens_per_epoch = int(documents.lengths_train[members].sum())  # all K models
    return ChunkResult(arrays, weights, time.perf_counter() - started,
                       tokens_per_epoch * config.epochs)


@torch.no_grad()
def evaluate_lm(template: torch.nn.Module, params: dict[str, torch.Tensor],
                documents: Documents, split: str, device: torch.device | str = "cpu"
                ) -> dict[str, np.ndarray]:
    """Teacher-forced records of K stacked models on every document of ``split``.

    Returns acc (K, n) float32 per-token accuracy, loss (K, n) float32 nats per token,
    token_correct (K, n, T) bool (False at padding positions).
    """
    plain = {name: tensor.detach() for name, tensor in params.items()}
    forward = stacked_forward(template, train=False, shared_input=True)
    tokens = torch.as_tensor(getattr(documents, f"tokens_{split}"), device=device)
    mask = torch.as_tensor(documents.target_mask(split), device=device)
    n_models = next(iter(plain.values())).shape[0]
    n, T = len(tokens), documents.context
    step = max(1, EVAL_FLOATS // (n_models * T * documents.n_vocab))
    acc, loss, correct = [], [], []
    for start in range(0, n, step):
        x, y = tokens[start:start + step, :-1], tokens[start:start + step, 1:]
        m = mask[start:start + step]
        logits = forward(plain, {}, x)  # (K, b, T, V)
        hit = (logits.argmax(-1) == y) & m  # (K, b, T)
        nats = token_loss(logits, y.expand(n_models, -1, -1)) * m
        count = m.sum(1)  # (b,)
        acc.append(hit.sum(2) / count)
        loss.append(nats.sum(2) / count)
        correct.append(hit)
    return {"acc": torch.cat(acc, 1).float().cpu().numpy(),
            "loss": torch.cat(loss, 1).float().cpu().numpy(),
            "token_correct": torch.cat(correct, 1).cpu().numpy()}
