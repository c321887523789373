"""Training callbacks for critical samples (Arpit et al. 2017; docs/science.md §3), usable
by any population: checkpoint measurements of the critical sample ratio and loss
sensitivity (:class:`CriticalSamples`), adversarial training with LASS samples
(:class:`AdversarialTraining`), and the validation accuracy after every epoch that such
experiments track (:class:`ValidationAccuracy`). (One module: runs made when these lived in
``memlab.studies.noise.callbacks`` record that one module name.)

    from memlab.measures.callbacks import CriticalSamples
    run = train_population(data, config, callbacks=[CriticalSamples((0, 10, 20), probe,
                                                                    settings)])
    run.records("csr_csr")   # (n_models, 3): the critical sample ratio at each checkpoint

A callback sees the engine's :class:`memlab.engine.callbacks.TrainState` (K models at
once) and returns ``name -> (K, ...)`` arrays, which the engine stores as records
``{callback.name}_{key}`` of shape (n_models, len(callback.epochs), ...). The LASS search
draws its noise from each model's own stream ``[seed, replicate, streams.LASS, t]``, so a
model is the same bits whatever is trained beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch

from memlab import streams
from memlab.measures.critical import LassSettings, gini, lass, loss_sensitivity


def lass_seeds(seed: int, replicates: Sequence[int], counter: int) -> list[int]:
    """One LASS seed per model from its replicate's own stream (so a model's search noise
    does not depend on the models trained beside it); ``counter``: epoch or step."""
    return [int(np.random.SeedSequence([seed, r, streams.LASS, counter]).generate_state(1)[0])
            for r in replicates]


class CriticalSamples:
    """Checkpoint measurements at ``epochs`` (0 = initial weights).

    Records ``csr_{key}`` (n_models, len(epochs)): ``csr`` (critical sample ratio of the
    validation inputs ``probe``, indices into the test split), ``sensitivity_gini`` and
    ``sensitivity_mean`` (of ||dL/dx||_1 over the training examples, nats per input unit),
    ``train_acc`` and ``val_acc``. The search uses the engine's differentiable train-mode
    forward: for networks without dropout it is the evaluation forward.
    """

    name = "csr"

    def __init__(self, epochs: Sequence[int], probe: np.ndarray, settings: LassSettings):
        self.epochs = tuple(int(e) for e in epochs)
        self.probe = torch.as_tensor(np.asarray(probe, dtype=np.int64))
        self.settings = settings

    def describe(self) -> dict:
        return {"epochs": list(self.epochs), "probe": self.probe.tolist(),
                "lass": asdict(self.settings)}

    def __call__(self, state) -> dict[str, np.ndarray]:
        x_train, y_train = state.tensors["train"]
        x_val = state.tensors["test"][0].index_select(0, self.probe)
        seeds = lass_seeds(state.config.seed, state.replicates, state.epoch)
        found = lass(state.train_forward, x_val, self.settings, state.n_models, seed=seeds)
        sensitivity = loss_sensitivity(state.train_forward, x_train, y_train, state.n_models)
        return {"csr": found.ratio, "sensitivity_gini": gini(sensitivity),
                "sensitivity_mean": sensitivity.mean(1),
                "train_acc": state.evaluate("train")["correct"].float().mean(1),
                "val_acc": state.evaluate("test")["correct"].float().mean(1)}


class AdversarialTraining:
    """Arpit et al.'s adversarial training: every batch gets the LASS samples found from its
    inputs (radius ``scale`` x the settings' radius), so the step's mean loss is the average
    of the clean and the adversarial loss. The search's noise comes from each model's own
    stream (seeded by replicate and step)."""

    name = "adversarial"
    epochs = ()

    def __init__(self, scale: float, settings: LassSettings):
        self.scale, self.settings = float(scale), settings

    def describe(self) -> dict:
        return {"scale": self.scale, "lass": asdict(self.settings)}

    def __call__(self, state) -> dict:
        return {}

    def before_step(self, state, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        seeds = lass_seeds(state.config.seed, state.replicates, state.step)
        found = lass(state.train_forward, x, self.settings, state.n_models, seed=seeds,
                     per_model=True, model_scale=torch.full((state.n_models,), self.scale))
        return torch.cat([x, found.x_adv.to(x.dtype)], 1), torch.cat([y, y], 1)


class ValidationAccuracy:
    """Validation (test-split) accuracy after every epoch: record ``val_acc``
    (n_models, epochs); cheaper than ``record_epochs``, which keeps every example's
    correctness and loss."""

    name = "val"
    epochs = None

    def __call__(self, state) -> dict[str, torch.Tensor]:
        return {"acc": state.evaluate("test")["correct"].float().mean(1)}
