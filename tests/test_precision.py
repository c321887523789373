"""Mixed precision must not move the science (issue 17).

Known answers: a bfloat16 population and a float32 population with the same seeds (same
subsets, initializations and batch orders) must give the same memorization scores within
their standard errors; as a yardstick, the bfloat16 run must move the scores less than
changing the seed of a float32 run does (two independent estimates of the same scores:
mean |difference| about 1.1 standard errors). And planted label noise must be found
equally well (AUROC) in both precisions.
"""

import numpy as np
import pytest
import torch

from memlab.data import load
from memlab.engine.config import PopulationConfig
from memlab.engine.precision import native_bfloat16, resolve_compute_dtype
from memlab.errors import ConfigError
from memlab.measures.memorization import detection_auroc, memorization, spearman
from memlab.models import build_model
from memlab.population import train_population

SETTINGS = dict(model="mlp", model_kwargs={"hidden": [128]}, n_models=48, subset_fraction=0.5,
                epochs=20, batch_size=32, lr=0.1, chunk_size=16, save_weights=False)


def population(tmp_path, dataset, name, **settings):
    run = train_population(dataset, out=tmp_path / name, n_workers=1, progress=False,
                           **{**SETTINGS, **settings})
    return memorization(run)


def agreement(a, b) -> dict:
    """mean |mem_a - mem_b| in units of the median standard error, and Spearman."""
    both = np.isfinite(a["mem"]) & np.isfinite(b["mem"])
    delta = np.abs(a["mem"][both] - b["mem"][both]).mean()
    se = np.median(np.r_[a["se"][both], b["se"][both]])
    return {"ratio": delta / se, "spearman": spearman(a["mem"].to_numpy(), b["mem"].to_numpy())}


def test_bfloat16_memorization_agrees_with_float32_within_its_standard_error(tmp_path):
    dataset = load("digits").with_label_noise(0.1, seed=0)
    noisy = np.zeros(dataset.n_train, bool)
    noisy[dataset.corruption["label_noise"]["indices"]] = True
    fp32 = population(tmp_path, dataset, "fp32")
    bf16 = population(tmp_path, dataset, "bf16", compute_dtype="bfloat16")
    other_seed = population(tmp_path, dataset, "seed1", seed=1)

    same = agreement(fp32, bf16)
    yardstick = agreement(fp32, other_seed)
    print(same, yardstick)
    # Stated bound: bf16 moves a score by less than half its standard error on average,
    # and by less than 0.8x what a new seed moves it (the README's precision table).
    assert same["ratio"] < 0.5, same
    assert same["ratio"] < 0.8 * yardstick["ratio"], (same, yardstick)
    assert same["spearman"] > 0.8, same
    auroc = {name: detection_auroc(frame["mem"].to_numpy(), noisy)
             for name, frame in (("fp32", fp32), ("bf16", bf16))}
    print(auroc)
    assert auroc["fp32"] > 0.6  # the planted noise is found at all (short training)
    assert abs(auroc["fp32"] - auroc["bf16"]) < 0.04, auroc


def test_auto_is_decided_by_the_device_and_float32_is_untouched():
    assert resolve_compute_dtype("float32", "cpu") == torch.float32
    expected = torch.bfloat16 if native_bfloat16("cpu") else torch.float32
    assert resolve_compute_dtype("auto", "cpu") == expected
    with pytest.raises(ConfigError, match="compute_dtype"):
        PopulationConfig(compute_dtype="fp8")
    # Old manifests (no compute_dtype) open as float32 runs.
    stored = {k: v for k, v in PopulationConfig().to_dict().items() if k != "compute_dtype"}
    assert PopulationConfig.from_dict(stored).compute_dtype == "float32"


def test_bfloat16_without_native_support_warns(monkeypatch):
    from memlab.engine import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    assert not precision.native_bfloat16("cpu")
    with pytest.warns(RuntimeWarning, match="slower"):
        precision.resolve_compute_dtype("bfloat16", "cpu")
    assert precision.resolve_compute_dtype("auto", "cpu") == torch.float32


def test_float16_loss_scaling_path_trains_like_float32(tmp_path):
    """The GPU fallback (float16 autocast + dynamic loss scale), exercised on the CPU:
    its models must learn what float32 models learn (test accuracy within 3 points)."""
    dataset = load("digits")
    small = dict(n_models=4, epochs=8, chunk_size=4)
    with pytest.warns(RuntimeWarning, match="float16"):
        half = train_population(dataset, out=tmp_path / "fp16", n_workers=1, progress=False,
                                **{**SETTINGS, **small, "compute_dtype": "float16"})
    full = train_population(dataset, out=tmp_path / "fp32", n_workers=1, progress=False,
                            **{**SETTINGS, **small})
    acc_half = half.records("test_correct").mean()
    acc_full = full.records("test_correct").mean()
    assert acc_full > 0.85
    assert abs(acc_half - acc_full) < 0.03, (acc_half, acc_full)


@pytest.mark.filterwarnings("ignore:compute_dtype='bfloat16'")
@pytest.mark.parametrize("model_kwargs", [{"hidden": [32]}, {"hidden": [32], "activation": "tanh"}],
                         ids=["fast path", "generic path"])
def test_bfloat16_records_come_from_the_bfloat16_forward(tmp_path, model_kwargs):
    """A bfloat16 population's records are those of the forward it trains with: its logits
    are bfloat16 numbers (then float32), close to the float32 forward of its own trained
    weights; a float32 population's are not bfloat16 numbers (so the check can fail)."""
    from tests.user_models import ProbeLogits

    dataset = load("digits")
    probes = {}
    for dtype in ("bfloat16", "float32"):
        run = train_population(dataset, model="mlp", model_kwargs=model_kwargs, n_models=3,
                               epochs=2, batch_size=64, chunk_size=3, compute_dtype=dtype,
                               callbacks=[ProbeLogits(last=2)], out=tmp_path / dtype,
                               n_workers=1, progress=False)
        probes[dtype] = (run, run.records("probe_logits")[:, -1])  # (K, 5, C), last epoch
    run, logits = probes["bfloat16"]
    as_bf16 = torch.from_numpy(np.array(logits)).bfloat16().float().numpy()
    np.testing.assert_array_equal(logits, as_bf16)
    fp32_logits = probes["float32"][1]
    assert not np.array_equal(
        fp32_logits, torch.from_numpy(np.array(fp32_logits)).bfloat16().float().numpy())

    weights = run.weights()
    x = torch.from_numpy(dataset.x_test[:5])
    for k in range(3):
        model = build_model("mlp", dataset.input_shape, dataset.n_classes, **model_kwargs)
        model.load_state_dict({name: torch.from_numpy(w[k]) for name, w in weights.items()})
        with torch.no_grad():
            reference = model.eval()(x).numpy()
        scale = np.abs(reference).max()
        assert np.abs(logits[k] - reference).max() < 0.05 * scale
        correct = logits[k].argmax(1) == dataset.y_test[:5]
        np.testing.assert_array_equal(run.records("test_correct")[k, :5], correct)
