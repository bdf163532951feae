"""The server's reply polling (strategies/grid.py): deployed, flwr 1.42's HttpGrid sleeps 3 s between pulls."""
from __future__ import annotations

import time
from types import SimpleNamespace

from strategies.grid import LOCAL_POLL_SECONDS, REMOTE_POLL_SECONDS, PolledGrid, polled


class SlowRemoteGrid:
    """A deployed Grid in miniature: message i's reply arrives ``delay`` seconds after the push; its own
    send_and_receive would look every 3 s, as HttpGrid does."""

    def __init__(self, delay: float):
        self.delay, self.pushed, self.pulls = delay, {}, 0

    def push_messages(self, messages):
        now = time.monotonic()
        ids = [f"m{i}" for i, _ in enumerate(messages)]
        self.pushed.update({i: now for i in ids})
        return ids

    def pull_messages(self, ids):
        self.pulls += 1
        now = time.monotonic()
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in sorted(ids)
                if now - self.pushed[i] >= self.delay]

    def send_and_receive(self, messages, *, timeout=None):
        time.sleep(3)
        raise AssertionError("the 3 s loop was used")


def test_a_deployed_grid_is_polled_at_fedface_pace_and_answers_every_reply():
    inner = SlowRemoteGrid(delay=0.25)
    grid = polled(inner)
    assert isinstance(grid, PolledGrid) and grid.poll_seconds == REMOTE_POLL_SECONDS
    t = time.monotonic()
    replies = list(grid.send_and_receive(["a", "b", "c"], timeout=30))
    took = time.monotonic() - t
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert 0.25 <= took < 0.25 + 3 * REMOTE_POLL_SECONDS and inner.pulls >= 2, took


def test_replies_that_never_come_end_at_the_timeout():
    grid = polled(SlowRemoteGrid(delay=1e9))
    t = time.monotonic()
    assert list(grid.send_and_receive(["a"], timeout=0.3)) == []
    assert 0.3 <= time.monotonic() - t < 0.3 + 3 * REMOTE_POLL_SECONDS


def test_the_simulation_grid_keeps_its_own_loop_at_our_interval():
    in_memory = SimpleNamespace(pull_interval=0.1)
    assert polled(in_memory) is in_memory and in_memory.pull_interval == LOCAL_POLL_SECONDS
