"""The population engine: many models trained at once, each on its own random subset.

    from memlab.data import load
    from memlab.population import train_population
    run = train_population(load("mnist1d"), n_models=2000, subset_fraction=0.7, out="runs/pop")
    run.membership_mask          # (2000, 4000) bool
    run.records("test_correct")  # (2000, 1000) bool

Calling ``train_population`` again with the same ``out`` resumes: finished chunks are kept,
the rest are trained, and the result equals an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from memlab import __version__
from memlab.data import Dataset, load
from memlab.errors import ConfigError, RunError
from memlab.models import build_model
from memlab.population import store
from memlab.population.config import PopulationConfig, membership_mask
from memlab.population.executor import run_local
from memlab.population.ray_executor import run_ray
from memlab.population.run import Run, open_run

__all__ = ["PopulationConfig", "Run", "open_run", "train_population"]


def train_population(
    dataset: Dataset | str,
    model: str = "mlp",
    model_kwargs: dict[str, Any] | None = None,
    n_models: int = 100,
    subset_fraction: float = 0.5,
    epochs: int = 30,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    seed: int = 0,
    record_epochs: bool = False,
    save_weights: bool = True,
    chunk_size: int = 32,
    compact_records: bool = False,
    out: str | Path | None = None,
    device: str = "cpu",
    n_workers: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
) -> Run:
    """Train ``n_models`` models, model k on its own random subset of ``subset_fraction`` of
    the training set, and record every model's correctness, margin and loss on every train
    and test example (see :class:`Run`). Returns the finished run.

    out: run directory (created, or resumed if it holds a run with the same settings);
        a fresh temporary directory when None.
    n_workers: CPU worker processes, one single-threaded chunk each (default: one per core).
    Settings that change results are in :class:`PopulationConfig`; ``device``,
    ``n_workers`` and ``progress`` do not (on one device type).
    """
    if isinstance(dataset, str):
        dataset = load(dataset)
    config = PopulationConfig(
        model=model, model_kwargs=dict(model_kwargs or {}), n_models=n_models,
        subset_fraction=subset_fraction, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
        label_smoothing=label_smoothing, seed=seed, record_epochs=record_epochs,
        save_weights=save_weights, chunk_size=chunk_size, compact_records=compact_records,
    )
    # Normalize through JSON (tuples become lists) so a resumed config compares equal.
    config = PopulationConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    if hasattr(dataset, "check_config"):  # a task with its own models (memlab.lm)
        dataset.check_config(config)
    else:
        build_model(config.model, dataset.input_shape, dataset.n_classes,
                    **config.model_kwargs)
    config.subset_size(dataset.n_train)
    _check_device(device)
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")

    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="memlab-run-"))
    manifest = _open_or_create(run_dir, dataset, config)
    chunks = store.plan_chunks(config.n_models, config.chunk_size)
    todo = [c for c in chunks if not store.chunk_is_complete(run_dir, c.index)]
    for chunk in chunks:
        manifest["chunks"][str(chunk.index)] = "pending" if chunk in todo else "done"

    if todo:
        manifest["status"] = "running"
        store.write_manifest(run_dir, manifest)
        n_workers = n_workers or os.cpu_count() or 1
        tracker = _Progress(config, chunks, todo, dataset.n_train, enabled=progress)

        def on_chunk(info: dict) -> None:
            manifest["chunks"][str(info["chunk"])] = "done"
            store.write_manifest(run_dir, manifest)
            tracker.chunk_done(info)

        membership = np.load(run_dir / "membership_mask.npy", mmap_mode="r")
        try:
            if executor == "ray":
                run_ray(run_dir, dataset, config, todo, membership, device, ray_address,
                        on_chunk, tracker.epoch_done)
            else:
                run_local(run_dir, dataset, config, todo, membership, device, n_workers,
                          on_chunk, tracker.epoch_done)
        except BaseException:
            manifest["status"] = "interrupted"
            store.write_manifest(run_dir, manifest)
            tracker.close()
            raise
        tracker.close()
    if manifest["status"] != "complete" or not (run_dir / "records").exists():
        _finalize(run_dir, manifest, config, chunks, getattr(dataset, "score_record", "correct"))
    return open_run(run_dir)


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except RuntimeError as error:
        raise RunError(f"unknown device {device!r} ({error}); use 'cpu' or 'cuda'") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise RunError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu'")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import mnist1d  # noqa: F401  (its version identifies the generated data)

    found = {"memlab": __version__, "python": sys.version.split()[0],
             "platform": platform.platform()}
    for package in ("torch", "numpy", "scipy", "pandas", "mnist1d", "safetensors"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _open_or_create(run_dir: Path, dataset: Dataset, config: PopulationConfig) -> dict:
    """Return the manifest of a compatible existing run, or create a new run directory."""
    described = dataset.describe()
    if (run_dir / store.MANIFEST).exists():
        manifest = store.read_manifest(run_dir)
        # A setting added after the run was made counts as its default there.
        stored = {**PopulationConfig().to_dict(), **manifest["config"]}
        differences = [
            f"{key}: run has {stored.get(key)!r}, requested {value!r}"
            for key, value in config.to_dict().items() if stored.get(key) != value
        ]
        if manifest["dataset"]["fingerprint"] != described["fingerprint"]:
            differences.append(f"dataset: run has {manifest['dataset']['name']!r} "
                               f"(fingerprint {manifest['dataset']['fingerprint'][:12]}), "
                               f"requested {described['name']!r} "
                               f"(fingerprint {described['fingerprint'][:12]})")
        if differences:
            raise RunError(
                f"{run_dir} holds a run with different settings, refusing to mix them:\n  "
                + "\n  ".join(differences)
                + "\nuse another output directory, or delete this one to start over"
            )
        mask = store.load_npy(run_dir / "membership_mask.npy", mmap=False)
        if not np.array_equal(mask, membership_mask(config, dataset.n_train)):
            raise RunError(f"{run_dir}/membership_mask.npy does not match the run's seed: "
                           "the directory is corrupted; delete it and train again")
        for leftover in (run_dir / "chunks").glob(".*"):  # a chunk being written when killed
            shutil.rmtree(leftover, ignore_errors=True)
        return manifest
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists, is not empty and is not a memlab run; "
                       "choose a new output directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset.save(run_dir / "dataset.npz")
    store.atomic_save_npy(run_dir / "membership_mask.npy",
                          membership_mask(config, dataset.n_train))
    manifest = {
        "format": store.RUN_FORMAT, "kind": "population", "config": config.to_dict(),
        "dataset": described, "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "created", "chunks": {},
    }
    store.write_manifest(run_dir, manifest)
    return manifest


def _finalize(run_dir: Path, manifest: dict, config: PopulationConfig,
              chunks: list[store.ChunkPlan], score: str = "correct") -> None:
    """Concatenate the chunks' records into records/*.npy (memory-bounded) and the models
    table; mark the run complete. ``score``: the per-example record summarized in the
    models table, ``{train,test}_{score}`` (bool ``correct``, or a float such as the
    per-token accuracy ``acc`` of language models)."""
    names = [name[:-4] for name in store.read_chunk_info(run_dir, 0)["files"]
             if name.endswith(".npy")]
    records_dir = run_dir / "records"
    records_dir.mkdir(exist_ok=True)
    shapes = {}
    for name in names:
        first = store.read_chunk_array(run_dir, 0, name)
        shape = (config.n_models, *first.shape[1:])
        tmp = records_dir / f".{name}.npy.tmp"
        merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=shape)
        for chunk in chunks:
            merged[chunk.start:chunk.stop] = store.read_chunk_array(run_dir, chunk.index, name)
        merged.flush()
        del merged
        os.replace(tmp, records_dir / f"{name}.npy")
        shapes[name] = list(shape)

    # The models table, chunk by chunk: memory stays bounded by the chunk size.
    mask = np.load(run_dir / "membership_mask.npy", mmap_mode="r")
    rows = []
    for chunk in chunks:
        in_subset = np.asarray(mask[chunk.start:chunk.stop])
        train_correct = store.decode_record(
            f"train_{score}", store.read_chunk_array(run_dir, chunk.index, f"train_{score}"),
            in_subset.shape[1])
        n_in = in_subset.sum(1)
        n_out = in_subset.shape[1] - n_in
        rows.append(pd.DataFrame({
            "model": np.arange(chunk.start, chunk.stop),
            "chunk": chunk.index,
            "n_in": n_in,
            "train_acc_in": np.where(in_subset, train_correct, 0).sum(1) / n_in,
            "train_acc_out": np.where(in_subset, 0, train_correct).sum(1) / np.maximum(n_out, 1),
            "test_acc": store.decode_record(
                f"test_{score}", store.read_chunk_array(run_dir, chunk.index, f"test_{score}"),
                manifest["dataset"]["n_test"]).mean(1),
            "final_train_loss": store.read_chunk_array(
                run_dir, chunk.index, "epoch_train_loss_mean")[:, -1],
        }))
    table = pd.concat(rows, ignore_index=True)
    (run_dir / "tables").mkdir(exist_ok=True)
    store.atomic_save_table(run_dir / "tables" / "models.parquet", table)
    seconds = sum(store.read_chunk_info(run_dir, c.index)["seconds"] for c in chunks)
    manifest.update(status="complete", records=shapes,
                    summary={"test_acc_mean": float(table.test_acc.mean()),
                             "train_acc_in_mean": float(table.train_acc_in.mean()),
                             "chunk_seconds_total": round(seconds, 2)})
    store.write_manifest(run_dir, manifest)


class _Progress:
    """A tqdm bar over model-epochs, with models done, examples/s and ETA."""

    def __init__(self, config: PopulationConfig, chunks, todo, n_train: int, enabled: bool):
        from tqdm.auto import tqdm

        total = config.n_models * config.epochs
        done = sum(c.size for c in chunks if c not in todo)
        self.models_done, self.n_models = done, config.n_models
        self.examples_per_model_epoch = config.subset_size(n_train)
        self.started = time.perf_counter()
        self.model_epochs_trained = 0
        self.bar = tqdm(total=total, initial=done * config.epochs, unit="model-epoch",
                        disable=not enabled, dynamic_ncols=True, desc="training")
        self.bar.set_postfix_str(f"models {done}/{config.n_models}")

    def epoch_done(self, n_models: int) -> None:
        self.bar.update(n_models)
        self.model_epochs_trained += n_models
        rate = self.model_epochs_trained * self.examples_per_model_epoch / max(
            time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"models {self.models_done}/{self.n_models}, "
                                 f"{rate / 1e6:.2f}M examples/s", refresh=False)

    def chunk_done(self, info: dict) -> None:
        self.models_done += info["stop"] - info["start"]
        self.bar.set_postfix_str(f"models {self.models_done}/{self.n_models}")

    def close(self) -> None:
        self.bar.close()

