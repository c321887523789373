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

import dataclasses
import hashlib
import inspect
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from memlab import __version__
from memlab.data import load
from memlab.errors import ConfigError, RunError
from memlab.population import recipe, store
from memlab.population.callbacks import describe_callback
from memlab.population.config import PopulationConfig, membership_mask
from memlab.population.executor import ChunkWork, run_local
from memlab.population.modelspec import ModelSpec, check_distinct_inits
from memlab.population.ray_executor import run_ray
from memlab.population.run import Run, open_run, upgrade_manifest
from memlab.population.task import TASKS, task_for

__all__ = ["PopulationConfig", "Run", "TASKS", "open_run", "train_population"]


def train_population(
    dataset: Any,
    config: PopulationConfig | None = None,
    *,
    model: Any = None,
    membership: np.ndarray | None = None,
    callbacks: Sequence[Any] = (),
    transforms: dict[str, Callable] | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    n_workers: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
    **settings: Any,
) -> Run:
    """Train a population and record every model's behaviour on every example.

    dataset: a :class:`memlab.data.Dataset` (or a name for ``memlab.data.load``), or
        :class:`memlab.data.text.Documents` for language models.
    config: a :class:`PopulationConfig`; ``settings`` override its fields (or, without a
        config, build one): ``n_models=1000, subset_fraction=0.7, epochs=30, ...``.
    model: a registered name (``"mlp"``), ``"package.module:factory"``, a factory
        ``f(input_shape, n_classes, **model_kwargs) -> nn.Module``, or an ``nn.Module``
        template (see :mod:`memlab.population.modelspec` for how each model gets its
        initial weights, ``init="pretrained"`` for a shared starting point).
    membership: an explicit (n_models, n_train) bool mask (leave-one-out, full-data models,
        leave-one-class-out...), instead of random subsets; stored with the run.
    callbacks: measurements during training, stored as records (see callbacks.py).
    transforms: your own augmentation functions, by the name used in ``augment``.
    out: run directory: created, resumed if it holds this run, or grown if it holds the
        same run with fewer models; a fresh temporary directory when None.
    n_workers: CPU worker processes, one single-threaded chunk each (default: one per core).

    Settings that change results are in the config (and the model, mask and callbacks,
    recorded in the manifest); ``device``, ``n_workers``, ``executor`` and ``progress`` do
    not (on one device type). Model k is the same bits whatever chunk, worker or resume
    trains it. Returns the finished :class:`Run`.
    """
    if dataset is None:
        raise ConfigError("train_population needs a dataset: a memlab.data.Dataset, a name "
                          "such as 'mnist1d', or memlab.data.text.Documents")
    if isinstance(dataset, str | Path):
        dataset = load(dataset)
    if isinstance(model, str) or model is None:
        settings.setdefault("model", model or (config.model if config else "mlp"))
        model = settings["model"]
    if membership is not None:
        membership = _check_membership(membership, dataset, settings, config)
        settings["subsets"] = "explicit"
    try:
        if config is None:
            config = PopulationConfig(**_plain(settings))
        else:
            config = dataclasses.replace(config, **_plain(settings))
    except TypeError as error:
        raise ConfigError(f"unknown population setting: {error}") from None
    task = task_for(dataset, config.task)
    task.check_config(config)
    spec = ModelSpec.resolve(model, config.model_kwargs, task)
    config = dataclasses.replace(config, model=spec.label, task=task.name)
    # Normalize through JSON (tuples become lists) so a resumed config compares equal.
    config = PopulationConfig.from_dict(config.to_dict())
    if config.subsets == "explicit" and membership is None:
        raise ConfigError("subsets='explicit' needs the mask: "
                          "train_population(..., membership=mask)")
    described = check_models(task, dataset, config, spec)
    if membership is None:
        config.subset_size(task.n_examples(dataset, "train"))
    _check_device(device)
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    n_workers = _check_workers(n_workers)
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(getattr(cb, "name", None), str) or not callable(cb):
            raise ConfigError(f"a callback needs a name and __call__(state); got {cb!r}")
    transforms = recipe.resolve_transforms(config, transforms)
    work = ChunkWork(task.name, config, spec, callbacks, transforms)

    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="memlab-run-"))
    manifest = _open_or_create(run_dir, dataset, task, config, described, membership,
                               callbacks)
    chunks = store.chunk_plan_from_json(manifest["chunk_plan"])
    todo = [c for c in chunks if not store.chunk_is_complete(run_dir, c.index)]
    for chunk in chunks:
        manifest["chunks"][str(chunk.index)] = "pending" if chunk in todo else "done"

    if todo:
        manifest["status"] = "running"
        store.write_manifest(run_dir, manifest)
        tracker = _Progress(config, chunks, todo, enabled=progress,
                            n_train=task.n_examples(dataset, "train"))

        def on_chunk(info: dict) -> None:
            manifest["chunks"][str(info["chunk"])] = "done"
            store.write_manifest(run_dir, manifest)
            tracker.chunk_done(info)

        mask = np.load(run_dir / "membership_mask.npy", mmap_mode="r")
        try:
            if executor == "ray":
                run_ray(run_dir, dataset, work, todo, mask, device, ray_address,
                        on_chunk, tracker.epoch_done)
            else:
                run_local(run_dir, dataset, work, todo, mask, device, n_workers,
                          on_chunk, tracker.epoch_done)
        except BaseException:
            manifest["status"] = "interrupted"
            store.write_manifest(run_dir, manifest)
            tracker.close()
            raise
        tracker.close()
    if manifest["status"] != "complete" or not (run_dir / "records").exists():
        _finalize(run_dir, manifest, config, chunks, task)
    return open_run(run_dir)


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars as Python numbers (n_models=np.int64(2) is fine)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in settings.items()}


