"""The gradient-inversion fixture model: DLG's LeNet (Zhu et al. 2019, Sec. 4 / Fig. 3).

Four 5x5 convolutions of 12 channels with sigmoid activations (strides 2, 2, 1, 1) and a linear classifier. No
BatchNorm and a twice-differentiable activation: the setting in which DLG-class attacks are validated (breaching's
"ConvNet"/LeNet cases), used by ``scripts/diagnostics/attack_fixture.py`` before we trust the attack on our face models.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedface.models.arcface import soft_targets


class ConvNet(nn.Module):
    def __init__(self, channels: int = 1, size: int = 112, num_classes: int = 40, width: int = 12):
        super().__init__()
        layers, cin = [], channels
        for stride in (2, 2, 1, 1):
            layers += [nn.Conv2d(cin, width, 5, stride, 2), nn.Sigmoid()]
            cin = width
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width * (size // 4) ** 2, num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.body(x), 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy loss (the replay's model interface: inputs, labels, optional MixUp weights -> loss)."""
        logits = self.logits(x)
        return F.cross_entropy(logits, labels if weights is None else soft_targets(labels, weights, logits.shape[1]))
