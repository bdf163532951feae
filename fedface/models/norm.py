"""``model.norm``: which normalisation the backbone uses -- ``batch`` (arcface_torch's BatchNorm, the default) or
``group`` (GroupNorm, needed by DP-SGD).

DP-SGD (Abadi et al. 2016, Algorithm 1) clips each example's gradient, so no layer may mix examples: BatchNorm's
batch statistics make every example's output (hence gradient) depend on the others, and its running statistics
are a non-private release of the data. Opacus therefore refuses BatchNorm (``ModuleValidator``). With
``model.norm=group`` every BatchNorm2d(C) becomes GroupNorm(gcd(32, C), C) -- Wu & He 2018's G=32 where C allows,
else the largest divisor of C that divides 32 (8 -> 8, 48 -> 16), the same rule as Opacus' ``ModuleValidator.fix``
-- and the embedding layer's BatchNorm1d(d) becomes LayerNorm(d) (= GroupNorm(1, d) on a vector: per-example
statistics over the d features), keeping arcface_torch's fixed scale of 1 (and its bias with
``model.embedding_bias=true``). Neither has running statistics, so ``federation.bn=local`` (FedBN) has nothing to
keep local with ``model.norm=group``.

A DP comparison builds *every* cell with ``model.norm=group`` so its rows differ only in the protection.
"""
from __future__ import annotations

import math

from torch import nn

NORMS = ("batch", "group")


def group_norm_groups(channels: int) -> int:
    return math.gcd(32, channels)


def use_group_norm(module: nn.Module) -> nn.Module:
    """Replace, in place, every BatchNorm2d by GroupNorm and every BatchNorm1d by LayerNorm (see the module doc)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(group_norm_groups(child.num_features), child.num_features, child.eps))
        elif isinstance(child, nn.BatchNorm1d):
            layer = nn.LayerNorm(child.num_features, eps=child.eps, elementwise_affine=child.affine)
            if child.affine:
                layer.weight.requires_grad = child.weight.requires_grad  # the embedding's scale stays fixed at 1
            setattr(module, name, layer)
        else:
            use_group_norm(child)
    return module


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
