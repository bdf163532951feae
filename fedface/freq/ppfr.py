"""PPFR-FD fast face masking (paper 000, section "Fast Face Image Masking", Fig. 2(b), eqs. 3-7), one step a function.

BDCT -> keep the 36 lowest zig-zag channels -> drop DC (35 channels F_i) -> Shuffle1 (eq. 3) -> self-normalisation
(eq. 4) -> channel mixing (eq. 5, 34 channels) -> Shuffle2 (eq. 6) -> self-normalisation (eq. 7) -> sort the channels
by energy before the network (section "Privacy-Preserving Face Recognition", Fig. 4(a)).

Self-normalisation (eqs. 4/7) is per IMAGE by default (``norm="image"``): "mu^k_1 and sigma^k_1 ... the sample mean
and sample standard deviation of all the entries in E^k_j ... each face image would have its own self-normalization
parameters" -- no channel index; paper 002 (App. B) describes PPFR-FD the same way ("normalizing each image
separately"). It keeps the channels' relative energies, which is what lets the energy sort recover a near-fixed
order: over 400 LFW-a faces a channel's sorted slot varies with std 1.1 (neighbours of similar energy swap).
``norm="channel"`` standardises every channel of every image separately (FaceObfuscator's normalisation, paper 002
Alg. 1); kept for the ablation: every mixed channel then has energy ~(1 + rho)/2 and the sorted order is close to
random (slot std 8.3; a random order gives 9.8).

Shuffle1 is a fixed permutation derived from the federation key; Shuffle2 is fully random per image. The sort undoes
Shuffle2: the sorted input no longer depends on Shuffle2's draw (the paper concedes the sort helps a white-box
attacker, section "Security Goal and Evaluation").
"""
from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from fedface.freq.bdct import bdct

#: Channels kept by the channel-selection module (section "Privacy-Accuracy Trade-off Analysis"): zig-zag 0..35.
KEEP = 36
#: Guard of the self-normalisation denominator sqrt(var + eps); the paper gives no value. Kept far below the variance
#: of the weakest kept channel (about 4e-5 on ORL faces at [0, 1] pixel scale) so that it never changes a channel.
EPS = 1e-10
#: Which masking steps run; every step of Fig. 2(b) is on by default.
STEPS: Mapping[str, bool] = {"shuffle1": True, "normalize": True, "mix": True, "shuffle2": True, "sort": True}
#: Granularity of the self-normalisation (eqs. 4/7): one mean/std per image (paper 000) or per channel (paper 002).
NORMS = ("image", "channel")
_SHUFFLE1_CONTEXT = b"fedface/ppfr-fd/shuffle1"


