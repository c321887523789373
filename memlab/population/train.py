"""The run lifecycle: ``train_population`` creates, locks, resumes, repairs, grows and
consolidates a run directory, training the missing chunks with an executor.

Creating is atomic (the run is built under a temporary name and renamed into place);
resuming keeps the finished chunks and trains the rest, so the result equals an
uninterrupted run; a damaged dataset copy, mask, chunk or consolidated file is repaired
from what the call was given; asking for more models than stored grows the run. The math
of training lives in :mod:`memlab.engine`, the files in :mod:`memlab.population.store`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
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
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memlab import __version__, io, validate
from memlab.data import Dataset, load
from memlab.engine import dp, recipe
from memlab.engine.callbacks import describe_callback
from memlab.engine.config import PopulationConfig, membership_mask, privacy_canary_columns
from memlab.engine.modelspec import ModelSpec, check_distinct_inits
from memlab.engine.precision import dtype_name, resolve_compute_dtype
from memlab.engine.probe import check_output_type, probe_training
from memlab.engine.task import task_for
from memlab.errors import ConfigError, RunError
from memlab.population import shards, store
from memlab.population.consolidate import finalize, finish
from memlab.population.executor import ChunkWork, Terminated, exit_on_signals, run_local
from memlab.population.messages import say
from memlab.population.ray_executor import check_reachable, run_ray
from memlab.population.run import Run, upgrade_manifest


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
    shard: tuple[int, int] | str | None = None,
    progress: bool = True,
    **settings: Any,
) -> Run | None:
    """Train a population and record every model's behaviour on every example.

    dataset: a :class:`memlab.data.Dataset` (or a name for ``memlab.data.load``), or
        :class:`memlab.data.text.Documents` for language models.
    config: a :class:`PopulationConfig`; ``settings`` override its fields (or, without a
        config, build one): ``n_models=1000, subset_fraction=0.7, epochs=30, ...``.
    model: a registered name (``"mlp"``), ``"package.module:factory"``, a factory
        ``f(input_shape, n_classes, **model_kwargs) -> nn.Module``, or an ``nn.Module``
        template (see :mod:`memlab.engine.modelspec` for how each model gets its
        initial weights, ``init="pretrained"`` for a shared starting point).
    membership: an explicit (n_models, n_train) bool mask (leave-one-out, full-data models,
        leave-one-class-out...), instead of random subsets; stored with the run.
    callbacks: measurements during training, stored as records (see
        :mod:`memlab.engine.callbacks`).
    transforms: your own augmentation functions, by the name used in ``augment``.
    out: run directory: created, resumed if it holds this run, or grown if it holds the
        same run with fewer models; when None, a fresh temporary directory, removed when
        the returned Run is garbage-collected (or at exit) or if training fails.
    n_workers: CPU worker processes, one single-threaded chunk each (default: one per core).
    shard: ``(i, N)`` or ``"i/N"``: train only shard i's share of the chunks (those whose
        index is i mod N) into ``out``, while the other shards run as other processes (a
        Slurm job array; see :mod:`memlab.population.shards`). The shard that commits the
        last chunk consolidates the run and returns it; the others return None.

    Settings that change results are in the config (and the model, mask and callbacks,
    recorded in the manifest); ``device``, ``n_workers``, ``executor``, ``shard`` and
    ``progress`` do not (on one device type). Model k is the same bits whatever chunk,
    worker, shard or resume trains it. Returns the finished :class:`Run` (None from a shard
    that leaves the run waiting for other shards).
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
    dataset, membership = _plant_privacy_canaries(dataset, config, membership)
    spec = ModelSpec.resolve(model, config.model_kwargs, task)
    config = dataclasses.replace(config, model=spec.label, task=task.name)
    # Normalize through JSON (tuples become lists) so a resumed config compares equal.
    config = PopulationConfig.from_dict(config.to_dict())
    if config.subsets == "explicit" and membership is None:
        raise ConfigError("subsets='explicit' needs the mask: "
                          "train_population(..., membership=mask)")
    described = check_models(task, dataset, config, spec)
    dp_plans = _dp_plans(task, dataset, config, spec, membership)  # DP's errors before work
    if membership is None:
        config.subset_size(config.base_examples(task.n_examples(dataset, "train")))
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    # Ray's GPU workers: their GPUs, not this machine's (a CPU head node drives them)
    remote = executor == "ray" and torch.device(validate.device(
        device, "device", available=False)).type == "cuda"
    _check_device(device, available=not remote)
    # Resolved once, here: "auto" becomes what this device supports (from its flags, never
    # a timing) and the slower-than-float32 warning is given once, not once per worker.
    # On remote GPUs, where they run: the first chunk's precision is the run's (below).
    compute_dtype = None if remote else dtype_name(
        resolve_compute_dtype(config.compute_dtype, device))
    if executor == "ray":
        check_reachable(ray_address)  # before any work: an unreachable cluster is one line
    n_workers = _check_workers(n_workers)
    shard = validate.shard(shard, "shard")
    if shard is not None and out is None:
        raise ConfigError("shard needs out: the run directory every shard trains into")
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(getattr(cb, "name", None), str) or not callable(cb):
            raise ConfigError(f"a callback needs a name and __call__(state); got {cb!r}")
        if not store.is_plain_name(cb.name):
            raise ConfigError(f"callback name {cb.name!r} is not a plain name: it names the "
                              "callback's files inside the run, so use letters, digits, "
                              "_ . - (not starting with a dot), e.g. 'probe'")
    transforms = recipe.resolve_transforms(config, transforms)
    work = ChunkWork(task.name, config, spec, callbacks, transforms)

    temporary = out is None
    run_dir = Path(tempfile.mkdtemp(prefix="memlab-run-")) if temporary else Path(out)
    if run_dir.is_symlink():  # a link to a directory: the run lives in its target (a
        run_dir = run_dir.resolve()  # run is created by renaming onto its path)
    verifier = store.Verifier()
    try:
        # SIGTERM/SIGHUP become SystemExit, so the clean-up below (workers, Ray, the lock,
        # the manifest's status) runs on every way out; a full or read-only disk is one line.
        with exit_on_signals(), _disk_errors(run_dir):
            lock, manifest, shard_lock = _open_or_create(
                run_dir, dataset, task, config, described, membership, callbacks, verifier,
                shard)
            try:
                _record_compute_dtype(run_dir, manifest, config, compute_dtype)
                if dp_plans and manifest.get("dp") != dp_plans:
                    manifest["dp"] = dp_plans
                    store.write_manifest(run_dir, manifest)
                if shard is not None and manifest.get("shards") != shard[1]:
                    manifest["shards"] = shard[1]  # (names the shards of missing chunks)
                    store.write_manifest(run_dir, manifest)
                complete = _train_and_finalize(
                    run_dir, manifest, dataset, task, config, work, device, n_workers,
                    executor, ray_address, progress, verifier, shard, lock)
            finally:
                lock.release()
                if shard_lock is not None:
                    shard_lock.release()
            if not complete:  # a shard whose run waits for other shards' chunks
                return None
            run = _open_verified(run_dir, verifier)
    except BaseException:
        if temporary:  # nobody can resume a run in a directory they were never told about
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if temporary:  # removed with the Run (or at exit); mapped arrays stay valid on Linux
        weakref.finalize(run, shutil.rmtree, str(run_dir), True)
    return run


