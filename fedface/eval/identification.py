"""Closed-set identification: one seeded gallery image per identity, every other image is a probe (top-1)."""
from __future__ import annotations

import numpy as np
import torch


def identification_top1(emb: torch.Tensor, labels: np.ndarray, seed: int = 0) -> dict:
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    gallery, probes = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        pick = rng.choice(idx)
        gallery.append(pick)
        probes.extend(i for i in idx if i != pick)
    if len(gallery) < 2:
        return {"top1": None, "gallery": len(gallery), "probes": len(probes)}
    sims = emb[probes] @ emb[gallery].T
    predicted = labels[np.asarray(gallery)[sims.argmax(1).numpy()]]
    return {"top1": float(np.mean(predicted == labels[probes])), "gallery": len(gallery), "probes": len(probes)}
