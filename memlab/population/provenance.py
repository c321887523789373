"""Where each chunk was trained, and the policy for runs whose chunks disagree.

A run's chunks may be trained by different processes, hosts and devices (workers, Ray
nodes, resumes on another machine). Each committed chunk's ``done.json`` carries its
``provenance``, taken in the process that trained it: host, CPU model and the ISA flags
that change kernels, the device, the compute dtype it ran in, and the library versions.

Policy when the chunks disagree (checked before the records are consolidated):

- **compute dtype**: refused. A bfloat16 chunk and a float32 chunk are different
  experiments; the error names the chunks and how to retrain them.
- **anything else** (host, CPU, ISA, device, versions): flagged, not refused. Results agree
  within their errors across machines, not bit for bit, so the run records which keys are
  mixed (``manifest["provenance"]["mixed"]``) and says so in one line; ``memlab info`` shows
  the table.
"""

from __future__ import annotations

import platform
from collections import Counter

import numpy as np
import torch

from memlab import __version__
from memlab.engine.precision import cpu_flags, cpu_model
from memlab.errors import RunError

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
KEYS = ("host", "cpu", "isa", "device", "compute_dtype", "torch", "numpy", "memlab")
REFUSED = ("compute_dtype",)


def chunk_provenance(device: str, compute_dtype: str) -> dict[str, str]:
    """This process's provenance for a chunk it trained on ``device`` in ``compute_dtype``."""
    flags = cpu_flags()
    name = str(device)
    if name.startswith("cuda") and torch.cuda.is_available():
        name = f"{name} ({torch.cuda.get_device_name(torch.device(name))})"
    return {"host": platform.node(), "cpu": cpu_model(),
            "isa": " ".join(f for f in ISA_FLAGS if f in flags), "device": name,
            "compute_dtype": compute_dtype, "torch": torch.__version__,
            "numpy": np.__version__, "memlab": __version__}


def check_chunks(infos: dict[int, dict]) -> dict:
    """The run's provenance summary from its chunks' ``done.json`` (``infos``: index ->
    info); a RunError naming the chunks when a refused key is mixed. Chunks committed before
    memlab recorded provenance count as unknown."""
    known = {index: info["provenance"] for index, info in infos.items()
             if isinstance(info.get("provenance"), dict)}
    mixed = [key for key in KEYS if len({p.get(key) for p in known.values()}) > 1]
    for key in REFUSED:
        if key in mixed:
            groups: dict[str, list[int]] = {}
            for index, provenance in sorted(known.items()):
                groups.setdefault(str(provenance.get(key)), []).append(index)
            listed = "; ".join(f"{value}: chunks {_ranges(chunks)}"
                               for value, chunks in groups.items())
            raise RunError(f"the run's chunks were trained in different {key}s ({listed}); "
                           "delete the chunks of the one you do not want (chunks/NNNN) and "
                           "run the same command again with that --compute-dtype")
    return {"mixed": mixed, "unknown_chunks": len(infos) - len(known)}


def table(infos: dict[int, dict]) -> list[tuple[str, int]]:
    """(description, number of chunks) for each distinct provenance, most chunks first."""
    counts = Counter()
    for info in infos.values():
        provenance = info.get("provenance")
        if isinstance(provenance, dict):
            counts[" | ".join(f"{key} {provenance.get(key)}" for key in KEYS)] += 1
        else:
            counts["unknown (committed before memlab recorded provenance)"] += 1
    return counts.most_common()


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ", ".join(parts)