def _plant_privacy_canaries(dataset: Any, config: PopulationConfig,
                            membership: np.ndarray | None) -> tuple[Any, np.ndarray | None]:
    """The dataset with the run's privacy canaries appended (``config.dp_canaries``), and an
    explicit mask with their columns (each model's own draw); unchanged without canaries."""
    n_canaries = config.privacy_canaries()
    if not n_canaries:
        return dataset, membership
    if not isinstance(dataset, Dataset):
        raise ConfigError("privacy canaries (--dp-canaries) are for classification "
                          "datasets; give --dp-canaries 0")
    planted = dataset.with_privacy_canaries(n_canaries, seed=config.seed)
    if membership is not None:
        membership = np.concatenate([membership, privacy_canary_columns(
            config, range(len(membership)))], axis=1)
    return planted, membership


def _dp_plans(task: Any, dataset: Any, config: PopulationConfig, spec: ModelSpec,
              membership: np.ndarray | None) -> list[dict] | None:
    """DP-SGD's plan for every subset size in the run (the accountant's ε, the σ solved for
    a target ε), checked before any work: a model DP cannot train, a δ too large for the
    subsets, a target ε beyond σ = 50 are one line each. None without DP."""
    if not config.dp:
        return None
    dp.check_model(spec.build(task.input_shape(dataset), task.outputs(dataset)))
    n_base = config.base_examples(task.n_examples(dataset, "train"))
    sizes = (sorted({int(n) for n in np.asarray(membership)[:, :n_base].sum(1)})
             if membership is not None else [config.subset_size(n_base)])
    return [{"n_members": size, **dp.plan(config, size).as_dict()} for size in sizes]


