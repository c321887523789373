"""The reference populations of docs/memorization.md "Against a reference of 2,048 models".

    python scripts/fewer_models.py train      # four populations of 2,112 models (~1.7 h of workers)
    python scripts/fewer_models.py evaluate   # the table: k = 8, 16, 32, 64 models per estimator
                                              # (a few minutes)

Each data set gets 10% planted label noise. The reference for a draw of k models is the
binary Feldman–Zhang estimator on the other 2,112 − k ≥ 2,048 models of the same
population; r_ref is its Spearman–Brown corrected split-half reliability.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path("runs/fewer-models")
N_MODELS = 2112  # k ≤ 64 drawn, ≥ 2,048 left for the reference
COMMON = ["--label-noise", "0.1", "--models", str(N_MODELS), "--subset", "0.7",
          "--optimizer", "adam", "--quiet"]
POPULATIONS = {  # name: (data, recipe)
    "mnist1d": ["--data", "mnist1d", "--hidden", "100,100", "--epochs", "30",
                "--batch-size", "64", "--lr", "0.005"],
    "digits": ["--data", "digits", "--hidden", "256", "--epochs", "50", "--batch-size", "32",
               "--lr", "0.005"],
    "breast_cancer": ["--data", str(ROOT / "breast_cancer.npz"), "--hidden", "64",
                      "--epochs", "100", "--batch-size", "32", "--lr", "0.005"],
    "mnist": ["--data", "mnist", "--n-train", "2000", "--hidden", "256", "--epochs", "30",
              "--batch-size", "64", "--lr", "0.002"],
}


def breast_cancer(path: Path) -> None:
    """scikit-learn's breast-cancer table, standardized, 400 train / 169 test."""
    from sklearn.datasets import load_breast_cancer
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    x = (x - x[:400].mean(0)) / x[:400].std(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x[:400], y=y[:400], x_test=x[400:], y_test=y[400:])


def train(names: list[str]) -> None:
    breast_cancer(ROOT / "breast_cancer.npz")
    for name in names:
        command = ["memlab", "train", *POPULATIONS[name], *COMMON, "--out", str(ROOT / name)]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)


def evaluate(names: list[str]) -> None:
    """The docs table: per data set, estimator and k, the mean over 5 draws of rho,
    rho / sqrt(r_ref), rho on reference mem >= 0.05 and interval coverage; plus the
    label-error score's AUROC for the planted flips from 8 and 16 models."""
    import pandas as pd

    from memlab.measures import memorization as mz
    from memlab.measures.agreement import agreement, summarize
    from memlab.population import open_run

    frames = []
    for name in names:
        run = open_run(ROOT / name)
        records = {n: np.asarray(run.records(n)) for n in ("train_correct", "train_margin")}
        mask = np.asarray(run.membership_mask)
        table = summarize(agreement(mask, records, ks=(8, 16, 32, 64), draws=5))
        table.insert(0, "data", name)
        frames.append(table)
        frame = mz.memorization(run, models=range(64), estimator="auto")
        flips = frame["corrupted"].to_numpy()
        for k in (8, 16):
            small = mz.memorization(run, models=range(k), estimator="auto")
            print(f"{name}: label-error AUROC from {k} models "
                  f"{mz.detection_auroc(small['label_error'].to_numpy(), flips):.4f}; "
                  f"auto chose {small.attrs['estimator']['estimator']} "
                  f"({small.attrs['estimator']['reason']})")
        print(f"{name}: mem AUROC (64 models, auto) "
              f"{mz.detection_auroc(frame['mem'].to_numpy(), flips):.4f}; IN fit "
              f"{frame.attrs['estimator']['in_fit']:.3f}", flush=True)
    result = pd.concat(frames, ignore_index=True)
    result.to_csv(ROOT / "agreement.csv", index=False)
    print(result.round(3).to_string(index=False))


if __name__ == "__main__":
    what, *names = sys.argv[1:] or ["train"]
    if what == "train":
        train(names or list(POPULATIONS))
    else:
        evaluate(names or list(POPULATIONS))
