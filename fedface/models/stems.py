"""Input stems: map a protection's ``model_input`` (C, H, W) to the trunk's (64, R, R) feature map.

The stem is the only part of the face model that differs between raw pixels and frequency channels, so every cell of
a comparison shares the trunk (and its capacity).
- ``pixel``: C x 112 x 112 -> strided 3x3 convs (each halves the size) down to R.
- ``freq_native`` (default for frequency inputs on CPU): C x 14 x 14 -> 3x3 conv at 14x14 (the BDCT grid), then
  upsampled by nearest neighbour only if the trunk wants R > 14.
- ``freq_upsample`` (paper 000's path): C x 14 x 14 -> bilinear upsample to 112 -> the ``pixel`` stem.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fedface.models.spec import InputSpec


def conv_bn_prelu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class PixelStem(nn.Module):
    def __init__(self, channels: int, size: int, out_size: int, out_channels: int = 64):
        super().__init__()
        if size % out_size or (size // out_size) & (size // out_size - 1):
            raise ValueError(f"pixel stem: input size {size} is not a power-of-two multiple of the trunk's {out_size}")
        halvings = int(math.log2(size // out_size))
        # widths grow from out_channels/2 to out_channels over the halvings (32-48-64 for 112 -> 14);
        # no halving (the iResNet trunks) is arcface_torch's single stride-1 conv1.
        widths = [round(out_channels * (0.5 + 0.5 * i / max(halvings - 1, 1))) for i in range(halvings)]
        layers, cin = [], channels
        for w in widths or [out_channels]:
            layers.append(conv_bn_prelu(cin, w, 2 if halvings else 1))
            cin = w
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FreqNativeStem(nn.Module):
    def __init__(self, channels: int, size: int, out_size: int, out_channels: int = 64):
        super().__init__()
        self.conv = conv_bn_prelu(channels, out_channels, 1)
        self.out_size = out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if x.shape[-1] == self.out_size else F.interpolate(x, size=self.out_size, mode="nearest")


class FreqUpsampleStem(nn.Module):
    UPSAMPLED = 112

    def __init__(self, channels: int, size: int, out_size: int, out_channels: int = 64):
        super().__init__()
        self.pixel = PixelStem(channels, self.UPSAMPLED, out_size, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.UPSAMPLED, mode="bilinear", align_corners=False)
        return self.pixel(x)


STEMS = {"pixel": PixelStem, "freq_native": FreqNativeStem, "freq_upsample": FreqUpsampleStem}


class CheckedStem(nn.Module):
    """A stem that refuses inputs of the wrong shape with an error naming the stem and the expected shape."""

    def __init__(self, kind: str, spec: InputSpec, out_size: int, out_channels: int = 64):
        super().__init__()
        if kind not in STEMS:
            raise ValueError(f"unknown model.stem={kind!r}; known: auto, {', '.join(STEMS)}")
        self.kind, self.spec = kind, spec
        self.body = STEMS[kind](spec.channels, spec.height, out_size, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.spec.shape:
            raise ValueError(
                f"stem {self.kind!r} expects inputs of shape (B, {self.spec.channels}, {self.spec.height}, "
                f"{self.spec.width}), got {tuple(x.shape)}"
            )
        return self.body(x)


def pick_stem(kind: str, spec: InputSpec) -> str:
    """``auto``: pixel stem for full-size images, ``freq_native`` for 14x14 frequency maps."""
    if kind != "auto":
        return kind
    return "pixel" if spec.height >= 56 else "freq_native"