def _check_workers(n_workers: Any) -> int:
    if n_workers is None:
        return os.cpu_count() or 1
    if isinstance(n_workers, bool) or not isinstance(n_workers, int | np.integer) \
            or n_workers < 1:
        raise ConfigError(f"n_workers must be a positive integer, got {n_workers!r}")
    return int(n_workers)


def _check_membership(mask: Any, dataset: Any, settings: dict, config) -> np.ndarray:
    """Validate an explicit mask; set n_models from it when not given."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if mask.dtype.kind in "iu" and np.isin(mask, (0, 1)).all():
            mask = mask.astype(bool)
        else:
            raise ConfigError(f"membership must be a boolean (n_models, n_train) mask, got "
                              f"dtype {mask.dtype}")
    n_train = dataset.n_train
    if mask.ndim != 2 or mask.shape[1] != n_train:
        raise ConfigError(f"membership must have shape (n_models, {n_train}) for this "
                          f"dataset's {n_train} training examples, got {mask.shape}")
    empty = np.flatnonzero(~mask.any(1))
    if len(empty):
        raise ConfigError(f"membership rows {empty[:5].tolist()} are empty: every model "
                          "needs at least one training example")
    sweep = settings.get("sweep", config.sweep if config else {})
    n_values = math.prod(len(v) for v in sweep.values()) if sweep else 1
    if mask.shape[0] % n_values:
        raise ConfigError(f"membership has {mask.shape[0]} rows, not a multiple of the "
                          f"sweep's {n_values} combinations")
    requested = settings.get("n_models", config.n_models if config else None)
    rows = mask.shape[0] // n_values
    if "n_models" in settings and requested != rows:
        raise ConfigError(f"membership has {rows} rows per sweep value but n_models="
                          f"{requested}; drop n_models or pass a mask of {requested} rows")
    settings["n_models"] = rows
    if n_values > 1 and not all(np.array_equal(mask[:rows], mask[v * rows:(v + 1) * rows])
                                for v in range(n_values)):
        raise ConfigError("with a sweep, every sweep value's block of membership rows must "
                          "be the same (model (value, r) trains on replicate r's subset)")
    return mask


def check_models(task: Any, dataset: Any, config: PopulationConfig,
                 spec: ModelSpec) -> dict[str, Any]:
    """Build every sweep value's architecture once, run a dry batch through it and check
    the output shape and distinct initializations; returns the manifest's model record."""
    input_shape, n_out = task.input_shape(dataset), task.outputs(dataset)
    if task.n_examples(dataset, "train") < 2:
        raise ConfigError("the training set needs at least 2 examples")
    # One dry batch of the first two training examples, for every sweep value's model.
    x, _ = task.batch(task.tensors(dataset, torch.device("cpu"))["train"],
                      torch.arange(2).view(1, 2))
    described = None
    for value in range(config.n_values):
        recipe_config = config.for_value(value)
        value_spec = spec.with_kwargs(recipe_config.model_kwargs) if spec.template is None \
            else spec
        module = value_spec.build(input_shape, n_out)
        try:
            with torch.no_grad():
                out = module.eval()(x[0])
        except Exception as error:  # the user's model: one line naming the shapes
            raise ConfigError(f"the model {spec.label!r} failed on a batch of inputs of shape "
                              f"{tuple(x[0].shape)}: {type(error).__name__}: {error}; check "
                              f"its input size against the data's input shape "
                              f"{tuple(input_shape)}") from None
        task.check_output(out, 2, dataset)
        if value == 0:
            check_distinct_inits(value_spec, recipe_config, input_shape, n_out)
            described = value_spec.describe(module, config)
    return described


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


