"""The attribution study's retraining, one function for both places that retrain models
(TracIn's checkpoints when the run has none stored, the top-k removal study): the run's
recipe on explicit membership rows, model k with the run's model-k seeds."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from memlab import streams
from memlab.measures.attribution.gradients import buffers_from_weights, params_from_weights
from memlab.measures.callbacks.checkpoints import Checkpoints
from memlab.studies.attribute.config import AttributeConfig
from memlab.studies.base import Execution

if TYPE_CHECKING:
    from memlab.population.run import Run


def build_template(run) -> torch.nn.Module:
    """A fresh model of the run's architecture (evaluation mode): the template the
    attribution methods put each model's weights into. The run's model code is imported
    only when the run is trusted (``--trust-run``, ``Run.require_trust``)."""
    from memlab.models import build_model

    run.require_trust(purpose="build its model")
    d = run.manifest["dataset"]
    return build_model(run.config.model, tuple(d["input_shape"]), d["n_classes"],
                       **run.config.model_kwargs).eval()


def train_with_masks(run, membership: np.ndarray, execution: Execution,
                     epochs: int | None = None, callbacks: tuple = (),
                     out: Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Train len(membership) models with the run's recipe on explicit membership rows
    (K, n_train) bool, model k with the run's model-k seeds, for ``epochs`` (default the
    run's). Returns (name -> (K, ...) final weights, the callbacks' records). ``out``: keep
    the run there (resumed, not retrained, when the study runs again), else in a
    temporary directory."""
    import contextlib
    import tempfile

    from memlab.population import train_population

    run.require_trust(purpose="retrain its models")
    changes: dict[str, Any] = {"n_models": len(membership), "save_weights": True,
                               "record_epochs": False}
    if epochs is not None:
        changes["epochs"] = int(epochs)
    config = dataclasses.replace(run.config, **changes)
    place = (contextlib.nullcontext(out.parent) if out is not None
             else tempfile.TemporaryDirectory(prefix="memlab-attribute-"))
    with place as parent:
        trained = train_population(run.dataset, config, membership=np.asarray(membership, bool),
                                   callbacks=list(callbacks),
                                   out=out if out is not None else Path(parent) / "run",
                                   **{**execution.training(), "progress": False})
        records = {name: np.array(trained.records(name)) for name in trained.record_names
                   if any(name.startswith(f"{cb.name}_") for cb in callbacks)}
        return trained.weights(), records


def replicate_seed(seed: int) -> int:
    """The master seed of the held-out masks' second replicate: from its own stream of the
    study's seed, so its models' initialization, order, augmentation and dropout streams
    ([seed', r, stream]) are independent of every model of the population ([seed, k, ...])."""
    state = np.random.SeedSequence([seed, streams.ATTRIBUTE_CEILING]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1]))  # 63 bits: a valid population seed


def replicate_run(run: Run, config: AttributeConfig, heldout: np.ndarray, out: Path,
                  execution: Execution) -> Run:
    """The held-out models' masks trained once more with the run's recipe and the seed
    :func:`replicate_seed` (one model per mask, in the same order), in the run directory
    ``out``: resumed, not retrained, when the study is run again. Only the records are
    kept (no weights): the ceiling needs the outputs."""
    from memlab.errors import ConfigError
    from memlab.population import train_population

    if run.config.sweep:
        raise ConfigError("the LDS ceiling trains the held-out masks again with one recipe, "
                          "and this run has a sweep; give --no-ceiling")
    run.require_trust(purpose="retrain its recipe")
    recipe = dataclasses.replace(run.config, n_models=len(heldout), save_weights=False,
                                 record_epochs=False,
                                 seed=replicate_seed(config.population.seed))
    return train_population(run.dataset, recipe,
                            membership=np.asarray(run.membership_mask[heldout], bool),
                            out=out, **execution.training())


