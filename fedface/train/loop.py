"""Local ArcFace training: batches of raw uint8 faces -> augmentation -> protection -> backbone -> ArcFace -> CE.

With a ``mixer`` (``fedface.mixup``), the masked batch is k-way mixed after the protection and trained with the
MixUp-ArcFace loss (paper 001); an adaptive mixer also learns its policy network by REINFORCE alongside.

Everything random (batch order, flips, shifts, the protection's per-image randomness, MixUp partners, weights and k)
comes from one ``torch.Generator`` seeded by the caller, so a client's local steps can be replayed exactly from its
seed -- which is what the multi-step gradient attack needs (it simulates what the client did with this same function).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fedface.config import known_keys_only
from fedface.mixup import Mixer, PolicyUpdate
from fedface.models.arcface import fr_loss
from fedface.protect.base import Protection


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the message names the step and the config keys to look at."""


@dataclass
class TrainConfig:
    epochs: int = 1
    steps: int | None = None  # when set, stop after this many optimiser steps (overrides epochs)
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    margin_warmup: float = 0.0  # share of the run over which ArcFace's margin grows linearly from 0 to m (margin_scale)
    flip: bool = True
    shift: int = 4  # largest random translation in pixels, 0 disables; on the protection's grid (augment_batch)
    shift_grid: int | None = 1  # shifts in multiples of this; None: the protection's ``grid`` (augment_batch)
    grad_clip: float = 5.0  # max global grad norm; 0 disables
    drop_last: bool = True

    def __post_init__(self) -> None:
        """Ranges, checked when the config is read (before any data is loaded): one error naming the key."""
        bad = {"epochs": self.epochs < 1, "steps": self.steps is not None and self.steps < 1,
               "batch_size": self.batch_size < 1, "lr": not self.lr >= 0, "momentum": not 0 <= self.momentum < 1,
               "weight_decay": self.weight_decay < 0, "warmup_steps": self.warmup_steps < 0,
               "margin_warmup": not 0 <= self.margin_warmup <= 1, "shift": self.shift < 0,
               "shift_grid": self.shift_grid is not None and self.shift_grid < 1, "grad_clip": self.grad_clip < 0}
        for key, wrong in bad.items():
            if wrong:
                raise ValueError(f"train.{key}={getattr(self, key)!r} is out of range (train/default.yaml says what "
                                 "each key means)")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"unknown train.schedule={self.schedule!r}; known: cosine, constant")

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> "TrainConfig":
        return cls(**known_keys_only(cls, cfg, "train"))


@dataclass
class StepRecord:
    """What entered the model at one local step (kept only when ``train_local(record=...)`` asks): the ground truth
    a gradient attack is scored against -- never sent anywhere, the experimenter's copy."""

    model_input: torch.Tensor  # the protection's output, before MixUp (MixUp's sources)
    labels: torch.Tensor  # (B,) labels of model_input
    lr: float
    mixed: torch.Tensor | None = None  # with MixUp: what entered the backbone
    mix_labels: torch.Tensor | None = None  # (B, k)
    mix_weights: torch.Tensor | None = None  # (B, k)
    partners: torch.Tensor | None = None  # (B, k) indices into model_input
    indices: torch.Tensor | None = None  # (B,) which of the shard's images this batch holds
    pixels: torch.Tensor | None = None  # (B, 1, H, W) the augmented raw faces in [0, 255], before the protection


@dataclass
class TrainResult:
    steps: int = 0
    examples: int = 0
    seconds: float = 0.0
    loss: float = float("nan")  # mean loss of the last epoch (or of all steps when stopped by ``steps``)
    epoch_losses: list[float] = field(default_factory=list)
    k_histogram: dict[int, int] | None = None  # with a mixer: how often each k was drawn in this call
    dp: dict[str, Any] | None = None  # protect=dp_sgd: epsilon at delta over the accountant's history (DPSGD.report)
    policy_update: PolicyUpdate | None = None  # adaptive mixer: the REINFORCE sum not applied in this call

    @property
    def images_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def augment_batch(images: torch.Tensor, cfg: TrainConfig, generator: torch.Generator, grid: int = 1) -> torch.Tensor:
    """uint8 (B, H, W) -> float (B, 1, H, W) in [0, 255] with seeded random flips and translations.

    Translations are multiples of ``cfg.shift_grid`` (None: of ``grid``, the protection's) up to ``cfg.shift`` pixels.
    On a block-DCT input (grid 8) a shift by a non-multiple of 8 moves every block's phase -- 81 phases in training,
    one at test -- and the zero border changes the coefficients' statistics in training only; the protection's grid
    avoids both (whole-block shifts, edge padded; at shift=4 flips only). Measured, the pixel shifts still win
    (docs/results.md "LFW-disjoint": PPFR-FD 85.73 vs 84.85 on LFW, FR-FD 93.67 vs 90.33 on ORL): the augmentation
    is worth more than the phase it costs, so ``shift_grid=1`` is the default and the grid is the ablation.
    """
    x = images.unsqueeze(1).float()
    b = x.shape[0]
    if cfg.flip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    unit = cfg.shift_grid or grid
    steps = cfg.shift // unit
    if steps > 0:
        s = steps * unit
        h, w = x.shape[-2:]
        padded = F.pad(x, (s, s, s, s), mode="constant" if unit == 1 else "replicate")
        dy, dx = (unit * torch.randint(0, 2 * steps + 1, (2, b), generator=generator)).tolist()
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    return x