def _record_compute_dtype(run_dir: Path, manifest: dict, config: PopulationConfig,
                          resolved: str | None) -> None:
    """The precision the run trains in, in the manifest; a run whose ``auto`` resolved to
    another precision on another machine is not mixed with this one's chunks. None: known
    only once a (remote) worker has trained a chunk (:func:`_check_chunk_dtype`)."""
    if resolved is None:
        return
    before = manifest.get("compute_dtype_resolved")
    pending = any(state != "done" for state in manifest["chunks"].values())
    if before is not None and before != resolved and pending:
        raise RunError(f"{run_dir} was trained with compute_dtype={config.compute_dtype!r} "
                       f"resolved to {before} and this device resolves it to {resolved}; "
                       f"resume on the same kind of device, or give compute_dtype={before!r}")
    if before != resolved and (before is None or pending):
        manifest["compute_dtype_resolved"] = resolved
        store.write_manifest(run_dir, manifest)


def _train_and_finalize(run_dir: Path, manifest: dict, dataset: Any, task: Any,
                        config: PopulationConfig, work: ChunkWork, device: str,
                        n_workers: int, executor: str, ray_address: str | None,
                        progress: bool, verifier: store.Verifier,
                        shard: tuple[int, int] | None, lock: store.RunLock) -> bool:
    """Train every chunk (of ``shard``, if given) that is missing or damaged, then
    consolidate (again, when a consolidated file is damaged or a chunk was retrained).
    A shard trains without the run's ``lock`` (the other shards take it meanwhile) and
    consolidates only when every chunk is in; returns whether the run is complete."""
    chunks = store.chunk_plan_from_json(manifest["chunk_plan"])
    mine = [chunk for chunk in chunks if shards.owns(shard, chunk)]
    todo = []
    for chunk in mine:
        problems = store.chunk_problems(run_dir, chunk.index, verifier)
        if problems and manifest["chunks"].get(str(chunk.index)) == "done":
            say(f"repairing {run_dir}: chunks/{chunk.index:05d}/{problems[0][0]} is "
                 f"damaged ({problems[0][1]}); retraining chunk {chunk.index}")
        if problems:
            todo.append(chunk)
        manifest["chunks"][str(chunk.index)] = "pending" if problems else "done"

    if todo:
        manifest["status"] = "running"
        store.write_manifest(run_dir, manifest)
        if shard is not None:
            lock.release()  # the other shards open the run meanwhile
        tracker = _Progress(config, mine, todo, enabled=progress,
                            n_train=task.n_examples(dataset, "train"),
                            compute_dtype=manifest.get("compute_dtype_resolved",
                                                       config.compute_dtype),
                            shard=shard)

        def on_chunk(info: dict) -> None:
            _check_chunk_dtype(run_dir, manifest, info, write=shard is None)
            if shard is None:  # (a shard leaves the manifest to the run lock's holder)
                manifest["chunks"][str(info["chunk"])] = "done"
                store.write_manifest(run_dir, manifest)
            tracker.chunk_done(info)

        mask = np.load(run_dir / store.MASK, mmap_mode="r")
        try:
            if executor == "ray":
                run_ray(run_dir, dataset, work, todo, mask, device, ray_address,
                        on_chunk, tracker.epoch_done)
            else:
                run_local(run_dir, dataset, work, todo, mask, device, n_workers,
                          on_chunk, tracker.epoch_done)
        except BaseException as error:
            if isinstance(error, Terminated):
                say(f"terminated by signal {error.code - 128}; run the same command again "
                     "to resume")
            if shard is None:
                manifest["status"] = "interrupted"
                try:
                    store.write_manifest(run_dir, manifest)
                except OSError:
                    pass  # a full disk: the manifest keeps saying "running", as resumable
            tracker.close()
            raise
        tracker.close()
    if shard is not None:
        if lock.fd is None:
            lock.acquire(run_dir, wait=shards.WAIT_SECONDS)
        return _finish_shard(run_dir, shard, len(mine), verifier)
    damaged = ([] if manifest["status"] != "complete"
               else store.consolidated_damage(run_dir, verifier))
    if damaged:
        say(f"repairing {run_dir}: {damaged[0].path} is damaged ({damaged[0].problem}); "
             "rebuilding the consolidated records from chunks/")
    if manifest["status"] != "complete" or damaged:
        finalize(run_dir, manifest, config, chunks, task)
    return True


