"""The strategy network's reward, paper 001 eqs. (3)-(5): the FR loss on the batch mixed with the drawn k.

reward1 (eq. 3) is the loss of the current FRNet -- the very loss the training step just computed. reward2 (eq. 4)
is the loss of FRNet1, a copy of FRNet after one SGD step on the same mixed batch, discarded afterwards. Eq. (5)
combines them with two weights whose default values the text extraction lost; we use 0.5 / 0.5 (``mixup.
reward_weights``): no term is favoured, and a convex combination keeps r on the FR loss's scale, so ``policy_lr``
and the baseline mean the same whatever the weights. A zero weight for reward2 skips the copy (cheaper on CPU).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from fedface.train.loop import fr_loss


def one_step_loss(backbone: nn.Module, head: nn.Module, mixed: torch.Tensor, labels: torch.Tensor,
                  weights: torch.Tensor, lr: float) -> torch.Tensor:
    """reward2 (eq. 4): FR loss on the mixed batch of FRNet1 = FRNet - lr * grad, a plain SGD step along the batch's
    gradient (already in ``.grad``, after clipping; no momentum or weight decay). FRNet itself is not touched."""
    nets = copy.deepcopy(backbone), copy.deepcopy(head)
    with torch.no_grad():
        for net, net1 in zip((backbone, head), nets):
            for p, p1 in zip(net.parameters(), net1.parameters()):
                if p.grad is not None:
                    p1.sub_(p.grad, alpha=lr)
        return fr_loss(*nets, mixed, labels, weights)


def reward(backbone: nn.Module, head: nn.Module, mixed: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
           reward1: float, lr: float, reward_weights: Sequence[float]) -> float:
    """Eq. (5): r = w1 * reward1 + w2 * reward2."""
    w1, w2 = reward_weights
    r = w1 * reward1
    if w2:
        r += w2 * one_step_loss(backbone, head, mixed, labels, weights, lr).item()
    return r
