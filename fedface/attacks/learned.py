"""Malicious server II: learned reconstruction of clients' masked faces (``fedface reconstruct``).

The papers' strong assumption (paper 001 Sec. 3 and Sec. 4.2: "the attackers have the ability to infer all masked
data"): the server holds clients' ``model_input``s. It makes (model_input, face) pairs from its auxiliary faces
(LFW-a people in no client's data and no test pair, ``fedface.data.sources.load_aux``) with the same protection --
its *own* random key unless the threat grants ``knows_key`` (one colluding client), its own PEEP eigenfaces -- trains
one decoder and one cGAN per protection with the same budget (``fedface.models.decoder``), and reconstructs the
victims: the clients' training faces, masked with the clients' key. With the key it also runs the white-box
inversion (``invert_mask.to_image``: inverse BDCT after un-sorting by the energy rule, paper 000's white-box attack).

MixUp (``mixup`` != none, and ``instahide``): row b of a mixed batch holds face b (column 0 of the supermatrix) with
the largest expected weight, so its pair target is face b; for ``mixup=adaptive`` the attacker draws k uniformly in
k_min..k_max (paper 001 Sec. 4.2 mixes "according to the statistical proportion" of k in training: the policy's
k-histogram is not part of what the server keeps, uniform is the stated stand-in).

AdvFace (``protect=advface``, paper 003): the attacker knows the algorithm and its whole config (inner protection,
iterations, alpha, eps, total_eps, shadow budget) -- the white-box-ish assumption paper 003 makes of a server that
"can access the clients' black-box feature extractor" (Sec. 3.2) -- but not the client's shadow decoder nor its faces.
So ``attacker.fit(aux)`` trains the attacker's *own* shadow decoder on its auxiliary faces and its pairs carry PGD
noise against that decoder (with its own key for a keyed inner protection): the decoder learns to read perturbed
inputs. That is an adaptive attacker, stronger than paper 003's, which trains its network on clean features (eq. 1)
and meets the perturbation only at test time. PGD makes masking the pairs cost ``iterations`` shadow-decoder
forward/backward passes per batch.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fedface.models.decoder import to_targets
from fedface.attacks.invert_mask import to_image
from fedface.metrics import mean_face_floor, score
from fedface.mixup import MixupConfig, mixup
from fedface.protect import build_protection, needs_key
from fedface.protect.base import Protection

log = logging.getLogger(__name__)

#: Fewer auxiliary faces than this cannot train a decoder worth reporting (a 64 x 64 U-Net with ~1M parameters).
MIN_AUX = 200
CACHE_VERSION = 1


def attacker_key(protect_cfg: Mapping[str, Any], knows_key: bool, client_key: bytes | None,
                 seed: int) -> bytes | None:
    """The key the attacker masks its own faces with: the client's (``knows_key``) or one of its own."""
    if not needs_key(protect_cfg):
        return None
    return client_key if knows_key else hashlib.sha256(f"attacker-key-{seed}".encode()).digest()


def attacker_protection(protect_cfg: Mapping[str, Any], aux: torch.Tensor, seed: int,
                        key: bytes | None = None) -> Protection:
    """The attacker's copy of the target's protection -- its own key unless ``key`` is given -- fitted on its
    auxiliary faces (N, H, W) (never client data) and in eval mode."""
    attacker = build_protection(protect_cfg, key or attacker_key(protect_cfg, False, None, seed))
    attacker.fit(aux.reshape(len(aux), 1, *aux.shape[-2:]).float())
    return attacker.eval()


@torch.no_grad()
def mask(protection: Protection, mixup_cfg: Mapping[str, Any], faces: torch.Tensor, seed: int,
         batch_size: int = 64) -> torch.Tensor:
    """uint8 faces (N, 112, 112) -> their ``model_input``s (N, C, H, W), mixed within batches of ``batch_size`` when
    ``mixup_cfg`` mixes (row b keeps face b in column 0)."""
    gen = torch.Generator().manual_seed(seed)
    mcfg = MixupConfig.from_cfg(mixup_cfg)
    protection.train()  # what a client sends while it trains (InstaHide mixes batch partners in training only)
    out = []
    for start in range(0, len(faces), batch_size):
        x = protection(faces[start:start + batch_size].unsqueeze(1).float(), generator=gen)
        if mcfg.name != "none" and len(x) > 1:
            k = mcfg.ks[int(torch.randint(len(mcfg.ks), (1,), generator=gen))]
            x = mixup(x, torch.zeros(len(x), dtype=torch.long), min(k, len(x)), gen, mcfg.max_weight,
                      mcfg.weight_draw, mcfg.renormalize)[0]
        out.append(x.float())
    return torch.cat(out)


def aux_pairs(protection: Protection, mixup_cfg: Mapping[str, Any], aux: torch.Tensor, size: int,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The attacker's training pairs from its auxiliary faces and their mirror images (both legitimately its own):
    (model_inputs, targets in [-1, 1] at size x size)."""
    if len(aux) < MIN_AUX:
        raise ValueError(f"{len(aux)} auxiliary faces: the learned reconstruction needs at least {MIN_AUX} "
                         f"(data.aux and ../shared/data's LFW-a provide ~1,549)")
    faces = torch.cat([aux, aux.flip(-1)])
    order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(seed))
    faces = faces[order]
    return mask(protection, mixup_cfg, faces, seed), to_targets(faces.unsqueeze(1).float(), size)


def visualise(model_input: torch.Tensor, size: int) -> torch.Tensor:
    """What the masked data looks like as an image, for the grids and paper 001's visual masking effect: the mean
    over channels, min-max scaled per sample to [-1, 1], on the size x size grid (a one-channel input is itself)."""
    v = model_input.float().mean(dim=1, keepdim=True)
    lo = v.amin(dim=(1, 2, 3), keepdim=True)
    hi = v.amax(dim=(1, 2, 3), keepdim=True)
    v = 2 * (v - lo) / (hi - lo).clamp_min(1e-12) - 1
    return F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False)


def pixel_scores(recon: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """PSNR / SSIM of reconstructions (in [-1, 1]) against their own originals (no matching: rows are paired)."""
    s = score(recon.clamp(-1, 1).double(), targets.double(), data_range=2.0, match=False)
    return {"psnr": s["psnr"], "ssim": s["ssim"], "mse": s["mse"]}


def white_box(protection: Protection, inputs: torch.Tensor, aux: torch.Tensor, size: int,
              key_known: bool) -> tuple[torch.Tensor | None, str]:
    """Paper 000's white-box attack through ``to_image`` (the key's permutation only when the threat grants it)."""
    permutation = getattr(protection, "permutation", None) if key_known else None
    images, note = to_image(protection, inputs, aux.unsqueeze(1).float(), permutation)
    return (None, note) if images is None else (to_targets(images, size), note)


def victims_of(train_idx: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """The clients' training faces the attack targets: all, or a seeded sample of ``limit``."""
    idx = np.asarray(train_idx)
    if limit is not None and len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, int(limit), replace=False))
    return idx


def floor_scores(aux: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    f = mean_face_floor(to_targets(aux.unsqueeze(1).float(), targets.shape[-1]), targets, 2.0)
    return {"psnr": f["psnr"], "ssim": f["ssim"], "mse": f["mse"]}
