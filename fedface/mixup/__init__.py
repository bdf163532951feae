"""Adaptive MixUp (paper 001): k-way MixUp of the masked batch, MixUp-ArcFace, a policy network trained by REINFORCE.

``build_mixer(mixup_cfg, input_spec, batch_size)`` is the only constructor; ``train_local(..., mixer=...)`` uses it.
MixUp-ArcFace itself is ``ArcFace.forward(emb, labels, weights)`` (Algorithm 1) with ``soft_targets``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedface.mixup.config import MixupConfig
from fedface.mixup.mix import mix_weights, mixup, shuffle_partners
from fedface.mixup.mixer import Mixer
from fedface.mixup.policy import PolicyNet
from fedface.mixup.reinforce import PolicyUpdate, accumulate, merge_updates, policy_optimizer, server_step
from fedface.models.spec import InputSpec


def build_mixer(cfg: Mapping[str, Any], spec: InputSpec, batch_size: int, apply_updates: bool = True) -> Mixer | None:
    """The mixer configured by the ``mixup`` group for inputs of ``spec``; None for ``mixup=none``.

    ``apply_updates=False`` on a federated client: the policy's REINFORCE sum is only accumulated (for the server's
    ``server_step``); centralized training applies it itself every ``mixup.policy_every`` steps.
    """
    mcfg = MixupConfig.from_cfg(cfg)
    if mcfg.name == "none":
        return None
    mcfg.validate(batch_size)
    if mcfg.name == "fixed":
        return Mixer(mcfg)
    policy = PolicyNet(spec, len(mcfg.ks), mcfg.policy_width)
    return Mixer(mcfg, policy, policy_optimizer(policy, mcfg.policy_lr) if apply_updates else None)


__all__ = ["Mixer", "MixupConfig", "PolicyNet", "PolicyUpdate", "accumulate", "build_mixer", "merge_updates",
           "mix_weights", "mixup", "policy_optimizer", "server_step", "shuffle_partners"]
