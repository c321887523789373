"""The one engine with the user's model, data and recipe (issue: bring your own model).

Known answers: a plain PyTorch loop (nn.Module + torch.optim + torch.optim.lr_scheduler)
taking the same dropout masks and augmentation draws from the model's streams; the same
model in chunks of 1, 4 and 32; a sweep against one population per value; a hidden class
that no model can predict; a grown run against one trained at its final size.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memlab.data import Dataset
from memlab.engine import recipe as rc
from memlab.engine.config import STREAM_SHUFFLE, PopulationConfig, membership_mask, model_rng
from memlab.errors import ConfigError, RunError
from memlab.population import open_run, store, train_population
from tests.conftest import (
    assert_same_models_in_every_chunk,
    chunk_of,
    initial_state,
    make_blobs,
)
from tests.engine_data import make_images
from tests.user_models import LabelsToZero, SelfInitialized, TinyCNN, seeding_factory

REPO = Path(__file__).resolve().parents[1]


RECIPES = {
    "sgd": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3,
                decay_bias_and_norm=False, schedule="cosine", clip_grad_norm=1.0),
    "adam": dict(optimizer="adam", lr=0.01, weight_decay=1e-4, schedule="onecycle"),
}


def plain_loop(data: Dataset, config: PopulationConfig, k: int) -> dict[str, torch.Tensor]:
    """Model k the way a user writes it: one nn.Module, torch.optim, a torch scheduler;
    dropout masks and augmentation draws from model k's streams (memlab.engine.recipe)."""
    model = TinyCNN(data.input_shape, data.n_classes)
    model.load_state_dict(initial_state(config, data, k, model=TinyCNN))
    rc.use_stream_dropout(model)
    for module in model.modules():
        if isinstance(module, rc.StreamDropout):
            module.key = rc.dropout_keys(config, [k])[0]
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    members = np.flatnonzero(membership_mask(config, data.n_train, range(k, k + 1))[0])
    steps_per_epoch = math.ceil(len(members) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr,
            momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total, cycle_momentum=False)
    shuffler = model_rng(config.seed, k, STREAM_SHUFFLE)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    step = 0
    model.train()
    for epoch in range(config.epochs):
        order = members[shuffler.permutation(len(members))]
        rng = rc.augment_rng(config, k, epoch)
        for start in range(0, len(order), config.batch_size):
            index = torch.from_numpy(order[start:start + config.batch_size])
            xb = rc.augment_batch(x[index][None], [rng], config)[0]
            rc.set_dropout_step(model, step)
            loss = F.cross_entropy(model(xb), y[index], label_smoothing=config.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            if config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
    return model.state_dict()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_user_cnn_with_batchnorm_dropout_augmentation_schedule_equals_plain_loop(optimizer):
    data = make_images()
    config = PopulationConfig(model="TinyCNN", n_models=3, subset_fraction=0.6, epochs=3,
                              batch_size=16, augment=("crop:2", "flip"), input_noise=0.05,
                              label_smoothing=0.1, **RECIPES[optimizer])
    together = chunk_of(data, config, range(3), membership_mask(config, data.n_train),
                        model=TinyCNN)
    for k in range(3):
        alone = chunk_of(data, config, range(k, k + 1),
                         membership_mask(config, data.n_train, range(k, k + 1)), model=TinyCNN)
        reference = plain_loop(data, config, k)
        assert set(together.weights) == set(reference)  # BN buffers, num_batches_tracked too
        for name, stacked in together.weights.items():
            np.testing.assert_array_equal(stacked[k], alone.weights[name][0], err_msg=name)
            np.testing.assert_allclose(stacked[k], reference[name].numpy(), rtol=0, atol=1e-5,
                                       err_msg=f"model {k} {name}")
    assert together.weights["features.1.num_batches_tracked"][0] == 3 * 4  # 58 examples / 16
    assert not np.allclose(together.weights["head.weight"][0], together.weights["head.weight"][1])


def test_schedules_match_torch_schedulers():
    steps_per_epoch, epochs = 7, 5
    total = steps_per_epoch * epochs
    for schedule, make in [
        ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total)),
        ("onecycle", lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.1, total_steps=total, cycle_momentum=False)),
        ("step", lambda o: torch.optim.lr_scheduler.StepLR(o, 2 * steps_per_epoch, 0.5)),
    ]:
        config = PopulationConfig(lr=0.1, epochs=epochs, schedule=schedule, lr_step_epochs=2,
                                  lr_gamma=0.5)
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = make(optimizer)
        for step in range(total):
            expected = optimizer.param_groups[0]["lr"]
            assert math.isclose(0.1 * rc.lr_factor(config, step, steps_per_epoch), expected,
                                rel_tol=1e-9, abs_tol=1e-12), (schedule, step)
            optimizer.step()
            scheduler.step()
    warm = PopulationConfig(lr=1.0, epochs=4, schedule="warmup_linear", warmup_epochs=1)
    factors = [rc.lr_factor(warm, s, 10) for s in range(40)]
    assert factors[0] == 0.1 and factors[9] == 1.0 and factors[-1] < 0.04
    assert all(a <= b for a, b in zip(factors[:10], factors[1:10]))


