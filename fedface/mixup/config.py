"""The ``mixup`` config group (configs/mixup/: none | fixed | adaptive), validated with errors naming the key."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedface.config import known_keys_only
from fedface.mixup.mix import WEIGHT_DRAWS

NAMES = ("none", "fixed", "adaptive")


@dataclass(frozen=True)
class MixupConfig:
    name: str = "none"
    k: int = 2  # fixed: images per mixed sample
    k_min: int = 2  # adaptive: the policy picks k in k_min..k_max
    k_max: int = 6
    max_weight: float = 0.55  # largest mixing weight (paper 001 Sec. 4.1)
    weight_draw: str = "abs_normal"  # abs_normal | dirichlet, see fedface.mixup.mix
    policy_width: int = 8  # ResNet18 widths policy_width * (1, 2, 4, 8)
    policy_lr: float = 1e-3  # Adam on the policy
    reward_weights: tuple[float, float] = (0.5, 0.5)  # eq. (5): reward1 (current FRNet), reward2 (one step later)
    reward_offset: str = "reference"  # reference | entropy | none: what the reward subtracts (fedface.mixup.reward)
    baseline_momentum: float = 0.9  # b <- m b + (1 - m) mean r
    policy_every: int = 1  # policy step every N FR steps (REINFORCE summed over those N steps)
    renormalize: bool = False  # standardise each blend per image (fedface.mixup.mix.blend)

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> "MixupConfig":
        values = known_keys_only(cls, cfg, "mixup")
        if "reward_weights" in values:
            values["reward_weights"] = tuple(float(w) for w in values["reward_weights"])
        return cls(**values)

    @property
    def ks(self) -> tuple[int, ...]:
        """The candidate k values (one for ``fixed``)."""
        return (self.k,) if self.name == "fixed" else tuple(range(self.k_min, self.k_max + 1))

    def validate(self, batch_size: int) -> None:
        if self.name not in NAMES:
            raise ValueError(f"unknown mixup.name={self.name!r}; known: {', '.join(NAMES)}")
        if self.name == "adaptive" and self.k_max < self.k_min:
            raise ValueError(f"mixup.k_max={self.k_max} must be >= mixup.k_min={self.k_min}")
        low, high = ("mixup.k", "mixup.k") if self.name == "fixed" else ("mixup.k_min", "mixup.k_max")
        k_low, k_high = self.ks[0], self.ks[-1]
        if k_low < 2:
            raise ValueError(f"{low}={k_low} must be >= 2")
        if k_high > batch_size:
            raise ValueError(f"{high}={k_high} must be <= train.batch_size={batch_size} (partners come from the batch)")
        if not 1 / k_low < self.max_weight <= 1:
            raise ValueError(f"mixup.max_weight={self.max_weight} must be in (1/{low}, 1] = (1/{k_low}, 1]")
        if self.weight_draw not in WEIGHT_DRAWS:
            raise ValueError(f"unknown mixup.weight_draw={self.weight_draw!r}; known: {', '.join(WEIGHT_DRAWS)}")
        if self.name == "adaptive":
            self._validate_policy()

    def _validate_policy(self) -> None:
        if self.policy_width < 1 or self.policy_lr <= 0:
            raise ValueError(f"mixup.policy_width={self.policy_width} must be >= 1 and mixup.policy_lr="
                             f"{self.policy_lr} > 0")
        if len(self.reward_weights) != 2 or min(self.reward_weights) < 0 or not any(self.reward_weights):
            raise ValueError(f"mixup.reward_weights={list(self.reward_weights)} must be two weights >= 0, not both 0")
        if self.reward_offset not in ("reference", "entropy", "none"):
            raise ValueError(f"unknown mixup.reward_offset={self.reward_offset!r}; known: reference, entropy, none")
        if not 0 <= self.baseline_momentum < 1:
            raise ValueError(f"mixup.baseline_momentum={self.baseline_momentum} must be in [0, 1)")
        if self.policy_every < 1:
            raise ValueError(f"mixup.policy_every={self.policy_every} must be >= 1")
