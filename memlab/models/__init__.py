"""The built-in architectures: ordinary ``nn.Module``s, trainable one at a time or as a population.

- ``mlp``: fully connected, ReLU (MNIST-1D default: 40-100-100-10).
- ``cnn1d``: the MNIST-1D paper's 1-D CNN (3 conv layers of 25 channels, stride 2).
- ``cnn2d``: a small 2-D CNN for image data (digits, MNIST).

Every model takes inputs of shape (batch, *input_shape) and returns logits (batch, n_classes).

Modules: ``builtin`` (the architectures), ``registry`` (names and ``package.module:factory``
paths to factories: ``register_model``, ``build_model``), ``profile`` (``layer_profile``),
``lm`` (the tiny language models).
"""

from memlab.models.builtin import ACTIVATIONS, MLP, CNN1d, CNN2d
from memlab.models.profile import layer_profile
from memlab.models.registry import (
    MODELS,
    build_model,
    call_factory,
    class_path,
    code_module,
    importable,
    register_model,
    resolve_factory,
)

__all__ = ["ACTIVATIONS", "CNN1d", "CNN2d", "MLP", "MODELS", "build_model", "call_factory",
           "class_path", "code_module", "importable", "layer_profile", "register_model",
           "resolve_factory"]