def test_a_model_is_the_same_bits_in_chunks_of_1_4_and_32_with_dropout():
    data = make_images(n_train=48, n_test=16)
    config = PopulationConfig(model="TinyCNN", n_models=32, subset_fraction=0.5, epochs=2,
                              batch_size=8, augment=("shift:2",), input_dropout=0.1, lr=0.05)
    mask = membership_mask(config, data.n_train)
    assert_same_models_in_every_chunk(
        data, config, mask, (range(0, 4), range(28, 32), range(5, 6), range(31, 32)),
        model=TinyCNN)


def test_sweep_equals_one_population_per_value_and_adding_a_value_changes_no_model(tmp_path):
    blobs = make_blobs(n_train=120)
    common = dict(model="mlp", model_kwargs={"hidden": [16]}, n_models=3, epochs=3,
                  batch_size=16, chunk_size=2, progress=False, n_workers=1)
    two = train_population(blobs, **common, sweep={"weight_decay": [0.0, 1e-2]},
                           out=tmp_path / "two")
    three = train_population(blobs, **common, sweep={"weight_decay": [0.0, 1e-2, 1e-1]},
                             out=tmp_path / "three")
    alone = train_population(blobs, **common, weight_decay=1e-2, out=tmp_path / "alone")
    assert two.n_models == 6 and three.n_models == 9
    for name in alone.record_names:
        np.testing.assert_array_equal(two.records(name)[3:6], alone.records(name), name)
        np.testing.assert_array_equal(three.records(name)[:6], two.records(name), name)
    for name, array in alone.weights().items():
        np.testing.assert_array_equal(two.weights(range(3, 6))[name], array)
    table = three.models_table()
    assert table.sweep_weight_decay.tolist() == [0.0] * 3 + [1e-2] * 3 + [1e-1] * 3
    assert table.replicate.tolist() == [0, 1, 2] * 3
    # Weight decay did something: the strongly decayed models have smaller weights.
    weights = three.weights()["layers.0.weight"]
    assert np.abs(weights[6:]).mean() < np.abs(weights[:3]).mean()


def test_architecture_sweep_groups_chunks_by_width(tmp_path):
    run = train_population(make_blobs(n_train=60), model="mlp", n_models=3, chunk_size=4,
                           epochs=1, sweep={"hidden": [[8], [32]]}, progress=False,
                           n_workers=1, out=tmp_path / "w")
    assert [c.size for c in run.chunks] == [3, 3]
    assert run.weights([0])["layers.0.weight"].shape == (1, 8, 10)
    assert run.weights([5])["layers.0.weight"].shape == (1, 32, 10)
    assert run.model(4).layers[0].out_features == 32


