"""The mixer the training routine calls: draws k, mixes the masked batch, and (adaptive) learns the policy.

Per step, ``train_step`` calls ``mix`` right after the protection -- k is fixed, or sampled from the policy's PMF on
the masked batch (paper 001, Fig. 2(b)) -- and then, after the FR backward and before the FR optimiser step,
``learn``: the reward of the drawn k (eq. 5) enters the REINFORCE sum. This is the alternation of eqs. (6)/(7):
FRNet minimises the loss of the batch mixed with the policy's k, the policy maximises it.

With ``optimizer`` set (centralized training), the mixer is its own server: every ``policy_every`` steps it calls
``server_step`` on its accumulation, exactly as a federated server would. Without one (a federated client), the
accumulation is only handed out by ``take_update`` -- ``train_local`` puts it in ``TrainResult.policy_update``.
"""
from __future__ import annotations

import torch
from torch import nn

from fedface.freq.ppfr import draw
from fedface.mixup.config import MixupConfig
from fedface.mixup.mix import mixup
from fedface.mixup.policy import PolicyNet
from fedface.mixup.reinforce import PolicyUpdate, accumulate, server_step
from fedface.mixup.reward import reward


class Mixer:
    def __init__(self, cfg: MixupConfig, policy: PolicyNet | None = None,
                 optimizer: torch.optim.Optimizer | None = None):
        self.cfg, self.policy, self.optimizer = cfg, policy, optimizer
        self.ks = cfg.ks
        self.k_counts = [0] * len(self.ks)  # every k drawn so far
        self.baseline: float | None = None  # b of eq. (8); the server's, sent to clients with the policy
        self.policy_steps = 0
        self.pmf: list[float] | None = None  # the policy's PMF at the last draw
        self.pending = self._empty()
        self._last: tuple | None = None  # (index, log pi(k), mixed, labels, weights) of the last ``mix``

    @property
    def name(self) -> str:
        return self.cfg.name

    def to(self, device: torch.device | str) -> "Mixer":
        """Move the policy (and the empty accumulation) to ``device``; call before training."""
        if self.policy is not None:
            self.policy.to(device)
            self.pending = self._empty()
        return self

    def _empty(self) -> PolicyUpdate | None:
        return None if self.policy is None else PolicyUpdate.empty(list(self.policy.parameters()), len(self.ks))

    def choose(self, model_input: torch.Tensor, generator: torch.Generator | None) -> tuple[int, torch.Tensor | None]:
        """Index into ``ks`` and log pi(k) (None when fixed): k ~ the policy's PMF on the masked batch."""
        if self.policy is None:
            return 0, None
        log_pmf = self.policy(model_input.detach())
        self.pmf = log_pmf.detach().exp().cpu().tolist()
        u = draw(torch.rand, (1,), generator, torch.device("cpu"))
        index = min(int(torch.searchsorted(torch.tensor(self.pmf).cumsum(0), u)), len(self.ks) - 1)
        return index, log_pmf[index]

    def mix(self, model_input: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mixed model_input, labels (B, k), weights (B, k), partners (B, k)) with this step's k."""
        index, log_prob = self.choose(model_input, generator)
        self.k_counts[index] += 1
        mixed, y, c, partners = mixup(model_input, labels, self.ks[index], generator, self.cfg.max_weight,
                                      self.cfg.weight_draw, self.cfg.renormalize)
        self._last = (index, log_prob, mixed.detach(), y, c)
        return mixed, y, c, partners

    def learn(self, backbone: nn.Module, head: nn.Module, reward1: torch.Tensor, lr: float) -> None:
        """REINFORCE bookkeeping of the last ``mix``: its reward (eq. 5; reward2 needs FRNet's ``.grad`` of that
        batch, so call this after the FR backward and before the FR step), then ``observe``."""
        if self.policy is not None:
            _, _, mixed, y, c = self._last
            self.observe(reward(backbone, head, mixed, y, c, reward1.item(), lr, self.cfg.reward_weights,
                                self.cfg.reward_offset))

    def observe(self, r: float) -> None:
        """Add (r - b) grad log pi(k) of the last ``mix``; with an optimizer, apply every ``policy_every`` steps."""
        index, log_prob = self._last[:2]
        self._last = None
        accumulate(self.pending, list(self.policy.parameters()), log_prob, index, r, self.baseline)
        if self.optimizer is not None and self.pending.steps >= self.cfg.policy_every:
            self.baseline = server_step(self.policy, self.optimizer, [self.pending], self.baseline,
                                        self.cfg.baseline_momentum)
            self.pending = self._empty()
            self.policy_steps += 1

    def take_update(self) -> PolicyUpdate | None:
        """The accumulation not applied yet (a federated client's message to the server); starts a new one."""
        update, self.pending = self.pending, self._empty()
        return update

    def mix_spec(self) -> dict:
        """The candidate k, how often each was drawn and the weight draw (``fedface.train.collapse``)."""
        return {"k": list(self.ks), "shares": list(self.k_counts), "max_weight": self.cfg.max_weight,
                "weight_draw": self.cfg.weight_draw}

    def describe(self) -> dict:
        """JSON facts for results.json: the k range, how often each k was drawn, the policy's state."""
        total = sum(self.k_counts)
        facts = {"name": self.name, "k": list(self.ks), "max_weight": self.cfg.max_weight,
                 "weight_draw": self.cfg.weight_draw, "renormalize": self.cfg.renormalize,
                 "k_proportion": [c / total for c in self.k_counts] if total else None}
        if self.policy is not None:
            facts.update(final_pmf=self.pmf, policy_updates=self.policy_steps, baseline=self.baseline,
                         policy_parameters=sum(p.numel() for p in self.policy.parameters()),
                         policy_width=self.cfg.policy_width, policy_lr=self.cfg.policy_lr,
                         reward_weights=list(self.cfg.reward_weights), reward_offset=self.cfg.reward_offset,
                         baseline_momentum=self.cfg.baseline_momentum, policy_every=self.cfg.policy_every)
        return facts
