"""A node's privacy policy: what the node itself decides about its protection. The server may only request.

The server writes the run config every node receives; the server is the adversary. So what protects a node's faces
is node configuration, read on the node: the protection (a preset of ``configs/protect/`` plus overrides, or a whole
``protect`` mapping), the smallest MixUp k it accepts, whether it requires SecAgg+, whether it accepts a
server-described trap module (``attack=imprint``, a research mode), and the smallest local batch and the fewest
local optimiser steps per round it trains with -- the round settings a gradient-inversion server would shrink
(one step of a small batch is the easiest update to invert; docs/attacks.md "What a node's minimums buy"). The node
builds its protection from its policy, never from the message, and refuses -- before it reads a single face -- a run whose request differs from its
protection or is weaker than the rest of its policy; the refusal is a failed reply whose reason the server records.

Where the policy comes from: the node config key ``privacy-policy`` (a YAML file on the node, ``fedface deploy``
writes one per node), else the environment variable ``FEDFACE_POLICY``. ``fedface simulate`` writes one policy for
all its nodes from the experimenter's config (the one place to set it in simulation). No policy: the node refuses.

File format (every key but ``protect`` optional)::

    protect: ppfr_fd              # a preset of configs/protect/, or a mapping (the whole protect group)
    overrides: [protect.keep=24]  # Hydra overrides of the preset
    mixup_min_k: 2                # refuse runs that mix fewer than k samples (1: mixing not required)
    require_secagg: false         # refuse runs without federation.secagg
    allow_trap: false             # accept a trap module described by the server (attack=imprint research mode)
    min_batch_size: 1             # refuse runs whose train.batch_size is smaller
    min_local_steps: 1            # refuse rounds that ask for fewer local optimiser steps (checked every round)
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from fedface.config import flat_config, config_differences

NODE_KEY = "privacy-policy"
ENV_VAR = "FEDFACE_POLICY"
FILE_KEYS = {"protect", "overrides", "mixup_min_k", "require_secagg", "allow_trap", "min_batch_size",
             "min_local_steps"}
#: integer minimums of a policy file: key -> its default (no minimum)
MINIMUMS = {"mixup_min_k": 1, "min_batch_size": 1, "min_local_steps": 1}


class PolicyRefusal(PermissionError):
    """The run asks this node for less protection than its policy: the node trains nothing."""


@dataclass(frozen=True)
class NodePolicy:
    protect: dict[str, Any]  # the node's protection: the whole protect config group
    mixup_min_k: int = 1
    require_secagg: bool = False
    allow_trap: bool = False
    min_batch_size: int = 1
    min_local_steps: int = 1
    source: str = ""

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str) -> "NodePolicy":
        unknown = sorted(set(raw) - FILE_KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown privacy-policy key(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(FILE_KEYS))}")
        if "protect" not in raw:
            raise ValueError(f"{source}: a privacy policy names its `protect` (a preset of configs/protect/ or a "
                             "mapping)")
        protect = raw["protect"]
        if isinstance(protect, str):
            from fedface.config import compose_config, to_container

            protect = to_container(compose_config([f"protect={protect}", *raw.get("overrides", [])]))["protect"]
        elif not isinstance(protect, Mapping) or "name" not in protect:
            raise ValueError(f"{source}: `protect` must be a preset name or a mapping with a `name`")
        minimums = {k: raw.get(k, default) for k, default in MINIMUMS.items()}
        for k, v in minimums.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{source}: {k}={v!r} must be an integer >= 1")
        flags = {k: raw.get(k, False) for k in ("require_secagg", "allow_trap")}
        for k, v in flags.items():
            if not isinstance(v, bool):
                raise ValueError(f"{source}: {k}={v!r} must be true or false")
        return cls(dict(protect), **minimums, **flags, source=source)

    @classmethod
    def load(cls, node_config: Mapping[str, Any] | None, env: Mapping[str, str] = os.environ) -> "NodePolicy":
        """The node's policy from node config ``privacy-policy`` or env ``FEDFACE_POLICY`` (a YAML file path)."""
        for source, value in ((f"node config `{NODE_KEY}`", (node_config or {}).get(NODE_KEY)),
                              (f"env {ENV_VAR}", env.get(ENV_VAR))):
            if value:
                path = Path(str(value))
                try:
                    text = path.read_text()
                except OSError as err:
                    raise ValueError(f"privacy policy {path} (from {source}) does not read: {err}") from None
                return _parsed(cls, text, str(path), source)
        raise PolicyRefusal(f"no privacy policy on this node: set node config `{NODE_KEY}` or env {ENV_VAR} to its "
                            "YAML file (docs/deploy.md, \"Node privacy policy\"); a node without one trains nothing")

    def refusal(self, cfg: Mapping[str, Any]) -> str | None:
        """Why this node refuses the run config ``cfg`` (the server's request), or None when it complies."""
        changed = config_differences(cfg["protect"], self.protect)
        if changed:
            asked, own = flat_config(cfg["protect"]), flat_config(self.protect)
            return (f"the run requests protect={cfg['protect'].get('name')!s} with "
                    + ", ".join(f"{k}={asked.get(k)!r}" for k in changed[:4])
                    + f"; this node's policy ({self.source}) trains with protect={self.protect['name']} with "
                    + ", ".join(f"{k}={own.get(k)!r}" for k in changed[:4]))
        mix = cfg.get("mixup") or {"name": "none"}
        k = {"none": 1, "fixed": mix.get("k", 1), "adaptive": mix.get("k_min", 1)}.get(mix["name"], 0)
        if k < self.mixup_min_k:
            return f"the run mixes k >= {k} samples (mixup={mix['name']}), this node's policy requires k >= " \
                   f"{self.mixup_min_k}"
        if self.require_secagg and not cfg["federation"].get("secagg"):
            return "the run has federation.secagg=false, this node's policy requires SecAgg+"
        if cfg.get("model", {}).get("imprint") and not self.allow_trap:
            return "the run asks this node to add a trap module to its model (model.imprint), which its policy " \
                   "does not allow"
        batch = int(cfg.get("train", {}).get("batch_size", 0))
        if batch < self.min_batch_size:
            return f"the run trains with train.batch_size={batch}, this node's policy requires >= {self.min_batch_size}"
        steps = cfg["federation"].get("local_steps")
        if steps is not None and int(steps) < self.min_local_steps:
            return f"the run asks for federation.local_steps={steps}, this node's policy requires >= " \
                   f"{self.min_local_steps} local steps per round"
        return None

    def round_refusal(self, server_round: int, steps: int) -> str | None:
        """Why this node refuses a round whose train config would run ``steps`` local optimiser steps (the server
        sends ``epochs`` and maybe ``steps`` with every round, so a run config that passed pre-flight does not bind
        them; the node counts them as it will train, ``fedface.train.loop.planned_steps``), or None."""
        if steps < self.min_local_steps:
            return f"round {server_round} asks for {steps} local step(s), this node's policy requires >= " \
                   f"{self.min_local_steps}"
        return None

    def enforce(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """``cfg`` with the node's own protection, after ``refusal`` found nothing; PolicyRefusal otherwise."""
        why = self.refusal(cfg)
        if why is not None:
            raise PolicyRefusal(f"refused by the node's privacy policy: {why}")
        return {**cfg, "protect": copy.deepcopy(self.protect)}  # the policy itself is shared (parsed once)

    def summary(self) -> dict[str, Any]:
        """What the node reports at pre-flight (no secret): its protection's name and the policy's minimums."""
        return {"policy-protect": str(self.protect["name"]), "policy-min-k": self.mixup_min_k,
                "policy-secagg": self.require_secagg, "policy-trap": self.allow_trap,
                "policy-min-batch": self.min_batch_size, "policy-min-steps": self.min_local_steps}


def policy_of_run(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The policy an experimenter's run config implies (simulation: one policy for every node): its protection,
    its MixUp k as the minimum, its SecAgg+ choice, and the trap only when the experiment is ``attack=imprint``."""
    mix = cfg.get("mixup") or {"name": "none"}
    min_k = {"fixed": mix.get("k", 1), "adaptive": mix.get("k_min", 1)}.get(mix["name"], 1)
    return {"protect": dict(cfg["protect"]), "mixup_min_k": int(min_k),
            "require_secagg": bool(cfg["federation"].get("secagg", False)),
            "allow_trap": (cfg.get("attack") or {}).get("name") == "imprint"}


def write_policy(cfg: Mapping[str, Any], path: Path) -> Path:
    from fedface.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(json.loads(json.dumps(policy_of_run(cfg))), sort_keys=True))
    return Path(path)


@lru_cache(maxsize=64)
def _parsed(cls: type[NodePolicy], text: str, path: str, source: str) -> NodePolicy:
    """The policy a file's text holds. Every message re-reads the file (an edit takes effect at once) but parses a
    text it has seen before only once per process: a simulation worker serves thousands of messages."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"privacy policy {path} (from {source}) does not read: {err}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"privacy policy {path} (from {source}) is not a mapping")
    return cls.from_mapping(raw, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m fedface.federation.policy OUT.yaml [hydra overrides]``: the policy the overrides' config implies,
    for nodes that take it as theirs (``make flwr-run``'s simulated nodes; a node's owner writing a first draft)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(main.__doc__, file=sys.stderr)
        return 2
    from fedface.config import compose_config, to_container

    print(write_policy(to_container(compose_config(args[1:])), Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

