"""The experimenter's ground truth: what really entered a client's model, written by the client to local disk.

Attack experiments need the true model inputs to score a reconstruction. A client writes them -- only when its own
environment sets ``FEDFACE_GROUND_TRUTH_DIR`` (``fedface simulate`` does so for runs with an attack configured) -- to
``<dir>/round-<r>/node-<id>.safetensors`` + ``.json`` before it replies. Nothing of it is ever sent: the malicious
strategy hands attacks only what the threat model grants, and only the scorer (``fedface.experiment.scoring``) reads
these files -- except the ``knows_seed`` / ``knows_labels`` upper-bound variants, which read the labels and the MixUp
structure (never pixels) from them, standing in for a server that somehow holds the client's random state.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from fedface.io import atomic_save_safetensors, atomic_write_json
from fedface.train.loop import StepRecord

ENV_VAR = "FEDFACE_GROUND_TRUTH_DIR"
_FIELDS = ("model_input", "labels", "mixed", "mix_labels", "mix_weights", "partners", "indices", "pixels")


def ground_truth_path(server_round: int, node: int, root: str | os.PathLike | None = None) -> Path | None:
    """Where node ``node`` writes round ``server_round`` (None when ground truth is not being recorded)."""
    root = root or os.environ.get(ENV_VAR)
    return None if not root else Path(root) / f"round-{server_round}" / f"node-{node}.safetensors"


def save_ground_truth(path: Path, records: list[StepRecord], meta: dict[str, Any]) -> None:
    arrays = {f"{t}.{f}": getattr(r, f).numpy() for t, r in enumerate(records) for f in _FIELDS
              if getattr(r, f) is not None}
    atomic_save_safetensors(path, arrays)
    atomic_write_json(path.with_suffix(".json"), {**meta, "steps": len(records), "lrs": [r.lr for r in records]})


def load_ground_truth(path: Path) -> tuple[list[StepRecord], dict[str, Any]]:
    meta = json.loads(path.with_suffix(".json").read_text())
    arrays = load_file(str(path))
    records = []
    for t, lr in enumerate(meta["lrs"]):
        got = {f: torch.from_numpy(np.array(arrays[f"{t}.{f}"])) for f in _FIELDS if f"{t}.{f}" in arrays}
        records.append(StepRecord(lr=lr, **got))
    return records, meta
