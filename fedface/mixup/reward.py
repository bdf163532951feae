"""The strategy network's reward, paper 001 eqs. (3)-(5): the FR loss on the batch mixed with the drawn k.

reward1 (eq. 3) is the loss of the current FRNet -- the very loss the training step just computed. reward2 (eq. 4)
is the loss of FRNet1, a copy of FRNet after one SGD step on the same mixed batch, discarded afterwards. Eq. (5)
combines them with two weights whose default values the text extraction lost; we use 0.5 / 0.5 (``mixup.
reward_weights``): no term is favoured, and a convex combination keeps r on the FR loss's scale, so ``policy_lr``
and the baseline mean the same whatever the weights. A zero weight for reward2 skips the copy (cheaper on CPU).

The offset (``mixup.reward_offset``). The MixUp-ArcFace loss of a k-mix carries parts that move with k whatever
FRNet can read, and one shared REINFORCE baseline (eq. 8) cannot remove an offset that depends on the action:
- the soft target's entropy H(c) = sum_i -c_i log c_i, below which no cross-entropy falls: 0.69, 1.00, 1.21, 1.39 nats
  for k = 2..5 at equal weights (rising with k);
- Algorithm 1's c_i-weighted margins: an embedding orthogonal to every centre (what an untrained FRNet gives) pays
  s sin(m) sum c_i^2 on top of ln C, i.e. 7.7 nats at k = 2 and 3.8 at k = 4 for s = 32 (falling with k, and the
  larger part); in ArcFace's degenerate solution ln(C - k) + s m sin m E[sum c^2] (``fedface.train.collapse``).
Choices: ``reference`` (default) subtracts the loss of that uninformed embedding on the same labels and weights,
CE_0(y, c) = CE(s * Algorithm 1 with every cos theta = 0, soft targets) -- computed, not learned: r = 0 for every k
at the start, and r < 0 by how much better than chance FRNet reads this k-mix, so the policy's signal is which k
FRNet has learned least. ``entropy`` subtracts H(c) only (r = KL(c || softmax)); it still leaves the margin term, so
an untrained FRNet hands k = 2 the larger reward. ``none`` is the paper's literal r = loss. A per-k moving baseline
would remove any offset but also the signal the policy is meant to learn, so it is not offered.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from fedface.models.arcface import fr_loss, soft_targets

OFFSETS = ("reference", "entropy", "none")


def target_entropy(labels: torch.Tensor, weights: torch.Tensor, num_classes: int) -> float:
    """Mean over the batch of H(c) of the merged soft targets (a row that repeats a label merges its weights)."""
    target = soft_targets(labels, weights, num_classes)
    return float(-(target * torch.log(target.clamp_min(1e-12))).sum(dim=1).mean())


def uninformed_loss(head: nn.Module, labels: torch.Tensor, weights: torch.Tensor) -> float:
    """CE_0: the MixUp-ArcFace loss (Algorithm 1) of an embedding orthogonal to every class centre (cos theta = 0),
    on these labels (B, k) and weights (B, k)."""
    labels, weights = labels.cpu(), weights.float().cpu()
    logits = head.logits_of_cosines(torch.zeros(len(labels), head.num_classes), labels, weights)
    return float(F.cross_entropy(logits, soft_targets(labels, weights, head.num_classes)))


def reward_floor(offset: str, head: nn.Module, labels: torch.Tensor, weights: torch.Tensor) -> float:
    """What ``offset`` subtracts from each loss term of the reward (0 for ``none``)."""
    if offset == "reference":
        return uninformed_loss(head, labels, weights)
    if offset == "entropy":
        return target_entropy(labels, weights, head.num_classes)
    return 0.0


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
           reward1: float, lr: float, reward_weights: Sequence[float], offset: str = "reference") -> float:
    """Eq. (5): r = w1 * reward1 + w2 * reward2, each term less the offset's floor (``reward_floor``)."""
    w1, w2 = reward_weights
    r = w1 * reward1
    if w2:
        r += w2 * one_step_loss(backbone, head, mixed, labels, weights, lr).item()
    return r - (w1 + w2) * reward_floor(offset, head, labels, weights)
