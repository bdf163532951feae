"""Flower ClientApp: turns train/evaluate messages into ``fedface.federation.ClientTask`` calls and back.

Secrets stay on the node: the Shuffle1 key comes from the node's key file, node config or environment
(``fedface.protect.keys``), never from a message. The protection comes from the node's privacy policy
(``fedface.federation.policy``): the server's run config only requests it, and a weaker request is refused.
Data: in simulation, shard ``partition-id`` of the configured dataset under node config ``data-root`` or
``FEDFACE_DATA``; deployed, the node's own folders (node config ``data-path``,
``eval-path``, ``class-offset``; ``fedface.federation.node_data``).
What a node keeps between rounds (a local head, local BatchNorm, the DP-SGD accountant's history) lives in
``context.state``, never in a reply.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections import OrderedDict

import psutil
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.central_dp import central_dp_clipping_mod
from clients.secagg import secagg_mod
from fedface.experiment.ground_truth import ground_truth_path
from fedface.federation.client import ClientTask, client_seed
from fedface.federation.node_data import NodeFolders
from fedface.protect import needs_key
from fedface.federation.policy import NodePolicy, PolicyRefusal
from fedface.train.loop import planned_steps
from fedface.protect.keys import DEMO_KEY, fingerprint, load_key
from clients.records import (ARRAYS, CONFIG, DP_HISTORY, KEY_FINGERPRINT, KEY_NONCE, LOCAL, METRICS, POLICY,
                                POLICY_UPDATE, RUN_CONFIG, from_record, metric_record, to_record)

ALLOW_DEMO_ENV = "FEDFACE_ALLOW_DEMO_KEY"


def process_age() -> float:
    """Seconds since this process started (deployed, Flower starts one per message)."""
    return time.time() - psutil.Process().create_time()


#: seconds from this process's start until this module (and torch, flwr, fedface) had loaded: deployed, Flower's
#: ClientApp process start, FAB install and the imports, paid by every message (bench_deploy splits a round with it)
STARTUP_SECONDS = process_age()
torch.set_num_threads(1)  # one ClientApp per core in simulation
app = ClientApp()
# Per worker process: the tasks of the last ``federation.client_cache`` partitions it served (the dataset itself is
# cached once per process). Bounded, so a simulation worker's memory does not grow with the number of virtual
# clients: an evicted task is rebuilt from the run config when its partition is sampled again (what it must keep
# lives in context.state).
_TASKS: OrderedDict[tuple, ClientTask] = OrderedDict()


class InjectedFailure(RuntimeError):
    """A client failure injected by ``federation.failure_prob`` (fault-tolerance tests)."""


def _task(msg: Message, context: Context) -> tuple[ClientTask, dict, NodePolicy]:
    """This node's task for the run the message describes -- after its privacy policy accepted the request (a
    refusal raises before any face is read: the server gets a failed reply with the reason)."""
    cfg_json = msg.content[CONFIG][RUN_CONFIG]
    policy = NodePolicy.load(context.node_config)
    cfg = policy.enforce(json.loads(cfg_json))
    pid = int(context.node_config["partition-id"])
    n = int(context.node_config.get("num-partitions", 1))  # a deployed node with its own folders needs no count
    folders = NodeFolders.from_node_config(context.node_config)
    ident = (hashlib.sha256(cfg_json.encode()).hexdigest(), pid, n, folders)
    if ident not in _TASKS:
        key = _key(context) if needs_key(cfg["protect"]) else None
        _TASKS[ident] = ClientTask(cfg, pid, n, key, context.node_config.get("data-root"), folders)
        while len(_TASKS) > int(cfg["federation"].get("client_cache", 8)):
            _TASKS.popitem(last=False)
    _TASKS.move_to_end(ident)
    return _TASKS[ident], cfg, policy


def _key(context: Context) -> bytes:
    """The node's federation key; the public demo key only where the node's owner allows it for a simulation
    (env FEDFACE_ALLOW_DEMO_KEY=1), which pre-flight reports so results.json records it."""
    return load_key(context.node_config, allow_demo=os.environ.get(ALLOW_DEMO_ENV) == "1")


def _local_state(context: Context) -> dict:
    return from_record(context.state[LOCAL]) if LOCAL in context.state.array_records else {}


def _dp_history(context: Context) -> list[tuple[float, float, int]]:
    """The node's DP-SGD accountant history, [(noise_multiplier, sample_rate, steps), ...] over all its rounds."""
    if DP_HISTORY not in context.state.config_records:
        return []
    rec = context.state[DP_HISTORY]
    return list(zip(rec["noise"], rec["rate"], rec["steps"]))


