"""Typed, read-only access to a finished run directory: ``open_run(path)``."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from memlab import io, validate
from memlab.data import Dataset
from memlab.engine import recipe as engine_recipe
from memlab.engine.config import PopulationConfig
from memlab.engine.modelspec import ModelSpec
from memlab.engine.task import TASKS
from memlab.engine.usermodel import with_tied_aliases
from memlab.errors import CheckpointError, RunError
from memlab.population import store

if TYPE_CHECKING:
    import pandas as pd


class Run:
    """A population run on disk. Arrays are memory-mapped: opening a run costs nothing.

    Records (``run.records(name)``), model axis first, for split in {train, test}:
      ``{split}_correct`` (n_models, n) bool, ``{split}_margin`` float32 (true-class logit
      minus the best other logit), ``{split}_loss`` float32 (cross-entropy, nats),
      ``{split}_pred`` int16; ``epoch_train_loss_mean`` (n_models, epochs) float32; with
      ``record_epochs``: ``epoch_{split}_correct`` (n_models, epochs, n) bool and
      ``epoch_{split}_loss`` float16.

    Opening a run runs none of its code: the manifest names its model factory (and any
    augmentation functions) as ``package.module:name``, and whoever can edit the file
    chooses that name (its checksum is no defence: an editor re-stamps it). Such a module
    is imported only when the caller trusts the run (``trust_code=True`` here, in
    :func:`open_run` or per call in :meth:`model`) or passes the model itself
    (``run.model(k, model=...)``). Names that import nothing (built-in and language
    models, names registered in this process with ``memlab.models.register_model``) and
    memlab's own modules need no trust.
    """

    def __init__(self, path: str | Path, trust_code: bool = False):
        self.path = Path(path)
        self.trust_code = validate.boolean(trust_code, "trust_code")
        self.manifest = store.read_manifest(self.path)
        try:
            upgrade_manifest(self.manifest)
            self.config = PopulationConfig.from_dict(self.manifest["config"])
            self.chunks = store.chunk_plan_from_json(self.manifest["chunk_plan"])
            self.task = TASKS[self.manifest["task"]]
            self._checksums = dict(self.manifest.get("checksums") or {})
        except (KeyError, TypeError, ValueError) as error:
            raise RunError(f"{self.path / store.MANIFEST} is malformed ({type(error).__name__}: "
                           f"{error}); the run directory is damaged") from None

    def __repr__(self) -> str:
        d = self.manifest["dataset"]
        return (f"Run({str(self.path)!r}: {self.n_models} x {self.config.model} on {d['name']} "
                f"({d['n_train']} train / {d['n_test']} test), {self.manifest['status']})")

    @property
    def n_models(self) -> int:
        """Models in the run (with a sweep: every combination's models)."""
        return self.config.n_total

    @property
    def complete(self) -> bool:
        return self.manifest["status"] == "complete"

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The exact data the population was trained on (after any corruption)."""
        for name in store.dataset_files(self._checksums):
            self._check_file(name)
        return self.task.load(self.path / "dataset.npz")

    @functools.cached_property
    def membership_mask(self) -> np.ndarray:
        """(n_models, n_train) bool: M[k, i] is True iff example i is in model k's subset."""
        self._check_file(store.MASK)
        mask = store.load_npy(self.path / store.MASK)
        expected = (self.n_models, self.manifest["dataset"]["n_train"])
        if mask.shape != expected or mask.dtype != bool:
            raise RunError(f"{self.path}/membership_mask.npy has shape {mask.shape} "
                           f"{mask.dtype}, expected {expected} bool; the run is corrupted")
        return mask

    @functools.cached_property
    def diverged(self) -> np.ndarray:
        """(n_models,) bool: the models whose training diverged, kept by a run trained with
        ``on_diverge="record"`` (their records hold NaN/inf values; the estimators leave
        them out, see :meth:`usable_models`). All False otherwise, and for older runs."""
        flags = np.zeros(self.n_models, dtype=bool)
        if not (self.manifest.get("summary") or {}).get("n_diverged"):
            return flags
        self._require_complete()
        self._check_file("tables/models.parquet")
        import pyarrow.parquet as pq

        table = pq.read_table(self.path / "tables" / "models.parquet",
                              columns=["model", "diverged"])
        flags[table["model"].to_numpy()[table["diverged"].to_numpy()]] = True
        return flags

    def usable_models(self, rows: np.ndarray | slice | None = None) -> np.ndarray | slice:
        """The models estimates are computed from: ``rows`` (model indices or a slice;
        default all) less the diverged ones (:attr:`diverged`), with a warning that counts
        them. Returns ``rows`` unchanged when none of them diverged (so a slice keeps the
        records memory-mapped and the estimates are exactly those of every model)."""
        rows = slice(None) if rows is None else rows
        diverged = self.diverged
        if not diverged.any():
            return rows
        chosen = np.arange(self.n_models)[rows]
        kept = chosen[~diverged[chosen]]
        n_left_out = len(chosen) - len(kept)
        if n_left_out == 0:
            return rows
        if len(kept) == 0:
            raise RunError(f"all {len(chosen)} models of {self.path} diverged during training; "
                           "there is nothing to estimate from: train again with a lower "
                           "learning rate or normalized features")
        warnings.warn(f"{n_left_out} of {len(chosen)} models diverged and are left out of "
                      "the estimates (Run.diverged)", stacklevel=3)
        return kept

    @property
    def record_names(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "records").glob("*.npy"))

    def records(self, name: str) -> np.ndarray:
        """A record array, model axis first: memory-mapped, or decoded into memory for a
        run with ``compact_records`` (bits and float16 on disk)."""
        if not isinstance(name, str) or not name or "/" in name or "\\" in name \
                or name.startswith("."):
            raise RunError(f"record names are plain names such as 'train_correct', got "
                           f"{name!r}; available: {', '.join(self.record_names)}")
        array = self._stored_record(name)
        split = "test" if "test_" in name else "train"
        return store.decode_record(name, array, self.manifest["dataset"][f"n_{split}"])

    def _stored_record(self, name: str, check: bool = True) -> np.ndarray:
        """A record as stored on disk (memory-mapped, possibly encoded)."""
        self._require_complete()
        path = self.path / "records" / f"{name}.npy"
        if not path.exists():
            hint = (" (per-epoch records need record_epochs=True / --record-epochs)"
                    if name.startswith("epoch_") else "")
            raise RunError(f"{self.path} has no record {name!r}{hint}; "
                           f"available: {', '.join(self.record_names)}")
        if check:
            self._check_file(f"records/{name}.npy")
        array = store.load_npy(path)
        if array.shape[0] != self.n_models:
            raise RunError(f"record {path} has {array.shape[0]} models, expected "
                           f"{self.n_models}; the run is corrupted")
        return array

    def models_table(self) -> pd.DataFrame:
        """One row per model: subset size and accuracies (IN = its own training subset)."""
        self._check_file("tables/models.parquet")
        import pandas as pd

        path = self.path / "tables" / "models.parquet"
        try:
            io.check_regular(path)  # a FIFO is refused, never opened
            return pd.read_parquet(path)
        except (OSError, ValueError) as error:  # truncated: pyarrow's ArrowInvalid
            reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
            raise RunError(f"{path} is unreadable ({reason}); {store.REPAIR_CONSOLIDATED} "
                           f"(memlab verify {self.path} lists every damaged file)") from None

    def weights(self, models: list[int] | range | None = None) -> dict[str, np.ndarray]:
        """name -> (len(models), ...) float32 final weights, names as in the model's
        state_dict. Read from safetensors files (no code is executed on load)."""
        self._require_complete()
        if not self.config.save_weights:
            raise RunError(f"{self.path} was trained with save_weights=False")
        from safetensors.numpy import load_file

        models = range(self.n_models) if models is None else models
        starts = np.array([c.start for c in self.chunks])
        parts: dict[str, list[np.ndarray]] = {}
        by_chunk: dict[int, list[int]] = {}
        for k in models:
            if isinstance(k, bool) or not isinstance(k, int | np.integer) \
                    or not 0 <= k < self.n_models:
                raise RunError(f"model {k!r} out of range: the run has {self.n_models} models "
                               f"(0..{self.n_models - 1})")
            chunk = self.chunks[int(np.searchsorted(starts, k, side="right")) - 1]
            by_chunk.setdefault(chunk.index, []).append(int(k) - chunk.start)
        order = []
        for chunk_index, rows in by_chunk.items():
            path = store.chunk_dir(self.path, chunk_index) / "weights.safetensors"
            self._check_chunk_file(chunk_index, "weights.safetensors")
            try:
                tensors = load_file(str(path))
            except Exception as error:  # safetensors raises its own error types
                raise CheckpointError(f"cannot read weights {path}: {error}") from None
            for name, array in tensors.items():
                parts.setdefault(name, []).append(array[rows])
            order.extend(self.chunks[chunk_index].start + r for r in rows)
        # Chunks were read in chunk order; give the models back in the order asked for.
        return {name: _reorder(np.concatenate(arrays), order, list(models))
                for name, arrays in parts.items()}

    @property
    def code_modules(self) -> list[str]:
        """The modules outside memlab that rebuilding or retraining this run's models
        imports, as its manifest names them (the model factory's, user augmentations');
        empty when the run names only built-in or registered models."""
        return engine_recipe.code_modules(self.config.model, self.config.augment)

    def require_trust(self, trust_code: bool | None = None,
                      purpose: str = "rebuild its models") -> None:
        """Refuse, with a one-line RunError naming the module and the fix, to go on to
        import the run's :attr:`code_modules` unless the run is trusted (``trust_code``,
        default this Run's)."""
        trusted = self.trust_code if trust_code is None else validate.boolean(
            trust_code, "trust_code")
        modules = self.code_modules
        if modules and not trusted:
            raise RunError(untrusted_code_message(self.path, modules, purpose))

    def model(self, k: int, model: Any = None, trust_code: bool | None = None
              ) -> torch.nn.Module:
        """Model k as an ordinary nn.Module with its final weights (in eval mode).

        model: how to build the architecture when the run's model cannot be rebuilt by
            name (a class from a notebook, a model object): a factory
            ``f(input_shape, n_classes, **kwargs)`` or an ``nn.Module`` of the same
            architecture (its weights are replaced). The run stores no pickled code.
        trust_code: import the ``package.module`` the run's manifest names as its model
            factory (default: whether the Run was opened with ``trust_code=True``). Not
            needed for built-in or registered names, nor when ``model`` is given.
        """
        if model is None:
            described = self.manifest["model"]
            if not described.get("rebuildable"):
                raise RunError(
                    f"{self.path} was trained with {described.get('class')}, which cannot be "
                    "rebuilt from its name (it was defined in a notebook, a script or as a "
                    "model object): pass it, run.model(k, model=factory_or_module)")
            self.require_trust(trust_code, f"rebuild model {k!r}")  # before any import
        weights = self.weights([k])
        recipe = self.config.for_value(self.config.model_key(k)[0])
        data = self.manifest["dataset"]
        input_shape = tuple(data["input_shape"])
        n_outputs = 1 if self.task.name == "binary" else data["n_classes"]
        if model is None:
            spec = ModelSpec.resolve(self.config.model, recipe.model_kwargs, self.task)
        else:
            kwargs = recipe.model_kwargs if not isinstance(model, torch.nn.Module) else None
            spec = ModelSpec.resolve(model, kwargs, self.task)
        module = spec.build(input_shape, n_outputs)
        state = {name: torch.from_numpy(np.array(w[0])) for name, w in weights.items()}
        try:
            module.load_state_dict(with_tied_aliases(module, state))  # (tied: saved once)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise RunError(f"the given model does not match the run's architecture "
                           f"({self.manifest['model'].get('class')}): {first}") from None
        return module.eval()

    # Lazy verification (open_run(path, verify="lazy")): each file is checked against its
    # checksum the first time this Run reads it.
    _lazy = False
    _verifier: store.Verifier | None = None

    def _check_file(self, name: str, expected: str | None = None) -> None:
        if not self._lazy:
            return
        checked = self.__dict__.setdefault("_checked", set())
        if name in checked:
            return
        expected = expected or self._checksums.get(name)
        problem = self._verifier.problem(self.path / name, expected) if expected else None
        if problem:
            raise self._damage_error([store.damage(self.manifest, name, problem)])
        checked.add(name)

    def _check_chunk_file(self, chunk_index: int, name: str) -> None:
        if not self._lazy:
            return
        try:
            info = store.read_chunk_info(self.path, chunk_index)
            expected = info.get("checksums", {}).get(name)
        except (RunError, AttributeError) as error:
            raise self._damage_error([store.damage(
                self.manifest, f"chunks/{chunk_index:05d}/done.json",
                f"damaged ({error})")]) from None
        self._check_file(f"chunks/{chunk_index:05d}/{name}", expected)

    def _damage_error(self, damage: list[store.Damage]) -> RunError:
        more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
        return RunError(f"{self.path}/{damage[0].path} is unreadable ({damage[0].problem})"
                        f"{more}; {damage[0].repair} (memlab verify {self.path} lists "
                        "every damaged file)")

    def verify(self, verifier: store.Verifier | None = None) -> None:
        """Check that the run is complete and every file matches its checksum; raise a
        one-line RunError naming the first damaged file and its repair otherwise."""
        self._require_complete()
        damage = store.verify_run(self.path, verifier)
        if damage:
            raise self._damage_error(damage)
        self._check_shapes()

    def _check_shapes(self) -> None:
        self._require_complete()
        for name, shape in self.manifest.get("records", {}).items():
            array = self._stored_record(name, check=False)
            if list(array.shape) != shape:
                raise RunError(f"record {name} has shape {list(array.shape)}, the manifest "
                               f"says {shape}; the run directory is corrupted: run the same "
                               "train command again to rebuild it from chunks/")

    def _require_complete(self) -> None:
        if not self.complete:
            raise RunError(
                f"{self.path} is not complete (status {self.manifest['status']!r}, "
                f"{sum(s == 'done' for s in self.manifest['chunks'].values())} of "
                f"{len(self.manifest['chunks'])} chunks done); resume it by running the same "
                "train command again"
            )


