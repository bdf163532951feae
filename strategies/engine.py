"""Flower's simulation engine, fed without its polling cost.

Flower 1.42's engine hands messages to the Ray actors from a loop (``add_messages_to_queue``,
``flwr/server/superlink/fleet/vce/vce_api.py:168-180``) that, every 0.1 s, asks the LinkState for each node's next
message: N calls of ``InMemoryLinkState.get_message_ins``, each of which checks every stored message (its expiry and
federation membership) under the state's lock. That is O(N x M) work per pass for the whole of every exchange -- the
bulk of a 1,000-client round of trivial clients (docs/scale.md) -- and up to 0.1 s of waiting before any client starts.

``feed`` keeps the loop's contract -- at most one message per node per pass, taken through the same
``get_message_ins`` (which marks it delivered and drops expired or foreign messages) -- but asks only for the nodes
that have an undelivered message, found by one read of the store, and looks every ``FEED_SECONDS``.
``fast_engine`` puts it in place for one ``run_simulation`` call; any other LinkState, or a Flower other than the
one it was written for, keeps Flower's own loop.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from queue import Queue

import flwr
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

log = logging.getLogger(__name__)

TESTED_FLWR = "1.42."
FEED_SECONDS = 0.005
_FLOWER_FEED = vce_api.add_messages_to_queue


def feed(state, queue: Queue, nodes_mapping: Mapping[int, int], f_stop: threading.Event) -> None:
    """``add_messages_to_queue`` at the cost of the messages waiting, not of every node times every message."""
    if not isinstance(state, InMemoryLinkState):
        _FLOWER_FEED(state, queue, nodes_mapping, f_stop)
        return
    while not f_stop.is_set():
        for node_id in waiting_nodes(state, nodes_mapping):
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
        f_stop.wait(FEED_SECONDS)


def waiting_nodes(state: InMemoryLinkState, nodes: Mapping[int, int]) -> list[int]:
    """The engine's nodes with an undelivered message, in id order (a read of the store, under its lock)."""
    with state.lock:
        dst = {m.metadata.dst_node_id for m in state.message_ins_store.values() if m.metadata.delivered_at == ""}
    return sorted(n for n in dst if n in nodes)


@contextmanager
def fast_engine() -> Iterator[bool]:
    """Flower's engine fed by ``feed`` inside the block; yields whether it is (False: Flower's loop, with the reason
    logged)."""
    if not flwr.__version__.startswith(TESTED_FLWR):
        log.warning("simulation engine: Flower's own message loop (fedface's feed is written for flwr %sx, found %s)",
                    TESTED_FLWR, flwr.__version__)
        yield False
        return
    vce_api.add_messages_to_queue = feed
    try:
        yield True
    finally:
        vce_api.add_messages_to_queue = _FLOWER_FEED
