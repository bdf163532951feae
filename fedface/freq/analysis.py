"""PPFR-FD's privacy-accuracy trade-off analysis network (paper 000, section "Privacy-Accuracy Trade-off Analysis").

Each kept BDCT channel i is multiplied by a learnable weight a_i = sigmoid(x_i). The privacy loss (eq. 1)

    Loss_pri = sum_i ReLU(a_i - gamma) * p_i,   p_i = mean |coefficient| of channel i over the current batch,

pushes the weights of high-energy channels below gamma while the FR loss keeps the ones FR needs; the total loss is
Loss_FR + lambda * Loss_pri (eq. 2), gamma = 0.3 and lambda = 1 in the paper. Channels with a_i > gamma are kept.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

GAMMA = 0.3
#: Starting a_i. The paper starts at 1 (Fig. 5(a)), which a sigmoid only reaches in the limit and where its gradient
#: vanishes; 0.95 (x_i = logit(0.95) ~ 2.94) is "near 1" and still trains.
INIT = 0.95


def channel_energy(c: torch.Tensor) -> torch.Tensor:
    """p_i of eq. 1: mean |coefficient| of each channel over the batch (data statistic, no gradient)."""
    return c.detach().abs().mean(dim=(0, 2, 3))


def privacy_loss(a: torch.Tensor, p: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """Eq. 1: Loss_pri = sum_i ReLU(a_i - gamma) * p_i."""
    return (F.relu(a - gamma) * p).sum()


class ChannelGate(nn.Module):
    """The analysis network's learnable channel weights: forward(c) = a * c, and records Loss_pri of that batch."""

    def __init__(self, channels: int, gamma: float = GAMMA, init: float = INIT):
        super().__init__()
        self.logits = nn.Parameter(torch.full((channels,), math.log(init / (1 - init))))
        self.gamma = gamma
        self.loss_pri: torch.Tensor | None = None

    @property
    def weights(self) -> torch.Tensor:
        """a_i = 1 / (1 + exp(-x_i))."""
        return torch.sigmoid(self.logits)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        a = self.weights
        self.loss_pri = privacy_loss(a, channel_energy(c), self.gamma)
        return c * a[None, :, None, None]

    def kept(self) -> list[int]:
        """Indices (into the gated channels) whose weight is above the threshold, a_i > gamma."""
        return torch.nonzero(self.weights > self.gamma).flatten().tolist()
