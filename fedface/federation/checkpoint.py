"""Round checkpoints of the server: global arrays (+ policy network and its optimiser) as safetensors, plus JSON.

Never pickle: a checkpoint a user may receive from someone else only holds tensors and JSON. Each file lands
atomically (temp + rename) and ``state.json`` is written last, so a crash mid-write leaves the previous round's
checkpoint intact and ``resume`` continues from the last complete round. The last ``KEEP_ROUNDS`` rounds are kept,
each with its own copy of the state: a latest round that does not load (a truncated file, a disk error) falls back
to the one before, with a warning.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from fedface.io import atomic_save_safetensors, atomic_write_json

log = logging.getLogger(__name__)

ARRAYS, POLICY, STATE = "global.safetensors", "policy.safetensors", "state.json"
KEEP_ROUNDS = 2


def global_models(folder: Path) -> list[Path]:
    """The checkpointed global weights in ``folder``, oldest round first (what a server holds of a finished run)."""
    return sorted(Path(folder).glob(f"round-*/{ARRAYS}"))


def save_checkpoint(folder: Path, server_round: int, arrays: dict[str, np.ndarray],
                    policy: dict[str, np.ndarray] | None, state: dict[str, Any]) -> None:
    """Write round ``server_round`` into its own sub-folder, then point ``state.json`` at it (the commit point)."""
    folder = Path(folder)
    sub = folder / f"round-{server_round:05d}"
    atomic_save_safetensors(sub / ARRAYS, arrays)
    if policy is not None:
        atomic_save_safetensors(sub / POLICY, policy)
    state = {**state, "round": server_round, "folder": sub.name}
    atomic_write_json(sub / STATE, state)
    atomic_write_json(folder / STATE, state)
    for old in sorted(folder.glob("round-*"))[:-KEEP_ROUNDS]:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def load_checkpoint(folder: Path) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray] | None, dict] | None:
    """(last complete round, arrays, policy or None, state) or None when there is no checkpoint. A round whose
    files do not load is skipped with a warning for the one before; ValueError when none loads."""
    folder = Path(folder)
    rounds = sorted(folder.glob("round-*"), reverse=True)
    if not rounds and not (folder / STATE).exists():
        return None
    problems = []
    for sub in rounds:
        try:
            state = json.loads((sub / STATE).read_text())
            arrays = load_file(str(sub / ARRAYS))
            policy = load_file(str(sub / POLICY)) if (sub / POLICY).exists() else None
        except Exception as err:  # truncated safetensors/JSON, missing file: try the round before
            problems.append(f"{sub.name}: {type(err).__name__}: {err}")
            log.warning("checkpoint %s does not load (%s): falling back to the round before", sub, err)
            continue
        return int(state["round"]), arrays, policy, state
    raise ValueError(f"no checkpoint in {folder} loads: " + "; ".join(problems or ["no round-* folder"]))


def to_numpy(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in state_dict.items()}


def optimizer_arrays(optimizer: torch.optim.Optimizer) -> tuple[dict[str, np.ndarray], list[dict]]:
    """An optimiser's state as named arrays ("opt.<param>.<name>") plus its JSON param groups (no pickle)."""
    sd = optimizer.state_dict()
    arrays = {f"opt.{i}.{name}": np.atleast_1d(torch.as_tensor(v).detach().cpu().numpy())
              for i, st in sd["state"].items() for name, v in st.items()}
    return arrays, sd["param_groups"]


def load_optimizer_arrays(optimizer: torch.optim.Optimizer, arrays: dict[str, np.ndarray], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            t = torch.as_tensor(value)
            state.setdefault(int(idx), {})[name] = t.reshape(()) if name == "step" else t
    optimizer.load_state_dict({"state": state, "param_groups": groups})
