"""The strategy (policy) network of paper 001, Sec. 4.1 / Fig. 2(b): a ResNet18 over the masked batch whose features
are average-pooled across the whole batch ("effectively a batch size of 1") before the FC layer and a softmax, so
that one batch gives one PMF over the candidate k values.

Written by hand, narrow: ResNet18's BasicBlocks [2, 2, 2, 2] (He et al. 2016) at widths w, 2w, 4w, 8w (w = 8 by
default: ~0.18M parameters, about 5% of the default FR backbone). The stem is ResNet18's 7x7/2 conv + 3x3/2 max-pool
for pixel inputs (>= 56 px) and a 3x3/1 conv for the 14x14 BDCT maps (the CIFAR ResNet18 stem).

BatchNorm always normalises with the batch statistics (``track_running_stats=False``): the policy only ever sees
whole batches, and its state is then its parameters alone -- exactly what the federated policy gradient covers.
The FC layer starts at zero, so the policy starts from the uniform PMF.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedface.models.spec import InputSpec

BLOCKS = (2, 2, 2, 2)
PIXEL_STEM_MIN_SIZE = 56


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, track_running_stats=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU (He et al. 2016, ResNet18/34)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = bn(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


def stem(spec: InputSpec, width: int) -> nn.Sequential:
    if spec.height >= PIXEL_STEM_MIN_SIZE:
        return nn.Sequential(nn.Conv2d(spec.channels, width, 7, 2, 3, bias=False), bn(width), nn.ReLU(),
                             nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(nn.Conv2d(spec.channels, width, 3, 1, 1, bias=False), bn(width), nn.ReLU())


class PolicyNet(nn.Module):
    """Masked batch (B, C, H, W) -> log-PMF (num_choices,) over the candidate k values."""

    def __init__(self, spec: InputSpec, num_choices: int, width: int = 8):
        super().__init__()
        layers, cin = [stem(spec, width)], width
        for i, n in enumerate(BLOCKS):
            cout = width * 2**i
            for b in range(n):
                layers.append(BasicBlock(cin, cout, 2 if i > 0 and b == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_choices)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(0, 2, 3))  # average over space *and* the batch: one PMF per batch
        return F.log_softmax(self.fc(pooled), dim=0)
