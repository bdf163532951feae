"""REINFORCE for the strategy network (paper 001, eqs. 7-8; Williams 1992), split into a client and a server half.

The policy *maximises* the reward r (the FR loss, eq. 5), so its loss is -(r - b) log pi(k) with b a moving-average
baseline. The split, which centralized training uses too (one home for the logic):

- client, every local step: ``accumulate(update, policy_params, log_prob, index, reward, baseline)`` adds
  (r - b) grad log pi(k) to a running sum; the ``PolicyUpdate`` (summed gradient, step count, k histogram, reward sum)
  is what the client sends.
- server: ``server_step(policy, optimizer, updates, baseline, momentum)`` averages the clients' updates weighted by
  their step counts, takes one optimiser step on the policy and moves the baseline; it returns the new baseline,
  which goes back to the clients with the policy weights. The baseline stays fixed while a client accumulates, so two
  clients' updates averaged equal one accumulation over the same steps.

Privacy: the summed policy gradient is computed from the client's private masked batches (the policy's input) and
is therefore itself an attack surface, like the FR gradient -- a malicious server can try to invert it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class PolicyUpdate:
    """What a client sends: sum_t (r_t - b) grad log pi(k_t) over its steps, and the facts needed to average it."""

    grads: list[torch.Tensor]  # one tensor per policy parameter, in ``policy.parameters()`` order
    steps: int
    k_counts: list[int]  # how often each candidate k (policy output index) was drawn
    reward_sum: float  # sum_t r_t, for the server's baseline

    @classmethod
    def empty(cls, params: Sequence[torch.Tensor], num_choices: int) -> "PolicyUpdate":
        return cls([torch.zeros_like(p) for p in params], 0, [0] * num_choices, 0.0)


def policy_optimizer(policy: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """The server's optimiser (the paper names none). Adam: the reward is an ArcFace loss whose scale moves with s, m
    and the number of identities; Adam's per-parameter normalisation keeps ``mixup.policy_lr`` meaningful across
    them."""
    return torch.optim.Adam(policy.parameters(), lr=lr)


def accumulate(update: PolicyUpdate, params: Sequence[torch.Tensor], log_prob: torch.Tensor, index: int,
               reward: float, baseline: float | None) -> None:
    """Client half: add (r - b) grad log pi(k) of one step (eq. 8). With no baseline yet the advantage is 0."""
    if baseline is not None:
        grads = torch.autograd.grad(log_prob, list(params))
        for acc, g in zip(update.grads, grads):
            acc.add_(g, alpha=reward - baseline)
    update.steps += 1
    update.k_counts[index] += 1
    update.reward_sum += reward


def merge_updates(updates: Sequence[PolicyUpdate]) -> PolicyUpdate:
    """Sum of the clients' sums: divided by the total steps it is their step-weighted average."""
    return PolicyUpdate([sum(gs) for gs in zip(*(u.grads for u in updates))], sum(u.steps for u in updates),
                        [sum(c) for c in zip(*(u.k_counts for u in updates))], sum(u.reward_sum for u in updates))


def server_step(policy: torch.nn.Module, optimizer: torch.optim.Optimizer, updates: Sequence[PolicyUpdate],
                baseline: float | None, momentum: float) -> float | None:
    """Server half: one optimiser step on loss_policy = -mean (r - b) log pi(k), then b <- m b + (1 - m) mean r.

    The first window only sets b (its advantages were 0). Returns the new baseline.
    """
    total = merge_updates(updates)
    if total.steps == 0:
        return baseline
    if baseline is not None:
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(policy.parameters(), total.grads):
            p.grad = -g / total.steps
        optimizer.step()
    mean_reward = total.reward_sum / total.steps
    return mean_reward if baseline is None else momentum * baseline + (1 - momentum) * mean_reward
