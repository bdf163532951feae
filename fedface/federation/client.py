"""What one federated client does, Flower-free: load its data (a shard or its own folders), protect, mix, train
locally, report.

The Flower ClientApp (``clients/client_app.py``) only moves messages to these calls and back. Everything secret stays
here: the raw shard, the protection (built with the key the node read from its own config/environment) and, with
``head=local``, the client's own ArcFace head.
"""
from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedface.experiment.ground_truth import save_ground_truth
from fedface.eval import evaluate, utility
from fedface.federation.node_data import NodeFolders, own_data, shard_data
from fedface.federation.params import check_modes, federated_state, floats_only, load_federated_state
from fedface.mixup import PolicyUpdate, build_mixer
from fedface.models import build_backbone, build_head
from fedface.train import collapse
from fedface.train.collapse import expected_degenerate_loss
from fedface.protect import build_protection
from fedface.train import TrainConfig, pick_device, train_local


@dataclass
class ClientReply:
    arrays: dict[str, np.ndarray]
    metrics: dict[str, float]
    policy_update: PolicyUpdate | None = None
    k_histogram: dict[int, int] = field(default_factory=dict)
    local_state: dict[str, np.ndarray] = field(default_factory=dict)  # kept on the node (local head / BN)
    dp_history: list[tuple[float, float, int]] | None = None  # protect=dp_sgd: the accountant's, kept on the node


def client_seed(seed: int, server_round: int, partition_id: int) -> int:
    """Each client's randomness per round (batch order, augmentation, Shuffle2, MixUp partners, k)."""
    return zlib.crc32(f"{seed}/{server_round}/{partition_id}".encode())


