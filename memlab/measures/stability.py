"""Locally elastic stability (Deng, He & Su, ICML 2021), estimated from a population.

Uniform stability (Bousquet & Elisseeff 2002) asks for one number β_U bounding, for every
training set S of size m, every removed example z and every evaluation point z',

    |ℓ(A(S), z') − ℓ(A(S ∖ z), z')| ≤ β_U,

and then, for a loss in [0, M], with probability ≥ 1 − δ over S,

    gap = R(A(S)) − R_emp(A(S)) ≤ 2 β_U + (4 m β_U + M) √(ln(1/δ) / (2m)).     (B–E)

Locally elastic stability replaces β_U by a function β(z, z') of the pair, and the bound
depends on sup_z E_{z'} β(z, z'): the effect of removing the worst z, *averaged* over the
points z' it is measured at — small when removing z mostly changes the loss near z.

What a population measures. Model k trains on a random subset I_k of size m = r·n; for a
training example z_i and an evaluation point z'_j (a test example: E_{z'} is over the data
distribution),

    Δ(i, j) = mean_k{ ℓ_k(z'_j) : i ∈ I_k } − mean_k{ ℓ_k(z'_j) : i ∉ I_k }

(:func:`loss_influence`, with per-pair standard errors: the IN/OUT estimator of
:mod:`memlab.measures.inout` on losses). That is E[Δloss] over random
subsets at one size — neither the supremum over training sets that stability is defined
by, nor noise-free: |Δ̂| has expectation ≥ |Δ|, and a maximum over n² noisy pairs is
biased upward. So every constant comes with its noise floor, the same computation on a
permuted mask (:func:`permuted_mask`: the rows of the mask shuffled across models, which
keeps every subset size and breaks the link between membership and loss).

:func:`stability_constants` gives, from Δ̂ (n_train × n_eval):

- ``beta_uniform`` = max_{i,j} |Δ̂(i, j)|, the plug-in uniform-stability constant;
- ``beta_le`` = max_i mean_j |Δ̂(i, j)|, the plug-in locally elastic constant
  sup_z E_{z'} β(z, z') (exactly that form: the sup over z of the average over z');
- ``beta_le_signed`` = max_i |mean_j Δ̂(i, j)|, a lower bound on ``beta_le`` whose noise
  averages out (the mean of signed effects is unbiased);
- ``beta_mean`` = mean_{i,j} |Δ̂(i, j)|.

Bounds (:func:`stability_bound`): both are evaluated in the B–E form above, the uniform one
with β_U and the locally elastic one with β_LE in its place. That is the leading form of
Deng, He & Su's theorem (their exact theorem adds lower-order terms for how β(z, ·)
concentrates, whose constants we did not reproduce), so the locally elastic number is an
*empirical estimate* of their bound, not a certified bound. Assumed constants: the loss
bound M (1 for 0–1 loss, exact; the clipping level for a clipped cross-entropy, by
construction), δ (default 0.05) and m = the subset size (each model's training-set size).
"""

from __future__ import annotations

import math

import numpy as np

from memlab.errors import ConfigError
from memlab.measures.inout import LossInfluence, loss_influence  # noqa: F401  (Δ̂ lives there)


def permuted_mask(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """The mask with its rows (models) shuffled: the same subsets, assigned to the wrong
    models, so every Δ̂ computed from it is noise alone (the noise floor)."""
    rng = np.random.default_rng(seed)
    return np.asarray(mask)[rng.permutation(len(mask))]


def stability_constants(delta: np.ndarray) -> dict[str, float]:
    """Plug-in stability constants of Δ̂ (n_train, n_eval) (module doc): beta_uniform,
    beta_le, beta_le_signed, beta_mean, and argmax_le (the training example attaining
    beta_le)."""
    a = np.abs(delta)
    per_example = a.mean(axis=1)
    return {"beta_uniform": float(a.max()), "beta_le": float(per_example.max()),
            "beta_le_signed": float(np.abs(delta.mean(axis=1)).max()),
            "beta_mean": float(a.mean()), "argmax_le": int(per_example.argmax())}


def stability_bound(beta: float, m: int, loss_bound: float, delta: float = 0.05) -> float:
    """Bousquet–Elisseeff: 2β + (4mβ + M)√(ln(1/δ)/(2m)) for stability constant β, training
    set size m, loss in [0, M], confidence 1 − δ."""
    if m < 1 or not loss_bound > 0 or not 0 < delta < 1:
        raise ConfigError(f"need m >= 1, M > 0 and 0 < delta < 1; got m={m}, "
                          f"M={loss_bound}, delta={delta}")
    return 2 * beta + (4 * m * beta + loss_bound) * math.sqrt(math.log(1 / delta) / (2 * m))


def generalization_gap(mask: np.ndarray, train_loss: np.ndarray, test_loss: np.ndarray
                       ) -> tuple[float, float]:
    """The measured gap, mean over models of (mean test loss − mean loss on the model's own
    training subset), and its standard error across models. mask (t, n_train); losses
    (t, n_train) and (t, n_test)."""
    mask = np.asarray(mask, dtype=bool)
    own = (np.where(mask, train_loss, 0.0).sum(1) / mask.sum(1))
    gaps = np.asarray(test_loss, dtype=np.float64).mean(1) - own
    return float(gaps.mean()), float(gaps.std(ddof=1) / math.sqrt(len(gaps)))
