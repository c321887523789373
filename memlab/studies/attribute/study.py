"""Score cheap data-attribution methods against a population's ground truth.

    from memlab.studies.attribute import AttributeConfig, run
    result = run(AttributeConfig(run_dir="runs/pop", methods=("grad_dot", "trak")))
    result.summary["methods"]["trak"]["lds"]

The population's models are split three ways (by index):

- the first ``method_models`` (``trak_models`` for TRAK) are the models the cheap methods
  read (weights, gradients, Hessians);
- the last ``n_heldout`` models are held out: every LDS is measured on them only;
- the ``n_validation`` models before the held-out ones choose each method's damping (from
  ``dampings``) by their LDS, so no hyperparameter sees the held-out models;
- datamodels and difference in means are fitted on every model that is not held out.

Scores (n_train, n_targets) float32 of every method stream to memory-mapped files
``OUT/scores/<method>.npy``; a method whose scores and ``OUT/methods/<method>.json`` exist
is not recomputed when the study is resumed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from memlab.errors import ConfigError, RunError
from memlab.io import atomic_write_json, loads_strict
from memlab.measures.attribution import datamodels as dm
from memlab.measures.attribution import methods as am
from memlab.measures.attribution.gradients import params_from_weights
from memlab.measures.attribution.lds import lds
from memlab.population.engine import cpu_model
from memlab.studies.base import Result, StudyConfig, saved_result

STUDY = "attribute"
DEFAULT_METHODS = ("grad_dot", "grad_cos", "tracin", "trak", "if_exact", "if_cg", "if_ekfac",
                   "representer", "knn", "random")
TUNED = ("trak", "if_exact", "if_cg", "if_lissa", "if_ekfac")  # methods with a damping


@dataclass(frozen=True)
class AttributeConfig(StudyConfig):
    """Attribution methods scored against the population in ``run_dir`` (trained first from
    the population settings below when ``data`` is given and the run is missing).

    Defaults: MNIST-1D, 1,000 MLPs 40-100-100-10 on 50% subsets (the LDS convention).
    """

    run_dir: str | None = None
    # population (used only when training)
    data: str | None = "mnist1d"
    model: str = "mlp"
    hidden: tuple[int, ...] | None = None  # None: the model's default; () for logistic reg.
    n_models: int = 1000
    subset_fraction: float = 0.5
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 0.005
    momentum: float = 0.9
    seed: int = 0
    n_workers: int | None = None
    # the evaluation
    methods: tuple[str, ...] = DEFAULT_METHODS
    n_targets: int = 100  # test examples attributed (the first ones)
    n_heldout: int = 100
    n_validation: int = 50
    method_models: int = 1
    trak_models: int = 10
    proj_dim: int = 512
    dampings: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    hessian_examples: int | None = 2000  # curvature sample of the iterative solvers
    cg_iter: int = 30
    knn_k: int = 50
    tracin_checkpoints: tuple[int, ...] = (5, 10, 15, 20)  # epochs (those <= epochs)
    self_influence_examples: int = 300
    self_influence_methods: tuple[str, ...] = ("grad_dot", "trak", "if_exact", "if_ekfac")
    # top-k removal
    removal: bool = False
    removal_k: int = 50
    removal_targets: int = 10
    removal_seeds: int = 4
    removal_methods: tuple[str, ...] = ("datamodels", "trak", "if_exact", "grad_dot")
    top_examples: int = 4  # test examples shown with their top training examples

    @classmethod
    def quick(cls, **changes: Any) -> AttributeConfig:
        """300 logistic regressions on digits: about a minute on 2 cores."""
        return cls(**{**dict(data="digits", hidden=(), n_models=300, epochs=20, batch_size=32,
                             optimizer="sgd", lr=0.05, momentum=0.0, n_targets=40,
                             n_heldout=60, n_validation=40, trak_models=4,
                             tracin_checkpoints=(5, 10, 20), self_influence_examples=100,
                             methods=("grad_dot", "grad_cos", "tracin", "trak", "if_exact",
                                      "if_ekfac", "representer", "knn", "random")),
                     **changes})

    @classmethod
    def full(cls, **changes: Any) -> AttributeConfig:
        return cls(**{**dict(removal=True), **changes})

    def validate(self) -> None:
        unknown = sorted(set(self.methods) - set(am.METHODS))
        if unknown:
            raise ConfigError(f"unknown attribution methods {unknown}; choose from "
                              f"{', '.join(am.METHODS)}")
        if self.n_heldout < 3 or self.n_validation < 3:
            raise ConfigError("n_heldout and n_validation must be at least 3")
        if self.method_models < 1 or self.trak_models < 1 or self.n_targets < 1:
            raise ConfigError("method_models, trak_models and n_targets must be >= 1")


# ------------------------------------------------------------------ the population


def population(config: AttributeConfig, out: Path | None, progress: bool = True):
    from memlab.population import open_run, train_population

    if config.run_dir is None and out is None:
        raise ConfigError("give AttributeConfig.run_dir or an output directory to train into")
    path = Path(config.run_dir) if config.run_dir is not None else Path(out) / "population"
    if (path / "manifest.json").exists() or config.data is None:
        if not path.exists():
            raise RunError(f"no run at {path}; train one with memlab train first")
        return open_run(path)
    from memlab.data import load

    kwargs = {} if config.hidden is None else {"model_kwargs": {"hidden": list(config.hidden)}}
    return train_population(load(config.data), model=config.model, n_models=config.n_models,
                            subset_fraction=config.subset_fraction, epochs=config.epochs,
                            batch_size=config.batch_size, optimizer=config.optimizer,
                            lr=config.lr, momentum=config.momentum, seed=config.seed,
                            out=path, n_workers=config.n_workers, progress=progress, **kwargs)


def _template(run) -> torch.nn.Module:
    from memlab.models import build_model

    d = run.manifest["dataset"]
    return build_model(run.config.model, tuple(d["input_shape"]), d["n_classes"],
                       **run.config.model_kwargs).eval()


def _split_models(n_models: int, config: AttributeConfig) -> dict[str, np.ndarray]:
    heldout = np.arange(n_models - config.n_heldout, n_models)
    validation = np.arange(n_models - config.n_heldout - config.n_validation,
                           n_models - config.n_heldout)
    used = max(config.method_models, config.trak_models)
    if validation[0] < used or validation[0] < 10:
        raise ConfigError(
            f"the run has {n_models} models: too few for {config.n_heldout} held-out, "
            f"{config.n_validation} validation and {used} method models (plus >= 10 to fit "
            "datamodels); train more models or lower --heldout")
    return {"heldout": heldout, "validation": validation,
            "fit": np.arange(0, n_models - config.n_heldout)}


# ------------------------------------------------------------------ training, isolated
# The two places that retrain models (TracIn checkpoints, top-k removal) go through this
# one function: the run's recipe, an explicit membership mask, optional callbacks.


class Checkpoints:
    """A training callback saving every model's parameters at ``epochs`` (records
    ``ckpt_<parameter name with dots as __>`` of shape (n_models, len(epochs), ...)); train a
    population with ``callbacks=[Checkpoints((5, 10, 20))]`` and TracIn reads them instead
    of re-training."""

    name = "ckpt"

    def __init__(self, epochs: tuple[int, ...]):
        self.epochs = tuple(int(e) for e in epochs)

    def describe(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs)}

    def __call__(self, state) -> dict[str, np.ndarray]:
        return {name.replace(".", "__"): tensor.detach().cpu().numpy().copy()
                for name, tensor in state.params.items()}


def train_with_masks(run, membership: np.ndarray, epochs: int | None = None,
                     callbacks: tuple = ()) -> tuple[dict[str, np.ndarray], dict]:
    """Train len(membership) models with the run's recipe on explicit membership rows
    (K, n_train) bool, model k with the run's model-k seeds, for ``epochs`` (default the
    run's). Returns (name -> (K, ...) final weights, the callbacks' records)."""
    import tempfile

    from memlab.population import train_population

    changes: dict[str, Any] = {"n_models": len(membership), "save_weights": True,
                               "record_epochs": False}
    if epochs is not None:
        changes["epochs"] = int(epochs)
    config = dataclasses.replace(run.config, **changes)
    with tempfile.TemporaryDirectory(prefix="memlab-attribute-") as tmp:
        trained = train_population(run.dataset, config, membership=np.asarray(membership, bool),
                                   callbacks=list(callbacks), out=Path(tmp) / "run",
                                   n_workers=1, progress=False)
        records = {name: np.array(trained.records(name)) for name in trained.record_names
                   if any(name.startswith(f"{cb.name}_") for cb in callbacks)}
        return trained.weights(), records


def tracin_checkpoints(run, template, config: AttributeConfig, models: list[int]):
    """[(params (1, ...), lr)] per model at the checkpoint epochs: from the run's own
    ``ckpt_*`` records when it was trained with :class:`Checkpoints`, else by training the
    models again with the run's seeds and mask rows and a :class:`Checkpoints` callback
    (checked: the replayed final weights must equal the stored ones)."""
    epochs = tuple(sorted({e for e in config.tracin_checkpoints if 1 <= e <= run.config.epochs}
                          | {run.config.epochs}))
    names = [name for name, _ in template.named_parameters()]
    stored = params_from_weights(template, run.weights(models))
    keys = [f"ckpt_{name.replace('.', '__')}" for name in names]
    if all(key in run.record_names for key in keys):
        stored_epochs = tuple(run.manifest.get("callbacks", {}).get("ckpt", {}).get(
            "epochs", epochs))
        records = {key: np.asarray(run.records(key))[models] for key in keys}
        epochs = stored_epochs
    else:
        _, records = train_with_masks(run, run.membership_mask[models],
                                      callbacks=(Checkpoints(epochs),))
    lr = run.config.lr
    deviation = max(float(np.abs(records[key][:, -1] - stored[name].numpy()).max())
                    for key, name in zip(keys, names)) if epochs[-1] == run.config.epochs \
        else float("nan")
    trajectories = [[({name: torch.as_tensor(records[key][row:row + 1, t])
                       for key, name in zip(keys, names)}, lr) for t in range(len(epochs))]
                    for row in range(len(models))]
    return trajectories, list(epochs), deviation


# ------------------------------------------------------------------ scoring


def _flops_and_seconds(name: str, task, options: dict):
    """(scores, seconds, FLOPs counted over torch operations) of one method call."""
    from torch.utils.flop_counter import FlopCounterMode

    started = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        value = am.compute(name, task, **options)
    return value, time.perf_counter() - started, int(counter.get_total_flops())


def _save_scores(path: Path, scores: np.ndarray) -> None:
    """Write (n_train, n_targets) float32 scores through a memory map, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mapped = np.lib.format.open_memmap(temp, mode="w+", dtype=np.float32, shape=scores.shape)
    mapped[:] = scores
    mapped.flush()
    del mapped
    os.replace(temp, path)


