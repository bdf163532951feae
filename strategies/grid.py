"""The server's Grid, polled for replies at fedface's pace.

Flower 1.42's Grids wait between pulls for replies: the simulation's ``InMemoryGrid`` 0.1 s (its ``pull_interval``),
the deployed ServerApp's ``HttpGrid`` a fixed 3 s (``flwr/superlink/grid/http_grid.py:412``). A reply therefore
waits up to that long before the server sees it, in every message exchange -- two a round (train, evaluate).
``polled`` makes the server look every ``LOCAL_POLL_SECONDS`` in simulation (a pull is a function call) and every
``REMOTE_POLL_SECONDS`` when deployed (a pull is one request to the SuperLink). Everything else is Flower's.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

LOCAL_POLL_SECONDS = 0.005
REMOTE_POLL_SECONDS = 0.1


def polled(grid: Grid) -> Grid:
    """``grid``, answering ``send_and_receive`` within a poll interval of the last reply's arrival."""
    if hasattr(grid, "pull_interval"):  # InMemoryGrid: its own loop, at our interval
        grid.pull_interval = LOCAL_POLL_SECONDS
        return grid
    return PolledGrid(grid, REMOTE_POLL_SECONDS)


class PolledGrid(Grid):
    """A Grid that delegates to ``inner`` and replaces only its reply polling."""

    def __init__(self, inner: Grid, poll_seconds: float):
        self.inner, self.poll_seconds = inner, poll_seconds

    def set_run(self, run) -> None:
        self.inner.set_run(run)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, *args, **kwargs) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self):
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``, then pull their replies every ``poll_seconds`` until all are in or ``timeout`` (seconds,
        None: no limit) has passed -- ``Grid.send_and_receive``'s contract."""
        pending = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            arrived = list(self.pull_messages(pending))
            replies.extend(arrived)
            pending -= {m.metadata.reply_to_message_id for m in arrived}
            if not pending or (end is not None and time.monotonic() >= end):
                break
            time.sleep(self.poll_seconds)
        return replies
