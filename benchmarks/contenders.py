"""The models and the trainers memlab's engine is raced against (benchmarks only).

Every contender trains the same models on the same subsets with SGD + momentum and then
computes the same per-example records as the engine does at the end of a chunk: for every
model, on every training and test example, the loss, whether it is correct and the log-odds
of the true class (``records``). Contenders:

- ``loop_train``: the per-model loop a user writes (nn.Module + torch.optim), with a
  DataLoader (naive) or batches by index (tuned);
- ``recipe_train``: the PyTorch documentation's model-ensembling recipe
  (``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``) turned into training
  with ``torch.optim.SGD`` over the stacked parameters: what a user who read the docs writes.
  BatchNorm's running statistics are stacked buffers updated in place under vmap, as in the
  engine (the same work).

The user models are plain PyTorch, unknown to memlab: the engine trains them on its
generic path.
"""

from __future__ import annotations

import copy
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from memlab.engine.config import PopulationConfig, membership_mask
from memlab.models import MODELS, build_model

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.small_resnet import Block  # noqa: E402  (the repository's user-model example)


class UserCNN1d(nn.Module):
    """A user's 1-D CNN with BatchNorm for MNIST-1D."""

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


class UserCNN2d(nn.Module):
    """A user's small CNN with BatchNorm for 28x28 MNIST: Conv2d 1->8 stride 2 + BN + ReLU,
    Conv2d 8->16 stride 2 + BN + ReLU, Linear 784->10."""

    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(input_shape[0], 8, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
            nn.Linear(16 * ((input_shape[1] + 3) // 4) * ((input_shape[2] + 3) // 4),
                      n_classes))

    def forward(self, x):
        return self.body(x)


class UserResNet(nn.Module):
    """A user's ResNet-style CNN for 28x28 MNIST: a stride-2 stem, one residual block of two
    3x3 convolutions with BatchNorm, max pooling and a linear head."""

    def __init__(self, input_shape, n_classes, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU())
        self.block = Block(width)  # two 3x3 convolutions with BatchNorm and a skip
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(width * (input_shape[1] // 4) ** 2, n_classes))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


# registered so that the loops and the engine build them by name
MODELS.setdefault("bench_user_cnn1d", UserCNN1d)
MODELS.setdefault("bench_user_cnn2d", UserCNN2d)
MODELS.setdefault("bench_user_resnet", UserResNet)


# ------------------------------------------------------------------ records


def records(forward, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> dict:
    """Per-example loss, correctness and true-class log-odds of ``forward`` (x (b, ...) ->
    logits (..., b, C)) on (x, y), in eval batches: the engine's final records."""
    parts: dict[str, list] = {"loss": [], "correct": [], "log_odds": []}
    with torch.no_grad():
        for start in range(0, len(x), batch):
            logits = forward(x[start:start + batch]).float()
            labels = y[start:start + batch].expand(*logits.shape[:-1])
            log_probs = torch.log_softmax(logits, -1)
            true = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            parts["loss"].append(-true)
            parts["correct"].append(logits.argmax(-1) == labels)
            parts["log_odds"].append(true - torch.log1p(-true.exp().clamp(max=1 - 1e-7)))
    return {name: torch.cat(values, -1) for name, values in parts.items()}


def _tensors(dataset):
    return (torch.from_numpy(np.ascontiguousarray(dataset.x_train)),
            torch.from_numpy(dataset.y_train.astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(dataset.x_test)),
            torch.from_numpy(dataset.y_test.astype(np.int64)))


# ------------------------------------------------------------------ per-model loops


def loop_train(dataset, config: PopulationConfig, models: list[int], dataloader: bool,
               device: str = "cpu") -> None:
    """One model after another, each with its own optimizer, then its records."""
    mask = membership_mask(config, dataset.n_train)
    x, y, x_test, y_test = (t.to(device) for t in _tensors(dataset))
    for k in models:
        torch.manual_seed(k)
        model = build_model(config.model, dataset.input_shape, dataset.n_classes,
                            **config.model_kwargs).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        members = torch.from_numpy(np.flatnonzero(mask[k])).to(device)
        if dataloader:
            loader = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(x[members], y[members]),
                batch_size=config.batch_size, shuffle=True)
        model.train()
        for _ in range(config.epochs):
            if dataloader:
                batches = iter(loader)
            else:
                order = members[torch.randperm(len(members), device=device)]
                batches = ((x[i], y[i]) for i in order.split(config.batch_size))
            for inputs, labels in batches:
                loss = F.cross_entropy(model(inputs), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        records(model, x, y)
        records(model, x_test, y_test)


# ------------------------------------------------------------------ the torch.func recipe


def recipe_train(dataset, config: PopulationConfig, models: list[int], device: str = "cpu",
                 compute_dtype: torch.dtype = torch.float32) -> None:
    """The PyTorch docs' model ensembling (stack_module_state + functional_call + vmap),
    trained: one stacked forward and backward for all models, torch.optim.SGD (foreach) over
    the stacked parameters, each model its own subset and batch order; then the records
    with the shared test inputs (in_dims=None, as in the docs)."""
    mask = membership_mask(config, dataset.n_train)
    x, y, x_test, y_test = (t.to(device) for t in _tensors(dataset))
    members = []
    instances = []
    for k in models:
        torch.manual_seed(k)
        instances.append(build_model(config.model, dataset.input_shape, dataset.n_classes,
                                     **config.model_kwargs).to(device))
        members.append(np.flatnonzero(mask[k]))
    params, buffers = stack_module_state(instances)
    base = copy.deepcopy(instances[0]).to("meta")

    def one_model(params, buffers, inputs):
        return functional_call(base, (params, buffers), (inputs,))

    train_forward = vmap(one_model)
    optimizer = torch.optim.SGD(list(params.values()), lr=config.lr, momentum=config.momentum)
    members = torch.as_tensor(np.stack(members), device=device)  # (K, m)
    n_members = members.shape[1]
    base.train()
    low = compute_dtype != torch.float32
    for _ in range(config.epochs):
        order = torch.gather(members, 1, torch.argsort(
            torch.rand(members.shape, device=device), dim=1))
        for start in range(0, n_members, config.batch_size):
            index = order[:, start:start + config.batch_size]  # (K, b)
            with torch.autocast(torch.device(device).type, compute_dtype, enabled=low):
                logits = train_forward(params, buffers, x[index])  # (K, b, C)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y[index].flatten(),
                                       reduction="none").view(index.shape).mean(1).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    base.eval()
    shared = vmap(one_model, in_dims=(0, 0, None))
    detached = {name: p.detach() for name, p in params.items()}

    def forward(inputs):
        with torch.autocast(torch.device(device).type, compute_dtype, enabled=low):
            return shared(detached, buffers, inputs)
    records(forward, x, y)
    records(forward, x_test, y_test)
