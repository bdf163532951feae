"""Try-out on one machine: write the simulation's client shards as per-node folders, so a deployment on loopback
trains on exactly what ``fedface simulate`` trains on (the sim-vs-deploy comparison) -- each node then reads only its
own folder, as on separate machines. A real federation skips this: every node already has its own faces.

Layout under ``out``: ``node-<i>/<label>/<position>.png`` (node i's training faces) and ``eval/`` (the held-out
identities + ``pairs.tsv``: the partition table's verification pairs). Folder and file names are zero-padded
dataset labels and positions, so a node loads its faces in the simulation's order (same batches, same seed).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fedface.federation.node_data import PAIRS_FILE, federation_split


def _write_faces(data, idx: np.ndarray, folder: Path) -> list[str]:
    names = []
    for i in idx.tolist():
        rel = f"{int(data.labels[i]):05d}/{i:06d}.png"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # lossless and deterministic: a rerun keeps the files
            Image.fromarray(data.images[i].numpy()).save(path)
        names.append(rel)
    return names


def export_shards(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write shard i of ``cfg`` (a resolved run config) to ``out/node-i`` and the test set to ``out/eval``.
    Returns what the deploy file needs: each node's folder and class offset, and the global label-space size."""
    n = int(cfg["federation"]["num_clients"])
    data, table, shards = federation_split(json.dumps(cfg["data"], sort_keys=True), int(cfg["seed"]), n)
    nodes, offset = [], 0
    for i, shard in enumerate(shards):
        idx = table.train_idx[shard]
        _write_faces(data, idx, out / f"node-{i}")
        nodes.append({"data": str(out / f"node-{i}"), "class_offset": offset})
        offset += len(np.unique(data.labels[idx].numpy()))
    names = dict(zip(table.test_idx.tolist(), _write_faces(data, table.test_idx, out / "eval")))
    p = table.pairs
    rows = [f"{names[int(a)]}\t{names[int(b)]}\t{int(s)}\t{int(f)}" for a, b, s, f in zip(p.left, p.right, p.same,
                                                                                            p.fold)]
    (out / "eval" / PAIRS_FILE).write_text("\n".join(rows) + "\n")
    return {"nodes": nodes, "eval": str(out / "eval"), "num_classes": offset}