def train_step(backbone: nn.Module, head: nn.Module, protection: Protection, images: torch.Tensor,
               labels: torch.Tensor, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
               generator: torch.Generator, mixer: Mixer | None = None,
               record: list[StepRecord] | None = None) -> torch.Tensor:
    """One optimiser step on one batch; returns the (detached) loss. Raises NonFiniteLossError on NaN/inf.
    ``record``: append this step's ``StepRecord``."""
    device = next(backbone.parameters()).device
    x = augment_batch(images, cfg, generator, protection.grid)
    model_input = protection(x, generator=generator).to(device)
    labels = labels.to(device)
    y, c = protection.mixed_labels(labels) or (labels, None)  # sample-mixing protections (InstaHide)
    if record is not None:
        record.append(StepRecord(model_input.detach().cpu(), labels.cpu(), optimizer.param_groups[0]["lr"],
                                 pixels=x.detach().cpu()))
    if mixer is not None:
        if c is not None:
            raise ValueError(f"mixup={mixer.name} on protect={protection.name}, which mixes samples itself; pick one")
        model_input, y, c, partners = mixer.mix(model_input, labels, generator)
        if record is not None:
            record[-1].mixed, record[-1].mix_labels = model_input.detach().cpu(), y.cpu()
            record[-1].mix_weights, record[-1].partners = c.cpu(), partners.cpu()
    loss = fr = fr_loss(backbone, head, model_input, y, c)
    aux = protection.aux_loss()
    if aux is not None:
        loss = loss + aux
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"non-finite loss {loss.item()} (try a lower train.lr or model.head.s)")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    if mixer is not None:  # reward2 needs this batch's gradient, before FRNet steps
        mixer.learn(backbone, head, fr.detach(), optimizer.param_groups[0]["lr"])
    optimizer.step()
    return loss.detach()


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        done = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
    raise ValueError(f"unknown train.schedule={cfg.schedule!r}; known: cosine, constant")


def margin_scale(warmup: float, done: float) -> float:
    """The share of ArcFace's margin applied after ``done`` (0..1) of the run: ramps linearly to 1 over the first
    ``warmup`` of it (``train.margin_warmup``).

    Why the option: with the margin on from the first step, a network that cannot yet tell its classes apart lowers
    the loss fastest by turning every embedding away from every class centre, where insightface's fallback charges
    m·sin m (0.24) instead of about sin m (0.48) at 90 degrees -- the degenerate solution ``fedface.train.collapse``
    detects, which the hard inputs (FaceObfuscator, MixUp blends) fall into in the first epochs. Without a margin
    (normalised softmax, NormFace) that configuration costs ln C. arcface_torch's advice for models that do not
    converge is the same in spirit: start from softmax, then add the margin. Measured on LFW-disjoint
    (docs/results.md), a warm-up over the first quarter only delays the obfuscator's collapse to the epochs after it,
    and MixUp k=2 ends lower (69.3 vs 75.3 %), so the default is 0 (off).
    """
    return 1.0 if warmup <= 0 else min(1.0, done / warmup)


def round_margin_scale(cfg: Mapping[str, Any], server_round: int) -> float:
    """A federation's margin share in round ``server_round`` (1-based): the warm-up runs over the rounds, each round's
    local steps use one value (the server sends it; a gradient attack replays with it)."""
    return margin_scale(float(cfg["train"].get("margin_warmup", 0.0)),
                        (server_round - 1) / int(cfg["federation"]["rounds"]))


def batches_per_epoch(cfg: TrainConfig, examples: int) -> int:
    """Batches of an epoch of ``examples`` images (the last partial batch dropped with ``drop_last``)."""
    bs = min(cfg.batch_size, examples)
    return examples // bs if cfg.drop_last else math.ceil(examples / bs)


