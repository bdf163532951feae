"""The experimenter's one identity judge: does an attack's picture show the person it should?

Two views (``fedface.metrics.identity``): an independent face model (dlib) -- COS and same-person share against the
true person's images, and attack top-1 among every enrolled identity -- and the target system itself (the run's
protection + backbone): SRRA, the share of pictures it accepts as the true person, and its top-1. Templates are
enrolled from the ``gallery`` -- the true people's images, the attacked ones among them -- which favours the attacker
a little: a leak is not understated.

``score(pictures, ids)`` compares each picture with every gallery image of its identity (model inversion guesses a
person); ``score(pictures)`` pairs picture i with gallery image i (a reconstruction of that very image).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fedface.io import atomic_save_safetensors
from fedface.metrics.identity import SAME_PERSON_DISTANCE, IndependentEvaluator, attack_top1, enrol, replay_attack
from fedface.metrics.scores import effect


def pictures(x: torch.Tensor) -> torch.Tensor:
    """Faces in [-1, 1] at any size -> [0, 255] at 112 x 112: what a replay would present."""
    x = F.interpolate(x.float(), size=(112, 112), mode="bilinear", align_corners=False)
    return (x.clamp(-1, 1) + 1) * 127.5


class IdentityJudge:
    """``gallery`` (N, 112, 112) or (N, 1, 112, 112) in [0, 255] with identity ``labels`` (N,); ``target``: the
    target system (backbone, protection), or why there is none (SRRA is then n/a with that reason); ``cache``: a
    folder for the gallery's dlib descriptors (keyed by the gallery's bytes)."""

    def __init__(self, gallery: torch.Tensor, labels: torch.Tensor, target: tuple | str, seed: int,
                 cache: Path | None = None):
        self.gallery, self.labels, self.target, self.seed, self.cache = gallery, labels, target, seed, cache
        self.independent = IndependentEvaluator()
        self._enrolled: tuple | None = None

    def _descriptors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The gallery's dlib descriptors and its templates (once per judge; on disk with ``cache``)."""
        if self._enrolled is None:
            digest = hashlib.sha256(self.gallery.numpy().tobytes()).hexdigest()[:16]
            path = None if self.cache is None else Path(self.cache) / f"dlib-gallery-{digest}.safetensors"
            if path is not None and path.exists():
                from safetensors.torch import load_file
                emb = load_file(str(path))["emb"]
            else:
                emb = self.independent.embed(self.gallery)
                if path is not None:
                    atomic_save_safetensors(path, {"emb": emb.contiguous().numpy()})
            self._enrolled = (emb, *enrol(emb, self.labels))
        return self._enrolled

    def score(self, pics: torch.Tensor, ids: torch.Tensor | None = None) -> dict[str, Any]:
        """``pics`` (K, 1, 112, 112) in [0, 255]; ``ids`` (K,) their true identities, or None when picture i is a
        reconstruction of gallery image i."""
        paired = ids is None
        ids = self.labels if paired else ids
        out: dict[str, Any] = {}
        if self.independent.available():
            gallery, templates, identities = self._descriptors()
            emb = self.independent.embed(pics)
            own = [gallery[i:i + 1] if paired else gallery[self.labels == c] for i, c in enumerate(ids.tolist())]
            out["cos"] = float(np.mean([F.cosine_similarity(e[None], o, dim=1).mean() for e, o in zip(emb, own)]))
            out["same_person"] = float(np.mean([((o - e[None]).norm(dim=1) < SAME_PERSON_DISTANCE).double().mean()
                                                for e, o in zip(emb, own)]))
            out["top1"] = attack_top1(emb, ids, templates, identities)["top1"]
            out["chance"] = 1 / len(identities)
        else:
            out["cos_unavailable"] = self.independent.reason
        if isinstance(self.target, str):
            out["srra_unavailable"] = self.target
        else:
            backbone, protection = self.target
            r = replay_attack(backbone, protection, pics, ids, self.gallery, self.labels, seed=self.seed)
            out.update(srra=r.get("srra"), target_top1=r.get("top1"), srra_threshold=r.get("threshold"))
            if r.get("srra") is None:
                out["srra_unavailable"] = r.get("unavailable")
        return out

    def effect(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Paper 001's masking effect of visualised masked data against the faces, both in [-1, 1] (1 - SSIM, 1 - COS
        under dlib)."""
        embedder = self.independent.embed if self.independent.available() else None
        return effect((images + 1) * 127.5, (targets + 1) * 127.5, 255.0, embedder)
