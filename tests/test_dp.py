"""DP-SGD in the engine (issue: differential privacy).

Known answers: a plain PyTorch DP-SGD loop (one model; each example's gradient by its own
backward, clipped to C, summed, the model's own noise draws added, divided by the expected
batch; torch.optim.SGD) gives the engine's model within 1e-5, on the MLP fast path and on the
generic path; a DP model is the same bits in chunks of 1, 4 and 32; what DP-SGD cannot train
is refused in one line.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memlab.engine import dp
from memlab.engine.config import PopulationConfig, membership_mask
from memlab.errors import ConfigError
from memlab.models import build_model
from tests.conftest import assert_same_models_in_every_chunk, chunk_of, initial_state, make_blobs
from tests.engine_data import make_images
from tests.user_models import GroupNormCNN, TinyCNN


def plain_dp_loop(data, config: PopulationConfig, k: int, model: torch.nn.Module,
                  user_class=None) -> dict:
    """Model k trained with DP-SGD the textbook way, from the engine's initial weights and
    its Poisson batches and noise streams."""
    model.load_state_dict(initial_state(config, data, k, model=user_class))
    members = np.flatnonzero(membership_mask(config, data.n_train, range(k, k + 1))[0])
    plan = dp.plan(config, len(members))
    batches = dp.PoissonBatches(members[None], config.seed, [k], plan, torch.device("cpu"))
    noise = dp.GaussianNoise(config.seed, [k], torch.device("cpu"))
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(params.values(), lr=config.lr, momentum=config.momentum)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long()
    model.train()
    for _ in range(config.epochs):
        for index, weight in batches.epoch(dp.steps_per_epoch(len(members), config.batch_size)):
            summed = {name: torch.zeros_like(p) for name, p in params.items()}
            for i in index[0][weight[0] > 0].tolist():
                loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
                grads = torch.autograd.grad(loss, list(params.values()))
                norm = math.sqrt(sum(float(g.square().sum()) for g in grads))
                factor = min(1.0, plan.max_grad_norm / (norm + 1e-6))
                for name, g in zip(params, grads):
                    summed[name] += factor * g
            names = sorted(params)
            sizes = [params[name].numel() for name in names]
            draws = noise.draw(0, sum(sizes)).split(sizes)
            for name, z in zip(names, draws):
                scale = plan.noise_multiplier * plan.max_grad_norm
                params[name].grad = (summed[name] + scale * z.view_as(summed[name])) \
                    / plan.expected_batch
            optimizer.step()
    return {name: p.detach() for name, p in params.items()}


DP = dict(dp_noise_multiplier=0.8, dp_max_grad_norm=0.5, dp_delta=1e-3, dp_canaries=0)
PATHS = ["mlp fast path", "generic path"]


def workload(path: str, n_models: int, epochs: int = 2):
    """(data, config, a fresh model as the user builds it, the user's class or None) of the
    MLP fast path (built-in MLP on blobs) or the generic path (a GroupNorm CNN on images)."""
    if path == "mlp fast path":
        data = make_blobs(n_train=120)
        config = PopulationConfig(model="mlp", model_kwargs={"hidden": [16]},
                                  n_models=n_models, epochs=epochs, batch_size=16, lr=0.1, **DP)
        return data, config, lambda: build_model("mlp", data.input_shape, data.n_classes,
                                                 hidden=[16]), None
    data = make_images(n_train=48, n_test=16)
    config = PopulationConfig(model="GroupNormCNN", n_models=n_models, epochs=epochs,
                              batch_size=8, lr=0.1, **DP)
    return data, config, lambda: GroupNormCNN(data.input_shape, data.n_classes), GroupNormCNN


@pytest.mark.parametrize("path", PATHS)
def test_a_dp_model_equals_a_plain_dp_sgd_loop(path):
    data, config, make, model = workload(path, 3)
    together = chunk_of(data, config, range(3), membership_mask(config, data.n_train),
                        model=model)
    for k in range(3):
        reference = plain_dp_loop(data, config, k, make(), model)
        for name, value in reference.items():
            np.testing.assert_allclose(together.weights[name][k], value.numpy(), rtol=0,
                                       atol=1e-5, err_msg=f"{path}: model {k} {name}")
    # the noise is really there: another noise multiplier, other weights
    quieter = PopulationConfig(**{**config.__dict__, "dp_noise_multiplier": 0.4})
    other = chunk_of(data, quieter, range(3), membership_mask(quieter, data.n_train),
                     model=model)
    name = next(iter(reference))
    assert not np.allclose(other.weights[name], together.weights[name], atol=1e-3)


@pytest.mark.parametrize("path", PATHS)
def test_a_dp_model_is_the_same_bits_in_chunks_of_1_4_and_32(path):
    data, config, _, model = workload(path, 32)
    mask = membership_mask(config, data.n_train)
    assert_same_models_in_every_chunk(
        data, config, mask, (range(0, 4), range(28, 32), range(5, 6), range(31, 32)),
        model=model)


def test_poisson_batches_have_the_sampling_rate_and_padding_weighs_nothing():
    members = np.arange(1000)[None].repeat(2, 0)
    plan = dp.DPPlan(1.0, 1.0, 0.05, 50.0, dp.padded_batch_size(1000, 0.05), 10, 1e-5, 1.0)
    sizes = []
    for index, weight in dp.PoissonBatches(members, 0, [0, 1], plan,
                                           torch.device("cpu")).epoch(400):
        assert index.shape == weight.shape and index.shape[1] % plan.padded_batch == 0
        assert torch.all(index[weight == 0] == 0)
        sizes.extend(weight.sum(1).tolist())
    mean, sd = np.mean(sizes), math.sqrt(1000 * 0.05 * 0.95)
    assert abs(mean - 50) < 4 * sd / math.sqrt(len(sizes))
    assert abs(np.std(sizes) - sd) < 0.15 * sd


@pytest.mark.parametrize("settings, message", [
    (dict(dp_noise_multiplier=1.0, clip_grad_norm=1.0), "drop --clip-grad-norm"),
    (dict(dp_noise_multiplier=1.0, dp_epsilon=4.0), "not both"),
    (dict(dp_noise_multiplier=-1.0), "--dp-noise-multiplier must be"),
    (dict(dp_noise_multiplier=1.0, dp_max_grad_norm=0.0), "--dp-max-grad-norm"),
    (dict(dp_noise_multiplier=1.0, compute_dtype="bfloat16"), "float32 only"),
])
def test_settings_dp_cannot_take_are_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError) as error:
        config = PopulationConfig(**settings)
        dp.plan(config, 100)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_batchnorm_and_a_large_delta_are_refused_in_one_line():
    data = make_images(n_train=48, n_test=16)
    config = PopulationConfig(model="TinyCNN", n_models=2, epochs=1, batch_size=8, **DP)
    with pytest.raises(ConfigError, match="GroupNorm") as error:
        chunk_of(data, config, range(2), membership_mask(config, data.n_train), model=TinyCNN)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="--dp-delta") as error:
        dp.plan(PopulationConfig(dp_noise_multiplier=1.0, dp_delta=0.02), 100)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("path", PATHS)
def test_steps_wider_than_one_pass_keep_the_bits_and_equal_the_plain_loop(path, monkeypatch):
    # No slack: about half the steps have some model's batch wider than one pass.
    monkeypatch.setattr(dp, "PAD_SIGMAS", 0.0)
    data, config, make, model = workload(path, 8)
    mask = membership_mask(config, data.n_train)
    members = np.flatnonzero(mask[0])
    plan = dp.plan(config, len(members))
    widths = [index.shape[1] for index, _ in dp.PoissonBatches(
        mask.nonzero()[1].reshape(8, -1), config.seed, range(8), plan,
        torch.device("cpu")).epoch(dp.steps_per_epoch(len(members), config.batch_size))]
    assert max(widths) > plan.padded_batch  # the extra passes really happen
    assert_same_models_in_every_chunk(data, config, mask, (range(0, 1), range(3, 7)),
                                      model=model)
    together = chunk_of(data, config, range(8), mask, model=model)
    reference = plain_dp_loop(data, config, 3, make(), model)
    for name, value in reference.items():
        np.testing.assert_allclose(together.weights[name][3], value.numpy(), rtol=0, atol=1e-5,
                                   err_msg=f"{path}: {name}")