def test_leave_one_class_out_mask_hides_the_class_and_round_trips(tmp_path):
    blobs = make_blobs(n_train=300, spread=0.5)
    mask = np.stack([blobs.y_train != c for c in range(3)])  # model c never sees class c
    settings = dict(model="mlp", model_kwargs={"hidden": [16]}, epochs=15, batch_size=32,
                    progress=False, n_workers=1, out=tmp_path / "loco")
    run = train_population(blobs, membership=mask, **settings)
    np.testing.assert_array_equal(run.membership_mask, mask)
    assert run.config.subsets == "explicit" and run.n_models == 3
    correct = run.records("test_correct")
    for c in range(3):
        hidden = blobs.y_test == c
        assert correct[c, hidden].mean() == 0.0  # it never outputs a class it never saw
        assert correct[c, ~hidden].mean() > 0.9
    again = train_population(blobs, membership=mask, **settings)  # resumes, nothing retrained
    np.testing.assert_array_equal(again.records("test_margin"), run.records("test_margin"))
    other = mask.copy()
    other[0, 0] = ~other[0, 0]
    with pytest.raises(RunError, match="does not match the given mask"):
        train_population(blobs, membership=other, **settings)
    full = train_population(blobs, membership=np.ones((2, 300), bool), **{
        **settings, "out": tmp_path / "full"})
    assert (full.membership_mask.sum(1) == 300).all()


def test_grown_run_equals_one_trained_at_the_final_size(tmp_path):
    blobs = make_blobs(n_train=100)
    settings = dict(model="mlp", model_kwargs={"hidden": [16]}, epochs=3, batch_size=16,
                    chunk_size=2, progress=False, n_workers=1)
    train_population(blobs, n_models=5, **settings, out=tmp_path / "grown")
    grown = train_population(blobs, n_models=9, **settings, out=tmp_path / "grown")
    straight = train_population(blobs, n_models=9, **settings, out=tmp_path / "straight")
    assert [(c.start, c.stop) for c in grown.chunks][:3] == [(0, 2), (2, 4), (4, 5)]
    np.testing.assert_array_equal(grown.membership_mask, straight.membership_mask)
    for name in straight.record_names:
        np.testing.assert_array_equal(grown.records(name), straight.records(name), name)
    for name, array in straight.weights().items():
        np.testing.assert_array_equal(grown.weights()[name], array)


CALLBACK_SCRIPT = """
import sys
from memlab.population import train_population
from tests.engine_data import images
from tests.user_models import ProbeLogits, TinyCNN
train_population(images(), model=TinyCNN, n_models=8, chunk_size=1, epochs=8, batch_size=8,
                 callbacks=[ProbeLogits(last=8)], out=sys.argv[1], n_workers={workers},
                 progress=False)
"""


