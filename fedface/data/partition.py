"""The partition table: which identities play which role. One table per dataset, used by every later stage.

Roles never overlap (tests check it):
- ``train``  -- the federation's identities (sharded across clients) or the centralized training set;
- ``public`` -- optional public pre-training identities the server may use (FedFR's protocol), carved from train;
- ``test``   -- held-out identities: verification pairs and identification gallery/probes;
- ``aux``    -- the attacker's auxiliary identities (a malicious server's prior data), never seen by anyone else.

Protocols:
- ``identity``: a seeded split of the dataset's identities into train / test (ORL, LFW thumbnails, folders, synthetic);
  balanced seeded pairs on the test identities (see ``pairs.balanced_pairs``).
- ``lfw_disjoint`` (LFW-a, the headline benchmark): train on people with >= ``train_min_images`` images (10 -> 158
  people, 4,324 images); test on the official View-2 pairs whose people are all outside training (5,274 pairs:
  2,404 matched, 2,870 mismatched), keeping the official folds; aux = LFW-a people in neither training nor any
  View-2 pair (1,468 people, 1,549 images).
ORL's 40 people are too few for four roles, so ORL (and every non-LFW set) takes its aux identities from LFW-a's
aux set; synthetic data takes extra synthetic identities.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedface.data.dataset import FaceDataset
from fedface.data.images import list_identity_folders
from fedface.data.pairs import Pairs, balanced_pairs, lfw_image_path, read_lfw_pairs

ROLES = ("train", "public", "test", "aux")


@dataclass
class PartitionTable:
    dataset: str
    protocol: str
    train_idx: np.ndarray
    public_idx: np.ndarray
    test_idx: np.ndarray
    pairs: Pairs
    aux_source: str
    aux_identities: list[str] = field(default_factory=list)
    identities: dict[str, list[str]] = field(default_factory=dict)  # role -> identity names

    def summary(self) -> dict[str, Any]:
        sizes = {r: len(self.identities.get(r, [])) for r in ROLES}
        images = {"train": len(self.train_idx), "public": len(self.public_idx), "test": len(self.test_idx)}
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "identities": sizes,
            "images": images,
            "pairs": self.pairs.summary(),
            "aux_source": self.aux_source,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "identity_names": self.identities}


def make_partition(data: FaceDataset, cfg: Mapping[str, Any], seed: int, root: Path | None = None) -> PartitionTable:
    """Build the table for ``data`` from the ``data`` config group (keys ``split``, ``pairs``, ``aux``)."""
    split = cfg.get("split", {})
    protocol = split.get("protocol", "identity")
    if protocol == "lfw_disjoint":
        table = _lfw_disjoint(data, split, root)
    elif protocol == "identity":
        table = _identity_split(data, split, cfg.get("pairs", {}), seed)
    else:
        raise ValueError(f"unknown data.split.protocol={protocol!r}; known: identity, lfw_disjoint")
    _carve_public(data, table, int(split.get("public_identities", 0)), seed)
    _attach_aux(table, cfg.get("aux", "lfwa"), root)
    return table


def _names(data: FaceDataset, idx: np.ndarray) -> list[str]:
    return [data.identity_names[i] for i in np.unique(data.labels[idx].numpy())]


def _identity_split(data: FaceDataset, split: Mapping, pairs_cfg: Mapping, seed: int) -> PartitionTable:
    rng = np.random.default_rng(seed)
    n_ids = data.num_identities
    n_test = int(split.get("test_identities", max(2, n_ids // 4)))
    if not 2 <= n_test < n_ids:
        raise ValueError(f"data.split.test_identities={n_test} must be in [2, {n_ids - 1}] for {data.name}")
    order = rng.permutation(n_ids)
    test_ids, train_ids = order[:n_test], order[n_test:]
    test_idx, train_idx = data.indices_of(test_ids), data.indices_of(train_ids)
    local = balanced_pairs(
        data.labels[test_idx].numpy(), int(pairs_cfg.get("folds", 10)), int(pairs_cfg.get("per_fold", 60)), seed
    )
    pairs = Pairs(test_idx[local.left], test_idx[local.right], local.same, local.fold)
    return PartitionTable(
        data.name, "identity", train_idx, np.array([], dtype=np.int64), test_idx, pairs, "",
        identities={"train": _names(data, train_idx), "test": _names(data, test_idx), "public": []},
    )


def _lfw_disjoint(data: FaceDataset, split: Mapping, root: Path | None) -> PartitionTable:
    if not data.paths:
        raise ValueError("data.split.protocol=lfw_disjoint needs an LFW layout dataset (data=lfwa)")
    official = read_lfw_pairs(_pairs_file(root))
    min_images = int(split.get("train_min_images", 10))
    counts = data.counts()
    train_ids = np.flatnonzero(counts >= min_images)
    train_names = {data.identity_names[i] for i in train_ids}
    where = {p: i for i, p in enumerate(data.paths)}
    kept = [p for p in official if p.name1 not in train_names and p.name2 not in train_names]
    try:
        left = np.array([where[lfw_image_path(p.name1, p.num1)] for p in kept])
        right = np.array([where[lfw_image_path(p.name2, p.num2)] for p in kept])
    except KeyError as err:
        raise ValueError(f"pairs.txt names an image missing from the dataset: {err}") from None
    pairs = Pairs(left, right, np.array([p.same for p in kept]), np.array([p.fold for p in kept]))
    test_names = sorted({p.name1 for p in kept} | {p.name2 for p in kept})
    name_to_id = {n: i for i, n in enumerate(data.identity_names)}
    test_idx = data.indices_of([name_to_id[n] for n in test_names])
    return PartitionTable(
        data.name, "lfw_disjoint", data.indices_of(train_ids), np.array([], dtype=np.int64), test_idx, pairs, "",
        identities={"train": sorted(train_names), "test": test_names, "public": []},
    )


def _pairs_file(root: Path | None) -> Path:
    from fedface.data.sources import resolve_root

    return resolve_root(root) / "lfw_pairs" / "pairs.txt"


def _carve_public(data: FaceDataset, table: PartitionTable, n_public: int, seed: int) -> None:
    """Move ``n_public`` seeded train identities to the public pre-training role."""
    if n_public <= 0:
        return
    train_ids = np.unique(data.labels[table.train_idx].numpy())
    if n_public >= len(train_ids):
        raise ValueError(
            f"data.split.public_identities={n_public} leaves no training identity (only {len(train_ids)} exist)"
        )
    public_ids = np.random.default_rng(seed + 1).choice(train_ids, n_public, replace=False)
    is_public = np.isin(data.labels[table.train_idx].numpy(), public_ids)
    table.public_idx = table.train_idx[is_public]
    table.train_idx = table.train_idx[~is_public]
    table.identities["public"] = _names(data, table.public_idx)
    table.identities["train"] = _names(data, table.train_idx)


def lfw_aux_identities(root: Path | None = None, train_min_images: int = 10) -> list[str]:
    """LFW-a people in neither the lfw_disjoint training set nor any View-2 pair (the attacker's prior data)."""
    from fedface.data.sources import FOLDER_SOURCES, resolve_root

    base = resolve_root(root)
    people = list_identity_folders(base / FOLDER_SOURCES["lfwa"].subdir)
    in_pairs = {n for p in read_lfw_pairs(base / "lfw_pairs" / "pairs.txt") for n in (p.name1, p.name2)}
    return [name for name, files in people if files and len(files) < train_min_images and name not in in_pairs]


def _attach_aux(table: PartitionTable, aux: str, root: Path | None) -> None:
    if aux in ("none", "", None):
        table.aux_source = "none"
        return
    if aux != "lfwa":
        raise ValueError(f"unknown data.aux={aux!r}; known: lfwa, none")
    table.aux_source = "lfwa"
    try:
        table.aux_identities = lfw_aux_identities(root)
    except FileNotFoundError as err:
        table.aux_source = f"unavailable ({err})"
    table.identities["aux"] = table.aux_identities
    overlap = set(table.aux_identities) & (set(table.identities["train"]) | set(table.identities["test"]))
    if overlap and table.dataset in ("lfwa", "lfw_min20"):
        raise AssertionError(f"aux identities overlap train/test: {sorted(overlap)[:5]}")
