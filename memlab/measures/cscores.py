"""C-scores (Jiang, Zhang, Talwar & Mozer 2021) and their cheap proxies.

The C-score of a training example is its expected accuracy under models trained on random
subsets that *exclude* it, averaged over subset ratios (0.1 … 0.9):

    C(i) = mean_r  mean_k{ correct_k(x_i) : i ∉ I_k, model k from the ratio-r population }

Low C-scores flag mislabeled and atypical examples. One population per ratio, trained by the
same engine (:func:`cscore_sweep`); :func:`cscores` combines them. The population already
trained for memorization can serve as one of the ratios.

Cheap proxies from one population's training records (:func:`proxies`), each averaged over
the models that trained on the example: the epoch it was first classified correctly, its
cumulative training accuracy over epochs (the "learning speed"; both need
``record_epochs=True``), and its final training loss. :func:`rank_correlations` compares
them with C-scores and memorization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from memlab.errors import ConfigError
from memlab.measures.dynamics import first_learned
from memlab.measures.inout import _row_blocks, in_out
from memlab.measures.stats import Z95, spearman, wilson_interval
from memlab.measures.thresholds import CSCORE_RATIOS
from memlab.population.run import Run

RATIOS = CSCORE_RATIOS


def cscore_sweep(dataset, ratios: Sequence[float] = RATIOS, n_models: int = 64,
                 out: str | Path | None = None, reuse: Mapping[float, Run] | None = None,
                 **train_kwargs) -> list[Run]:
    """Train (or resume) one population of ``n_models`` per subset ratio under ``out``
    (``out/subset_0.10`` …), with the same recipe (``train_kwargs`` of ``train_population``).
    ``reuse``: ratio -> an existing run on the same data to use instead of training."""
    from memlab.population import train_population

    if not ratios:
        raise ConfigError("a C-score sweep needs at least one subset ratio")
    reuse = dict(reuse or {})
    runs = []
    for ratio in ratios:
        if not 0 < ratio < 1:
            raise ConfigError(f"C-score subset ratios must lie in (0, 1), got {ratio}")
        if ratio in reuse:
            runs.append(reuse[ratio])
            continue
        target = None if out is None else Path(out) / f"subset_{ratio:.2f}"
        runs.append(train_population(dataset, n_models=n_models, subset_fraction=ratio,
                                     out=target, **train_kwargs))
    return runs


def holdout_accuracy(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(acc_out (n,), n_out (n,)): each training example's accuracy under the models that
    held it out."""
    result = in_out(run.membership_mask, run.records("train_correct"))
    return result.mean_out, result.n_out


def cscores(runs: Sequence[Run]) -> pd.DataFrame:
    """Per-example C-scores from populations trained at different subset ratios on the same
    data. Columns: index, label, cscore (mean over ratios of the held-out accuracy), se
    (per ratio the 95% Wilson interval's half-width / 1.96, propagated through the mean:
    sqrt(Σ_r se_r²) / R; NaN only where some ratio has no held-out model), and ``acc_r`` /
    ``n_out_r`` per ratio r."""
    if not runs:
        raise ConfigError("cscores needs at least one run")
    fingerprints = {run.manifest["dataset"]["fingerprint"] for run in runs}
    if len(fingerprints) > 1:
        raise ConfigError("C-score runs must be trained on the same data (their dataset "
                          "fingerprints differ)")
    ratios = [run.config.subset_fraction for run in runs]
    if len(set(ratios)) != len(ratios):
        raise ConfigError(f"each subset ratio must appear once, got {ratios}")
    dataset = runs[0].dataset
    frame = pd.DataFrame({"index": np.arange(dataset.n_train), "label": dataset.y_train})
    accs, variances = [], []
    for ratio, run in sorted(zip(ratios, runs), key=lambda pair: pair[0]):
        acc, n_out = holdout_accuracy(run)
        frame[f"acc_{ratio:.2f}"] = acc
        frame[f"n_out_{ratio:.2f}"] = n_out
        accs.append(acc)
        # The Wilson interval's half-width / 1.96, as for mem's se: positive even where
        # every held-out model is right (or wrong), unlike the plug-in acc (1 - acc) / n.
        low, high = wilson_interval(acc, n_out)
        variances.append(((high - low) / (2 * Z95)) ** 2)
    accs = np.array(accs)
    frame["cscore"] = accs.mean(0)
    frame["se"] = np.sqrt(np.array(variances).sum(0)) / len(accs)
    columns = ["index", "label", "cscore", "se"]
    return frame[columns + [c for c in frame.columns if c not in columns]]


def proxies(run: Run) -> pd.DataFrame:
    """Per-example proxies of difficulty from one population's training records, averaged
    over the models that trained on each example: final_loss (cross-entropy after training;
    always) and, where the run recorded every epoch, first_learned (first epoch classified
    correctly, never = epochs + 1) and cumulative_accuracy (mean training accuracy over
    epochs, the learning speed)."""
    mask = run.membership_mask
    t, n = mask.shape
    n_in = mask.sum(0)
    loss_sum = np.zeros(n)
    loss = run.records("train_loss")
    for rows in _row_blocks(t, 6 * n):
        m = np.asarray(mask[rows])
        loss_sum += np.where(m, np.asarray(loss[rows], np.float64), 0).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame = pd.DataFrame({"index": np.arange(n), "final_loss": loss_sum / n_in})
    if "epoch_train_correct" not in run.record_names:
        return frame
    history = run.records("epoch_train_correct")  # (t, epochs, n)
    epochs = history.shape[1]
    first_sum = np.zeros(n)
    hits_sum = np.zeros(n)
    for rows in _row_blocks(t, epochs * n * 10):
        m = np.asarray(mask[rows])
        h = np.asarray(history[rows], bool)
        first = first_learned(h)
        first = np.where(np.isnan(first), epochs + 1, first)
        first_sum += np.where(m, first, 0).sum(0)
        hits_sum += (h.mean(1) * m).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["first_learned"] = first_sum / n_in
        frame["cumulative_accuracy"] = hits_sum / n_in
    return frame


def rank_correlations(proxy_frame: pd.DataFrame, targets: Mapping[str, np.ndarray]
                      ) -> pd.DataFrame:
    """Spearman correlation of every proxy column with every target (e.g. ``{"cscore": ...,
    "mem": ...}``), over the examples where both are finite. One row per proxy."""
    rows = []
    for proxy in [c for c in proxy_frame.columns if c != "index"]:
        values = proxy_frame[proxy].to_numpy(np.float64)
        row = {"proxy": proxy}
        for name, target in targets.items():
            row[name] = spearman(values, np.asarray(target, np.float64))
        rows.append(row)
    return pd.DataFrame(rows)
