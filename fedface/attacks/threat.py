"""What the malicious server knows (config group ``attack``), and what it observed of one client in one round.

Honest-but-curious FL server (paper 001 Sec. 3; DESIGN.md "Malicious server"): it knows the architecture, the global
weights it sent, each client's returned weights (BatchNorm statistics too when ``federation.bn=federated``), the local
hyper-parameters it configured (lr, steps/epochs, batch size, optimiser), and the sample count and step count a
client reports. It does NOT know the federation key, the client's random state (batch order, augmentation,
Shuffle2, MixUp partners/weights/k) or a local head. Variants widen that, each labelled in results:

- ``knows_key``: the Shuffle1 key -- the "one colluding client" scenario: every client holds the same key, so one
  compromised client hands it to the server. Used to map a recovered masked tensor back to an image.
- ``knows_labels``: the true labels of every local step (otherwise inferred from the head update).
- ``knows_seed``: the client's random state of the round -- its batch order and MixUp structure (partners, weights,
  k). An upper bound: no real server has it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedface.config import check_choice, known_keys_only


@dataclass(frozen=True)
class ThreatModel:
    knows_key: bool = False
    knows_labels: bool = False
    knows_seed: bool = False

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> "ThreatModel":
        return cls(**known_keys_only(cls, cfg, "attack.threat"))

    @property
    def label(self) -> str:
        """Short name for tables: 'server', or the granted extras joined ('knows_key+knows_seed')."""
        extras = [k for k in ("knows_key", "knows_labels", "knows_seed") if getattr(self, k)]
        return "+".join(extras) or "server"


@dataclass
class Observation:
    """One client's round as the server saw it -- built from the messages alone (``strategies/malicious.py``)."""

    node: int | str  # the node id; "aggregate" for a SecAgg+ aggregate (see members)
    server_round: int
    sent: dict[str, np.ndarray]  # the global arrays the server sent
    returned: dict[str, np.ndarray]  # the client's returned arrays
    lr: float  # the round's learning rate (constant within a round)
    steps: int  # local optimiser steps the client reports
    num_examples: int  # the client's sample count (reported for FedAvg weighting)
    policy_update: dict[str, np.ndarray] | None = None  # sum (r - b) grad log pi(k), with mixup=adaptive
    policy_sent: dict[str, np.ndarray] | None = None  # the policy weights the server sent (its own network)
    k_counts: list[int] = field(default_factory=list)
    # SecAgg+ (federation.secagg): the observation is the round's aggregate of these nodes (``node`` = "aggregate"):
    # ``returned`` = sent + the weighted mean update, ``policy_update`` the clients' summed one
    members: list[int] = field(default_factory=list)

    @property
    def has_head(self) -> bool:
        return any(k.startswith("head.") for k in self.returned)


@dataclass
class AttackConfig:
    """Config group ``attack``: which rounds and replies are attacked, under which threat variants."""

    name: str = "none"
    every: int = 1
    max_rounds: int = 1
    max_clients: int = 2
    threats: list[dict[str, bool]] = field(default_factory=lambda: [{}])
    gradient: dict[str, Any] = field(default_factory=dict)
    ground_truth: bool = True
    # attack=inversion (configs/attack/inversion.yaml; the offline commands use the rest of its keys)
    inversion: dict[str, Any] = field(default_factory=dict)
    identities: int = 8
    target: Any = None
    backbone_only: bool = True
    decoder: Any = None
    cache: Any = None
    imprint: dict[str, Any] = field(default_factory=dict)
    grid_faces: int = 8

    NAMES = ("none", "gradient", "inversion", "imprint")

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> "AttackConfig":
        out = cls(**known_keys_only(cls, cfg, "attack"))
        check_choice(out.name, cls.NAMES, "attack.name")
        if out.every < 1 or out.max_clients < 1:
            raise ValueError(f"attack.every={out.every} and attack.max_clients={out.max_clients} must be >= 1")
        if out.name == "gradient":
            from fedface.attacks.gradient import InversionConfig

            InversionConfig.from_cfg(out.gradient)
            out.threat_models()
        if out.name == "inversion":
            from fedface.attacks.inversion import InversionConfig as ModelInversionConfig

            ModelInversionConfig.from_cfg(out.inversion)
        if out.name == "imprint":
            unknown = sorted(set(out.imprint) - {"malicious_weights", "bins", "strength", "psnr_db", "node"})
            if unknown or int(out.imprint.get("bins", 0)) < 2:
                raise ValueError(f"attack.imprint: unknown key(s) {unknown} or bins < 2 "
                                 "(configs/attack/imprint.yaml)")
        return out

    def attacks_round(self, server_round: int) -> bool:
        return (self.name != "none" and (server_round - 1) % self.every == 0
                and (server_round - 1) // self.every < self.max_rounds)

    def threat_models(self) -> list[ThreatModel]:
        return [ThreatModel.from_cfg(t) for t in self.threats]
