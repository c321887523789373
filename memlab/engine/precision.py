"""Precision and device capability: which dtype a population trains in, decided from the
device's reported flags (never a timing, which would tie results to the machine's load).

``PopulationConfig.compute_dtype`` names the precision; :func:`resolve_compute_dtype` turns
it into a torch dtype on a device (``auto``: bfloat16 where native, else float16 on a GPU
and float32 on a CPU), and :func:`autocast` is the training step's mixed-precision context.
``cpu_flags`` / ``cpu_model`` read ``/proc/cpuinfo`` for that decision and for benchmarks.
"""

from __future__ import annotations

import contextlib
import platform
import warnings

import torch

from memlab.errors import ConfigError


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of /proc/cpuinfo (None where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The ISA flags /proc/cpuinfo reports (empty where there is none, e.g. macOS)."""
    return set((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    """The CPU's model name, for benchmarks and result records."""
    return _cpuinfo("model name") or platform.processor() or "unknown CPU"


def native_bfloat16(device: str | torch.device = "cpu") -> bool:
    """Whether the device multiplies bfloat16 matrices natively (so faster than float32):
    a CUDA GPU that reports bfloat16 support (compute capability >= 8.0), a CPU with
    AVX512-BF16 or AMX-BF16 (from /proc/cpuinfo, else torch's reported ISA level)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return torch.backends.cpu.get_cpu_capability() == "AMX"


def resolve_compute_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype of ``PopulationConfig.compute_dtype`` on ``device``.

    ``auto`` is decided from the device's reported capabilities only (never a timing, which
    would make a run's results depend on the machine's load): bfloat16 where it is native,
    else float16 on a GPU and float32 on a CPU. Warns when the requested precision will be
    slower than float32 (bfloat16 or float16 on a CPU without native support)."""
    device = torch.device(device)
    if name == "auto":
        if native_bfloat16(device):
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
             "float16": torch.float16}.get(name)
    if dtype is None:
        raise ConfigError(f"compute_dtype must be float32, bfloat16, float16 or auto, got "
                          f"{name!r}")
    if dtype == torch.bfloat16 and not native_bfloat16(device):
        if device.type == "cuda":
            raise ConfigError("this GPU has no native bfloat16 (compute capability < 8.0); "
                              "use compute_dtype='float16' or 'auto'")
        warnings.warn(f"compute_dtype='bfloat16' on a {device.type} without native bfloat16 "
                      "(no AVX512-BF16 or AMX): it is emulated and slower than float32; "
                      "use 'float32' or 'auto'", RuntimeWarning, stacklevel=2)
    if dtype == torch.float16 and device.type == "cpu":
        warnings.warn("compute_dtype='float16' on a CPU is emulated and slower than float32 "
                      "(it is meant for GPUs without bfloat16); use 'float32' or 'auto'",
                      RuntimeWarning, stacklevel=2)
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def autocast(device: torch.device, dtype: torch.dtype):
    """The mixed-precision context of a training step (a no-op in float32): matrix
    products in ``dtype``, softmax, losses and reductions in float32 (autocast's lists)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