# Modules that moved (memlab.engine took the training math out of memlab.population): a
# manifest names a callback's or a model's module in its class path, and a run written
# before the move stores the old name. Read under the new one, the same callback compares
# equal on resume. (Built-in models are recorded as memlab.models:* wherever they live.)
MOVED_MODULES = {
    "memlab.population.callbacks": "memlab.engine.callbacks",
    "memlab.population.config": "memlab.engine.config",
    "memlab.population.engine": "memlab.engine.loop",
    "memlab.population.modelspec": "memlab.engine.modelspec",
    "memlab.population.recipe": "memlab.engine.recipe",
    "memlab.population.stackable": "memlab.engine.stackable",
    "memlab.population.task": "memlab.engine.task",
    # training callbacks that were a study's, now measures any population can use
    "memlab.studies.noise.callbacks": "memlab.measures.callbacks.critical",
    "memlab.studies.audit.study": "memlab.measures.callbacks.checkpoints",
    "memlab.studies.attribute.study": "memlab.measures.callbacks.checkpoints",
    "memlab.studies.elasticity.study": "memlab.measures.callbacks.elasticity",
    "memlab.studies.lesde.study": "memlab.measures.callbacks.features",
}


def moved_class_path(path: Any) -> Any:
    """``module:QualName`` with a moved module's new name (anything else unchanged)."""
    if not isinstance(path, str):
        return path
    module, colon, qualname = path.partition(":")
    return MOVED_MODULES.get(module, module) + colon + qualname


