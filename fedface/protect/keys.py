"""The federation key: the secret behind PPFR-FD's Shuffle1. Read on the client side only, never sent or logged.

Sources, first found wins: the Flower node config key ``shuffle-key``, then the environment variable ``FEDFACE_KEY``.
A value made only of an even number of hex digits is read as hex, anything else as UTF-8; at least 16 bytes.
"""
from __future__ import annotations

import logging
import os
import string
from collections.abc import Mapping

log = logging.getLogger(__name__)

ENV_VAR = "FEDFACE_KEY"
NODE_KEY = "shuffle-key"
MIN_BYTES = 16
#: Public, hence worthless as a secret: only for demos and tests that ask for it with ``allow_demo=True``.
DEMO_KEY = b"fedface-insecure-demo-key-do-not-use"


def parse_key(value: str | bytes, source: str) -> bytes:
    """Hex or UTF-8 text (or bytes) -> key bytes; ValueError naming ``source`` when shorter than 16 bytes."""
    if isinstance(value, str):
        text = value.strip()
        is_hex = len(text) % 2 == 0 and all(ch in string.hexdigits for ch in text)
        value = bytes.fromhex(text) if is_hex else text.encode("utf-8")
    if len(value) < MIN_BYTES:
        raise ValueError(f"the federation key from {source} has {len(value)} bytes; at least {MIN_BYTES} are needed")
    return bytes(value)


def load_key(
    node_config: Mapping | None = None,
    env: Mapping[str, str] = os.environ,
    allow_demo: bool = False,
) -> bytes:
    """The federation key from ``node_config['shuffle-key']`` or ``env['FEDFACE_KEY']`` (empty counts as missing).

    Missing: the public demo key with a WARNING if ``allow_demo``, else ValueError saying where to put it.
    """
    sources = ((f"node config `{NODE_KEY}`", (node_config or {}).get(NODE_KEY)), (f"env {ENV_VAR}", env.get(ENV_VAR)))
    for source, value in sources:
        if value is not None and (value.strip() if isinstance(value, str) else value):
            return parse_key(value, source)
    if allow_demo:
        log.warning("no federation key in node config `%s` or env %s: using the insecure demo key", NODE_KEY, ENV_VAR)
        return DEMO_KEY
    raise ValueError(
        f"no federation key: set node config `{NODE_KEY}` (flower-supernode --node-config) or env {ENV_VAR} "
        f"to a secret of at least {MIN_BYTES} bytes (hex or text), e.g. {ENV_VAR}=$(openssl rand -hex 32)"
    )