# federation.secagg: flwr's secaggplus_mod, only on SecAgg+ messages (outermost: it turns the legacy FitIns into our
# train message and our reply into its one masked vector); federation.dp=client_fixed: flwr's fixedclipping_mod, only
# when the round config carries a clipping norm
@app.train(mods=[secagg_mod, central_dp_clipping_mod])
def train(msg: Message, context: Context) -> Message:
    task, cfg, node_policy = _task(msg, context)
    round_cfg = msg.content[CONFIG]
    server_round = int(round_cfg["server-round"])
    steps = planned_steps(task.round_train_config(dict(round_cfg)), task.num_examples)
    why = node_policy.round_refusal(server_round, steps)
    if why is not None:  # the round's own settings: the server sends them every round
        raise PolicyRefusal(f"refused by the node's privacy policy: {why}")
    fail = float(cfg["federation"].get("failure_prob", 0.0))
    if fail and random.Random(client_seed(int(cfg["seed"]), server_round, task.partition_id) + 1).random() < fail:
        raise InjectedFailure(f"injected failure of partition {task.partition_id} in round {server_round}")
    policy = from_record(msg.content[POLICY]) if POLICY in msg.content else None
    baseline = float(round_cfg.get("policy-baseline", float("nan")))
    reply = task.train(from_record(msg.content[ARRAYS]), server_round, dict(round_cfg), policy,
                       None if baseline != baseline else baseline, _local_state(context),
                       ground_truth_path(server_round, context.node_id), _dp_history(context))
    if reply.local_state:
        context.state[LOCAL] = to_record(reply.local_state)
    if reply.dp_history is not None:
        context.state[DP_HISTORY] = ConfigRecord({"noise": [float(h[0]) for h in reply.dp_history],
                                                  "rate": [float(h[1]) for h in reply.dp_history],
                                                  "steps": [int(h[2]) for h in reply.dp_history]})
    # the age of this process: deployed, Flower starts one per message, so its start, imports, the task's build and
    # the training; the server subtracts it from the exchange to see the transport (bench_deploy)
    metrics = {**reply.metrics, "process-seconds": process_age(),
               "startup-seconds": STARTUP_SECONDS}
    content = RecordDict({ARRAYS: to_record(reply.arrays)})
    if reply.policy_update is not None:
        names = [k for k, _ in task.mixer.policy.named_parameters()]
        content[POLICY_UPDATE] = to_record({n: g.cpu().numpy() for n, g in zip(names, reply.policy_update.grads)})
        metrics.update({"policy-steps": reply.policy_update.steps, "reward-sum": reply.policy_update.reward_sum,
                        "k-counts": list(reply.policy_update.k_counts)})
    elif reply.k_histogram:
        metrics["k-counts"] = list(reply.k_histogram.values())
    content[METRICS] = metric_record(metrics)
    return Message(content=content, reply_to=msg)


@app.query()
def preflight(msg: Message, context: Context) -> Message:
    """Before round 1: build this node's task (data, key, protection) and report what the server must check."""
    task, cfg, node_policy = _task(msg, context)
    spec = task.protection.output_spec(112, 112)
    metrics = {"num-examples": task.num_examples, "input-shape": list(spec.shape),
               "can-evaluate": int(task.can_evaluate)}
    facts = node_policy.summary()  # what the node enforces (no secret)
    nonce = str(msg.content[CONFIG].get(KEY_NONCE, ""))
    if needs_key(cfg["protect"]) and nonce:  # lets the server catch nodes holding different keys before round 1
        key = _key(context)
        facts[KEY_FINGERPRINT] = fingerprint(key, bytes.fromhex(nonce))
        metrics["demo-key"] = int(key == DEMO_KEY)
    return Message(content=RecordDict({METRICS: MetricRecord(metrics), CONFIG: ConfigRecord(facts)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    task, _, _ = _task(msg, context)
    metrics = task.evaluate(from_record(msg.content[ARRAYS]), _local_state(context))
    metrics["num-examples"] = len(task.table.pairs)
    return Message(content=RecordDict({METRICS: metric_record(metrics)}), reply_to=msg)