def tracin_checkpoints(run, template, config: AttributeConfig, models: list[int],
                       execution: Execution):
    """[(params (1, ...), lr)] per model at the checkpoint epochs, lr the learning rate the
    recipe used over the steps the checkpoint stands for (:func:`tracin_learning_rates`;
    under a cosine or step schedule it changes from one checkpoint to the next). The
    parameters come from the run's own ``ckpt_*`` records when it was trained with
    :class:`Checkpoints`, else from training the models again with the run's seeds and mask
    rows and a :class:`Checkpoints` callback (checked: the replayed final weights must
    equal the stored ones)."""
    epochs = tuple(sorted({e for e in config.tracin_checkpoints if 1 <= e <= run.config.epochs}
                          | {run.config.epochs}))
    names = [name for name, _ in template.named_parameters()]
    stored = params_from_weights(template, run.weights(models))
    keys = [f"ckpt_{name.replace('.', '__')}" for name in names]
    if all(key in run.record_names for key in keys):
        # The epochs the run's Checkpoints callback saved, as its manifest describes it (a
        # list of {"name", "class", "settings"}); their learning rates depend on them.
        described = [cb.get("settings", {}) for cb in run.manifest.get("callbacks") or []
                     if isinstance(cb, dict) and cb.get("name") == Checkpoints.name]
        if described and "epochs" in described[0]:
            epochs = tuple(int(e) for e in described[0]["epochs"])
        records = {key: np.asarray(run.records(key))[models] for key in keys}
    else:
        _, records = train_with_masks(run, run.membership_mask[models], execution,
                                      callbacks=(Checkpoints(epochs),))
    deviation = max(float(np.abs(records[key][:, -1] - stored[name].numpy()).max())
                    for key, name in zip(keys, names)) if epochs[-1] == run.config.epochs \
        else float("nan")
    trajectories = [[({name: torch.as_tensor(records[key][row:row + 1, t])
                       for key, name in zip(keys, names)}, lr)
                     for t, lr in enumerate(tracin_learning_rates(run, model, epochs))]
                    for row, model in enumerate(models)]
    return trajectories, list(epochs), deviation


def tracin_learning_rates(run, model: int, epochs) -> list[float]:
    """TracIn's weights of model ``model``'s checkpoints after ``epochs`` epochs: the mean
    learning rate its recipe used over the steps each checkpoint stands for
    (:func:`memlab.measures.attribution.methods.checkpoint_learning_rates`), read from the
    training loop's own schedule (:func:`memlab.engine.recipe.set_lr`) with the model's
    recipe (its sweep value's) and steps per epoch (its subset, in batches)."""
    from types import SimpleNamespace

    from memlab.engine.recipe import set_lr
    from memlab.measures.attribution.methods import checkpoint_learning_rates

    recipe = run.config.for_value(run.config.model_key(model)[0])
    members = int(np.count_nonzero(run.membership_mask[model]))
    per_epoch = -(-members // recipe.batch_size)  # as the engine's loop counts its steps
    optimizer = SimpleNamespace(param_groups=[{}])  # set_lr writes the step's rate here

    def lr_at(step: int) -> float:
        set_lr(optimizer, recipe, step, per_epoch)
        return optimizer.param_groups[0]["lr"]

    return checkpoint_learning_rates(lr_at, [int(e) * per_epoch for e in epochs])


def removal_study(run, config: AttributeConfig, scores: dict[str, np.ndarray],
                  execution: Execution, out: Path) -> tuple[pd.DataFrame, dict]:
    """Retrain on the whole training set minus the k examples a method ranks most
    positive for a target, and minus k random ones (paired seeds), and compare the
    target's log-odds. Effect < 0: the method found examples that hold the output up.
    Each retrained population is a run directory under ``out`` (a re-run resumes it)."""
    from memlab.measures.attribution.gradients import logits_of

    ds = run.dataset
    template = build_template(run)
    n_train = ds.n_train
    k = config.removal_k
    rng = np.random.default_rng([config.population.seed, streams.ATTRIBUTE_REMOVAL])
    records = []
    for target in range(min(config.removal_targets, config.n_targets)):
        arms = {"random": rng.choice(n_train, k, replace=False)}
        for name in config.removal_methods:
            if name in scores:
                arms[name] = np.argsort(-np.asarray(scores[name][:, target]))[:k]
        for arm, drop in arms.items():
            keep = np.ones((config.removal_seeds, n_train), bool)
            keep[:, drop] = False
            weights, _ = train_with_masks(run, keep, execution,
                                          out=out / f"target{target:04d}-{arm}")
            params = params_from_weights(template, weights)
            logits = logits_of(template, params, ds.x_test[target:target + 1],
                               buffers=buffers_from_weights(template, weights))[:, 0]
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