def test_callback_records_resume_bit_identically_after_sigkill(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = tmp_path / "killed"
    # Chunks 2.. wait (the executor's test hold): the kill provably lands mid-run.
    process = subprocess.Popen([sys.executable, "-c", CALLBACK_SCRIPT.format(workers=2),
                                str(killed)], env={**env, "MEMLAB_TEST_HOLD": "2"}, cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline and not store.chunk_is_complete(killed, 1):
        time.sleep(0.01)
    workers = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    deadline = time.time() + 10  # the workers die with their parent
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert workers and not any(_alive(pid) for pid in workers), "orphan worker processes"
    subprocess.run([sys.executable, "-c", CALLBACK_SCRIPT.format(workers=1), str(killed)],
                   env=env, cwd=REPO, check=True)
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-c", CALLBACK_SCRIPT.format(workers=1), str(straight)],
                   env=env, cwd=REPO, check=True)
    resumed, reference = open_run(killed), open_run(straight)
    assert reference.records("probe_logits").shape == (8, 3, 5, 3)  # models, calls, x, classes
    for name in reference.record_names:
        np.testing.assert_array_equal(resumed.records(name), reference.records(name), name)
    # The epoch-0 call saw the initial weights: logits from the untrained model.
    model = TinyCNN((1, 8, 8), 3)
    model.load_state_dict(initial_state(reference.config, reference.dataset, 3, model=TinyCNN))
    with torch.no_grad():
        start = model.eval()(torch.from_numpy(reference.dataset.x_test[:5]))
    np.testing.assert_allclose(reference.records("probe_logits")[3, 0], start, atol=1e-5)


def _children(pid: int) -> list[int]:
    import psutil

    deadline = time.time() + 30
    while time.time() < deadline:
        # the workers: forked (the parent's command line) or spawned (spawn_main); not
        # multiprocessing's resource tracker
        found = [c.pid for c in psutil.Process(pid).children()
                 if "resource_tracker" not in " ".join(c.cmdline())]
        if len(found) >= 2:
            return found
        time.sleep(0.05)
    return found


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_before_step_callback_changes_the_batch(tmp_path):
    run = train_population(make_blobs(), model="mlp", n_models=2, epochs=5, progress=False,
                           n_workers=1, callbacks=[LabelsToZero()], out=tmp_path / "z")
    assert (run.records("test_pred") == 0).all()


def test_a_module_that_initializes_itself_in_init_gets_distinct_weights(tmp_path):
    blobs = make_blobs()
    run = train_population(blobs, model=SelfInitialized, n_models=3, epochs=1, progress=False,
                           n_workers=1, out=tmp_path / "s")
    w = run.weights()["weight"]
    assert not np.allclose(w[0], w[1]) and not np.allclose(w[1], w[2])
    with pytest.raises(ConfigError, match="not re-initialized by any reset_parameters"):
        train_population(blobs, model=SelfInitialized((10,), 3), n_models=2, progress=False)
    with pytest.raises(ConfigError, match="identical weights for different seeds"):
        train_population(blobs, model=seeding_factory, n_models=2, progress=False)


def test_pretrained_template_with_a_reinitialized_head(tmp_path):
    data = make_images()
    template = TinyCNN(data.input_shape, data.n_classes)
    run = train_population(data, model=template, init="pretrained", reinit=("head",),
                           n_models=3, epochs=1, lr=1e-9, progress=False, n_workers=1,
                           out=tmp_path / "p")
    w = run.weights()
    start = template.state_dict()["features.0.weight"].numpy()
    for k in range(3):  # lr ~ 0: the shared body keeps the template's weights
        np.testing.assert_allclose(w["features.0.weight"][k], start, atol=1e-6)
    assert not np.allclose(w["head.weight"][0], w["head.weight"][1])
    assert not np.allclose(w["head.weight"][0], template.head.weight.detach().numpy())


def test_batchnorm_state_round_trips_through_run_model(tmp_path):
    data = make_images()
    run = train_population(data, model=TinyCNN, n_models=2, epochs=2, batch_size=16,
                           progress=False, n_workers=1, out=tmp_path / "bn")
    model = run.model(1)  # importable factory: rebuilt by its class path
    assert model.features[1].num_batches_tracked.item() == 2 * math.ceil(48 / 16)
    np.testing.assert_array_equal(model.features[1].running_var.numpy(),
                                  run.weights([1])["features.1.running_var"][0])
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x_test))
    np.testing.assert_allclose(run.records("test_margin")[1],
                               _margin(logits.numpy(), data.y_test), atol=1e-5)


