"""A Ray-free Flower Grid for tests: delivers each message to the ClientApp in-process (deep-copied both ways, like
serialisation), with one Context per node whose state persists across rounds. Every reply is recorded in ``sent``; a ClientApp
that raises yields an error reply, as in Flower's runtime.
"""
from __future__ import annotations

import copy

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity  # internal, but Message() needs a run id outside a runtime


class LocalGrid(Grid):
    def __init__(self, client_app, num_nodes: int, node_config: dict | None = None):
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
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

    def pull_messages(self, message_ids):
        return [self._inbox.pop(i) for i in message_ids if i in self._inbox]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(messages))
