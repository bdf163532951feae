"""FaceDataset: images (N, 112, 112) uint8, integer identity labels, identity names, and source paths."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class FaceDataset:
    images: torch.Tensor  # (N, 112, 112) uint8
    labels: torch.Tensor  # (N,) int64, 0..num_identities-1
    identity_names: list[str]
    paths: list[str] = field(default_factory=list)  # relative source paths ("Name/Name_0001.jpg"); may be empty
    name: str = "faces"

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 3:
            raise ValueError(f"images must be (N, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_identities(self) -> int:
        return len(self.identity_names)

    def subset(self, indices, relabel: bool = True, name: str | None = None) -> "FaceDataset":
        """Images at ``indices``; with ``relabel`` the kept identities are renumbered 0..K-1 (in order)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        labels = self.labels[idx]
        names = self.identity_names
        if relabel:
            kept, labels = torch.unique(labels, sorted=True, return_inverse=True)
            names = [self.identity_names[i] for i in kept.tolist()]
        paths = [self.paths[i] for i in idx.tolist()] if self.paths else []
        return FaceDataset(self.images[idx], labels, names, paths, name or self.name)

    def indices_of(self, identities) -> np.ndarray:
        """Indices of all images whose label is in ``identities``."""
        ids = torch.as_tensor(np.asarray(list(identities), dtype=np.int64))
        return torch.nonzero(torch.isin(self.labels, ids)).flatten().numpy()

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels.numpy(), minlength=self.num_identities)