def _check_chunk_dtype(run_dir: Path, manifest: dict, info: dict, write: bool) -> None:
    """At each commit: the chunk was trained in the run's precision. A chunk from a worker
    whose ``auto`` resolved otherwise (a Ray node of another kind) is removed, and the run
    stops in one line, before any record mixes precisions."""
    trained = (info.get("provenance") or {}).get("compute_dtype")
    expected = manifest.get("compute_dtype_resolved")
    if trained is None:
        return
    if expected is None:  # the first chunk of a run whose precision the workers resolve
        manifest["compute_dtype_resolved"] = trained
        if write:
            store.write_manifest(run_dir, manifest)
        return
    if trained != expected:
        store.clear_path(store.chunk_dir(run_dir, info["chunk"]))
        host = (info.get("provenance") or {}).get("host", "?")
        raise RunError(f"chunk {info['chunk']} was trained in {trained} on {host}, and the "
                       f"run in {expected}: give --compute-dtype {expected} (not auto) so "
                       "that every node trains in the same precision, and run the same "
                       "command again")


def _finish_shard(run_dir: Path, shard: tuple[int, int], n_mine: int,
                  verifier: store.Verifier) -> bool:
    """With the run's lock held again after training shard ``shard``: consolidate if every
    chunk is committed (this shard is the last), else say what the run waits for."""
    manifest = store.read_manifest(run_dir)  # as the other shards left it
    upgrade_manifest(manifest)
    if manifest["status"] == "complete":
        return True
    chunks = store.chunk_plan_from_json(manifest["chunk_plan"])
    waiting = [c.index for c in chunks
               if not (store.chunk_dir(run_dir, c.index) / "done.json").exists()]
    if waiting:
        for chunk in chunks:
            if shards.owns(shard, chunk):
                manifest["chunks"][str(chunk.index)] = "done"
        store.write_manifest(run_dir, manifest)
        say(f"shard {shards.name(shard)} is done ({n_mine} chunks committed); the run waits "
             f"for {len(waiting)} chunks of other shards: the last shard to finish builds "
             f"the records (or memlab consolidate {run_dir}, once they are in)")
        return False
    finish(run_dir, manifest, verifier)  # checks every chunk; names a damaged one
    return True


