"""Local elasticity during training (He & Su 2020; docs/science.md §4): an engine callback
that takes one SGD step from each model's current weights on each of its probes and
records the similarities (:func:`memlab.measures.elasticity.one_step_similarities`)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np
import torch

from memlab.errors import ConfigError
from memlab.measures.elasticity import intra_inter_ratio, one_step_similarities, symmetrize

STEPPED_COPIES = 64  # one_step_similarities' chunk_size: stepped weight copies held at once


class ElasticityProbe:
    """Engine callback: one-step similarities of every model on its replicate's probes.

    probes: (n_replicates, n) training indices whose similarities are measured (the step
    uses the training labels); hidden: (n_replicates, n) the classes the ratio is scored
    against; mask: (n_replicates, n_train) bool, each replicate's training subset; lr: η of
    the measured step. Records (K, ...) per call: ``ratio_rel``, ``ratio_ker`` (intra/inter
    ratio of the symmetrized S_rel and |S_ker| against the probes' hidden classes) and
    ``train_acc`` (accuracy on the model's own training subset); with ``matrices=True``
    instead the symmetrized ``s_rel`` and ``s_ker`` (K, n, n) float64."""

    def __init__(self, name: str, epochs: tuple[int, ...], probes: np.ndarray,
                 hidden: np.ndarray, mask: np.ndarray, lr: float, matrices: bool = False):
        self.name, self.epochs, self.lr, self.matrices = name, tuple(epochs), lr, matrices
        self.probes, self.hidden, self.mask = probes, hidden, mask

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for array in (self.probes, self.hidden, self.mask):
            digest.update(np.ascontiguousarray(array).tobytes())
        return {"epochs": list(self.epochs), "lr": self.lr, "matrices": self.matrices,
                "probes_sha256": digest.hexdigest()}

    def __call__(self, state) -> dict[str, np.ndarray]:
        x, y = (t.cpu().numpy() for t in state.tensors["train"])
        out: dict[str, list] = {}
        correct = None if self.matrices else state.evaluate("train")["correct"].cpu().numpy()
        for i, r in enumerate(state.replicates):
            probes = self.probes[r]
            sim = one_step_similarities(member_module(state, i), x[probes], y[probes],
                                        lr=self.lr, chunk_size=STEPPED_COPIES)
            s_rel, s_ker = symmetrize(sim.s_rel), symmetrize(sim.s_ker)
            if self.matrices:
                out.setdefault("s_rel", []).append(s_rel)
                out.setdefault("s_ker", []).append(s_ker)
                continue
            out.setdefault("ratio_rel", []).append(intra_inter_ratio(s_rel, self.hidden[r]))
            # |S_ker|: signed kernel means can sit near 0 and make a ratio meaningless.
            out.setdefault("ratio_ker", []).append(
                intra_inter_ratio(np.abs(s_ker), self.hidden[r]))
            out.setdefault("train_acc", []).append(correct[i][self.mask[r]].mean())
        return {key: np.asarray(values, np.float64) for key, values in out.items()}


def member_module(state, i: int) -> torch.nn.Module:
    """Model i of a callback's chunk as an ordinary nn.Module (a copy of its weights)."""
    module = copy.deepcopy(state.template)
    own = {name: tensor[i].detach().clone() for name, tensor in state.params.items()}
    missing = set(dict(module.named_parameters())) - set(own)
    if missing:
        raise ConfigError(f"the elasticity probe got no weights for {sorted(missing)[:3]}")
    module.load_state_dict(own, strict=False)
    return module.eval()
