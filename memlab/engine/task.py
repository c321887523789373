"""Tasks: what a population learns, and what it records about every example.

The engine's loop (``loop.train_chunk``) is the same for every task; a task supplies the
task-specific parts, explicitly:

==================  ====================================================================
``outputs(data)``   output width the model must produce (classes, 1, vocabulary)
``check_output``    the model's output shape on a dry batch, with a one-line error
``tensors``         the data as tensors on the device, per split
``batch``           the stacked batch (K, b, ...) of example indices (K, b)
``loss``            per-model mean loss (K,) of stacked outputs
``evaluate``        per-model, per-example records of a split, model axis first
``score_record``    the record that scores memorization (``correct`` / ``acc``)
``save`` / ``load`` the data's copy in the run directory
==================  ====================================================================

Built in: :class:`ClassificationTask` (softmax over classes: vectors, signals, images),
:class:`BinaryTask` (one logit, logistic loss) and :class:`LanguageModelTask`
(next-token prediction on :class:`memlab.data.text.Documents`). ``TASKS`` maps the names the
manifest records to them; ``task_for(data, name)`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from memlab.data import Dataset, load_npy_dir, load_npz
from memlab.data.text import Documents
from memlab.errors import ConfigError

Forward = Callable[[torch.Tensor], torch.Tensor]  # shared inputs (b, ...) -> (K, b, ...)

# Examples per evaluation pass at most. Small enough that a chunk's activations stay in
# cache (an MLP chunk's records took 1.5x as long with 2,048), and independent of the
# number of models so that records do not depend on the chunk size.
EVAL_BATCH = 256
EVAL_MEMORY_BYTES = 256 * 2**20  # activations of one evaluation pass, all models of a chunk


def eval_batch_size(values_per_example: int) -> int:
    """Examples per evaluation pass: what one model's activations allow within the budget,
    at most EVAL_BATCH. It does not depend on the number of models: a GEMM's rounding depends on
    its number of rows (measured: 3e-5 on a (100, 784) @ (784, 64) product), and a batch
    shrunk for a bigger chunk gave records that differed by up to 4.8e-7 between chunk
    sizes. Many models are evaluated in passes of :func:`eval_models_per_pass`."""
    per_example = 2 * 4 * max(values_per_example, 1)  # float32, with temporaries
    return int(min(EVAL_BATCH, max(1, EVAL_MEMORY_BYTES // per_example)))


def eval_models_per_pass(values_per_example: int) -> int:
    """Models evaluated together on one batch of :func:`eval_batch_size` examples so that
    their activations stay within EVAL_MEMORY_BYTES."""
    batch = eval_batch_size(values_per_example)
    return max(1, EVAL_MEMORY_BYTES // (2 * 4 * max(values_per_example, 1) * batch))


class ClassificationTask:
    """Multi-class classification: logits (b, n_classes), softmax cross-entropy.

    Records per split: ``correct`` (K, N) bool, ``margin`` float32 (true-class logit minus
    the largest other logit; > 0 iff correct), ``loss`` float32 (cross-entropy, nats),
    ``pred`` int16, ``logodds`` float32 (log p_y / (1 - p_y) = z_y - log sum_{y' != y}
    exp z_y', from the logits: LiRA's scaled confidence, TRAK's margin).
    """

    name = "classification"
    score_record = "correct"
    data_type = Dataset

    def outputs(self, data: Dataset) -> int:
        return data.n_classes

    def factory(self, name: str) -> Callable | None:
        """Task-specific models by name (None: the shared registry, memlab.models)."""
        return None

    def input_shape(self, data: Dataset) -> tuple[int, ...]:
        return data.input_shape

    def check_data(self, data: Any) -> None:
        if not isinstance(data, Dataset):
            raise ConfigError(f"task {self.name!r} trains on a memlab.data.Dataset, got "
                              f"{type(data).__name__}; load one with memlab.data.load")

    def check_config(self, config: Any) -> None:
        """Refuse settings this task would ignore."""

    def check_output(self, out: torch.Tensor, batch: int, data: Dataset) -> None:
        expected = (batch, self.outputs(data))
        if tuple(out.shape) != expected:
            raise ConfigError(f"the model's output has shape {tuple(out.shape)} for a batch "
                              f"of {batch}; task {self.name!r} needs {expected} "
                              f"(batch, n_classes) logits")

    def tensors(self, data: Dataset, device: torch.device) -> dict[str, tuple]:
        # A memory-mapped array becomes a tensor over the same pages (no copy on a CPU):
        # batches read the rows they gather from disk through the page cache.
        return {split: (_as_tensor(getattr(data, f"x_{split}"), device),
                        torch.as_tensor(getattr(data, f"y_{split}"), device=device))
                for split in ("train", "test")}

    def batch(self, split: tuple, index: torch.Tensor) -> tuple[torch.Tensor, Any]:
        x, y = split
        flat = index.flatten()  # index_select is much cheaper than x[2-D index]
        return (x.index_select(0, flat).view(*index.shape, *x.shape[1:]),
                y.index_select(0, flat).view(index.shape))

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        """out (K, b, C), y (K, b) -> (K,) mean cross-entropy of each model's batch."""
        losses = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none",
                                 label_smoothing=label_smoothing).view(y.shape)
        return losses.mean(1)

    def n_examples(self, data: Dataset, split: str) -> int:
        return len(getattr(data, f"y_{split}"))

    @torch.no_grad()
    def evaluate(self, forward: Forward, split: tuple, n_models: int,
                 values_per_example: int) -> dict[str, torch.Tensor]:
        x, y = split
        batch = eval_batch_size(values_per_example)
        outputs: dict[str, list] = {k: [] for k in ("correct", "margin", "loss", "pred",
                                                    "logodds")}
        for start in range(0, len(y), batch):
            # Class-major (K, C, b): reductions over a short last axis are slow on CPU.
            logits = forward(x[start:start + batch]).transpose(1, 2).contiguous()
            for name, value in classification_records(logits, y[start:start + batch]).items():
                outputs[name].append(value)
        return {name: torch.cat(parts, dim=1) for name, parts in outputs.items()}

    def save(self, data: Dataset, path: Path) -> None:
        data.save(path)  # a memory-mapped dataset: a directory of .npy files beside it

    def load(self, path: Path) -> Dataset:
        path = Path(path)
        if not path.exists() and path.with_suffix("").is_dir():
            return load_npy_dir(path.with_suffix(""))
        return load_npz(path)


def _as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    if isinstance(array, np.memmap) and device.type == "cpu":
        import warnings

        with warnings.catch_warnings():  # read-only pages: memlab never writes to inputs
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)
    return torch.as_tensor(array, device=device)