def planned_steps(cfg: TrainConfig, examples: int) -> int:
    """How many optimiser steps ``train_local`` runs on ``examples`` images: ``steps`` when set, else ``epochs`` x
    the batches of an epoch. A node's privacy policy checks it before training."""
    return cfg.steps if cfg.steps is not None else cfg.epochs * batches_per_epoch(cfg, examples)


def train_local(backbone: nn.Module, head: nn.Module, protection: Protection, images: torch.Tensor,
                labels: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
                optimizer: torch.optim.Optimizer | None = None, progress: bool = False,
                on_epoch: Callable[[int, float], None] | None = None, mixer: Mixer | None = None,
                record: list[StepRecord] | None = None, accountant=None) -> TrainResult:
    """Train ``backbone`` + ``head`` (+ the protection's own parameters) on uint8 ``images`` with int ``labels``.

    ``mixer``: MixUp after the protection (``fedface.mixup.build_mixer``); the result then carries the k histogram
    and, adaptive, the policy's REINFORCE sum not applied here (what a federated client sends its server).
    ``record``: a list that receives one ``StepRecord`` per step (the ground truth attack experiments score against).
    A protection with ``dp`` (``protect=dp_sgd``) trains with DP-SGD (``fedface.train.dp``): Poisson batches of
    expected size ``batch_size`` instead of shuffled ones, per-example clipping and noise, no ``train.grad_clip``;
    ``accountant`` (an Opacus RDP accountant, e.g. resumed from a client's earlier rounds) is stepped, else a fresh
    one, and the result's ``dp`` holds epsilon.
    """
    n = len(labels)
    if n == 0:
        raise ValueError("cannot train on an empty shard (0 images)")
    bs = min(cfg.batch_size, n)
    per_epoch = batches_per_epoch(cfg, n)
    total = planned_steps(cfg, n)
    if optimizer is None:
        params = [*backbone.parameters(), *head.parameters(), *protection.parameters()]
        optimizer = make_optimizer([p for p in params if p.requires_grad], cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    dp, step_cfg = None, cfg
    if protection.dp is not None:
        from fedface.protect.dp import check_compatible
        from fedface.train.dp import DPSGD

        check_compatible(protection.name, mixer.name if mixer is not None else "none", "group")
        dp = DPSGD(protection.dp, backbone, head, optimizer, n, bs, generator, accountant)
        optimizer, step_cfg = dp.optimizer, replace(cfg, grad_clip=0.0)  # the per-example clip replaces it
    backbone.train(), head.train(), protection.train()
    result, step, epoch, t0 = TrainResult(), 0, 0, time.perf_counter()
    k_counts = list(mixer.k_counts) if mixer is not None else []
    bar = _progress(total, progress)
    try:
        while step < total:
            order = torch.randperm(n, generator=generator) if dp is None else None
            losses = []
            for start in range(0, per_epoch * bs, bs):
                if step >= total:
                    break
                idx = order[start : start + bs] if dp is None else dp.sample(generator)
                for g, base in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = base * lr_factor(cfg, step, total)
                if cfg.margin_warmup > 0:
                    head.margin_scale = margin_scale(cfg.margin_warmup, step / total)
                if dp is not None and len(idx) == 0:
                    dp.noise_step()
                else:
                    try:
                        loss = train_step(backbone, head, protection, images[idx], labels[idx], optimizer, step_cfg,
                                          generator, mixer, record)
                        if record is not None:
                            record[-1].indices = idx.clone()
                    except NonFiniteLossError as err:
                        raise NonFiniteLossError(f"epoch {epoch} step {step}: {err}") from None
                    losses.append(loss.item())
                if dp is not None:
                    dp.stepped()
                step += 1
                result.examples += len(idx)
                bar.update(1)
                if losses:
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            result.epoch_losses.append(sum(losses) / max(len(losses), 1))
            if on_epoch is not None:
                on_epoch(epoch, result.epoch_losses[-1])
            epoch += 1
    finally:
        bar.close()
        if dp is not None:
            dp.close()
    for g, base in zip(optimizer.param_groups, base_lrs):
        g["lr"] = base
    result.steps, result.seconds = step, time.perf_counter() - t0
    result.loss = result.epoch_losses[-1] if result.epoch_losses else float("nan")
    if mixer is not None:
        result.k_histogram = {k: c - c0 for k, c, c0 in zip(mixer.ks, mixer.k_counts, k_counts)}
        result.policy_update = mixer.take_update()
    if dp is not None:
        result.dp = dp.report()
    return result


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="train", unit="step", disable=not enabled, leave=False, dynamic_ncols=True)
