"""The U-Net decoder behind learned reconstruction of masked faces: the papers' black-box attacks (issue 8). It lives
with the networks because a protection (AdvFace trains its obfuscator against it) and an attack both use it.

Paper 001 Sec. 3 ("black-box attack"): the attacker passes its auxiliary faces through the masking to get (masked,
original) pairs and fits a conditional GAN from masked data (+ noise) to the original; every protection of one
comparison gets the same network, training data and budget. Paper 002 Sec. 6 uses two such attacks, a deconvolution
network (DN, Mai et al. 2018) regressing the face and a cGAN (pix2pix, Isola et al. 2017). Both share one generator
here -- pix2pix's U-Net (Ronneberger et al. 2015) -- and differ only in the objective:

- ``decoder``: L1 regression, the attacker's best pixel-wise estimate (the DN attack's role);
- ``cgan``: pix2pix's L_cGAN(G, D) + lambda * L1 (Isola et al. eq. 4, lambda = 100) with a PatchGAN discriminator on
  (condition, image), and dropout as the noise z (Isola et al. Sec. 3.1: dropout at training and test time).

Any protection's ``model_input`` (C, H, W) goes in: standardised per channel with the training pairs' statistics,
resized to ``size`` x ``size`` (bilinear) and mapped by a 3x3 conv to the U-Net's width, so that conv is the only
layer that differs between protections. Trained at 64 x 64 to fit a CPU.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fedface.config import known_keys_only

log = logging.getLogger(__name__)

KINDS = ("decoder", "cgan")


@dataclass(frozen=True)
class DecoderConfig:
    kind: str = "cgan"          # decoder (L1) | cgan (pix2pix: L_cGAN + l1_weight * L1)
    size: int = 64              # output faces are size x size
    width: int = 32             # U-Net channels at full resolution (x2 per level, 4 levels)
    steps: int = 1500           # optimiser steps: the same budget for every protection (paper 001 Sec. 3)
    batch_size: int = 32
    lr: float = 2.0e-4          # pix2pix: Adam, lr 2e-4, beta1 0.5
    l1_weight: float = 100.0    # pix2pix's lambda (Isola et al. eq. 4)
    dropout: float = 0.5        # cgan only: the noise z (Isola et al. Sec. 3.1); the decoder is deterministic
    seed: int = 0
    max_seconds: float = 3600.0  # bounds training; a bounded decoder is marked stopped=max_seconds

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown attack.decoder.kind={self.kind!r}; known: {', '.join(KINDS)}")

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any], **override) -> "DecoderConfig":
        return cls(**{**known_keys_only(cls, cfg, "attack.decoder"), **override})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.InstanceNorm2d(cout, affine=True),
                         nn.LeakyReLU(0.2))


def _up(cin: int, cout: int, dropout: float) -> nn.Sequential:
    layers = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.InstanceNorm2d(cout, affine=True), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout else []))


class UNet(nn.Module):
    """model_input (B, C, H, W) -> face (B, 1, size, size) in [-1, 1]; skips at 64, 32, 16 and 8 (for size 64).
    The output layer starts at zero on top of the training targets' mean (``prior``)."""

    def __init__(self, in_channels: int, size: int = 64, width: int = 32, dropout: float = 0.0):
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))
        # the attacker's mean face (pre-tanh): the output is a residual over it, so the trivial guess it already
        # holds is where training starts -- an under-trained generator never sits below the mean-face floor
        self.register_buffer("prior", torch.zeros(1, 1, size, size))
        w = width
        self.inp = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1), nn.LeakyReLU(0.2))
        self.downs = nn.ModuleList([_down(w, 2 * w), _down(2 * w, 4 * w), _down(4 * w, 8 * w), _down(8 * w, 8 * w)])
        # pix2pix puts its dropout on the innermost decoder layers
        self.ups = nn.ModuleList([_up(8 * w, 8 * w, dropout), _up(16 * w, 4 * w, dropout), _up(8 * w, 2 * w, 0.0),
                                  _up(4 * w, w, 0.0)])
        self.out = nn.Conv2d(2 * w, 1, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def fit_normalisation(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        dims = [0, 2, 3]
        self.mean.copy_(inputs.mean(dim=dims))
        self.std.copy_(inputs.std(dim=dims).clamp_min(1e-6))
        self.prior.copy_(torch.atanh(targets.mean(dim=0, keepdim=True).clamp(-0.99, 0.99)))

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """The standardised input on the output grid (also the discriminator's condition)."""
        x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        return x if x.shape[-1] == self.size else F.interpolate(x, size=self.size, mode="bilinear",
                                                                align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inp(self.condition(x))]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = torch.cat([up(y), skips.pop()], dim=1)
        return torch.tanh(self.prior + self.out(y))


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN, scaled to 64 x 64: a logit per overlapping patch of (condition, image)."""

    def __init__(self, in_channels: int, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels + 1, w, 4, 2, 1), nn.LeakyReLU(0.2),
            _down(w, 2 * w),
            nn.Conv2d(2 * w, 4 * w, 4, 1, 1, bias=False), nn.InstanceNorm2d(4 * w, affine=True), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, 1, 4, 1, 1),
        )

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([condition, image], dim=1))


def to_targets(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Faces (N, 1, 112, 112) in [0, 255] -> the decoder's targets (N, 1, size, size) in [-1, 1] (area-resized)."""
    x = pixels.float() / 127.5 - 1.0
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def train(inputs: torch.Tensor, targets: torch.Tensor, cfg: DecoderConfig,
          progress: bool = False) -> tuple[UNet, dict[str, Any]]:
    """Fit a generator on (model_input, face) pairs: inputs (N, C, H, W), targets (N, 1, size, size) in [-1, 1]."""
    if len(inputs) != len(targets):
        raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
    if not torch.isfinite(inputs).all():
        raise FloatingPointError("decoder training inputs hold NaN/inf (check the protection's model_input)")
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = UNet(inputs.shape[1], cfg.size, cfg.width, cfg.dropout if cfg.kind == "cgan" else 0.0)
    net.fit_normalisation(inputs, targets)
    opt_g = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    disc = opt_d = None
    if cfg.kind == "cgan":
        disc = PatchDiscriminator(inputs.shape[1], cfg.width)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    start, history, stopped = time.monotonic(), [], "steps"
    bar = _progress(cfg.steps, progress)
    for step in range(cfg.steps):
        idx = torch.randint(len(inputs), (min(cfg.batch_size, len(inputs)),), generator=gen)
        x, y = inputs[idx], targets[idx]
        losses = _step(net, disc, opt_g, opt_d, x, y, cfg)
        if not all(map(torch.isfinite, map(torch.as_tensor, losses.values()))):
            raise FloatingPointError(f"decoder training diverged at step {step}: {losses}")
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step, **losses})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(l1=f"{losses['l1']:.3f}")
        if time.monotonic() - start > cfg.max_seconds:
            stopped = "max_seconds"
            break
    if bar is not None:
        bar.close()
    net.eval()
    facts = {"steps": step + 1, "seconds": time.monotonic() - start, "stopped": stopped, "history": history,
             "pairs": len(inputs), "parameters": sum(p.numel() for p in net.parameters())}
    return net, facts