def _open_or_create(run_dir: Path, dataset: Any, task: Any, config: PopulationConfig,
                    model: dict[str, Any], explicit_mask: np.ndarray | None,
                    callbacks: list) -> dict:
    """Return the manifest of a compatible existing run (grown if more models were asked
    for), or create a new run directory atomically."""
    described = dataset.describe()
    n_train = task.n_examples(dataset, "train")
    mask = explicit_mask if explicit_mask is not None else membership_mask(config, n_train)
    callback_records = [describe_callback(cb) for cb in callbacks]
    if (run_dir / store.MANIFEST).exists():
        manifest = store.read_manifest(run_dir)
        upgrade_manifest(manifest)
        stored = PopulationConfig.from_dict({**PopulationConfig().to_dict(),
                                             **manifest["config"]})
        differences = _differences(stored, config, manifest, described, model,
                                   callback_records)
        if differences:
            raise RunError(
                f"{run_dir} holds a run with different settings, refusing to mix them:\n  "
                + "\n  ".join(differences)
                + "\nuse another output directory, or delete this one to start over"
            )
        stored_mask = store.load_npy(run_dir / "membership_mask.npy", mmap=False)
        n_stored = stored_mask.shape[0]
        if not np.array_equal(stored_mask, mask[:n_stored]):
            raise RunError(f"{run_dir}/membership_mask.npy does not match the "
                           f"{'given mask' if explicit_mask is not None else 'seed'}: "
                           "the directory is corrupted or another mask was passed; use "
                           "another output directory")
        if n_stored < len(mask):  # growing: append rows, plan chunks after the old ones
            store.atomic_save_npy(run_dir / "membership_mask.npy", mask)
            manifest["chunk_plan"] = store.chunk_plan_to_json(_plan(
                config, mask, store.chunk_plan_from_json(manifest["chunk_plan"])))
            manifest["config"] = config.to_dict()
            manifest["membership"]["sha256"] = _mask_digest(mask)
            manifest["status"] = "grown"
            store.write_manifest(run_dir, manifest)
        for leftover in (run_dir / "chunks").glob(".*"):  # a chunk being written when killed
            shutil.rmtree(leftover, ignore_errors=True)
        return manifest
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise RunError(f"{run_dir} exists, is not empty and is not a memlab run; "
                       "choose a new output directory")
    manifest = {
        "format": store.RUN_FORMAT, "kind": "population", "task": task.name,
        "config": config.to_dict(), "model": model, "callbacks": callback_records,
        "dataset": described, "versions": versions(),
        "membership": {"kind": config.subsets, "sha256": _mask_digest(mask)},
        "chunk_plan": store.chunk_plan_to_json(_plan(config, mask)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "created", "chunks": {},
    }
    # Build the run under a temporary name and rename it into place: a run directory is
    # either absent or complete with data, mask and manifest.
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.creating-", dir=run_dir.parent))
    try:
        task.save(dataset, staging / "dataset.npz")
        store.atomic_save_npy(staging / "membership_mask.npy", mask)
        store.write_manifest(staging, manifest)
        if run_dir.exists():
            run_dir.rmdir()  # empty (checked above)
        os.replace(staging, run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mask).tobytes()).hexdigest()


def _plan(config: PopulationConfig, mask: np.ndarray,
          existing: list[store.ChunkPlan] | None = None) -> list[store.ChunkPlan]:
    """Chunks that hold one sweep value and one subset size each."""
    sizes = mask.sum(1)
    boundaries = [v * config.n_models for v in range(1, config.n_values)]
    boundaries += (np.flatnonzero(np.diff(sizes)) + 1).tolist()
    return store.plan_chunks(config.n_total, config.chunk_size, boundaries, existing)


def _differences(stored: PopulationConfig, config: PopulationConfig, manifest: dict,
                 described: dict, model: dict, callbacks: list) -> list[str]:
    """Settings that differ between a stored run and a request (defaults compared as
    values; more models than stored is growth, not a difference)."""
    old, new = stored.to_dict(), config.to_dict()
    old["model_kwargs"] = _with_defaults(stored.model, old["model_kwargs"])
    new["model_kwargs"] = _with_defaults(config.model, new["model_kwargs"])
    differences = []
    for key, value in new.items():
        if key == "n_models":
            if value < old[key]:
                differences.append(f"n_models: run has {old[key]}, requested {value} "
                                   "(open the run with open_run and use its first models)")
            continue
        if old.get(key) != value:
            differences.append(f"{key}: run has {old.get(key)!r}, requested {value!r}")
    if new["n_models"] > old["n_models"] and config.sweep:
        differences.append("n_models: a sweep run cannot grow (its models are ordered by "
                           "sweep value); train a new run")
    old_print = manifest["model"].get("fingerprint")
    if old_print is not None and old_print != model["fingerprint"]:
        differences.append(f"model: run has {manifest['model']['class']} with parameters "
                           f"{_shapes(manifest['model'])}, requested {model['class']} with "
                           f"{_shapes(model)} (or other pretrained weights)")
    if manifest.get("callbacks", []) != callbacks:
        differences.append(f"callbacks: run has {manifest.get('callbacks')}, requested "
                           f"{callbacks}")
    if manifest["dataset"]["fingerprint"] != described["fingerprint"]:
        differences.append(f"dataset: run has {manifest['dataset']['name']!r} "
                           f"(fingerprint {manifest['dataset']['fingerprint'][:12]}), "
                           f"requested {described['name']!r} "
                           f"(fingerprint {described['fingerprint'][:12]})")
    return differences


