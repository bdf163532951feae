"""A Ray-free Flower Grid for tests: delivers each message to the ClientApp in-process (deep-copied both ways, like
serialisation), with one Context per node whose state persists across rounds. Every reply is recorded in ``sent``; a
ClientApp that raises yields an error reply, as in Flower's runtime.
"""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity  # internal, but Message() needs a run id outside a runtime

from fedface.federation.policy import NODE_KEY, write_policy
from clients.records import RUN_CONFIG


class LocalGrid(Grid):
    """``policy``: the nodes' privacy policy (``fedface.federation.policy``), as the experimenter's run config it is
    derived from (``policy_of_run``); None: each node takes the run config of the first message it receives --
    trust on first use, right for tests of an honest server only (tests of a malicious one pass ``policy``)."""

    def __init__(self, client_app, num_nodes: int, node_config: dict | None = None, policy: dict | None = None):
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
        self._policy_dir = Path(tempfile.mkdtemp(prefix="fedface-policy-"))
        self._fixed_policy = None if policy is None else write_policy(policy, self._policy_dir / "fixed.yaml")
        self.client_app, self._run, self._inbox = client_app, None, {}
        self.sent: list[Message] = []  # every message a client sent (its reply), for privacy inspection
        self.contexts = {
            1000 + i: Context(run_id=1, node_id=1000 + i,
                              node_config={"partition-id": i, "num-partitions": num_nodes, **(node_config or {})},
                              state=RecordDict(), run_config={})
            for i in range(num_nodes)
        }

    def set_run(self, run_id):
        self._run = run_id

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id,
                       ttl=ttl)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        ids = []
        for i, m in enumerate(messages):
            m = copy.deepcopy(m)
            self._give_policy(m)
            mid = f"m{len(self.sent)}_{i}"
            m.metadata.__dict__["_message_id"] = mid
            try:
                reply = self.client_app(m, self.contexts[m.metadata.dst_node_id])
            except Exception as err:  # as Flower's runtime does: a raising ClientApp becomes an error reply
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(err).__name__}: {err}"),
                                reply_to=m)
            self.sent.append(copy.deepcopy(reply))
            self._inbox[mid] = copy.deepcopy(reply)
            ids.append(mid)
        return ids

    def _give_policy(self, m) -> None:
        node = self.contexts[m.metadata.dst_node_id].node_config
        if NODE_KEY in node:
            return
        if self._fixed_policy is not None:
            node[NODE_KEY] = str(self._fixed_policy)
        elif "config" in m.content.config_records and RUN_CONFIG in m.content["config"]:
            cfg = json.loads(m.content["config"][RUN_CONFIG])
            node[NODE_KEY] = str(write_policy(cfg, self._policy_dir / f"node-{m.metadata.dst_node_id}.yaml"))

    def pull_messages(self, message_ids):
        return [self._inbox.pop(i) for i in message_ids if i in self._inbox]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(messages))
