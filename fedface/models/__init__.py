"""Face models: one stem (per input kind) + one iResNet trunk, and the ArcFace head.

``build_backbone(model_cfg, input_spec)`` is the only constructor; ``model.name`` picks a trunk from
``iresnet.TRUNKS`` (``fedface_net`` is the default narrow CPU backbone, ``tiny`` the fast-test CNN, ``iresnet18/34/50``
the arcface_torch depths), ``model.stem`` picks the stem (``auto`` = by input shape) and ``model.norm`` the
normalisation (``batch`` | ``group``, ``fedface.models.norm``; ``group`` for DP-SGD).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedface.models.arcface import ArcFace
from fedface.models.iresnet import TRUNKS, Trunk
from fedface.models.norm import NORMS, use_group_norm
from fedface.models.stems import CheckedStem, pick_stem
from fedface.models.spec import InputSpec
from fedface.models.trap import install_trap


class Backbone(nn.Module):
    def __init__(self, stem: CheckedStem, trunk: Trunk):
        super().__init__()
        self.stem, self.trunk = stem, trunk

    @property
    def embedding_size(self) -> int:
        return self.trunk.fc.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.stem(x))


def build_backbone(cfg: Mapping[str, Any], spec: InputSpec) -> Backbone:
    name = cfg.get("name", "fedface_net")
    if name not in TRUNKS:
        raise ValueError(f"unknown model.name={name!r}; known: {', '.join(sorted(TRUNKS))}")
    widths, blocks, strides, size = TRUNKS[name]
    mult = float(cfg.get("width", 1.0))
    widths = [max(8, int(round(w * mult))) for w in widths]
    stem_channels = max(8, int(round(64 * mult)))
    trunk = Trunk(widths, blocks, strides, size, int(cfg.get("embedding_size", 128)), stem_channels,
                  float(cfg.get("dropout", 0.0)), bool(cfg.get("embedding_bias", True)))
    stem = CheckedStem(pick_stem(cfg.get("stem", "auto"), spec), spec, size, stem_channels)
    norm = cfg.get("norm", "batch")
    if norm not in NORMS:
        raise ValueError(f"unknown model.norm={norm!r}; known: {', '.join(NORMS)}")
    backbone = Backbone(stem, trunk)
    if norm == "group":
        use_group_norm(backbone)
    if cfg.get("imprint"):  # a trap the run config describes (attack=imprint, research mode; fedface.models.trap)
        install_trap(backbone, spec.shape, int(cfg["imprint"]["bins"]))
    return backbone


def backbone_from(cfg: Mapping[str, Any], spec: InputSpec, arrays: Mapping[str, Any], strict: bool = True
                  ) -> Backbone:
    """The configured backbone holding the ``backbone.*`` entries of ``arrays`` (a checkpoint's or a message's named
    arrays). ``strict``: every tensor of the backbone must be among them; else the missing ones keep their
    initialisation (a reply without this node's local BatchNorm statistics, say)."""
    backbone = build_backbone(cfg, spec)
    own = backbone.state_dict()
    given = {k[len("backbone."):]: v for k, v in arrays.items() if k.startswith("backbone.")}
    missing = sorted(set(own) - set(given))
    if strict and missing:
        raise ValueError(f"the arrays lack backbone tensor(s) {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    backbone.load_state_dict({**own, **{k: torch.as_tensor(np.asarray(v)).reshape(own[k].shape)
                                        for k, v in given.items() if k in own}})
    return backbone


def build_head(cfg: Mapping[str, Any], embedding_size: int, num_classes: int) -> ArcFace:
    head = cfg.get("head", {})
    return ArcFace(embedding_size, num_classes, float(head.get("s", 64.0)), float(head.get("m", 0.5)),
                   bool(head.get("easy_margin", False)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["ArcFace", "Backbone", "build_backbone", "build_head", "count_parameters"]
