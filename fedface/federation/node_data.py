"""Where a client's faces come from: a shard of one shared dataset (simulation) or the node's own folders (deployment).

Simulation: every simulated client reads the same dataset and takes shard ``partition-id`` of the partition table.
Deployment: a SuperNode names its own folders in its node config (``data-path``, optionally ``eval-path``); nothing is
partitioned globally and no path reaches the server. With ``federation.head=shared`` the node's rows in the global
label space start at ``class-offset`` (node config, or env ``FEDFACE_CLASS_OFFSET``): the federation agrees on the
offsets out of band, as it does on the key (docs/deploy.md).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedface.data.dataset import FaceDataset
from fedface.data.images import Geometry
from fedface.data.pairs import Pairs, balanced_pairs
from fedface.data.partition import PartitionTable, make_partition
from fedface.data.shards import make_shards
from fedface.data.sources import load_configured, load_folder

log = logging.getLogger(__name__)

DATA_KEY, EVAL_KEY, OFFSET_KEY = "data-path", "eval-path", "class-offset"
OFFSET_ENV = "FEDFACE_CLASS_OFFSET"
PAIRS_FILE = "pairs.tsv"  # in an eval folder: "left<TAB>right<TAB>same<TAB>fold", paths relative to the folder


@dataclass
class NodeData:
    images: torch.Tensor                # (N, 112, 112) uint8: this client's training faces
    labels: torch.Tensor                # class per image: global row (head=shared) or local class (head=local)
    num_classes: int
    eval_data: FaceDataset | None       # what evaluation embeds; None: this node cannot evaluate
    table: PartitionTable | None        # its test pairs
    #: simulation only: each image's person as the rank among all training identities (the experimenter's view, for
    #: scoring attacks by identity; a deployed node has none)
    identities: torch.Tensor | None = None


@dataclass(frozen=True)
class NodeFolders:
    """A deployed node's own data, read from its node config / environment (never from a message)."""
    data: Path
    eval: Path | None = None
    class_offset: int | None = None

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any], env: Mapping[str, str] = os.environ
                         ) -> "NodeFolders | None":
        if not node_config.get(DATA_KEY):
            return None  # simulation: a shard of the shared dataset
        offset = node_config.get(OFFSET_KEY, env.get(OFFSET_ENV))
        return cls(Path(str(node_config[DATA_KEY])), Path(str(node_config[EVAL_KEY])) if node_config.get(EVAL_KEY)
                   else None, None if offset in (None, "") else int(offset))


@functools.lru_cache(maxsize=2)
def federation_split(data_cfg_json: str, seed: int, num_partitions: int):
    """Dataset, partition table and shards, computed once per process (every simulated client shares them)."""
    data_cfg = json.loads(data_cfg_json)
    data = load_configured(data_cfg)
    table = make_partition(data, data_cfg, seed, root=data_cfg.get("root"))
    shards = make_shards(data.labels[table.train_idx].numpy(), num_partitions, data_cfg.get("shards", "identity"),
                         float(data_cfg.get("dirichlet_alpha", 0.5)), seed)
    return data, table, shards


def shard_data(cfg: Mapping[str, Any], partition_id: int, num_partitions: int, data_root: str | None = None
               ) -> NodeData:
    """Simulation: shard ``partition_id`` of the configured dataset's training identities."""
    data_cfg = {**cfg["data"], **({"root": data_root} if data_root else {})}
    data, table, shards = federation_split(json.dumps(data_cfg, sort_keys=True), int(cfg["seed"]), num_partitions)
    train_labels = data.labels[table.train_idx].numpy()
    idx = table.train_idx[shards[partition_id]]
    # global label space = rank among all train identities (needed by a shared head); a local head relabels
    global_ids = np.unique(train_labels)
    global_labels = np.searchsorted(global_ids, data.labels[idx].numpy())
    images, identities = data.take(idx), torch.as_tensor(global_labels)
    if cfg["federation"]["head"] == "shared":
        return NodeData(images, identities, len(global_ids), data, table, identities)
    local_ids, local_labels = np.unique(global_labels, return_inverse=True)
    return NodeData(images, torch.as_tensor(local_labels), len(local_ids), data, table, identities)


def own_data(cfg: Mapping[str, Any], folders: NodeFolders) -> NodeData:
    """Deployment: every face under the node's ``data`` folder trains; ``eval`` (optional) holds its test pairs.
    Errors name the node config key, not the path: a failing node's error message travels to the server."""
    train = _own_folder(folders.data, DATA_KEY)
    labels, num_classes = train.labels, train.num_identities
    if cfg["federation"]["head"] == "shared":
        total = cfg["federation"].get("num_classes")
        if folders.class_offset is None:
            raise ValueError(f"federation.head=shared needs this node's class offset: node config `{OFFSET_KEY}` "
                             f"or env {OFFSET_ENV}")
        if total is None or not 0 <= folders.class_offset <= int(total) - num_classes:
            raise ValueError(f"node config `{OFFSET_KEY}`={folders.class_offset} + this node's {num_classes} "
                             f"identities do not fit federation.num_classes={total}")
        labels, num_classes = labels + folders.class_offset, int(total)
    eval_data, table = None, None
    if folders.eval is not None:
        eval_data = _own_folder(folders.eval, EVAL_KEY)
        table = _eval_table(eval_data, folders.eval, cfg)
    return NodeData(train.images, labels, num_classes, eval_data, table)


def _own_folder(folder: Path, key: str) -> FaceDataset:
    try:
        return load_folder(folder, Geometry(), name="node")
    except (FileNotFoundError, ValueError) as err:
        log.error("node config `%s`: %s", key, err)  # the path stays in this node's log
        raise ValueError(f"node config `{key}` names no readable face folder (one sub-folder per identity); see "
                         "the node's log") from None


def _eval_table(data: FaceDataset, folder: Path, cfg: Mapping[str, Any]) -> PartitionTable:
    """All of the eval folder is test data; its pairs come from ``pairs.tsv`` when present (a fixed protocol the
    federation shares, like LFW's pairs.txt), else seeded balanced pairs (``data.pairs``)."""
    idx = np.arange(len(data))
    pairs_file = folder / PAIRS_FILE
    if pairs_file.is_file():
        where = {p: i for i, p in enumerate(data.paths)}
        rows = [line.split("\t") for line in pairs_file.read_text().splitlines() if line.strip()]
        try:
            left, right = (np.array([where[r[k]] for r in rows]) for k in (0, 1))
        except KeyError as err:
            raise ValueError(f"node config `{EVAL_KEY}`: {PAIRS_FILE} names an image missing from the folder: "
                             f"{err}") from None
        pairs = Pairs(left, right, np.array([r[2] == "1" for r in rows]), np.array([int(r[3]) for r in rows]))
    else:
        p = cfg["data"].get("pairs", {})
        pairs = balanced_pairs(data.labels.numpy(), int(p.get("folds", 10)), int(p.get("per_fold", 60)),
                               int(cfg["seed"]))
    return PartitionTable("node", "own-folder", np.array([], dtype=np.int64), np.array([], dtype=np.int64), idx,
                          pairs, "none", identities={"test": list(data.identity_names)})