def _open_verified(run_dir: Path, verifier: store.Verifier) -> Run:
    # Trusted: its model and augmentations are the code the caller just trained with (a
    # resumed run's recipe was checked to be the one given), not a stranger's choice.
    run = Run(run_dir, trust_code=True)
    run.verify(verifier)
    return run



@contextlib.contextmanager
def _disk_errors(run_dir: Path):
    """A full or read-only disk (here or in a worker) as a one-line RunError."""
    try:
        yield
    except OSError as error:
        converted = store.disk_error(error, run_dir)
        if converted is None:
            raise
        raise converted from None


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars as Python numbers (n_models=np.int64(2) is fine)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in settings.items()}


def _check_workers(n_workers: Any) -> int:
    """Worker processes: the one rule of :func:`memlab.validate.workers` (None: one per
    core)."""
    return validate.workers(n_workers, "n_workers") or os.cpu_count() or 1


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
        check_output_type(spec.label, out)  # (a tuple, a dict: one line)
        task.check_output(out, 2, dataset)
        if value == 0:
            check_distinct_inits(value_spec, recipe_config, input_shape, n_out)
            probe_training(task, dataset, recipe_config, value_spec, module)  # one step
            described = value_spec.describe(module, config)
    return described


def _check_device(device: str, available: bool = True) -> None:
    """The one rule of :func:`memlab.validate.device`, for the Python API as for the
    command line (``meta`` holds no data; a CUDA device this machine lacks is refused,
    unless ``available`` is False: Ray workers' GPUs)."""
    validate.device(device, "device", available=available)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    # (mnist1d's version identifies the generated data: read from its metadata, without
    # importing it, which cost every run about a second of scipy imports)
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
                    callbacks: list, verifier: store.Verifier, shard: tuple[int, int] | None
                    ) -> tuple[store.RunLock, dict, shards.ShardLock | None]:
    """Lock the run directory and return (lock, manifest, the shard's lock) of a compatible
    existing run (repaired and grown as needed), or create a new run directory atomically.
    A shard waits its turn for the run's lock; a whole-run train refuses while shards run."""
    described = dataset.describe()
    n_train = task.n_examples(dataset, "train")
    mask = explicit_mask if explicit_mask is not None else membership_mask(config, n_train)
    callback_records = [describe_callback(cb) for cb in callbacks]
    if not (run_dir / store.MANIFEST).exists():
        if run_dir.exists() and (not run_dir.is_dir() or _has_files(run_dir)):
            raise RunError(f"{run_dir} exists, is not empty and is not a memlab run; "
                           "choose a new output directory")
        manifest = {
            "format": store.RUN_FORMAT, "kind": "population", "task": task.name,
            "config": config.to_dict(), "model": model, "callbacks": callback_records,
            "dataset": described, "versions": versions(),
            "membership": {"kind": config.subsets, "sha256": _mask_digest(mask)},
            "chunk_plan": store.chunk_plan_to_json(_plan(config, mask)),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "created",
            "chunks": {},
        }
        lock = _create(run_dir, dataset, task, mask, manifest)
        if lock is not None:
            try:
                return lock, manifest, shards.take(run_dir, shard) if shard else None
            except BaseException:
                lock.release()
                raise
        # Another process created it first: open it like any existing run (below).
    lock = _lock_existing(run_dir, wait=shards.WAIT_SECONDS if shard else 0.0)
    shard_lock = None
    try:
        if shard is None:
            shards.refuse_if_live(run_dir)
        else:
            shard_lock = shards.take(run_dir, shard)
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
        manifest["config"]["on_diverge"] = config.on_diverge  # (saved with the next write)
        if not shards.live(run_dir, shard):  # (a live shard's temporaries are in use)
            store.remove_stale_temporaries(run_dir)
        checksums = manifest.setdefault("checksums", {})
        _repair_dataset(run_dir, manifest, dataset, task, verifier)
        n_stored = stored.n_total
        _repair_mask(run_dir, manifest, mask[:n_stored], explicit_mask is not None, verifier)
        if n_stored < len(mask):  # growing: append rows, plan chunks after the old ones
            checksums[store.MASK] = store.atomic_save_npy(run_dir / store.MASK, mask)
            manifest["chunk_plan"] = store.chunk_plan_to_json(_plan(
                config, mask, store.chunk_plan_from_json(manifest["chunk_plan"])))
            manifest["config"] = config.to_dict()
            manifest["membership"]["sha256"] = _mask_digest(mask)
            manifest["status"] = "grown"
            store.write_manifest(run_dir, manifest)
    except BaseException:
        lock.release()
        if shard_lock is not None:
            shard_lock.release()
        raise
    return lock, manifest, shard_lock