def upgrade_manifest(manifest: dict) -> None:
    """Read an older manifest as the current one (in memory): format 1 as format 2, and
    class paths in modules that have moved under their new names."""
    for callback in manifest.get("callbacks") or []:
        if isinstance(callback, dict) and "class" in callback:
            callback["class"] = moved_class_path(callback["class"])
    if isinstance(manifest.get("model"), dict) and "class" in manifest["model"]:
        manifest["model"]["class"] = moved_class_path(manifest["model"]["class"])
    if manifest.get("format") == store.RUN_FORMAT:
        return
    config = PopulationConfig.from_dict({**PopulationConfig().to_dict(), **manifest["config"]})
    task = "language_model" if manifest["dataset"].get("task") == "lm" else "classification"
    manifest.setdefault("task", task)
    manifest.setdefault("model", {"label": config.model, "factory": config.model,
                                  "rebuildable": True, "fingerprint": None})
    manifest.setdefault("callbacks", [])
    manifest.setdefault("membership", {"kind": "random", "sha256": None})
    manifest.setdefault("chunk_plan", store.chunk_plan_to_json(
        store.plan_chunks(config.n_models, config.chunk_size)))
    manifest["config"] = {**manifest["config"], "task": task}


def untrusted_code_message(path: Path, modules: list[str], purpose: str) -> str:
    """One line: which module a run names, why it is not imported, and how to go on."""
    named = ", ".join(repr(m) for m in modules)
    return (f"{path} names code to import to {purpose}: module {named} (from its "
            f"{store.MANIFEST}, which whoever edits it chooses); memlab imports a run's "
            "code only for a run you trust: give --trust-run (Python: open_run(path, "
            "trust_code=True) or run.model(k, trust_code=True)), or pass the model "
            "yourself (run.model(k, model=factory_or_module))")


