"""FaceDataset: images (N, 112, 112) uint8, integer identity labels, identity names, and source paths."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class FaceFile:
    """Where memory-mapped faces lie on disk: ``path`` holds them as C-ordered uint8 rows from byte ``offset``."""
    path: str
    offset: int

    def read(self, idx: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Rows ``idx`` (in range), read with one pread per run of consecutive indices."""
        out = np.empty((len(idx), *shape), dtype=np.uint8)
        row = int(np.prod(shape))
        flat = memoryview(out).cast("B")
        with open(self.path, "rb", buffering=0) as fh:
            start = 0
            while start < len(idx):
                end = start + 1
                while end < len(idx) and idx[end] == idx[end - 1] + 1:
                    end += 1
                want = (end - start) * row
                got = os.preadv(fh.fileno(), [flat[start * row : end * row]], self.offset + int(idx[start]) * row)
                if got != want:
                    raise OSError(f"face cache {self.path} is shorter than its map: read {got} of {want} bytes")
                start = end
        return out


@dataclass
class FaceDataset:
    images: torch.Tensor  # (N, 112, 112) uint8
    labels: torch.Tensor  # (N,) int64, 0..num_identities-1
    identity_names: list[str]
    paths: list[str] = field(default_factory=list)  # relative source paths ("Name/Name_0001.jpg"); may be empty
    name: str = "faces"
    file: FaceFile | None = None  # set when ``images`` is memory-mapped from the face cache (fedface.data.sources)

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
        return FaceDataset(self.take(idx), labels, names, paths, name or self.name)

    def take(self, indices) -> torch.Tensor:
        """The images at ``indices``, as a new tensor. Faces memory-mapped from the face cache are read from its file,
        not through the map: Linux maps a page-cache folio (up to 2 MB) whole on a fault, so a simulation worker
        reading each client's few faces through the map would come to hold the whole set (docs/scale.md "Memory")."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.file is None:
            return self.images[torch.from_numpy(idx)]
        n = len(self.images)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"face index out of range for {n} faces: {idx.min()}..{idx.max()}")
        return torch.from_numpy(self.file.read(np.where(idx < 0, idx + n, idx), tuple(self.images.shape[1:])))

    def indices_of(self, identities) -> np.ndarray:
        """Indices of all images whose label is in ``identities``."""
        ids = torch.as_tensor(np.asarray(list(identities), dtype=np.int64))
        return torch.nonzero(torch.isin(self.labels, ids)).flatten().numpy()

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels.numpy(), minlength=self.num_identities)
