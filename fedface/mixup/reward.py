"""The strategy network's reward, paper 001 eqs. (3)-(5): the FR loss on the batch mixed with the drawn k.

reward1 (eq. 3) is the loss of the current FRNet -- the very loss the training step just computed. reward2 (eq. 4)
is the loss of FRNet1, a copy of FRNet after one SGD step on the same mixed batch, discarded afterwards. Eq. (5)
combines them with two weights whose default values the text extraction lost; we use 0.5 / 0.5 (``mixup.
reward_weights``): no term is favoured, and a convex combination keeps r on the FR loss's scale, so ``policy_lr``
and the baseline mean the same whatever the weights. A zero weight for reward2 skips the copy (cheaper on CPU).

The offset (``mixup.reward_offset``). A cross-entropy against a soft target never falls below the target's entropy
H(c) = sum_i -c_i log c_i, which grows with k (0.69, 1.00, 1.21, 1.39 nats for k = 2..5 at equal weights), and in
ArcFace's degenerate solution the loss is ln(C - k) + s m sin m E[sum c^2], which falls with k
(``fedface.train.collapse``). Neither says how well FRNet reads a k-mix, yet both move the reward with k, and one
shared REINFORCE baseline (eq. 8) cannot remove an offset that depends on the action. With ``entropy`` (default) the
reward is the *excess* loss CE - H(c) = KL(c || softmax): zero for a network that reads the blend perfectly, whatever
k. ``none`` is the paper's literal r = loss. (A per-k baseline would remove any k offset but also the signal the
policy is meant to learn -- which k is harder -- so it is not offered.)
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from fedface.models.arcface import soft_targets
from fedface.train.loop import fr_loss

OFFSETS = ("entropy", "none")


def target_entropy(labels: torch.Tensor, weights: torch.Tensor, num_classes: int) -> float:
    """Mean over the batch of H(c) of the merged soft targets (a row that repeats a label merges its weights)."""
    target = soft_targets(labels, weights, num_classes)
    return float(-(target * torch.log(target.clamp_min(1e-12))).sum(dim=1).mean())


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
           reward1: float, lr: float, reward_weights: Sequence[float], offset: str = "entropy") -> float:
    """Eq. (5): r = w1 * reward1 + w2 * reward2, minus the soft target's entropy with ``offset="entropy"``."""
    w1, w2 = reward_weights
    r = w1 * reward1
    if w2:
        r += w2 * one_step_loss(backbone, head, mixed, labels, weights, lr).item()
    if offset == "entropy":  # w1 + w2 times the floor of each loss term
        r -= (w1 + w2) * target_entropy(labels, weights, head.num_classes)
    return r