def _method_options(name: str, config: AttributeConfig) -> dict[str, Any]:
    if name == "trak":
        return {"proj_dim": config.proj_dim, "damping": config.dampings, "seed": config.seed}
    if name.startswith("if_"):
        options = {"damping": config.dampings}
        if name in ("if_cg", "if_lissa", "if_ekfac"):
            options["hessian_examples"] = config.hessian_examples
        if name == "if_cg":
            options["cg_iter"] = config.cg_iter
        return options
    if name == "knn":
        return {"k_neighbours": config.knn_k}
    if name == "random":
        return {"seed": config.seed}
    return {}


def score_methods(run, config: AttributeConfig, out: Path, split: dict, outputs: np.ndarray,
                  progress: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """Compute (or reload) every method's scores; choose dampings on the validation
    models; LDS on the held-out ones. Returns (rows by method, scores by method)."""
    mask = run.membership_mask
    template = _template(run)
    ds = run.dataset
    targets = slice(0, config.n_targets)
    rows, all_scores = {}, {}
    for name in config.methods:
        meta_path = out / "methods" / f"{name}.json"
        score_path = out / "scores" / f"{name}.npy"
        if meta_path.exists() and score_path.exists():
            rows[name] = loads_strict(meta_path.read_text())
            all_scores[name] = np.load(score_path, mmap_mode="r")
            continue
        n_used = config.trak_models if name == "trak" else config.method_models
        models = list(range(n_used))
        params = params_from_weights(template, run.weights(models))
        task = am.Task(template, params, ds.x_train, ds.y_train, ds.x_test[targets],
                       ds.y_test[targets], np.asarray(mask[models]))
        extra: dict[str, Any] = {}
        if name == "tracin":
            started = time.perf_counter()
            task.checkpoints, epochs, deviation = tracin_checkpoints(run, template, config,
                                                                     models)
            extra = {"checkpoint_epochs": epochs, "retrain_seconds":
                     time.perf_counter() - started, "replay_max_abs_deviation": deviation}
        if progress:
            print(f"attribute: {name} ...", flush=True)
        value, seconds, flops = _flops_and_seconds(name, task, _method_options(name, config))
        if isinstance(value, dict):  # a damping grid: choose on the validation models
            path = {d: lds(s, mask[split["validation"]], outputs[split["validation"]],
                           n_boot=0).mean for d, s in value.items()}
            finite = {d: v for d, v in path.items() if np.isfinite(v)}
            best = max(finite, key=finite.get) if finite else next(iter(value))
            scores = value[best]
            extra.update(damping=best, validation_lds={str(d): v for d, v in path.items()})
        else:
            scores = value
        result = lds(scores, mask[split["heldout"]], outputs[split["heldout"]],
                     seed=config.seed)
        row = {**result.as_dict(), "seconds": seconds, "flops": flops,
               "n_models_used": n_used, **extra}
        _save_scores(score_path, scores)
        atomic_write_json(meta_path, row)
        rows[name] = row
        all_scores[name] = np.load(score_path, mmap_mode="r")
    return rows, all_scores


def ground_truth(run, config: AttributeConfig, split: dict, outputs: np.ndarray
                 ) -> tuple[dict, dict[str, np.ndarray], pd.DataFrame]:
    """Datamodels and difference in means fitted on every non-held-out model, their
    held-out LDS, and the curve against the number of fitting models."""
    mask = np.asarray(run.membership_mask)
    fit, held = split["fit"], split["heldout"]
    started = time.perf_counter()
    model = dm.fit_datamodels(mask[fit], outputs[fit], seed=config.seed)
    fit_seconds = time.perf_counter() - started
    result = lds(model.weights, mask[held], outputs[held], seed=config.seed)
    started = time.perf_counter()
    diff = np.nan_to_num(dm.difference_in_means(mask[fit], outputs[fit]))
    diff_seconds = time.perf_counter() - started
    diff_result = lds(diff, mask[held], outputs[held], seed=config.seed)
    train_seconds = run.manifest.get("summary", {}).get("chunk_seconds_total")
    rows = {
        "datamodels": {**result.as_dict(), "seconds": fit_seconds, "n_models_used": len(fit),
                       "ridge_alpha": model.alpha, "population_train_seconds": train_seconds},
        "diff_in_means": {**diff_result.as_dict(), "seconds": diff_seconds,
                          "n_models_used": len(fit)},
    }
    curve = pd.DataFrame(dm.models_curve(mask[fit], outputs[fit], mask[held], outputs[held],
                                         seed=config.seed))
    return rows, {"datamodels": model.weights, "diff_in_means": diff}, curve


def self_influence(run, config: AttributeConfig, split: dict) -> tuple[pd.DataFrame, dict]:
    """Self-influence tau_i(i) of a sample of training examples by each method, against
    memorization (Spearman) and, with planted label noise, the AUROC of finding the
    mislabeled examples; the population's own proxies alongside."""
    from memlab.measures.memorization import detection_auroc, spearman

    mask = np.asarray(run.membership_mask)
    rng = np.random.default_rng([config.seed, 31])
    n = min(config.self_influence_examples, mask.shape[1])
    rows = np.sort(rng.choice(mask.shape[1], n, replace=False))
    fit = split["fit"]
    logodds = np.asarray(run.records("train_logodds"))[fit][:, rows]
    correct = np.asarray(run.records("train_correct"))[fit][:, rows].astype(float)
    member = mask[fit][:, rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        mem = (np.where(member, correct, 0).sum(0) / member.sum(0)
               - np.where(~member, correct, 0).sum(0) / (~member).sum(0))
        mem_logodds = (np.where(member, logodds, 0).sum(0) / member.sum(0)
                       - np.where(~member, logodds, 0).sum(0) / (~member).sum(0))
        loss = np.asarray(run.records("train_loss"))[fit][:, rows]
        final_loss = np.where(member, loss, 0).sum(0) / member.sum(0)
    frame = pd.DataFrame({"index": rows, "mem": mem, "mem_logodds": mem_logodds,
                          "proxy_final_loss": final_loss})
    template = _template(run)
    ds = run.dataset
    for name in config.self_influence_methods:
        if name not in am.METHODS or name in ("tracin", "if_cg", "if_lissa"):
            continue
        n_used = config.trak_models if name == "trak" else config.method_models
        models = list(range(n_used))
        task = am.Task(template, params_from_weights(template, run.weights(models)),
                       ds.x_train, ds.y_train, ds.x_train[rows], ds.y_train[rows],
                       mask[models])
        options = _method_options(name, config)
        if "damping" in options:
            options["damping"] = 1.0
        scores = am.compute(name, task, **options)
        frame[f"self_{name}"] = scores[rows, np.arange(n)]
    noise = run.manifest["dataset"].get("corruption", {}).get("label_noise")
    flipped = np.isin(rows, noise["indices"]) if noise else None
    summary = {}
    for column in frame.columns:
        if column in ("index", "mem"):
            continue
        # Low self-influence means the rest of the data pulls against the example.
        entry = {"spearman_mem": spearman(frame[column].to_numpy(), mem)}
        if flipped is not None and flipped.any():
            entry["mislabel_auroc"] = detection_auroc(-frame[column].to_numpy()
                                                      if column.startswith("self_")
                                                      or column == "mem_logodds"
                                                      else frame[column].to_numpy(), flipped)
        summary[column] = entry
    if flipped is not None:
        frame["mislabeled"] = flipped
    return frame, summary


def removal_study(run, config: AttributeConfig, scores: dict[str, np.ndarray]
                  ) -> tuple[pd.DataFrame, dict]:
    """Retrain on the whole training set minus the k examples a method ranks most
    positive for a target, and minus k random ones (paired seeds), and compare the
    target's log-odds. Effect < 0: the method found examples that hold the output up."""
    from memlab.measures.attribution.gradients import logits_of

    ds = run.dataset
    template = _template(run)
    n_train = ds.n_train
    k = config.removal_k
    rng = np.random.default_rng([config.seed, 53])
    records = []
    for target in range(min(config.removal_targets, config.n_targets)):
        arms = {"random": rng.choice(n_train, k, replace=False)}
        for name in config.removal_methods:
            if name in scores:
                arms[name] = np.argsort(-np.asarray(scores[name][:, target]))[:k]
        for arm, drop in arms.items():
            keep = np.ones((config.removal_seeds, n_train), bool)
            keep[:, drop] = False
            weights, _ = train_with_masks(run, keep)
            params = params_from_weights(template, weights)
            logits = logits_of(template, params, ds.x_test[target:target + 1])[:, 0]
            y = int(ds.y_test[target])
            others = torch.cat([logits[:, :y], logits[:, y + 1:]], 1)
            f = (logits[:, y] - torch.logsumexp(others, 1)).numpy()
            for seed, value in enumerate(f):
                records.append({"target": target, "arm": arm, "seed": seed,
                                "logodds": float(value)})
    frame = pd.DataFrame(records)
    summary = {}
    base = frame[frame.arm == "random"].set_index(["target", "seed"]).logodds
    for arm in frame.arm.unique():
        if arm == "random":
            continue
        diff = (frame[frame.arm == arm].set_index(["target", "seed"]).logodds - base)
        per_target = diff.groupby(level=0).mean()
        summary[arm] = {"effect_vs_random": float(per_target.mean()),
                        "se": float(per_target.std(ddof=1) / math.sqrt(len(per_target)))
                        if len(per_target) > 1 else None, "k": k,
                        "n_targets": int(len(per_target)), "seeds": config.removal_seeds}
    return frame, summary


def top_examples(scores: dict[str, np.ndarray], config: AttributeConfig, ds,
                 n_top: int = 5) -> pd.DataFrame:
    rows = []
    for target in range(min(config.top_examples, config.n_targets)):
        for name, values in scores.items():
            column = np.asarray(values[:, target])
            for rank, i in enumerate(np.argsort(-column)[:n_top]):
                rows.append({"target": target, "target_label": int(ds.y_test[target]),
                             "method": name, "rank": rank, "train_index": int(i),
                             "train_label": int(ds.y_train[i]), "score": float(column[i])})
    return pd.DataFrame(rows)


def training_flops(run) -> float:
    """Multiply-adds x 6 (forward 2, backward 4) of every example step of the population."""
    from memlab.models import layer_profile

    d = run.manifest["dataset"]
    macs, _ = layer_profile(_template(run), tuple(d["input_shape"]))
    steps = run.n_models * run.config.subset_size(d["n_train"]) * run.config.epochs
    return 6.0 * sum(macs) * steps


def _check_exact_hessian(population_run, config: AttributeConfig) -> None:
    """if_exact needs the full Hessian (linear models, or at most 4,000 parameters): say so
    before hours of other methods, not when its turn comes."""
    wanted = [field for field in ("methods", "self_influence_methods")
              if "if_exact" in getattr(config, field)]
    if not wanted:
        return
    template = _template(population_run)
    if not am.exact_hessian_applies(template):
        n = sum(p.numel() for p in template.parameters())
        raise ConfigError(f"if_exact needs the exact Hessian, and this model has {n} "
                          f"parameters (at most {am.EXACT_HESSIAN_MAX_PARAMS}, or a linear "
                          f"model); drop if_exact from {' and '.join(wanted)} (if_cg and "
                          "if_ekfac approximate it)")


def run(config: AttributeConfig, out: str | Path | None = None, progress: bool = True) -> Result:
    """Score every method (training the population first if needed) and write tables/,
    scores/, summary.json and report.html into ``out`` (default: RUN/attribute)."""
    config.validate()
    if out is None:
        if config.run_dir is None:
            raise ConfigError("give an output directory or AttributeConfig.run_dir")
        out = Path(config.run_dir) / "attribute"
    out = Path(out)
    saved = saved_result(out, STUDY, config)
    if saved is not None:
        return saved

    population_run = population(config, out, progress)
    if "test_logodds" not in population_run.record_names:
        raise RunError(f"{population_run.path} has no test_logodds record (an older run); "
                       "retrain it with this memlab version")
    n_models = population_run.n_models
    split = _split_models(n_models, config)
    n_test = population_run.manifest["dataset"]["n_test"]
    if config.n_targets > n_test:
        raise ConfigError(f"--targets {config.n_targets} exceeds the {n_test} test examples")
    _check_exact_hessian(population_run, config)
    outputs = np.asarray(population_run.records("test_logodds")[:, :config.n_targets],
                         np.float64)
    started = time.perf_counter()
    truth, truth_scores, curve = ground_truth(population_run, config, split, outputs)
    for name, values in truth_scores.items():
        _save_scores(out / "scores" / f"{name}.npy", values)
    rows, scores = score_methods(population_run, config, out, split, outputs, progress)
    self_frame, self_summary = self_influence(population_run, config, split)
    tables: dict[str, pd.DataFrame] = {"models_curve": curve, "self_influence": self_frame}
    removal_summary = None
    if config.removal:
        removal_frame, removal_summary = removal_study(
            population_run, config, {**truth_scores, **scores})
        tables["removal"] = removal_frame
    all_rows = {**rows, **truth}
    table = pd.DataFrame([{"method": name, **{k: v for k, v in row.items()
                                              if not isinstance(v, dict | list)}}
                          for name, row in all_rows.items()])
    tables["methods"] = table
    tables["top_examples"] = top_examples({**truth_scores, **scores}, config,
                                          population_run.dataset)
    models = population_run.models_table()
    summary: dict[str, Any] = {
        "methods": rows, **truth,
        "n_heldout_models": int(len(split["heldout"])),
        "n_validation_models": int(len(split["validation"])),
        "n_fit_models": int(len(split["fit"])), "n_targets": config.n_targets,
        "output": "test_logodds",
        "population": {"run_dir": str(population_run.path), "n_models": n_models,
                       "n_train": population_run.manifest["dataset"]["n_train"],
                       "dataset": population_run.manifest["dataset"]["name"],
                       "config": population_run.manifest["config"],
                       "test_acc_mean": float(models["test_acc"].mean()),
                       "train_seconds": population_run.manifest.get("summary", {}).get(
                           "chunk_seconds_total"),
                       "train_flops": training_flops(population_run)},
        "self_influence": self_summary, "removal": removal_summary,
        "seconds_total": time.perf_counter() - started,
        "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
    }
    result = Result(STUDY, config.to_dict(), tables, json.loads(json.dumps(
        summary, default=float)))
    result.save(out)
    return result