def _step(net: UNet, disc: PatchDiscriminator | None, opt_g, opt_d, x: torch.Tensor, y: torch.Tensor,
          cfg: DecoderConfig) -> dict[str, float]:
    fake = net(x)
    l1 = (fake - y).abs().mean()
    if disc is None:
        opt_g.zero_grad(set_to_none=True)
        l1.backward()
        opt_g.step()
        return {"l1": float(l1.detach())}
    cond = net.condition(x).detach()
    # D: real pairs -> 1, fake pairs -> 0 (halved, as pix2pix slows D relative to G)
    real_logits, fake_logits = disc(cond, y), disc(cond, fake.detach())
    d_loss = 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                    + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    # G: fool D + stay close in L1 (eq. 4)
    adv_logits = disc(cond, fake)
    adv = F.binary_cross_entropy_with_logits(adv_logits, torch.ones_like(adv_logits))
    g_loss = adv + cfg.l1_weight * l1
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return {"l1": float(l1.detach()), "adv": float(adv.detach()), "d": float(d_loss.detach())}


@torch.no_grad()
def reconstruct(net: UNet, inputs: torch.Tensor, batch_size: int = 128, dropout: bool = False) -> torch.Tensor:
    """Faces (N, 1, size, size) in [-1, 1]. ``dropout``: keep the cGAN's noise on at test time (pix2pix does)."""
    net.train(dropout)
    try:
        return torch.cat([net(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
    finally:
        net.eval()


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="decoder", leave=False)
