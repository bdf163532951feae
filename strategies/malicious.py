"""The malicious server: our FedAvg strategy, plus attacks on each client's individual reply before aggregation.

It uses only what the threat model grants (``fedface.attacks.threat``): the arrays it sent, each reply's arrays,
policy update and metrics, and its own run config. It never reads client objects or simulation internals; the
client-side ground truth (``fedface.experiment.ground_truth``) is read by the scorer only -- and by the labelled
``knows_seed`` / ``knows_labels`` upper bounds, for labels and MixUp structure. Training is not changed: attacks run
on copies, then the honest aggregation runs on the untouched replies.

Under ``federation.secagg`` there is no reply to read: ``aggregate_secure`` gets only the round's aggregate
(``strategies/secagg.py``), records the per-client attacks as unavailable by construction and runs the configured
attack on the aggregate instead.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedface.experiment.scoring import attack_and_score, inversion_and_score, policy_channel_and_score
from fedface.attacks.threat import AttackConfig, Observation
from fedface.federation.secagg import PER_CLIENT_UNAVAILABLE, SecureSum
from clients.records import ARRAYS, METRICS, POLICY_UPDATE, from_record
from strategies.strategy import FedFaceAvg

log = logging.getLogger(__name__)


class MaliciousFedFaceAvg(FedFaceAvg):
    def __init__(self, run_config: dict[str, Any], run_dir: Path, *args, **kwargs):
        super().__init__(run_config, *args, **kwargs)
        self.run_config, self.run_dir = run_config, Path(run_dir)
        self.attack = AttackConfig.from_cfg(run_config["attack"])
        self._sent: dict[str, Any] = {}
        self._policy_sent: dict[str, Any] | None = None
        self._lr = 0.0

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._sent, self._lr = from_record(arrays), float(config["lr"])
        self._policy_sent = None if self.policy is None else \
            {k: v.detach().cpu().numpy().copy() for k, v in self.policy.state_dict().items()}
        messages = super().configure_train(server_round, arrays, config, grid)
        if self.malicious_weights and self.attack.attacks_round(server_round):  # attack=imprint: trap one node
            messages = self._imprint.send(server_round, list(messages), self._sent)
        return messages

    # --- attack=imprint (malicious weights; strategies/imprint.py) ---
    @property
    def malicious_weights(self) -> bool:
        """True when this server sends modified weights (attack=imprint with imprint.malicious_weights)."""
        return self.attack.name == "imprint" and bool(self.attack.imprint.get("malicious_weights", True))

    @property
    def _imprint(self):
        if getattr(self, "_imprint_state", None) is None:
            from strategies.imprint import ImprintServer

            self._imprint_state = ImprintServer(self.run_config, self.run_dir, self.attack)
        return self._imprint_state
    # --- end attack=imprint ---

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        if self.attack.name == "imprint":  # read the trapped node's reply, keep it out of FedAvg
            replies, attacks = self._imprint.receive(server_round, replies, self._lr) \
                if self.malicious_weights and self.attack.attacks_round(server_round) else (replies, [])
            arrays, metrics = super().aggregate_train(server_round, replies)
            if attacks:
                self.last_round.update(attacks=attacks, trap_node=attacks[0]["node"])
            return arrays, metrics
        replies = self.screen(replies)  # the attacks read only replies the aggregation would accept
        attacks = self._attack(server_round, replies) if self.attack.attacks_round(server_round) else []
        arrays, metrics = super().aggregate_train(server_round, replies)
        if attacks:
            self.last_round["attacks"] = attacks
        return arrays, metrics

    # --- federation.secagg: the round's aggregate is all the server gets (strategies/secagg.py) ---
    def aggregate_secure(self, server_round: int, secure: SecureSum, nodes: list[int], failed: list[dict[str, Any]],
                         facts: dict[str, Any]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        attacks = self._attack_aggregate(server_round, secure, nodes) if self.attack.attacks_round(server_round) \
            else []
        arrays, metrics = super().aggregate_secure(server_round, secure, nodes, failed, facts)
        if attacks:
            self.last_round["attacks"] = attacks
        return arrays, metrics

    def _attack_aggregate(self, server_round: int, secure: SecureSum, nodes: list[int]) -> list[dict[str, Any]]:
        """The configured attacks on the aggregate, as on one big client: gradient inversion of the mean update,
        read to first order as ``steps`` (each client's mean) local steps on batches of ``len(nodes)`` x the batch
        size over all ``N`` examples (the mean of k clients' steps averages k batches' gradients); model inversion of
        the aggregated head. Per-client attacks are recorded as unavailable."""
        out = [{"node": None, "attack": self.attack.name, "threat": "server", "target": "each client",
                "skipped": PER_CLIENT_UNAVAILABLE}]
        train = {**self.run_config["train"], "batch_size": int(self.run_config["train"]["batch_size"]) * len(nodes)}
        run_config = {**self.run_config, "train": train}
        update = secure.policy_update
        names = [] if self.policy is None else [k for k, _ in self.policy.named_parameters()]
        obs = Observation(
            node="aggregate", server_round=server_round, sent=self._sent, returned=secure.arrays, lr=self._lr,
            steps=round(secure.steps / max(len(nodes), 1)), num_examples=secure.total_examples,
            policy_update=None if update is None else {n: g.numpy() for n, g in zip(names, update.grads)},
            policy_sent=self._policy_sent, k_counts=list(secure.k_counts), members=list(nodes))
        out += self._attack_observation(server_round, obs, run_config)
        for a in out[1:]:
            a["members"] = list(nodes)
        return out
    # --- end federation.secagg ---

    def observe(self, server_round: int, reply: Message) -> Observation:
        """What the server saw of one client this round (copies; the reply itself is not touched)."""
        m = reply.content[METRICS]
        return Observation(
            node=int(reply.metadata.src_node_id), server_round=server_round, sent=self._sent,
            returned=from_record(reply.content[ARRAYS]), lr=self._lr, steps=int(m.get("steps", 0)),
            num_examples=int(m.get("num-examples", 0)),
            policy_update=from_record(reply.content[POLICY_UPDATE]) if POLICY_UPDATE in reply.content else None,
            policy_sent=self._policy_sent,
            k_counts=[int(c) for c in m.get("k-counts", [])])

    def _attack(self, server_round: int, replies: list[Message]) -> list[dict[str, Any]]:
        ok = sorted((r for r in replies if not r.has_error()), key=lambda r: r.metadata.src_node_id)
        out = []
        for reply in ok[: self.attack.max_clients]:
            out += self._attack_observation(server_round, self.observe(server_round, reply), self.run_config)
        return out

    def _attack_observation(self, server_round: int, obs: Observation, run_config: dict[str, Any]
                            ) -> list[dict[str, Any]]:
        """The configured attacks on one observation (a client's reply, or a SecAgg+ aggregate)."""
        out = []
        if self.attack.name == "inversion":  # model inversion of the returned weights
            try:
                out.append(inversion_and_score(obs, run_config, self.attack.inversion, self.attack.identities,
                                              self.run_dir))
            except Exception as err:  # an attack must never stop the federation
                log.warning("round %d: inversion of node %s failed: %s", server_round, obs.node, err)
                out.append({"node": obs.node, "attack": "inversion", "threat": "server",
                            "skipped": f"{type(err).__name__}: {err}"})
        else:
            for threat in self.attack.threat_models():
                try:
                    out.append(attack_and_score(obs, run_config, self.attack, threat, self.run_dir))
                except Exception as err:  # an attack must never stop the federation
                    log.warning("round %d: attack %s on node %s failed: %s", server_round, threat.label, obs.node,
                                err)
                    out.append({"node": obs.node, "attack": "gradient", "threat": threat.label,
                                "skipped": f"{type(err).__name__}: {err}"})
            if obs.policy_update is not None:
                out.append(policy_channel_and_score(obs, run_config, self.attack, self.run_dir))
        for a in out:
            if "skipped" in a:
                log.info("round %d: %s attack (%s) on node %s skipped: %s", server_round, a["attack"], a["threat"],
                         a["node"], a["skipped"])
        return out
