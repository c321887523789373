"""Generic I/O: atomic file writes and strict JSON. The lowest layer; imports nothing of memlab.

Every file memlab writes goes through here, so readers see the old file or the new one,
never half of one, and every JSON document parses with a strict parser (no NaN/Infinity:
an undefined number is ``null``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def strict_jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as Python values, tuples as lists, paths as strings
    and every non-finite float (NaN, +-inf) as None."""
    if isinstance(obj, dict):
        return {str(k): strict_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [strict_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return strict_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps_strict(obj: Any, indent: int | None = 2) -> str:
    """JSON text that any strict parser accepts (``allow_nan=False`` after conversion)."""
    return json.dumps(strict_jsonable(obj), indent=indent, sort_keys=True, allow_nan=False)


def loads_strict(text: str) -> Any:
    """Parse JSON, rejecting NaN/Infinity (Python's json accepts them by default)."""
    def reject(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=reject)


def _temp_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (NaN and infinities become null), atomically."""
    atomic_write_bytes(path, (dumps_strict(obj) + "\n").encode("utf-8"))


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    path = Path(path)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save_table(path: str | Path, frame) -> None:
    """Save a pandas DataFrame as Parquet (``.parquet``) or CSV (``.csv``), atomically."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            raise ValueError(f"tables are saved as .parquet or .csv, not {path.suffix!r}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
