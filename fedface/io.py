"""Atomic writes: results land whole or not at all (write to a temp file in the same folder, then rename)."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    _atomic(path, lambda fh: np.save(fh, arr))


def atomic_save_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Named arrays as one safetensors file (never pickle)."""
    from safetensors.numpy import save

    _atomic(path, lambda fh: fh.write(save({k: np.ascontiguousarray(v) for k, v in arrays.items()})))


def atomic_save_tensors(path: Path, tensors: Mapping[str, Any]) -> None:
    """Named torch tensors (pictures, reconstructions) as float32 safetensors."""
    atomic_save_safetensors(path, {k: v.detach().float().contiguous().numpy() for k, v in tensors.items()})


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