def _margin(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    true = logits[np.arange(len(y)), y]
    others = logits.copy()
    others[np.arange(len(y)), y] = -np.inf
    return true - others.max(1)


MAIN_SCRIPT = """
import sys
import torch
from torch import nn
from memlab.population import train_population
from memlab.errors import RunError
from tests.engine_data import images

class NotebookNet(nn.Module):  # defined in __main__, as in a notebook or a script
    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
    def forward(self, x):
        return self.net(x)

if __name__ == "__main__":
    run = train_population(images(), model=NotebookNet, n_models=4, chunk_size=1, epochs=2,
                           out=sys.argv[1], n_workers=2, progress=False)
    try:
        run.model(0)
    except RunError as error:
        print("REFUSED:", error)
    print("REBUILT:", type(run.model(0, model=NotebookNet)).__name__)
"""


def test_model_defined_in_main_trains_with_worker_processes(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(MAIN_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "run")],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "REFUSED:" in result.stdout and "cannot be rebuilt" in result.stdout
    assert "REBUILT: NotebookNet" in result.stdout
    assert {json.loads((tmp_path / "run" / "chunks" / f"{i:05d}" / "done.json").read_text())[
        "executor"] for i in range(4)} == {"local"}


class _Wrong(nn.Module):
    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.linear = nn.Linear(10, 7)

    def forward(self, x):
        return self.linear(x)


def _raises(input_shape, n_classes):
    raise ValueError("width must be even")


@pytest.mark.parametrize("settings, message", [
    (dict(model=_raises), "model factory .* raised ValueError: width must be even"),
    (dict(model=_Wrong), r"output has shape \(2, 7\).* needs \(2, 3\)"),
    (dict(schedule="triangle"), "schedule must be one of constant, step, .*, got 'triangle'"),
    (dict(augment=("rotate:5",)), "unknown augmentation 'rotate:5'"),
    (dict(sweep={"weight_decay": ["big"]}), "weight_decay must be a number, got 'big'"),
    (dict(sweep={"batch_size": [8, 16]}), "'batch_size' cannot vary within a population"),
    (dict(membership=np.ones((2, 5), bool)), r"membership must have shape \(n_models, 240\)"),
    (dict(membership=np.eye(2, 240, dtype=bool) & False), r"membership rows \[0, 1\] are empty"),
    (dict(n_workers=0), "n_workers must be a positive integer"),
])
def test_bad_input_gets_a_one_line_error(settings, message):
    with pytest.raises(ConfigError, match=message) as info:
        train_population(make_blobs(), n_models=2, epochs=1, progress=False, **settings)
    assert "\n" not in str(info.value)


def test_run_model_that_cannot_be_rebuilt_says_so(tmp_path):
    class Local(nn.Module):  # a function's local class: not importable later
        def __init__(self, input_shape, n_classes):
            super().__init__()
            self.linear = nn.Linear(10, 3)

        def forward(self, x):
            return self.linear(x)

    run = train_population(make_blobs(), model=Local, n_models=2, epochs=1, progress=False,
                           n_workers=1, out=tmp_path / "l")
    with pytest.raises(RunError, match="cannot be rebuilt.*run.model\\(k, model="):
        run.model(0)
    assert isinstance(run.model(0, model=Local), Local)
    with pytest.raises(RunError, match="does not match the run's architecture"):
        run.model(0, model=lambda shape, n: nn.Linear(10, 4))


def test_memory_mapped_dataset_trains_like_the_same_data_in_memory(tmp_path):
    import tracemalloc

    from memlab.data import load, save_npy_dir

    blobs = make_blobs(n_train=200)
    save_npy_dir(blobs, tmp_path / "data")
    mapped = load(tmp_path / "data")
    assert mapped.memory_mapped and isinstance(mapped.x_train, np.memmap)
    assert mapped.fingerprint() == blobs.fingerprint()
    settings = dict(model="mlp", model_kwargs={"hidden": [8]}, n_models=3, epochs=2,
                    progress=False, n_workers=2, chunk_size=2)
    on_disk = train_population(mapped, **settings, out=tmp_path / "mapped")
    in_memory = train_population(blobs, **{**settings, "n_workers": 1}, out=tmp_path / "memory")
    assert (on_disk.path / "dataset" / "x_train.npy").exists()  # the run's copy, as .npy
    assert isinstance(on_disk.dataset.x_train, np.memmap)
    for name in in_memory.record_names:
        np.testing.assert_array_equal(on_disk.records(name), in_memory.records(name), name)
    # Validation and fingerprint read in blocks: far less memory than the array.
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32,
                                    shape=(300_000, 64))  # 77 MB
    big[:] = 1.0
    big.flush()
    tracemalloc.start()
    labels = np.arange(300_000) % 2
    Dataset("big", np.load(tmp_path / "big.npy", mmap_mode="r"), labels,
            np.ones((4, 64), np.float32), np.array([0, 1, 0, 1]), ["a", "b"]).fingerprint()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 77e6 / 2, peak


