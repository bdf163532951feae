"""iResNet trunk (arcface_torch ``backbones/iresnet.py`` style: BN-conv-BN-PReLU-conv-BN blocks, BN-dropout-FC-BN
embedding), made to start from a stem's feature map so raw pixels and frequency channels share the same trunk.

Depths: iresnet18 [2,2,2,2], iresnet34 [3,4,6,3], iresnet50 [3,4,14,3] (Deng et al. 2019, arcface_torch), widths
64-128-256-512 times ``width``; they expect the stem to deliver 64 channels at 112x112 and halve it four times.
The default CPU backbone ``fedface_net`` is a narrow iResNet: the stem delivers 64 channels at 14x14 (the BDCT grid),
then three stages of 2 blocks at 64@14, 128@7, 256@4 -> 128-d embedding (~3.6M parameters).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


def embedding_norm(size: int, bias: bool) -> nn.BatchNorm1d:
    """The embedding BatchNorm. arcface_torch fixes its scale at 1 and learns a bias (the default,
    ``model.embedding_bias=true``); ``false`` drops the bias too, so in training every batch of embeddings has mean 0.

    Why the option: a learnt bias is a direction shared by every embedding. The collapsed LFW-disjoint FaceObfuscator
    and MixUp runs grew it to norm 9.8 and 10.9 -- as long as the unit-variance part (sqrt(128) = 11.3) -- with every
    class centre pointing against it (cosine -0.996, -0.992): all cosines near -1, where ArcFace's fallback
    cos θ - m·sin m charges a margin of 0.24 instead of sin m = 0.48 at 90 degrees; the healthy PPFR-FD run's bias
    stayed at 2.0. Measured without it (docs/results.md "LFW-disjoint"), the obfuscator collapses all the same
    (centres' mean cosine 0.87 by epoch 2: a skewed batch of zero-mean embeddings still points mostly one way) and
    PPFR-FD loses a point, so the default stays arcface_torch's.
    """
    if not bias:
        return nn.BatchNorm1d(size, eps=1e-5, affine=False)
    norm = nn.BatchNorm1d(size, eps=1e-5)
    nn.init.constant_(norm.weight, 1.0)
    norm.weight.requires_grad = False  # arcface_torch keeps the embedding BN scale fixed at 1
    return norm


class Trunk(nn.Module):
    """Stages of IBasicBlocks on a stem's (64, R, R) output, then the arcface_torch embedding layer."""

    def __init__(self, widths, blocks, strides, input_size: int, embedding_size: int = 128,
                 stem_channels: int = 64, dropout: float = 0.0, embedding_bias: bool = True):
        super().__init__()
        if not len(widths) == len(blocks) == len(strides):
            raise ValueError("model.widths, model.blocks and model.strides must have the same length")
        self.input_size, self.stem_channels = input_size, stem_channels
        layers, cin, size = [], stem_channels, input_size
        for width, n, stride in zip(widths, blocks, strides):
            for b in range(n):
                layers.append(IBasicBlock(cin, width, stride if b == 0 else 1))
                cin = width
            size = math.ceil(size / stride)
        self.stages = nn.Sequential(*layers)
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * size * size, embedding_size)
        self.features = embedding_norm(embedding_size, embedding_bias)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.stages(x))
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))


# name -> (widths, blocks, strides, trunk input size)
TRUNKS = {
    "fedface_net": ((64, 128, 256), (2, 2, 2), (1, 2, 2), 14),
    "tiny": ((16, 32), (1, 1), (1, 2), 14),
    "iresnet18": ((64, 128, 256, 512), (2, 2, 2, 2), (2, 2, 2, 2), 112),
    "iresnet34": ((64, 128, 256, 512), (3, 4, 6, 3), (2, 2, 2, 2), 112),
    "iresnet50": ((64, 128, 256, 512), (3, 4, 14, 3), (2, 2, 2, 2), 112),
}
