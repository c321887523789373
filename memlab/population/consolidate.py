"""Consolidation: a run's committed chunks become its records (``records/*.npy``, one
array per record with a row per model) and its models table, and the run is marked
complete. ``train_population`` does it when the last chunk is in; :func:`consolidate` does
it for a run whose chunks several shard processes trained (``memlab consolidate RUN``),
after checking every chunk's checksums and provenance and naming what is missing.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from memlab import io
from memlab.engine.config import PopulationConfig
from memlab.engine.task import TASKS
from memlab.errors import RunError
from memlab.population import provenance, shards, store
from memlab.population.messages import say
from memlab.population.run import Run, upgrade_manifest


def consolidate(run_dir: str | Path) -> Run:
    """Build the records of a run whose chunks are all committed (by shard processes, say)
    and return it. Every chunk's files are checked against their checksums first, and its
    provenance against the others' (:mod:`memlab.population.provenance`); a missing or
    damaged chunk is a one-line RunError naming it and the shard that trains it. A run
    already consolidated, and intact, is returned as it is."""
    run_dir = Path(run_dir)
    store.read_manifest(run_dir)  # not a run: one line, before any lock file is made
    lock = store.RunLock(run_dir / store.LOCK).acquire(run_dir, wait=shards.WAIT_SECONDS)
    try:
        manifest = store.read_manifest(run_dir)  # as the last writer left it
        upgrade_manifest(manifest)
        verifier = store.Verifier()
        if manifest["status"] != "complete" or store.consolidated_damage(run_dir, verifier):
            finish(run_dir, manifest, verifier)
    finally:
        lock.release()
    run = Run(run_dir)
    run.verify(verifier)
    return run


def finish(run_dir: Path, manifest: dict, verifier: store.Verifier) -> None:
    """Consolidate ``run_dir`` if every chunk is committed and intact (call holding the
    run's lock, with the manifest as read under it); otherwise a RunError naming the
    missing and damaged chunks and their shards."""
    chunks = store.chunk_plan_from_json(manifest["chunk_plan"])
    problems = {chunk.index: found for chunk in chunks
                if (found := store.chunk_problems(run_dir, chunk.index, verifier))}
    for chunk in chunks:
        manifest["chunks"][str(chunk.index)] = "pending" if chunk.index in problems else "done"
    if problems:
        store.write_manifest(run_dir, manifest)
        raise RunError(shards.missing_message(run_dir, problems, len(chunks),
                                              manifest.get("shards")))
    if not shards.live(run_dir):  # what killed shards left (a live one's may be in use)
        store.remove_stale_temporaries(run_dir)
    config = PopulationConfig.from_dict({**PopulationConfig().to_dict(), **manifest["config"]})
    finalize(run_dir, manifest, config, chunks, TASKS[manifest["task"]])



def finalize(run_dir: Path, manifest: dict, config: PopulationConfig,
              chunks: list[store.ChunkPlan], task: Any) -> None:
    """Concatenate the chunks' records into records/*.npy (memory-bounded) and the models
    table; mark the run complete. The models table summarizes ``{train,test}_{score}``
    (bool ``correct``, or the per-token accuracy ``acc`` of language models)."""
    score = task.score_record
    n_total = config.n_total
    infos = {chunk.index: store.read_chunk_info(run_dir, chunk.index) for chunk in chunks}
    # where the chunks were trained: a mixed compute dtype is refused, the rest flagged
    manifest["provenance"] = provenance.check_chunks(infos)
    if manifest["provenance"]["mixed"]:
        say(f"this run's chunks were trained with different "
            f"{', '.join(manifest['provenance']['mixed'])} (memlab info {run_dir} lists "
            "them): its models agree within their errors, not bit for bit")
    names = [name[:-4] for name in infos[0]["files"] if name.endswith(".npy")]
    records_dir = run_dir / "records"
    # Damage repaired by rebuilding: a file where a directory belongs, or the reverse.
    for directory in (records_dir, run_dir / "tables"):
        if not directory.is_dir():
            store.clear_path(directory)
    records_dir.mkdir(exist_ok=True)
    shapes, checksums = {}, {}
    for name in names:
        first = store.read_chunk_array(run_dir, 0, name)
        shape = (n_total, *first.shape[1:])
        store.clear_path(records_dir / f"{name}.npy", unless_file=True)
        checksums[f"records/{name}.npy"] = io.write_file(
            records_dir / f"{name}.npy",
            functools.partial(_concatenate, run_dir, chunks, name, first.dtype, shape))
        shapes[name] = list(shape)

    # The models table, chunk by chunk: memory stays bounded by the chunk size. Columns of
    # NumPy arrays written by pyarrow (importing pandas would add 0.3 s to every run).
    mask = np.load(run_dir / "membership_mask.npy", mmap_mode="r")
    sweep = config.sweep_values()
    parts: dict[str, list] = {}
    for chunk in chunks:
        in_subset = np.asarray(mask[chunk.start:chunk.stop])
        train_score = store.decode_record(
            f"train_{score}", store.read_chunk_array(run_dir, chunk.index, f"train_{score}"),
            in_subset.shape[1])
        n_in = in_subset.sum(1)
        n_out = in_subset.shape[1] - n_in
        models = np.arange(chunk.start, chunk.stop)
        columns = {
            "model": models,
            "chunk": np.full(len(models), chunk.index),
            "replicate": models % config.n_models,
            "n_in": n_in,
            "train_acc_in": np.where(in_subset, train_score, 0).sum(1) / n_in,
            "train_acc_out": np.where(in_subset, 0, train_score).sum(1) / np.maximum(n_out, 1),
            "test_acc": store.decode_record(
                f"test_{score}", store.read_chunk_array(run_dir, chunk.index, f"test_{score}"),
                manifest["dataset"]["n_test"]).mean(1),
            "final_train_loss": store.read_chunk_array(
                run_dir, chunk.index, "epoch_train_loss_mean")[:, -1],
            # on_diverge="record": its records keep their NaN/inf (left out of estimates)
            "diverged": np.isin(models, infos[chunk.index].get("diverged", [])),
        }
        if manifest.get("dp"):  # each model's (ε, δ) guarantee, by its subset size
            by_size = {plan["n_members"]: plan for plan in manifest["dp"]}
            n_base = config.base_examples(in_subset.shape[1])
            for key in ("dp_epsilon", "dp_delta", "dp_noise_multiplier", "dp_max_grad_norm"):
                columns[key] = np.array([by_size[int(n)][key]
                                         for n in in_subset[:, :n_base].sum(1)], dtype=float)
        for key in config.sweep:
            values = [sweep[k // config.n_models][key] for k in models]
            columns[f"sweep_{key}"] = values if not isinstance(values[0], list | dict) else [
                json.dumps(v) for v in values]
        for name, values in columns.items():
            parts.setdefault(name, []).append(values)
    table = {name: np.concatenate(values) if isinstance(values[0], np.ndarray)
             else [v for part in values for v in part] for name, values in parts.items()}
    (run_dir / "tables").mkdir(exist_ok=True)
    store.clear_path(run_dir / "tables" / "models.parquet", unless_file=True)
    checksums["tables/models.parquet"] = io.atomic_save_columns(
        run_dir / "tables" / "models.parquet", table)
    seconds = sum(info["seconds"] for info in infos.values())
    manifest["checksums"] = {**{k: v for k, v in manifest.get("checksums", {}).items()
                                if not k.startswith(store.CONSOLIDATED)}, **checksums}
    kept = ~table["diverged"]  # the summary is of the models that did not diverge
    n_diverged = int(table["diverged"].sum())
    manifest.update(status="complete", records=shapes,
                    summary={"test_acc_mean": _mean(table["test_acc"][kept]),
                             "train_acc_in_mean": _mean(table["train_acc_in"][kept]),
                             "n_diverged": n_diverged,
                             "chunk_seconds_total": round(seconds, 2)})
    store.write_manifest(run_dir, manifest)
    if n_diverged:
        say(f"{n_diverged} of {n_total} models diverged (on_diverge='record'): marked in "
            "tables/models.parquet (column diverged) and Run.diverged, their records keep "
            "their NaN/inf values, and the estimators leave them out")


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _concatenate(run_dir: Path, chunks: list[store.ChunkPlan], name: str, dtype: np.dtype,
                 shape: tuple[int, ...], handle) -> None:
    """Write record ``name`` of every chunk, in model order, as one .npy file.

    Plain writes, not a memory map of a sparse file: on a full disk a memory-mapped write
    is a SIGBUS that kills the process, a plain one an OSError (ENOSPC) we report."""
    np.lib.format.write_array_header_1_0(handle, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": shape})
    for chunk in chunks:
        part = store.read_chunk_array(run_dir, chunk.index, name)
        if part.dtype != dtype or part.shape != (chunk.size, *shape[1:]):
            raise RunError(f"chunk {chunk.index}'s record {name} has {part.dtype} "
                           f"{part.shape}, expected {np.dtype(dtype)} "
                           f"{(chunk.size, *shape[1:])}; the run directory is damaged")
        handle.write(np.ascontiguousarray(part).data)
