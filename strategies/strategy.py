"""FedAvg that hosts the MixUp policy network (paper 001) and evaluates where the key lives.

Per round the strategy sends every sampled node its own message: global weights, round config (with the resolved run
config, which holds no secret), and -- with ``mixup=adaptive`` -- the policy weights and REINFORCE baseline. Before
FedAvg it takes each reply's policy update out (FedAvg demands one ArrayRecord + one MetricRecord per reply), then
averages the updates weighted by steps and steps the policy (``fedface.mixup.server_step``). Evaluation is sent to
one designated evaluator node (a client, which holds the key and test pairs); only its metrics come back.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from fedface.federation.params import examples_problem, update_problem
from fedface.federation.secagg import SecureSum
from fedface.mixup import PolicyUpdate, server_step
from fedface.protect.keys import same_fingerprint
from clients.records import (ARRAYS, CONFIG, KEY_FINGERPRINT, KEY_NONCE, METRICS, POLICY, POLICY_UPDATE, RUN_CONFIG,
                                decode, from_record, metrics_of, record_bytes, to_record)

log = logging.getLogger(__name__)


class FedFaceAvg(FedAvg):
    def __init__(self, run_config: dict[str, Any], policy: torch.nn.Module | None = None,
                 policy_optimizer: torch.optim.Optimizer | None = None, baseline_momentum: float = 0.9,
                 dp: Strategy | None = None, **kwargs):
        super().__init__(arrayrecord_key=ARRAYS, configrecord_key=CONFIG, **kwargs)
        # central DP (federation.dp): a flwr DP wrapper around a plain FedAvg that samples and aggregates in our
        # place (strategies.central_dp); our messages, policy, bookkeeping (and attacks) stay here
        self.dp = dp
        self.run_config_json = json.dumps(run_config, sort_keys=True)
        self.policy, self.policy_optimizer, self.baseline_momentum = policy, policy_optimizer, baseline_momentum
        self.baseline: float | None = None
        self.last_round: dict[str, Any] = {}
        self.evaluators: list[int] = []  # nodes that hold test pairs (pre-flight), lowest first
        self.examples: dict[int, int] = {}  # each node's example count at pre-flight: the most a reply may claim
        self._sent: dict[str, Any] = {}  # this round's global arrays: what every reply must match

    def _policy_record(self) -> ArrayRecord:
        return to_record({k: v.detach().cpu().numpy() for k, v in self.policy.state_dict().items()})

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        sample = super().configure_train if self.dp is None else self.dp.configure_train  # central DP: see __init__
        sampled = list(sample(server_round, arrays, config, grid))
        self._sent = from_record(arrays)
        out, sent = [], 0
        for m in sampled:  # FedAvg puts one shared RecordDict in every message: build one per node
            cfg = ConfigRecord({**dict(m.content[CONFIG]), RUN_CONFIG: self.run_config_json})
            content = RecordDict({ARRAYS: arrays, CONFIG: cfg})
            if self.policy is not None:
                content[POLICY] = self._policy_record()
                cfg["policy-baseline"] = float("nan") if self.baseline is None else float(self.baseline)
                sent += record_bytes(content[POLICY])
            sent += record_bytes(arrays)
            out.append(Message(content=content, dst_node_id=m.metadata.dst_node_id, message_type=MessageType.TRAIN))
        self.last_round = {"round": server_round, "sampled": len(out), "bytes_sent": sent}
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = self.screen(replies)
        ok = [r for r in replies if not r.has_error()]
        failed = [{"node": r.metadata.src_node_id, "reason": r.error.reason} for r in replies if r.has_error()]
        for f in failed:
            log.warning("round %d: client %s failed: %s", server_round, f["node"], f["reason"])
        received = sum(record_bytes(rec) for r in ok for rec in r.content.array_records.values())
        updates = [self._take_policy_update(r) for r in ok]
        k_hists = [r.content[METRICS]["k-counts"] for r in ok if "k-counts" in r.content[METRICS]]
        self.last_round.update(received=len(ok), failed=failed, bytes_received=received,
                               k_counts=np.sum(k_hists, axis=0).tolist() if k_hists else [],  # without MixUp: []
                               client_seconds=_slowest(ok, "seconds"),
                               client_process_seconds=_slowest(ok, "process-seconds"),
                               client_startup_seconds=_slowest(ok, "startup-seconds"))
        # protect=dp_sgd: each client's epsilon (at delta) so far -- kept per node, as FedAvg would average it
        eps = {str(r.metadata.src_node_id): metrics_of(r.content[METRICS])["epsilon"] for r in ok
               if "epsilon" in r.content[METRICS]}
        if eps:
            values = list(eps.values())  # None: infinite (noise_multiplier = 0)
            self.last_round.update(epsilons=eps,
                                   epsilon_max=None if None in values else max(values),
                                   delta=float(ok[0].content[METRICS]["delta"]))
        if len(ok) < self.min_train_nodes:
            log.warning("round %d: %d of %d replies, fewer than federation.min_train_nodes=%d: global model kept",
                        server_round, len(ok), len(replies), self.min_train_nodes)
            return None, None
        if self.dp is None:
            arrays, metrics = self.fedavg(ok)
        else:  # clip + FedAvg + noise; flwr sees the failed replies too (it then releases nothing this round)
            arrays, metrics = self.dp.aggregate_train(server_round, replies)
            self.last_round["central_dp"] = self.dp.last
        if self.policy is not None and any(u is not None for u in updates):
            self.baseline = server_step(self.policy, self.policy_optimizer, [u for u in updates if u is not None],
                                        self.baseline, self.baseline_momentum)
        return arrays, metrics

    def fedavg(self, replies: list[Message]) -> tuple[ArrayRecord, MetricRecord]:
        """flwr's ``FedAvg.aggregate_train`` on screened replies, operation for operation (the same weights, order
        and dtypes: the result is bit-identical), but each array decoded by ``records.decode`` (a header compare)
        instead of ``np.load`` (``ast.literal_eval`` of the header) -- at a thousand replies a round that parsing,
        done by the screen and again by flwr's aggregation, was the server's largest cost."""
        weights = [float(r.content[METRICS][self.weighted_by_key]) for r in replies]
        total = sum(weights)
        mean: dict[str, np.ndarray] = {}
        for reply, weight in zip(replies, [w / total for w in weights]):
            for record in reply.content.array_records.values():
                for key, value in from_record(record).items():
                    if key in mean:
                        mean[key] += value * weight
                    else:
                        mean[key] = value * weight
        return to_record(mean), self.train_metrics_aggr_fn([r.content for r in replies], self.weighted_by_key)

    def screen(self, replies: Iterable[Message]) -> list[Message]:
        """Every reply checked before anything reads it: a reply that is not what this round asked for (no arrays
        or metrics, other names/shapes/dtypes than the global model, non-finite values, a policy update that does not
        fit the policy, an unbelievable ``num-examples``) becomes a failed reply with the reason, so the round
        aggregates the honest ones and results.json says why the others were left out."""
        return [r if r.has_error() or (why := self._reply_problem(r)) is None else
                Message(error=Error(ErrorCode.UNKNOWN, f"rejected reply: {why}"), metadata=r.metadata)
                for r in replies]

    def _reply_problem(self, reply: Message) -> str | None:
        content = reply.content
        if ARRAYS not in content.array_records or METRICS not in content.metric_records:
            return f"a train reply needs the records {ARRAYS!r} and {METRICS!r}"
        metrics = content[METRICS]
        bad = [k for k, v in metrics.items() if not np.isfinite(np.asarray(v, dtype=float)).all()]
        if bad:
            return f"non-finite metrics {', '.join(bad)}"
        why = examples_problem(metrics.get("num-examples"), self.examples.get(reply.metadata.src_node_id))
        if why is None and self._sent:
            why = update_problem(from_record(content[ARRAYS]), self._sent)
        if why is None and POLICY_UPDATE in content.array_records:
            if self.policy is None:
                return "a policy update, but this run hosts no policy"
            grads = from_record(content[POLICY_UPDATE])
            expected = {k: p.detach().cpu().numpy() for k, p in self.policy.named_parameters()}
            why = update_problem(grads, expected)
            if why is None and not all(k in metrics for k in ("policy-steps", "k-counts", "reward-sum")):
                why = "a policy update without policy-steps, k-counts and reward-sum"
        if why is None and "k-counts" in metrics and self.policy is not None \
                and len(metrics["k-counts"]) != self.policy.fc.out_features:
            why = f"k-counts has {len(metrics['k-counts'])} entries, the policy {self.policy.fc.out_features}"
        return why

    def aggregate_secure(self, server_round: int, secure: SecureSum, nodes: list[int], failed: list[dict[str, Any]],
                         facts: dict[str, Any]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``federation.secagg``: the round's SecAgg+ aggregate instead of replies (``strategies.secagg``): the new
        global arrays (= FedAvg), the clients' summed policy update and the weighted train loss. ``nodes``: the node
        ids whose vectors are in the sum; ``failed``: the protocol's failures (no individual update in them)."""
        for f in failed:
            log.warning("round %d: SecAgg+ failure: %s", server_round, f["reason"])
        self.last_round.update(received=len(nodes), failed=failed, bytes_received=facts["bytes_received"],
                               k_counts=secure.k_counts, secagg=facts)
        if len(nodes) < self.min_train_nodes:
            log.warning("round %d: %d SecAgg+ contributions, fewer than federation.min_train_nodes=%d: global model "
                        "kept", server_round, len(nodes), self.min_train_nodes)
            return None, None
        if self.policy is not None and secure.policy_update is not None:
            self.baseline = server_step(self.policy, self.policy_optimizer, [secure.policy_update], self.baseline,
                                        self.baseline_momentum)
        return to_record(secure.arrays), MetricRecord({"train_loss": secure.train_loss})

    def _take_policy_update(self, reply: Message) -> PolicyUpdate | None:
        """Remove the policy update from ``reply`` (so FedAvg sees one ArrayRecord) and decode it."""
        if POLICY_UPDATE not in reply.content:
            return None
        record = reply.content[POLICY_UPDATE]
        del reply.content[POLICY_UPDATE]
        m = reply.content[METRICS]
        names = [k for k, _ in self.policy.named_parameters()]
        grads = [torch.as_tensor(decode(record[n])) for n in names]
        return PolicyUpdate(grads, int(m["policy-steps"]), [int(c) for c in m["k-counts"]], float(m["reward-sum"]))

    def preflight(self, grid: Grid, expected_shape: list[int], timeout: float, num_nodes: int = 0,
                  nonce: str | None = None) -> dict[str, Any]:
        """Wait until ``num_nodes`` nodes are connected, then ask each to build its task before round 1 and check
        its answer: a node without its key, data or with a protection that yields another input shape stops the run
        here, naming the node and reason. Records which nodes can evaluate (hold test pairs)."""
        nodes = _wait_for_nodes(grid, num_nodes, timeout)
        nonce = nonce or secrets.token_hex(16)  # a resumed run reuses its first nonce: fingerprints then compare
        cfg = ConfigRecord({RUN_CONFIG: self.run_config_json, KEY_NONCE: nonce})
        messages = [Message(content=RecordDict({CONFIG: cfg}), dst_node_id=n, message_type=MessageType.QUERY)
                    for n in nodes]
        problems, examples, policies, prints, demo = [], {}, {}, {}, []
        for reply in grid.send_and_receive(messages, timeout=timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                problems.append(f"node {node}: {reply.error.reason}")
                continue
            m = reply.content[METRICS]
            facts = dict(reply.content[CONFIG]) if CONFIG in reply.content.config_records else {}
            if KEY_FINGERPRINT in facts:
                prints[node] = str(facts.pop(KEY_FINGERPRINT))
            policies[str(node)] = facts
            if int(m.get("demo-key", 0)):
                demo.append(node)
            examples[node] = int(m["num-examples"])
            self.examples[node] = examples[node]
            if int(m.get("can-evaluate", 1)):
                self.evaluators.append(node)
            if list(m["input-shape"]) != list(expected_shape):
                problems.append(f"node {node}: protection yields model inputs {list(m['input-shape'])}, the server's "
                                f"model expects {list(expected_shape)} (protect.* differs between server and node)")
        if prints:  # every keyed node must hold the same key (HMAC fingerprints under this run's nonce)
            first = next(iter(prints.values()))
            odd = sorted(n for n, p in prints.items() if not same_fingerprint(p, first))
            if odd:
                problems.append(f"nodes hold different federation keys: {', '.join(map(str, odd))} differ from "
                                f"{', '.join(str(n) for n, p in prints.items() if same_fingerprint(p, first))} "
                                "(key fingerprints differ; give every node the same key file)")
        if not self.evaluators and not problems:
            problems.append("no node holds test pairs: give at least one node an eval folder (node config "
                            "`eval-path`)")
        if problems:
            raise RuntimeError("pre-flight check failed before round 1:\n  " + "\n  ".join(problems))
        self.evaluators.sort()
        if demo:
            log.warning("INSECURE: nodes %s train with the public demo key (FEDFACE_ALLOW_DEMO_KEY=1): Shuffle1 "
                        "hides nothing from anyone who reads the source", demo)
        return {"nodes": len(examples), "examples": sum(examples.values()), "max_examples": max(examples.values()),
                "evaluators": len(self.evaluators), "policies": policies, "keys_match": bool(prints),
                "insecure_demo_key": demo, "key_nonce": nonce,
                "key_fingerprint": next(iter(prints.values())) if prints else None}

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Only the evaluator node (the lowest connected node id among those with test pairs) evaluates: it holds
        the key and the test pairs. Before a pre-flight (unit tests of the strategy alone) every node qualifies."""
        connected = set(grid.get_node_ids())
        nodes = [n for n in self.evaluators if n in connected] if self.evaluators else sorted(connected)
        if not nodes:
            log.warning("round %d: no evaluator node connected: evaluation skipped", server_round)
            return []
        cfg = ConfigRecord({**dict(config), "server-round": server_round, RUN_CONFIG: self.run_config_json})
        return [Message(content=RecordDict({ARRAYS: arrays, CONFIG: cfg}), dst_node_id=nodes[0],
                        message_type=MessageType.EVALUATE)]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = [r for r in replies if not r.has_error()]
        return replies[0].content[METRICS] if replies else None


def _slowest(replies: list[Message], metric: str) -> float | None:
    """The largest value of a timing ``metric`` over ``replies`` (None: none carries it)."""
    return max((float(r.content[METRICS][metric]) for r in replies if metric in r.content[METRICS]), default=None)


def _wait_for_nodes(grid: Grid, num_nodes: int, timeout: float) -> list[int]:
    """Deployed SuperNodes connect on their own schedule: wait (polling) until ``num_nodes`` are connected."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < num_nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of federation.num_clients={num_nodes} nodes connected within "
                               f"{timeout:.0f} s (federation.round_timeout): check the SuperNodes' logs")
        time.sleep(1.0)
    return nodes
