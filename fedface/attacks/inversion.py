"""Malicious server III: model inversion of the weights a server holds (no gradient attack needed).

With ``federation.head=shared`` every row of the ArcFace head is a class centre: a template of one client identity.
The server optimises an input -- pixels for ``protect=none``, the protection's ``model_input`` (e.g. the sorted,
self-normalised PPFR-FD tensor) otherwise -- so that the backbone's embedding points at that centre (GMI / KED-MI's
target, Zhang et al. 2020, Chen et al. 2021 -- cited by paper 001), with image priors:

- total variation (``tv``), on the image or on each frequency channel's 14 x 14 map;
- DeepInversion's BatchNorm-statistics prior (Yin et al. 2020, ``bn``): the batch statistics of every BatchNorm2d's
  input are pulled to that layer's running mean / variance -- which the server holds with ``federation.bn=federated``;
- a low-resolution parameterisation (``scale``; pixels only) and random jitter / flips (DeepInversion);
- a face prior trained on the attacker's auxiliary faces (``prior``): the latent of a generator is optimised instead
  of pixels -- eigenfaces (``FacePrior``, a linear generator) or a DCGAN (``fedface.models.face_gan``, GMI's prior);
- for self-normalised frequency inputs, each channel of the optimised tensor is re-standardised in the forward pass
  (the real ``model_input`` is, by construction).

A frequency-space result is mapped to a picture afterwards: white-box (``invert_mask.to_image``, with the key) or by
the learned decoder of ``fedface.models.decoder`` (trained on the attacker's auxiliary faces through the protection).

With ``head=local`` no centre leaves the clients. ``invert_statistics`` is what the backbone alone still gives: inputs
matching the BatchNorm statistics only (the federation's feature statistics -- an average over all clients, no
identity), and ``invert_embeddings`` inverts given embeddings (e.g. of the attacker's own auxiliary faces; shows
how invertible the backbone is, but carries no client identity). The gap is reported, not hidden.

Nothing here changes the model: the backbone is used in eval mode with ``requires_grad`` off for the call, and its
state (parameters, buffers, mode) is restored afterwards (tested).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fedface.config import check_choice, known_keys_only

PRIORS = ("pca", "gan", "free")


@dataclass
class InversionConfig:
    steps: int = 300          # Adam steps per batch of targets
    lr: float = 0.05
    tv: float = 0.05          # total-variation weight (mean absolute neighbour difference)
    bn: float = 0.01          # DeepInversion BatchNorm-statistics weight (sum over BatchNorm2d layers)
    l2: float = 0.0           # L2 on the input (DeepInversion's small prior)
    scale: int = 4            # pixels: optimise at (H/scale, W/scale), bilinear upsampling
    jitter: int = 2           # random shift of up to +-jitter pixels per step (pictures only); 0: off
    flip: bool = True         # random horizontal flip per step (pixels only)
    standardize: bool | None = None  # re-standardise each channel (None: yes for multi-channel inputs)
    prior: str = "pca"        # pictures: pca (aux eigenfaces) | gan (a DCGAN on the aux faces) | free (low-res pixels)
    components: int = 64      # pca: number of eigenfaces (coefficients are unit-variance; l2 = Gaussian prior)
    gan: Mapping[str, Any] | None = None  # gan: fedface.models.face_gan.GanConfig (None: its defaults)
    seed: int = 0
    max_seconds: float = 600.0

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | None) -> "InversionConfig":
        out = cls(**known_keys_only(cls, cfg or {}, "attack.inversion"))
        check_choice(out.prior, PRIORS, "attack.inversion.prior")
        if out.prior == "gan":
            from fedface.models.face_gan import GanConfig
            GanConfig.from_cfg(out.gan)
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class BNStatistics:
    """Forward hooks on every BatchNorm2d: the DeepInversion loss sum_l ||mu_l(x) - mu_l||_2 + ||var_l(x) - var_l||_2
    of the current batch against the layer's running statistics."""

    def __init__(self, model: nn.Module):
        self.losses: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]

    def _hook(self, module: nn.BatchNorm2d, inputs, _output) -> None:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        self.losses.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    def pop(self) -> torch.Tensor:
        out = torch.stack(self.losses).sum() if self.losses else torch.zeros(())
        self.losses = []
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    @property
    def layers(self) -> int:
        return len(self.handles)


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute difference of vertical and horizontal neighbours."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@contextmanager
def frozen(model: nn.Module):
    """Eval mode and no parameter gradients for the duration; the model's mode and flags are restored after."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


class FacePrior:
    """A linear generator trained on the attacker's auxiliary faces: mean face + the top ``components`` principal
    components (eigenfaces) of the faces and their mirror images, scaled so that unit-variance coefficients draw
    faces with the aux set's spread -- the CPU-scale stand-in for GMI / KED-MI's GAN prior."""

    def __init__(self, aux: torch.Tensor, components: int = 64, seed: int = 0):
        faces = aux.float().reshape(len(aux), 1, *aux.shape[-2:]) / 127.5 - 1.0  # uint8 / [0, 255] -> [-1, 1]
        faces = torch.cat([faces, faces.flip(-1)])
        self.size = tuple(faces.shape[-2:])
        flat = faces.flatten(1)
        self.mean = flat.mean(0)
        torch.manual_seed(seed)
        q = min(int(components), len(flat) - 1)
        _, s, v = torch.pca_lowrank(flat - self.mean, q=q, center=False, niter=4)
        self.basis = (v * (s / (len(flat) - 1) ** 0.5)).T.contiguous()  # (q, D)

    @property
    def components(self) -> int:
        return self.basis.shape[0]

    def decode(self, coefficients: torch.Tensor) -> torch.Tensor:
        return (self.mean + coefficients @ self.basis).view(len(coefficients), 1, *self.size).clamp(-1, 1)

    def fit(self, faces: torch.Tensor) -> torch.Tensor:
        """The coefficients of each face's least-squares fit (faces (N, 1, H, W) in [-1, 1] at the prior's size):
        the best picture this prior can draw of it."""
        residual = faces.float().flatten(1) - self.mean
        return torch.linalg.lstsq(self.basis.T, residual.T).solution.T


class _Input(nn.Module):
    """The optimised input: a (low-resolution) free tensor, mapped to the model's input space."""

    def __init__(self, n: int, shape: tuple[int, int, int], cfg: InversionConfig, generator: torch.Generator,
                 prior: FacePrior | None = None):
        super().__init__()
        c, h, w = shape
        self.shape, self.cfg, self.prior = shape, cfg, prior
        self.pixels = c == 1 and h >= 32  # a picture (protect=none, or optimised through a protection) vs frequency
        self.standardize = (not self.pixels) if cfg.standardize is None else bool(cfg.standardize)
        s = max(1, int(cfg.scale)) if self.pixels else 1
        if prior is not None:
            self.z = nn.Parameter(0.5 * torch.randn(n, prior.components, generator=generator))
        else:
            self.z = nn.Parameter(0.2 * torch.randn(n, c, max(2, h // s), max(2, w // s), generator=generator))

    def forward(self) -> torch.Tensor:
        c, h, w = self.shape
        if self.prior is not None:
            return self.prior.decode(self.z)
        x = self.z
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        if self.pixels:
            return torch.tanh(x)  # [-1, 1]: NoProtection's standardised pixels
        if self.standardize:
            x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-5)
        return x


def _augment(x: torch.Tensor, cfg: InversionConfig, pixels: bool, generator: torch.Generator) -> torch.Tensor:
    if cfg.jitter > 0 and pixels:  # a shift of a 14 x 14 frequency map would move 8-pixel blocks: pixels only
        dx, dy = (int(v) for v in torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=generator))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if pixels and cfg.flip and bool(torch.rand((), generator=generator) < 0.5):
        x = x.flip(3)
    return x


def invert(backbone: nn.Module, shape: tuple[int, int, int], cfg: InversionConfig,
           targets: torch.Tensor | None = None, n: int | None = None, prior: FacePrior | None = None,
           through: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None) -> dict[str, Any]:
    """Optimise inputs of ``shape`` (C, H, W) for ``backbone``.

    ``prior``: optimise the latent of a ``FacePrior`` or ``face_gan.GanPrior`` (pixels, shape (1, H, W)).
    ``through``: a picture in [-1, 1] -> model_input map (the attacker's copy of the protection, e.g. PPFR-FD with its
    own or the clients' key): the optimised variable is then a picture and the backbone sees its masked version.
    ``inputs`` is what was optimised (a picture when ``through`` is given) and ``model_inputs`` what the backbone saw.

    ``targets`` (K, d): embeddings/class centres to align with (loss 1 - cos); None: statistics only (``n`` inputs,
    BN + TV priors alone). Returns ``inputs`` (K, C, H, W) in the model's input space, ``cos`` (K,) final cosine to
    the targets (None without targets), ``curve`` (mean cosine or loss every 10 % of the steps), ``steps``,
    ``seconds``, ``stopped`` and the BN layers used.
    """
    if targets is None and not n:
        raise ValueError("invert: give targets (K, d) or the number n of statistics-only inputs")
    k = len(targets) if targets is not None else int(n)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    param = _Input(k, shape, cfg, gen, prior)
    feed = (lambda x: x) if through is None else (lambda x: through(x, gen))
    opt = torch.optim.Adam(param.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.steps))
    t_dir = None if targets is None else F.normalize(targets.detach().float(), dim=1)
    curve, t0, stopped, step = [], time.perf_counter(), None, 0
    every = max(1, cfg.steps // 10)
    with frozen(backbone):
        stats = BNStatistics(backbone) if cfg.bn > 0 else None
        try:
            for step in range(1, cfg.steps + 1):
                x = param()
                emb = backbone(feed(_augment(x, cfg, param.pixels, gen)))
                loss = cfg.tv * tv_loss(x) + cfg.l2 * param.z.pow(2).mean()
                cos = None
                if t_dir is not None:
                    cos = (F.normalize(emb, dim=1) * t_dir).sum(1)
                    loss = loss + (1 - cos).mean()
                if stats is not None:
                    loss = loss + cfg.bn * stats.pop()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if step % every == 0 or step == cfg.steps:
                    curve.append(round(float((cos.mean() if cos is not None else loss).detach()), 4))
                if time.perf_counter() - t0 > cfg.max_seconds:
                    stopped = "max_seconds"
                    break
        finally:
            if stats is not None:
                layers = stats.layers
                stats.close()
            else:
                layers = 0
        with torch.no_grad():
            x = param().detach()
            mi = feed(x)
            final = None if t_dir is None else (F.normalize(backbone(mi), dim=1) * t_dir).sum(1)
    return {"inputs": x, "model_inputs": mi, "cos": final, "curve": curve, "steps": step,
            "seconds": time.perf_counter() - t0,
            "stopped": stopped, "bn_layers": layers}


def invert_centres(backbone: nn.Module, centres: torch.Tensor, shape: tuple[int, int, int],
                   cfg: InversionConfig, prior: FacePrior | None = None, through=None) -> dict[str, Any]:
    """Class-centre inversion: one input per row of ``centres`` (ArcFace head rows, K x d)."""
    return invert(backbone, shape, cfg, targets=centres, prior=prior, through=through)


def invert_embeddings(backbone: nn.Module, embeddings: torch.Tensor, shape: tuple[int, int, int],
                      cfg: InversionConfig, prior: FacePrior | None = None, through=None) -> dict[str, Any]:
    """Backbone-only inversion towards given embeddings (e.g. of the attacker's auxiliary faces)."""
    return invert(backbone, shape, cfg, targets=embeddings, prior=prior, through=through)


def invert_statistics(backbone: nn.Module, n: int, shape: tuple[int, int, int], cfg: InversionConfig,
                      prior: FacePrior | None = None, through=None) -> dict[str, Any]:
    """Feature-statistics inversion (backbone only, ``head=local``): ``n`` inputs matching the BatchNorm running
    statistics under the TV prior -- no class target exists."""
    if cfg.bn <= 0:
        raise ValueError("invert_statistics needs attack.inversion.bn > 0 (the statistics are its only target)")
    return invert(backbone, shape, cfg, targets=None, n=n, prior=prior, through=through)


def head_scores(centres: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine of each embedding to every class centre (K x C): the target-class score an inversion raises."""
    return F.linear(F.normalize(embeddings, dim=1), F.normalize(centres, dim=1))


__all__ = ["BNStatistics", "FacePrior", "InversionConfig", "frozen", "head_scores", "invert", "invert_centres",
           "invert_embeddings", "invert_statistics", "tv_loss"]
