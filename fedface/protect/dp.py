"""``protect=dp_sgd``: DP-SGD on the client's update (Abadi et al. 2016, "Deep Learning with Differential Privacy",
Algorithm 1) as a protection -- its keys, what it cannot be combined with, and the registered protection. The
mechanism (per-example clipping, noise, Poisson sampling, the accountant) is ``fedface.train.dp``; this module is
what a run config names, so the protections, the node policy and the run checks read it without importing training.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedface.protect import register
from fedface.protect.base import NoProtection, Protection

PROTECTION = "dp_sgd"


@dataclass(frozen=True)
class DPConfig:
    """``protect=dp_sgd``'s keys. ``delta``: the delta of the reported (epsilon, delta); 1e-5 by default, below
    1/N for every client shard we train on (N <= a few thousand images)."""

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self):
        if not self.noise_multiplier >= 0:
            raise ValueError(f"protect.noise_multiplier={self.noise_multiplier} must be >= 0")
        if not self.max_grad_norm > 0:
            raise ValueError(f"protect.max_grad_norm={self.max_grad_norm} must be > 0")
        if not 0 < self.delta < 1:
            raise ValueError(f"protect.delta={self.delta} must be in (0, 1)")


def check_compatible(protect: str, mixup: str, norm: str) -> None:
    """One error naming the keys when DP-SGD is combined with what its accounting does not cover."""
    if protect != PROTECTION:
        return
    if mixup != "none":
        raise ValueError(f"protect={PROTECTION} with mixup={mixup} is refused: each mixed sample draws on k records, "
                         "so per-example clipping no longer bounds one record's influence and the accountant's epsilon "
                         "would be too small; set mixup=none")
    if norm != "group":
        raise ValueError(f"protect={PROTECTION} needs model.norm=group (got model.norm={norm}): BatchNorm mixes the "
                         "examples of a batch, so per-example gradients do not exist; set model.norm=group")


def check_config(cfg: Mapping[str, Any]) -> None:
    """``check_compatible`` on a whole run config (``protect``, ``mixup``, ``model`` groups)."""
    check_compatible(cfg["protect"].get("name", "none"), cfg["mixup"].get("name", "none"),
                     cfg["model"].get("norm", "batch"))


class DPSGDProtection(NoProtection):
    """`dp_sgd`: client-side DP-SGD (Abadi et al. 2016, Algorithm 1; Opacus). It protects the *update*, not the input:
    the model input is the raw standardised pixels (as `none`), and ``dp`` tells ``train_local`` to train with
    per-example clipping, Gaussian noise and Poisson sampling (``fedface.train.dp``). Config: noise_multiplier,
    max_grad_norm, delta."""

    name = "dp_sgd"

    def __init__(self, dp: DPConfig):
        super().__init__()
        self.dp = dp

    def describe(self) -> dict:
        return {"name": self.name, **self.dp.__dict__}


@register("dp_sgd")
def _dp_sgd(cfg: Mapping[str, Any], key: bytes | None) -> Protection:
    unknown = sorted(set(cfg) - {"name", *DPConfig.__dataclass_fields__})
    if unknown:
        raise ValueError(f"unknown protect config key(s) {', '.join(f'protect.{k}' for k in unknown)}")
    return DPSGDProtection(DPConfig(**{k: float(v) for k, v in cfg.items() if k != "name"}))