def _reorder(stacked: np.ndarray, order: list[int], wanted: list[int]) -> np.ndarray:
    position = {model: row for row, model in enumerate(order)}
    return stacked[[position[k] for k in wanted]]


def open_run(path: str | Path, verify: bool | str = True, trust_code: bool = False) -> Run:
    """Open a finished run, checking that its manifest and records are intact.

    verify: True: check every file of the run against its checksum now (the dataset, the
        mask, each chunk's records and weights, the consolidated records and tables);
        measured 1.3-2.3 s for the 400 MB of a 2000-model mnist1d run on a loaded
        2-core AMD EPYC, against 0.003 s without. "lazy": check each file the first time
        this Run reads it (a run whose records are read once costs about twice the
        plain read). False: no checksums (shapes only). A damaged file is a one-line
        RunError naming it and its repair; ``memlab verify RUN`` lists them all.
        Checksums catch accidental damage, not deliberate edits (see :class:`Run`).
    trust_code: allow ``run.model(k)`` (and studies retraining the run's recipe) to import
        the ``package.module`` the run's manifest names as its model factory or
        augmentation: only for runs whose manifest you trust (your own). Opening, reading
        records and weights, and verifying never import anything.
    """
    if verify not in (True, False, "lazy"):
        raise RunError(f"verify must be True, False or 'lazy', got {verify!r}")
    run = Run(path, trust_code=trust_code)
    if verify == "lazy":
        run._lazy, run._verifier = True, store.Verifier()
    if verify is True:
        run.verify()
    else:
        run._check_shapes()
    return run