def _has_files(directory: Path) -> bool:
    return any(path.name != store.LOCK for path in directory.iterdir())


def _create(run_dir: Path, dataset: Any, task: Any, mask: np.ndarray,
            manifest: dict) -> store.RunLock | None:
    """Build the run under a temporary name and rename it into place, so a run directory
    is either absent or complete with data, mask and manifest. Returns the lock (held), or
    None when another process created the run first."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    store.remove_stale_staging(run_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.creating-", dir=run_dir.parent))
    lock = None
    try:
        lock = store.RunLock(staging / store.LOCK).acquire(staging)
        task.save(dataset, staging / "dataset.npz")
        checksums = {str(path.relative_to(staging)): io.file_checksum(path)
                     for path in sorted(staging.rglob("*"))
                     if path.is_file() and path.name != store.LOCK}
        checksums[store.MASK] = store.atomic_save_npy(staging / store.MASK, mask)
        manifest["checksums"] = checksums
        store.write_manifest(staging, manifest)
        try:
            os.replace(staging, run_dir)  # also replaces an empty directory
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) \
                    or not (run_dir / store.MANIFEST).exists():
                raise
            lock.release()
            return None
        lock.moved_to(run_dir / store.LOCK)
        return lock
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _lock_existing(run_dir: Path, wait: float = 0.0) -> store.RunLock:
    """Lock an existing run; on a read-only disk, a lock that cannot be taken is no lock
    (nothing will be written unless the run needs work, which then fails in one line)."""
    try:
        return store.RunLock(run_dir / store.LOCK).acquire(run_dir, wait=wait)
    except OSError as error:
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return store.RunLock(run_dir / store.LOCK)  # holds nothing; release is a no-op
        raise


def _repair_dataset(run_dir: Path, manifest: dict, dataset: Any, task: Any,
                    verifier: store.Verifier) -> None:
    """Re-write a lost or damaged dataset file from the dataset this call was given (its
    fingerprint equals the run's: _differences checked it)."""
    checksums = manifest["checksums"]
    names = store.dataset_files(checksums)
    damaged = [(name, problem) for name in names
               if (problem := verifier.problem(run_dir / name, checksums[name]))]
    if not names and not (run_dir / "dataset.npz").exists() \
            and not (run_dir / "dataset").is_dir():
        damaged = [("dataset.npz", "missing")]
    if not damaged:
        return
    say(f"repairing {run_dir}: {damaged[0][0]} is damaged ({damaged[0][1]}); re-writing it "
         f"from the given dataset ({manifest['dataset']['name']}, fingerprint checked)")
    staging = Path(tempfile.mkdtemp(prefix=".dataset.", dir=run_dir))
    try:
        task.save(dataset, staging / "dataset.npz")
        written = {str(path.relative_to(staging)): io.file_checksum(path)
                   for path in sorted(staging.rglob("*")) if path.is_file()}
        for name in written:
            (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
            store.clear_path(run_dir / name, unless_file=True)  # e.g. a directory there
            os.replace(staging / name, run_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name in names:
        checksums.pop(name, None)
    checksums.update(written)
    store.write_manifest(run_dir, manifest)


def _repair_mask(run_dir: Path, manifest: dict, expected: np.ndarray, explicit: bool,
                 verifier: store.Verifier) -> None:
    """Check the stored mask against its checksum and the mask this call asks for; a
    damaged one is re-written when the requested mask is the one the run was trained with."""
    checksums = manifest["checksums"]
    path = run_dir / store.MASK
    problem = verifier.problem(path, checksums.get(store.MASK))
    recorded = manifest.get("membership", {}).get("sha256")
    what = "given mask" if explicit else "seed"
    if problem is None:
        try:
            stored = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            problem = f"unreadable ({error})"
        else:
            if not np.array_equal(stored, expected):
                raise RunError(f"{path} does not match the {what}: the directory is corrupted "
                               "or another mask was passed; use another output directory")
            if store.MASK not in checksums:  # a run from before checksums: record it now
                checksums[store.MASK] = io.file_checksum(path)
                store.write_manifest(run_dir, manifest)
            return
    if recorded is not None and _mask_digest(expected) != recorded:
        raise RunError(f"{path} is {problem}, and the {what} differs from the mask the run "
                       "was trained with; run the same train command with the original "
                       "--membership mask")
    say(f"repairing {run_dir}: {store.MASK} is damaged ({problem}); re-writing it from "
         f"the {what}")
    store.clear_path(path, unless_file=True)  # a directory in its place: damage
    checksums[store.MASK] = store.atomic_save_npy(path, expected)
    store.write_manifest(run_dir, manifest)


def _mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mask).tobytes()).hexdigest()


def _plan(config: PopulationConfig, mask: np.ndarray,
          existing: list[store.ChunkPlan] | None = None) -> list[store.ChunkPlan]:
    """Chunks that hold one sweep value and one subset size each (privacy canaries left
    out: a DP model draws its own, and its Poisson batches do not need equal sizes)."""
    sizes = mask[:, :config.base_examples(mask.shape[1])].sum(1)
    boundaries = [v * config.n_models for v in range(1, config.n_values)]
    boundaries += (np.flatnonzero(np.diff(sizes)) + 1).tolist()
    return store.plan_chunks(config.n_total, config.chunk_size, boundaries, existing)


def _differences(stored: PopulationConfig, config: PopulationConfig, manifest: dict,
                 described: dict, model: dict, callbacks: list) -> list[str]:
    """Settings that differ between a stored run and a request (defaults compared as
    values; more models than stored is growth, not a difference)."""
    old, new = stored.to_dict(), config.to_dict()
    # The stored model's factory is looked at only when it is the one requested (the caller
    # named it): another module the manifest names is never imported to compare it.
    if stored.model == config.model or not recipe.code_modules(stored.model):
        old["model_kwargs"] = _with_defaults(stored.model, old["model_kwargs"])
    new["model_kwargs"] = _with_defaults(config.model, new["model_kwargs"])
    differences = []
    for key, value in new.items():
        if key == "on_diverge":  # changes no model that trained without diverging
            continue
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


class _Progress:
    """A tqdm bar over model-epochs, with models done, examples/s and ETA."""

    def __init__(self, config: PopulationConfig, chunks, todo, n_train: int, enabled: bool,
                 compute_dtype: str = "float32", shard: tuple[int, int] | None = None):
        from memlab.progress import tqdm

        self.n_models = sum(c.size for c in chunks)  # (a shard's own)
        total = self.n_models * config.epochs
        done = sum(c.size for c in chunks if c not in todo)
        self.models_done = done
        self.examples_per_model_epoch = (config.subset_size(n_train)
                                         if config.subsets == "random" else n_train)
        self.started = time.perf_counter()
        self.model_epochs_trained = 0
        chosen = " (auto)" if config.compute_dtype == "auto" else ""
        self.bar = tqdm(total=total, initial=done * config.epochs, unit="model-epoch",
                        disable=not enabled, dynamic_ncols=True,
                        desc=(f"shard {shards.name(shard)}, " if shard else "")
                        + f"training in {compute_dtype}{chosen}")
        self.bar.set_postfix_str(f"models {done}/{self.n_models}")

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