@pytest.mark.parametrize("kind, extra", [
    ("sgd", {}), ("sgd", {"nesterov": True}), ("sgd", {"momentum": 0.0}), ("adam", {}),
    ("adamw", {"weight_decay": 0.05}),
    ("sgd", {"weight_decay": 1e-3, "decay_bias_and_norm": False}),
    ("adam", {"weight_decay": 1e-3, "decay_bias_and_norm": False}),
])
def test_fused_optimizer_matches_torch_optim_bit_for_bit(kind, extra):
    """The engine's optimizer calls torch's fused kernels itself (torch.optim's constructor
    imports torch._dynamo, 1.4 s per worker): same updates as torch.optim(fused=True) over
    7 steps with a changing learning rate, and parameter groups without weight decay."""
    from memlab.engine.recipe import make_optimizer, parameter_groups

    config = PopulationConfig(optimizer=kind, lr=0.01, **extra)
    generator = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(4, 256, generator=generator),
             "b": torch.randn(4, 128, generator=generator)}
    dims = {"w": 2, "b": 1}
    ours = {n: t.clone().requires_grad_() for n, t in start.items()}
    theirs = {n: t.clone().requires_grad_() for n, t in start.items()}
    engine_optimizer = make_optimizer(ours, config, dims)
    assert not isinstance(engine_optimizer, torch.optim.Optimizer)
    groups = parameter_groups(theirs, config, dims)
    options = {"lr": config.lr, "weight_decay": config.weight_decay, "fused": True}
    reference = {"sgd": lambda: torch.optim.SGD(groups, momentum=config.momentum,
                                                nesterov=config.nesterov, **options),
                 "adam": lambda: torch.optim.Adam(groups, **options),
                 "adamw": lambda: torch.optim.AdamW(groups, **options)}[kind]()
    for step in range(7):
        grads = {n: torch.randn(t.shape, generator=generator) for n, t in start.items()}
        for params in (ours, theirs):
            for name, tensor in params.items():
                tensor.grad = grads[name].clone()
        for optimizer in (engine_optimizer, reference):
            for group in optimizer.param_groups:
                group["lr"] = 0.01 * (step + 1)
            optimizer.step()
    for name in start:
        assert torch.equal(ours[name], theirs[name]), name
    assert not torch.equal(ours["w"], start["w"])


@pytest.mark.parametrize("length, kernel, stride, padding",
                         [(40, 5, 2, 1), (19, 3, 2, 1), (10, 3, 2, 1), (7, 2, 3, 2),
                          (6, 1, 1, 0), (5, 5, 1, 2)])
def test_im2col_backward_matches_unfold_and_is_contiguous(length, kernel, stride, padding):
    """The CNN1d path's hand-written im2col backward: the gradient torch's own unfold
    backward gives, in a contiguous tensor (the ReLU backward reading it is 3x slower on a
    strided one), each element summing its taps in the order 0..kernel-1."""
    from memlab.engine.loop import _Im2col

    generator = torch.Generator().manual_seed(length + kernel)
    x = torch.randn(3, 2, 4, length, generator=generator, requires_grad=True)
    columns = _Im2col.apply(x, kernel, stride, padding)
    out_length = (length + 2 * padding - kernel) // stride + 1
    grad = torch.randn(columns.shape, generator=generator)
    (ours,) = torch.autograd.grad(columns, x, grad)
    unfolded = F.pad(x, (padding, padding)).unfold(3, kernel, stride)
    reference_columns = unfolded.permute(0, 1, 4, 2, 3).reshape(3, 2 * kernel, 4 * out_length)
    torch.testing.assert_close(columns, reference_columns, rtol=0, atol=0)
    (reference,) = torch.autograd.grad(reference_columns, x, grad)
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
    # Exact: a loop adding each tap's contribution in tap order.
    expected = torch.zeros(3, 2, 4, length)
    taps = grad.view(3, 2, kernel, 4, out_length)
    for tap in range(kernel):
        for j in range(out_length):
            position = stride * j + tap - padding
            if 0 <= position < length:
                expected[..., position] += taps[:, :, tap, :, j]
    assert torch.equal(ours, expected)


def test_the_task_names_of_configs_are_the_engine_tasks():
    from memlab.engine.config import TASK_NAMES
    from memlab.engine.task import TASKS

    assert tuple(TASKS) == TASK_NAMES
    assert all(task.name == name for name, task in TASKS.items())