def draw(
    sample: Callable[..., torch.Tensor], shape, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``sample(shape)`` (torch.rand / torch.randn) from ``generator`` on the generator's device, moved to ``device``."""
    source = generator.device if generator is not None else device
    return sample(tuple(shape), generator=generator, device=source).to(device)


def coefficients(x: torch.Tensor, keep: int = 64) -> torch.Tensor:
    """BDCT of raw pixels scaled to [0, 1] (not centred, so DC carries the image's mean brightness, as in the paper)."""
    return bdct(x / 255.0, keep)


def select_channels(c: torch.Tensor, keep: int = KEEP, drop_dc: bool = True) -> torch.Tensor:
    """Keep the ``keep`` lowest zig-zag channels; drop DC (channel 0) if asked -> F_i, i = 0..34 for the defaults."""
    if not 0 < keep <= c.shape[1] or (drop_dc and keep < 2):
        raise ValueError(f"cannot keep {keep} channels (drop_dc={drop_dc}) of {c.shape[1]}")
    return c[:, int(drop_dc) : keep]


def shuffle1_permutation(key: bytes, channels: int) -> torch.Tensor:
    """Shuffle1's fixed permutation: HMAC-SHA256(key, context) seeds a numpy Generator. Only the result is kept."""
    seed = int.from_bytes(hmac.new(key, _SHUFFLE1_CONTEXT, hashlib.sha256).digest(), "big")
    return torch.from_numpy(np.random.default_rng(seed).permutation(channels))


def shuffle1(c: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Eq. 3: E_j = Shuffle1(F_i), the same pseudo-random channel order for every image."""
    return c[:, permutation.to(c.device)]


def check_norm(norm: str) -> str:
    """``norm`` if it is one of ``NORMS``; ValueError naming ``protect.norm`` and the choices."""
    if norm not in NORMS:
        raise ValueError(f"unknown protect.norm={norm!r}; known: {', '.join(NORMS)}")
    return norm


def _norm_dims(norm: str) -> tuple[int, ...]:
    return (-3, -2, -1) if check_norm(norm) == "image" else (-2, -1)


def self_normalize(x: torch.Tensor, eps: float = EPS, norm: str = "channel") -> torch.Tensor:
    """Eqs. 4 and 7: standardise by the sample mean and std of all entries of each image (``norm="image"``, paper
    000) or of each channel of each image over its h x w map (``norm="channel"``, paper 002; the default of this
    helper because FaceObfuscator and the attacks' scale-free projections use it).

    (x - mean) / sqrt(var + eps), var with Bessel's correction. Written out: 4x faster than torch.var_mean on CPU.
    """
    dims = _norm_dims(norm)
    centred = x - x.mean(dim=dims, keepdim=True)
    count = math.prod(x.shape[d] for d in dims)
    var = centred.square().sum(dim=dims, keepdim=True) / (count - 1)
    return centred * torch.rsqrt(var + eps)


def mix_channels(x: torch.Tensor) -> torch.Tensor:
    """Eq. 5: M_j = (E_j + E_{j+1}) / 2, j = 0..C-2 (one channel fewer)."""
    return (x[:, :-1] + x[:, 1:]) / 2


def _gather_channels(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x[i, order[i]] for every image i."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], order]


def shuffle2(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 6: S_l = Shuffle2(M_j), a fresh uniformly random channel permutation per image."""
    order = draw(torch.rand, x.shape[:2], generator, x.device).argsort(dim=1)
    return _gather_channels(x, order)


def sort_by_energy(x: torch.Tensor) -> torch.Tensor:
    """Sort each image's channels by energy, highest first (Fig. 4(a)): the key is the channel's mean |x|.

    Called before the last self-normalisation. Per image (paper 000) eq. 7 is one affine map of the whole image, so
    sorting before or after it gives the same order; per channel every channel leaves eq. 7 with mean 0 and std 1,
    so only the key before it tells channels apart (and that key is nearly flat: ``NORMS``).
    """
    order = x.abs().mean(dim=(-2, -1)).argsort(dim=1, descending=True, stable=True)
    return _gather_channels(x, order)


def check_steps(steps: Mapping[str, bool] | None) -> dict[str, bool]:
    """``STEPS`` updated with ``steps``; ValueError naming an unknown step."""
    unknown = set(steps or {}) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown PPFR-FD step(s) {sorted(unknown)}; known: {sorted(STEPS)}")
    return {**STEPS, **{k: bool(v) for k, v in (steps or {}).items()}}


def mask(
    f: torch.Tensor,
    steps: Mapping[str, bool],
    permutation: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eps: float = EPS,
    norm: str = "image",
) -> torch.Tensor:
    """Fig. 2(b) after channel selection: the enabled steps of eqs. 3-7, then the sort. ``f``: (B, C, h, w)."""
    x = shuffle1(f, permutation) if steps["shuffle1"] else f
    x = self_normalize(x, eps, norm) if steps["normalize"] else x
    x = mix_channels(x) if steps["mix"] else x
    x = shuffle2(x, generator) if steps["shuffle2"] else x
    x = sort_by_energy(x) if steps["sort"] else x
    return self_normalize(x, eps, norm) if steps["normalize"] else x


def energy_report(images: torch.Tensor, keep: int = KEEP) -> dict[str, float]:
    """Share of image energy (sum of squared BDCT coefficients) in DC and removed by dropping DC + channels >= keep.

    ``images``: (N, 1, H, W) raw pixels. Energy is taken on uncentred pixels (the paper's convention: there DC holds
    >90% of it and dropping DC + the high channels removes >94%). Orthonormal BDCT: total = sum of squared pixels.
    """
    energy = coefficients(images.to(torch.float64)).square().sum(dim=(0, 2, 3))
    total = energy.sum()
    dc, high = energy[0] / total, energy[keep:].sum() / total
    return {"images": int(images.shape[0]), "dc": float(dc), "high": float(high), "removed": float(dc + high)}
