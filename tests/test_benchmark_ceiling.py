"""The GEMM-only ceiling of benchmarks/population.py (the fastest the engine could train if
only its matrix products cost time) must count exactly the products the engine does.

Known answer: its products' FLOPs per example-step must equal ``flops_per_example_step``,
computed independently from the layer profile (6 x MACs less the first layer's input
gradient), for an MLP, the MNIST-1D CNN, a user's 1-D and 2-D CNN with BatchNorm and a
user's ResNet-style block with max pooling.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "population.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_population", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["mlp", "cnn1d", "user_cnn", "user_cnn2d", "user_resnet"])
def test_ceiling_products_have_the_engine_flops(bench, name):
    from memlab.models import build_model
    from memlab.population.plan import flops_per_example_step

    shape, classes, batch = (40,), 10, 128
    if name == "user_cnn":
        template = bench.UserCNN(shape, classes)
    elif name in ("user_cnn2d", "user_resnet"):
        shape = (1, 28, 28)
        template = (bench.contenders.UserCNN2d if name == "user_cnn2d"
                    else bench.contenders.UserResNet)(shape, classes)
    else:
        template = build_model(name, shape, classes,
                               **({"hidden": [100, 100]} if name == "mlp" else {}))
    products = bench.product_shapes(template, shape, batch)
    flops = sum(2 * m * k * n for m, k, n in products) / batch
    assert flops == pytest.approx(flops_per_example_step(template, shape), rel=1e-12)