def _shapes(model: dict) -> str:
    shapes = model.get("parameter_shapes") or {}
    return ", ".join(f"{k} {v}" for k, v in list(shapes.items())[:3]) + (
        ", ..." if len(shapes) > 3 else "")


def _with_defaults(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments completed with the factory's defaults (so that an explicit
    default compares equal to an omitted one)."""
    try:
        from memlab.models import resolve_factory

        signature = inspect.signature(resolve_factory(model))
    except (ConfigError, TypeError, ValueError):
        return kwargs
    defaults = {name: p.default for name, p in signature.parameters.items()
                if p.default is not inspect.Parameter.empty}
    try:
        return json.loads(json.dumps({**defaults, **kwargs}))
    except TypeError:
        return kwargs


def _finalize(run_dir: Path, manifest: dict, config: PopulationConfig,
              chunks: list[store.ChunkPlan], task: Any) -> None:
    """Concatenate the chunks' records into records/*.npy (memory-bounded) and the models
    table; mark the run complete. The models table summarizes ``{train,test}_{score}``
    (bool ``correct``, or the per-token accuracy ``acc`` of language models)."""
    score = task.score_record
    n_total = config.n_total
    names = [name[:-4] for name in store.read_chunk_info(run_dir, 0)["files"]
             if name.endswith(".npy")]
    records_dir = run_dir / "records"
    records_dir.mkdir(exist_ok=True)
    shapes = {}
    for name in names:
        first = store.read_chunk_array(run_dir, 0, name)
        shape = (n_total, *first.shape[1:])
        tmp = records_dir / f".{name}.npy.{os.getpid()}.tmp"
        merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=shape)
        for chunk in chunks:
            merged[chunk.start:chunk.stop] = store.read_chunk_array(run_dir, chunk.index, name)
        merged.flush()
        del merged
        os.replace(tmp, records_dir / f"{name}.npy")
        shapes[name] = list(shape)

    # The models table, chunk by chunk: memory stays bounded by the chunk size.
    mask = np.load(run_dir / "membership_mask.npy", mmap_mode="r")
    sweep = config.sweep_values()
    rows = []
    for chunk in chunks:
        in_subset = np.asarray(mask[chunk.start:chunk.stop])
        train_score = store.decode_record(
            f"train_{score}", store.read_chunk_array(run_dir, chunk.index, f"train_{score}"),
            in_subset.shape[1])
        n_in = in_subset.sum(1)
        n_out = in_subset.shape[1] - n_in
        models = np.arange(chunk.start, chunk.stop)
        frame = pd.DataFrame({
            "model": models,
            "chunk": chunk.index,
            "replicate": models % config.n_models,
            "n_in": n_in,
            "train_acc_in": np.where(in_subset, train_score, 0).sum(1) / n_in,
            "train_acc_out": np.where(in_subset, 0, train_score).sum(1) / np.maximum(n_out, 1),
            "test_acc": store.decode_record(
                f"test_{score}", store.read_chunk_array(run_dir, chunk.index, f"test_{score}"),
                manifest["dataset"]["n_test"]).mean(1),
            "final_train_loss": store.read_chunk_array(
                run_dir, chunk.index, "epoch_train_loss_mean")[:, -1],
        })
        for key in config.sweep:
            values = [sweep[k // config.n_models][key] for k in models]
            frame[f"sweep_{key}"] = values if not isinstance(values[0], list | dict) else [
                json.dumps(v) for v in values]
        rows.append(frame)
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

        total = config.n_total * config.epochs
        done = sum(c.size for c in chunks if c not in todo)
        self.models_done, self.n_models = done, config.n_total
        self.examples_per_model_epoch = (config.subset_size(n_train)
                                         if config.subsets == "random" else n_train)
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
                                 f"{_rate(rate)} examples/s", refresh=False)

    def chunk_done(self, info: dict) -> None:
        self.models_done += info["stop"] - info["start"]
        self.bar.set_postfix_str(f"models {self.models_done}/{self.n_models}")

    def close(self) -> None:
        self.bar.close()


def _rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f}M"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f}k"
    return f"{per_second:.0f}"
