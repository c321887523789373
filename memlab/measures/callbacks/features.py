"""Features during training: an engine callback that records, at every epoch, a
one-hidden-layer MLP's hidden features of every training example, its read-out layer and
the class-pair means of its feature tangent kernel (the LE-SDE fit, docs/science.md §6)."""

from __future__ import annotations

import numpy as np
import torch

from memlab.errors import ConfigError

ONE_HIDDEN_LAYER = ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight"]


class FeatureCallback:
    """Records, at every epoch 0..E, for every training example of a one-hidden-layer MLP:
    ``features`` (K, n, d) the penultimate (hidden) activations, ``head_w`` (K, C, d),
    ``head_b`` (K, C), and ``kernel`` (K, C, C) the class-pair means of the isotropic
    feature tangent kernel k(i, j) = mean(a_i ⊙ a_j)·(x_i·x_j + 1) (a: ReLU derivative
    pattern), which is tr(J_h(x_i) J_h(x_j)ᵀ)/d for h = relu(W₁x + b₁). Records
    ``lesde_{features,head_w,head_b,kernel}`` (n_models, E + 1, ...)."""

    name = "lesde"

    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    def epochs(self, config) -> tuple[int, ...]:
        return tuple(range(config.epochs + 1))  # 0 = the initial weights

    def describe(self) -> dict:
        return {"n_classes": self.n_classes}

    def __call__(self, state) -> dict[str, np.ndarray]:
        names = sorted(state.params)
        if names != ONE_HIDDEN_LAYER:
            raise ConfigError("the LE-SDE fit needs a one-hidden-layer MLP (hidden=(d,)), got "
                              f"parameters {names}")
        x, y = state.tensors["train"][:2]
        x, y = x.flatten(1).to("cpu", torch.float64), y.cpu()
        p = {k: v.detach().to("cpu", torch.float64) for k, v in state.params.items()}
        pre = torch.einsum("kdp,np->knd", p["layers.0.weight"], x) + p["layers.0.bias"][:, None]
        h = torch.relu(pre)
        active = (pre > 0).to(torch.float64)
        kernel = torch.einsum("kid,kjd->kij", active, active) / active.shape[-1]
        kernel = kernel * (x @ x.T + 1.0)[None]
        onehot = torch.nn.functional.one_hot(y.long(), self.n_classes).to(torch.float64)
        counts = onehot.sum(0)
        pair = torch.einsum("ia,kij,jb->kab", onehot, kernel, onehot) / (counts[:, None]
                                                                        * counts[None, :])
        return {"features": h.to(torch.float32).numpy(),
                "head_w": p["layers.1.weight"].to(torch.float32).numpy(),
                "head_b": p["layers.1.bias"].to(torch.float32).numpy(),
                "kernel": pair.numpy()}