class ClientTask:
    """One client's data and model. ``cfg`` is the resolved run config as a plain dict (sent by the server)."""

    def __init__(self, cfg: Mapping[str, Any], partition_id: int, num_partitions: int, key: bytes | None,
                 data_root: str | None = None, folders: NodeFolders | None = None):
        """``folders``: a deployed node's own data (node config); without it, shard ``partition_id`` of the
        configured dataset (simulation)."""
        self.cfg, self.partition_id = cfg, partition_id
        fed = cfg["federation"]
        self.head_mode, self.bn_mode = fed["head"], fed["bn"]
        check_modes(self.head_mode, self.bn_mode)
        self.floats_only = floats_only(fed)  # central DP, SecAgg+: integer buffers stay here (federation.params)
        node = own_data(cfg, folders) if folders else shard_data(cfg, partition_id, num_partitions, data_root)
        self.images, self.labels, num_classes = node.images, node.labels, node.num_classes
        self.data, self.table, self.identities = node.eval_data, node.table, node.identities
        # A local head (and any random init here) must not depend on what the process drew before: a Ray worker
        # serves several clients in turn, a deployed node builds its task afresh in each message's process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(client_seed(int(cfg["seed"]), 0, partition_id))
            self.protection = build_protection(cfg["protect"], key).fit(self.images.unsqueeze(1).float())
            spec = self.protection.output_spec(112, 112)
            self.device = pick_device(cfg.get("device", "auto"))
            self.backbone = build_backbone(cfg["model"], spec).to(self.device)  # with a trap only if the policy allows
            self.head = build_head(cfg["model"], self.backbone.embedding_size, num_classes).to(self.device)
            self.tcfg = TrainConfig.from_cfg(cfg["train"])
            self.mixer = build_mixer(cfg["mixup"], spec, self.tcfg.batch_size, apply_updates=False)
        if self.mixer is not None:
            self.mixer.to(self.device)

    @property
    def can_evaluate(self) -> bool:
        return self.table is not None

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def local_state(self) -> dict[str, np.ndarray]:
        """What stays on the node between rounds: a local head and/or local BatchNorm."""
        everything = federated_state(self.backbone, self.head, "shared", "federated")
        shared = federated_state(self.backbone, self.head, self.head_mode, self.bn_mode, self.floats_only)
        return {k: v for k, v in everything.items() if k not in shared}

    def round_train_config(self, round_cfg: Mapping[str, Any]) -> TrainConfig:
        """The run's train config with what the server sends each round (lr, epochs, steps, schedule)."""
        return TrainConfig(**{**self.tcfg.__dict__, **{k: round_cfg[k] for k in ("lr", "epochs", "steps", "schedule")
                                                       if k in round_cfg}, "margin_warmup": 0.0})

    def train(self, arrays: Mapping[str, np.ndarray], server_round: int, round_cfg: Mapping[str, Any],
              policy: Mapping[str, np.ndarray] | None = None, baseline: float | None = None,
              local_state: Mapping[str, np.ndarray] | None = None, ground_truth: Path | None = None,
              dp_history: list | None = None) -> ClientReply:
        """One round of local training from the global ``arrays``; returns the update and what stays local.
        ``ground_truth``: also write what entered the model to this local file (attack experiments; never sent).
        ``dp_history``: with ``protect=dp_sgd``, the privacy accountant's history of this client's earlier rounds
        (the node keeps it: the same images are reused every round, so epsilon composes over all of them); the
        metrics then carry ``epsilon`` (None when infinite: noise_multiplier = 0) and ``delta``."""
        if local_state:
            load_federated_state(self.backbone, self.head, local_state)
        load_federated_state(self.backbone, self.head, arrays)
        if self.mixer is not None and self.mixer.policy is not None:
            self.mixer.policy.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in policy.items()})
            self.mixer.baseline = baseline
        tcfg = self.round_train_config(round_cfg)
        # the margin warm-up runs over rounds, not within each round's few local steps (server_loop.round_config)
        self.head.margin_scale = min(1.0, max(0.0, float(round_cfg.get("margin-scale", 1.0))))
        seed = client_seed(int(self.cfg["seed"]), server_round, self.partition_id)
        gen = torch.Generator().manual_seed(seed)
        record = [] if ground_truth is not None else None
        t0 = time.perf_counter()
        accountant = None
        if self.protection.dp is not None:
            from fedface.train.dp import make_accountant

            accountant = make_accountant(dp_history)
        res = train_local(self.backbone, self.head, self.protection, self.images, self.labels, tcfg, gen,
                          mixer=self.mixer, record=record, accountant=accountant)
        if ground_truth is not None:
            save_ground_truth(ground_truth, record, {"partition": self.partition_id, "seed": seed,
                                                     "num_examples": self.num_examples,
                                                     "labels": self.labels.tolist(), "head": self.head_mode,
                                                     "identities": None if self.identities is None
                                                     else self.identities.tolist()})
        mix = self.mixer.mix_spec() if self.mixer is not None else self.protection.mix_spec()
        verdict = collapse.check(float(res.loss), expected_degenerate_loss(self.head.num_classes,
                                                                           self.cfg["model"]["head"], mix),
                                 self.head.weight)
        metrics = {"train_loss": float(res.loss), "num-examples": self.num_examples, "steps": res.steps,
                   "seconds": time.perf_counter() - t0,
                   # ArcFace's degenerate solution (fedface.train.collapse): facts of the public config and the head
                   "loss-over-degenerate": float(verdict["loss_ratio"] or 0.0),
                   "head-row-cosine": float(verdict["head_row_cosine"]), "mixed-samples": float(mix is not None)}
        if res.dp is not None:
            eps = res.dp["epsilon"]
            metrics.update(epsilon=None if eps is None else float(eps), delta=float(res.dp["delta"]))
        return ClientReply(federated_state(self.backbone, self.head, self.head_mode, self.bn_mode, self.floats_only),
                           metrics, res.policy_update, dict(res.k_histogram or {}), self.local_state(),
                           None if res.dp is None else [tuple(h) for h in res.dp["history"]])

    def evaluate(self, arrays: Mapping[str, np.ndarray], local_state: Mapping[str, np.ndarray] | None = None
                 ) -> dict[str, float | None]:
        """Verification + identification on the partition table's test identities (the evaluator node's job)."""
        if not self.can_evaluate:
            raise ValueError("this node holds no test pairs: give it an eval folder (node config `eval-path`)")
        if local_state:
            load_federated_state(self.backbone, self.head, local_state)
        load_federated_state(self.backbone, self.head, arrays)
        return utility(evaluate(self.backbone, self.protection, self.data, self.table, int(self.cfg["seed"])))
