"""A deep generator prior for model inversion: a DCGAN trained on the attacker's auxiliary faces.

GMI (Zhang et al. 2020) and KED-MI (Chen et al. 2021, cited by paper 001) invert a face model by optimising the
latent code of a GAN trained on public faces, so the inversion stays on the face manifold. This is that prior at CPU
scale: the DCGAN architecture (Radford et al. 2016: strided transposed convolutions, BatchNorm, ReLU / LeakyReLU,
Adam 2e-4, beta1 0.5, the non-saturating loss) at 64 x 64 grey levels, trained on the aux faces (never client data)
with random mirroring. ``GanPrior`` has ``FacePrior``'s interface (``components``, ``decode``), so
``fedface.attacks.inversion.invert`` optimises its latent exactly as it optimises eigenface coefficients; the
latent's L2 (``attack.inversion.l2``) is the Gaussian prior the GAN was trained with.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from fedface.config import known_keys_only


@dataclass
class GanConfig:
    latent: int = 128          # latent dimension (the optimised coefficients)
    size: int = 64             # generated picture side (a power of 2, >= 16); bilinear up to the model's input
    width: int = 16            # channels of the last generator block (x2 per block towards the latent)
    steps: int = 3000          # generator updates (one discriminator update each)
    batch_size: int = 32
    lr: float = 2.0e-4
    beta1: float = 0.5
    seed: int = 0
    max_seconds: float = 3600.0

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | None) -> "GanConfig":
        out = cls(**known_keys_only(cls, cfg or {}, "attack.inversion.gan"))
        if out.size < 16 or out.size & (out.size - 1):
            raise ValueError(f"attack.inversion.gan.size={out.size}: a power of 2, at least 16")
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _blocks(size: int) -> int:
    return size.bit_length() - 3  # 4 x 4 -> size in this many doublings


class Generator(nn.Module):
    def __init__(self, latent: int, size: int = 64, width: int = 16):
        super().__init__()
        n = _blocks(size)
        top = width * 2 ** (n - 1)
        self.top = top
        self.project = nn.Sequential(nn.Linear(latent, top * 16, bias=False), nn.BatchNorm1d(top * 16), nn.ReLU(True))
        layers: list[nn.Module] = []
        c = top
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(len(z), self.top, 4, 4))


class Discriminator(nn.Module):
    def __init__(self, size: int = 64, width: int = 16):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = width
        for _ in range(_blocks(size) - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


def _init(module: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) weights, N(1, 0.02) BatchNorm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def faces_for(aux: torch.Tensor, size: int) -> torch.Tensor:
    """Aux faces (N, H, W) in [0, 255] -> (N, 1, size, size) in [-1, 1] (area resize)."""
    x = aux.float().reshape(len(aux), 1, *aux.shape[-2:]) / 127.5 - 1.0
    return F.interpolate(x, size=(size, size), mode="area")


def train_gan(faces: torch.Tensor, cfg: GanConfig, progress: bool = False) -> tuple[Generator, dict[str, Any]]:
    """DCGAN training on ``faces`` (N, 1, size, size) in [-1, 1], randomly mirrored; returns the generator in eval
    mode and the facts (steps, seconds, the last 100 steps' mean losses, whether max_seconds stopped it)."""
    gen_rng = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    g, d = Generator(cfg.latent, cfg.size, cfg.width), Discriminator(cfg.size, cfg.width)
    g.apply(_init)
    d.apply(_init)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(cfg.batch_size), torch.zeros(cfg.batch_size)
    t0, stopped, recent = time.perf_counter(), None, []
    bar = _progress(cfg.steps, progress)
    step = 0
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(len(faces), (cfg.batch_size,), generator=gen_rng)
        real = faces[idx]
        flip = torch.rand(cfg.batch_size, generator=gen_rng) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(-1), real)
        fake = g(torch.randn(cfg.batch_size, cfg.latent, generator=gen_rng))
        loss_d = bce(d(real), ones) + bce(d(fake.detach()), zeros)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = bce(d(fake), ones)  # non-saturating generator loss
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if not (torch.isfinite(loss_d.detach()) and torch.isfinite(loss_g.detach())):
            raise FloatingPointError(f"GAN prior training diverged at step {step} (loss_d={float(loss_d)}, "
                                     f"loss_g={float(loss_g)}); lower attack.inversion.gan.lr")
        recent = (recent + [(loss_d.item(), loss_g.item())])[-100:]
        if bar is not None:
            bar.update(1)
        if time.perf_counter() - t0 > cfg.max_seconds:
            stopped = "max_seconds"
            break
    if bar is not None:
        bar.close()
    facts = {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "stopped": stopped,
             "loss_d": round(sum(r[0] for r in recent) / len(recent), 4),
             "loss_g": round(sum(r[1] for r in recent) / len(recent), 4), "faces": len(faces)}
    return g.eval(), facts


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="GAN prior", unit="step")


class GanPrior:
    """``FacePrior``'s interface over a trained generator: ``decode(z)`` -> (K, 1, H, W) pictures in [-1, 1]."""

    def __init__(self, generator: Generator, latent: int, out_size: tuple[int, int]):
        self.generator = generator.eval().requires_grad_(False)
        self.latent, self.size = latent, tuple(out_size)

    @property
    def components(self) -> int:
        return self.latent

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.generator(z)
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False).clamp(-1, 1)


__all__ = ["Discriminator", "GanConfig", "GanPrior", "Generator", "faces_for", "train_gan"]