def classification_records(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Records of class-major logits (K, C, b) for labels y (b,)."""
    labels = y.expand(logits.shape[0], -1).unsqueeze(1)
    true_logit = logits.gather(1, labels).squeeze(1)
    others = logits.scatter(1, labels, float("-inf"))
    pred = _argmax_over_classes(logits)
    top = logits.amax(1, keepdim=True)
    log_partition = top.squeeze(1) + (logits - top).exp_().sum(1).log_()
    other_top = others.amax(1, keepdim=True)
    log_others = other_top.squeeze(1) + (others - other_top).exp_().sum(1).log_()
    return {"correct": pred == labels.squeeze(1), "margin": true_logit - other_top.squeeze(1),
            "loss": log_partition - true_logit, "pred": pred.to(torch.int16),
            "logodds": true_logit - log_others}


def _argmax_over_classes(logits: torch.Tensor) -> torch.Tensor:
    """argmax over axis 1 of (K, C, b), first index on ties, like torch.argmax; a pass per
    class is ~10x faster on CPU than argmax's reduction over a non-contiguous axis."""
    best = logits[:, 0].clone()
    pred = torch.zeros_like(best, dtype=torch.long)
    for c in range(1, logits.shape[1]):
        better = logits[:, c] > best
        pred.masked_fill_(better, c)
        torch.maximum(best, logits[:, c], out=best)
    return pred


class BinaryTask(ClassificationTask):
    """Binary classification with one logit z (output (b, 1) or (b,)), logistic loss;
    labels 0/1. Records as for classification, with margin = logodds = (2y - 1) z."""

    name = "binary"

    def outputs(self, data: Dataset) -> int:
        return 1

    def check_data(self, data: Any) -> None:
        super().check_data(data)
        labels = np.union1d(np.unique(data.y_train), np.unique(data.y_test))
        if not set(labels.tolist()) <= {0, 1}:
            raise ConfigError(f"task 'binary' needs labels 0 and 1, got {labels[:6].tolist()}")

    def check_output(self, out: torch.Tensor, batch: int, data: Dataset) -> None:
        if tuple(out.shape) not in ((batch, 1), (batch,)):
            raise ConfigError(f"the model's output has shape {tuple(out.shape)} for a batch "
                              f"of {batch}; task 'binary' needs one logit per example, "
                              f"({batch}, 1) or ({batch},)")

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        z = out.reshape(y.shape)
        target = y.to(z.dtype)
        if label_smoothing:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(z, target, reduction="none").mean(1)

    @torch.no_grad()
    def evaluate(self, forward: Forward, split: tuple, n_models: int,
                 values_per_example: int) -> dict[str, torch.Tensor]:
        x, y = split
        batch = eval_batch_size(values_per_example)
        parts: dict[str, list] = {k: [] for k in ("correct", "margin", "loss", "pred",
                                                  "logodds")}
        for start in range(0, len(y), batch):
            z = forward(x[start:start + batch]).reshape(n_models, -1)  # (K, b)
            sign = 2.0 * y[start:start + batch].to(z.dtype) - 1  # +1 for y = 1, -1 for y = 0
            signed = sign * z
            parts["correct"].append(signed > 0)
            parts["margin"].append(signed)
            parts["logodds"].append(signed)
            parts["loss"].append(F.softplus(-signed))  # -log sigmoid(signed)
            parts["pred"].append((z > 0).to(torch.int16))
        return {name: torch.cat(values, dim=1) for name, values in parts.items()}


class LanguageModelTask:
    """Next-token prediction on fixed-length documents (teacher forcing).

    The model reads tokens (b, T) and returns logits (b, T, V). A model's batch loss is the
    mean cross-entropy over its batch's real (non-padding) target tokens. Records per split
    (``test`` holds the validation documents): ``acc`` (K, n) float32 per-token accuracy,
    ``loss`` (K, n) float32 nats per token; ``train_token_correct`` (K, n, T) bool.
    """

    name = "language_model"
    score_record = "acc"
    data_type = Documents
    EVAL_FLOATS = 3 * 2**21  # logits per evaluation pass (K * docs * T * V), ~25 MiB

    def outputs(self, data: Documents) -> int:
        return data.n_vocab

    def factory(self, name: str) -> Callable | None:
        """Language models by name (``transformer``, ``mlp``) as factories
        f(input_shape=(context,), n_classes=n_vocab, **kwargs)."""
        from memlab.models.lm import LM_MODELS, build_lm

        if name not in LM_MODELS:
            if ":" in name:
                return None  # package.module:factory
            raise ConfigError(f"unknown language model {name!r}: choose one of "
                              f"{', '.join(LM_MODELS)} or give package.module:factory")

        def build(input_shape: tuple[int, ...], n_classes: int, **kwargs: Any):
            return build_lm(name, n_classes, input_shape[0], **kwargs)

        build.__qualname__ = build.__name__ = name
        return build

    def input_shape(self, data: Documents) -> tuple[int, ...]:
        return (data.context,)

    def check_data(self, data: Any) -> None:
        if not isinstance(data, Documents):
            raise ConfigError(f"task {self.name!r} trains on memlab.data.text.Documents, got "
                              f"{type(data).__name__}; load them with memlab.data.text."
                              "load_documents")

    def check_config(self, config: Any) -> None:
        unused = [name for name in ("label_smoothing", "input_noise", "input_dropout")
                  if getattr(config, name)] + (["augment"] if config.augment else [])
        if unused:
            raise ConfigError(f"language-model populations do not use {', '.join(unused)}: "
                              "drop them")

    def check_output(self, out: torch.Tensor, batch: int, data: Documents) -> None:
        expected = (batch, data.context, data.n_vocab)
        if tuple(out.shape) != expected:
            raise ConfigError(f"the language model's output has shape {tuple(out.shape)}; "
                              f"it must be (batch, context, n_vocab) = {expected}")

    def tensors(self, data: Documents, device: torch.device) -> dict[str, tuple]:
        out = {}
        for split in ("train", "test"):
            tokens = torch.as_tensor(getattr(data, f"tokens_{split}"), device=device)
            mask = torch.as_tensor(data.target_mask(split), device=device)
            out[split] = (tokens[:, :-1], tokens[:, 1:], mask)
        return out

    def batch(self, split: tuple, index: torch.Tensor) -> tuple[torch.Tensor, Any]:
        inputs, targets, mask = split
        flat = index.flatten()
        shape = (*index.shape, -1)
        return (inputs.index_select(0, flat).view(shape),
                (targets.index_select(0, flat).view(shape),
                 mask.index_select(0, flat).view(shape)))

    def loss(self, out: torch.Tensor, target: tuple, label_smoothing: float) -> torch.Tensor:
        y, mask = target
        weight = mask.to(out.dtype)
        losses = token_loss(out, y)  # (K, b, T)
        return (losses * weight).sum((1, 2)) / weight.sum((1, 2))

    def n_examples(self, data: Documents, split: str) -> int:
        return len(getattr(data, f"tokens_{split}"))

    @torch.no_grad()
    def evaluate(self, forward: Forward, split: tuple, n_models: int,
                 values_per_example: int) -> dict[str, torch.Tensor]:
        inputs, targets, mask = split
        n, length = inputs.shape
        step = max(1, self.EVAL_FLOATS // (n_models * length * max(values_per_example, 1)))
        acc, loss, correct = [], [], []
        for start in range(0, n, step):
            x, y, m = (t[start:start + step] for t in (inputs, targets, mask))
            logits = forward(x)  # (K, b, T, V)
            hit = (logits.argmax(-1) == y) & m  # (K, b, T)
            nats = token_loss(logits, y.expand(n_models, -1, -1)) * m
            count = m.sum(1)  # (b,)
            acc.append(hit.sum(2) / count)
            loss.append(nats.sum(2) / count)
            correct.append(hit)
        return {"acc": torch.cat(acc, 1).float(), "loss": torch.cat(loss, 1).float(),
                "token_correct": torch.cat(correct, 1)}

    def save(self, data: Documents, path: Path) -> None:
        data.save(path)

    def load(self, path: Path) -> Documents:
        return Documents.load(path)


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per token: logits (..., T, V), targets (..., T) -> (..., T) nats."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(),
                           reduction="none").view(targets.shape)


# Every task by its name (memlab.engine.config.TASK_NAMES lists the same names, for configs
# that must not import torch; tests/test_engine.py checks that they agree).
TASKS: dict[str, Any] = {task.name: task for task in (
    ClassificationTask(), BinaryTask(), LanguageModelTask())}


def task_for(data: Any, name: str | None = None):
    """The task named ``name``, or the default task for this kind of data."""
    if name is None or (name == "classification" and isinstance(data, Documents)):
        name = "language_model" if isinstance(data, Documents) else "classification"
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    task = TASKS[name]
    task.check_data(data)
    return task
