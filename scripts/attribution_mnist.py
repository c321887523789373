"""The MNIST columns of docs/attribution.md's attribution table, as close to dattri's benchmark as
stated there: the first 5,000 training and 500 test images of MNIST, normalized with
(0.1307, 0.3081); 50% subsets.

    python scripts/attribution_mnist.py lr  --out runs/attribution-mnist-lr
    python scripts/attribution_mnist.py mlp --out runs/attribution-mnist-mlp

``lr``: logistic regression (``mlp`` with ``hidden=()``), SGD lr 0.01, no momentum, batch
32, 20 epochs, 4,000 models (200 held out, 200 targets, TRAK on 50 models). ``mlp``:
784-128-64-10, SGD lr 0.01, momentum 0.9, batch 64, 20 epochs, 512 models (100 held out,
100 targets, TRAK on 10 models). Needs real MNIST (`make data`). Resumable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from memlab.data import Dataset, load
from memlab.engine.config import PopulationConfig
from memlab.studies.attribute import AttributeConfig, run

METHODS = ("trak", "if_exact", "if_cg", "if_ekfac", "tracin", "grad_dot", "grad_cos",
           "representer", "knn", "random")
# The populations: 50% subsets, SGD, 20 epochs; the settings below differ per model.
RECIPES = {
    "lr": PopulationConfig(model_kwargs={"hidden": []}, n_models=4000, subset_fraction=0.5,
                           epochs=20, batch_size=32, optimizer="sgd", lr=0.01, momentum=0.0),
    "mlp": PopulationConfig(model_kwargs={"hidden": [128, 64]}, n_models=512,
                            subset_fraction=0.5, epochs=20, batch_size=64, optimizer="sgd",
                            lr=0.01, momentum=0.9),
}
SETTINGS = {
    "lr": dict(n_targets=200, n_heldout=200, trak_models=50, methods=METHODS),
    "mlp": dict(n_targets=100, n_heldout=100, trak_models=10,
                methods=tuple(m for m in METHODS if m != "if_exact"),
                # the exact Hessian of 109k parameters does not fit: no exact self-influence
                self_influence_methods=("grad_dot", "trak", "if_ekfac")),
}


def mnist_5000() -> Dataset:
    """The first 5,000 training and 500 test images, normalized as dattri does."""
    mnist = load("mnist")

    def normalize(x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - 0.1307) / 0.3081).astype(np.float32)

    return Dataset("mnist-5000", normalize(mnist.x_train[:5000]), mnist.y_train[:5000],
                   normalize(mnist.x_test[:500]), mnist.y_test[:500], mnist.class_names,
                   provenance={"source": "mnist", "train": "first 5000", "test": "first 500",
                               "normalized": [0.1307, 0.3081]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(SETTINGS))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "mnist-5000.npz"
    if not data.exists():
        mnist_5000().save(data)
    config = AttributeConfig(data=str(data), population=RECIPES[args.model],
                             **SETTINGS[args.model])
    result = run(config, args.out, n_workers=args.workers)
    for name, row in result.summary["methods"].items():
        print(f"{name:12s} LDS {row['lds']:.3f} ± {row['lds_se']:.3f}")
    for name in ("datamodels", "diff_in_means"):
        row = result.summary[name]
        print(f"{name:12s} LDS {row['lds']:.3f} ± {row['lds_se']:.3f}")
    print(f"report: {args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
