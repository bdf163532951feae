"""The experimenter's trained attack networks, kept between runs in ``attack.cache``: the learned reconstruction's
decoder / cGAN and GGL's / model inversion's GAN face prior.

Attacks only train networks (``fedface.models.decoder``, ``fedface.models.face_gan``) and read none from disk; this
module decides where a trained one is kept and when it is reused. A cached network is ``<name>.safetensors`` (the
weights, never pickle) with ``<name>.json`` (its training facts and config) beside it, both landed atomically; the
name holds everything the network depends on, so a changed config or protection never meets an old network.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedface.io import atomic_save_safetensors, atomic_write_json
from fedface.models.decoder import DecoderConfig, UNet, train as train_decoder
from fedface.models.face_gan import GanConfig, GanPrior, Generator, faces_for, train_gan


def fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_dir(value: str | None) -> Path | None:
    """``attack.cache``: a folder, or null / empty for no cache."""
    return None if value in (None, "") else Path(value)


def cached_network(cache: Path | None, name: str, build: Callable[[], nn.Module],
                   train: Callable[[], tuple[nn.Module, dict[str, Any]]] | None, config: dict[str, Any]
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """``cache``/<name> loaded into ``build()`` (in eval mode), else ``train()``'s network, stored there with its facts
    and ``config``. ``train`` None: FileNotFoundError naming the weights file the cache lacks."""
    from safetensors.torch import load_file

    weights, meta = (cache / f"{name}.safetensors", cache / f"{name}.json") if cache else (None, None)
    if weights is not None and weights.exists() and meta.exists():
        net = build()
        net.load_state_dict(load_file(str(weights)))
        return net.eval(), {**json.loads(meta.read_text()), "cached": True}
    if train is None:
        raise FileNotFoundError(f"{weights or 'no cache folder given'}")
    net, facts = train()
    if weights is not None:
        atomic_save_safetensors(weights, {k: v.contiguous().numpy() for k, v in net.state_dict().items()})
        atomic_write_json(meta, {**facts, "config": config})
    return net, {**facts, "cached": False}


def trained_decoder(inputs: torch.Tensor, targets: torch.Tensor, dcfg: DecoderConfig, cache: Path | None,
                    cache_id: str, progress: bool = False) -> tuple[UNet, dict[str, Any]]:
    """The learned reconstruction's generator for one protection and threat: from ``cache``, or trained on the
    attacker's (masked input, face) pairs."""
    def build() -> UNet:
        return UNet(inputs.shape[1], dcfg.size, dcfg.width, dcfg.dropout if dcfg.kind == "cgan" else 0.0)

    return cached_network(cache, cache_id, build, lambda: train_decoder(inputs, targets, dcfg, progress),
                          dcfg.to_json())


def gan_prior(aux: torch.Tensor, cfg: GanConfig, cache: Path | None, progress: bool = False, train: bool = True
              ) -> tuple[GanPrior, dict[str, Any]]:
    """The GAN prior for ``aux`` faces (N, H, W): from ``cache``/gan-prior-<id>, where the id covers the config and
    the faces themselves, or else trained (and cached); ``train=False``: FileNotFoundError instead."""
    digest = hashlib.sha256(aux.numpy().tobytes()).hexdigest()[:12]
    cfg_id = hashlib.sha256(json.dumps(cfg.to_json(), sort_keys=True).encode()).hexdigest()[:12]
    generator, facts = cached_network(
        cache, f"gan-prior-{digest}-{cfg_id}", lambda: Generator(cfg.latent, cfg.size, cfg.width),
        (lambda: train_gan(faces_for(aux, cfg.size), cfg, progress)) if train else None, cfg.to_json())
    return GanPrior(generator, cfg.latent, tuple(aux.shape[-2:])), facts


def attack_gan_prior(aux: torch.Tensor, gan_cfg: dict[str, Any], cache: Any) -> tuple[GanPrior, dict[str, Any]]:
    """The GAN prior an attack reads (``attack.gradient.prior=gan``): trained beforehand by ``fedface prior`` into
    ``attack.cache`` -- no attack trains one mid-round; a missing one is one line naming both."""
    try:
        prior, trained = gan_prior(aux, GanConfig.from_cfg(gan_cfg), cache_dir(cache), train=False)
    except FileNotFoundError as missing:
        raise ValueError(f"attack.gradient.prior=gan: no trained GAN prior in attack.cache={cache!r} ({missing}); "
                         "train it with `fedface prior` and the same data/attack overrides") from None
    return prior, {k: trained.get(k) for k in ("steps", "seconds", "faces")}
