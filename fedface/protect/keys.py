"""The federation key: the secret behind PPFR-FD's Shuffle1. Read on the client side only, never sent or logged.

Sources, first found wins: the node config key ``shuffle-key-file`` (a file on the node holding the key), the
environment variable ``FEDFACE_KEY_FILE`` (the same), then -- for simulations and tests -- node config ``shuffle-key``
and env ``FEDFACE_KEY`` holding the key itself. A file keeps the key out of process listings and shell histories.

A key is either at least 32 random bytes written as hex (``openssl rand -hex 32``), used as they are, or a passphrase
of at least 16 characters, stretched with scrypt (RFC 7914; n=2^14, r=8, p=1) into 32 bytes so that guessing it
costs the guesser ~16 MiB and tens of milliseconds per try. Hex shorter than 32 bytes is refused rather than read
as a passphrase (it is most likely a truncated key).

The public demo key is a fixed, published value -- no secret. ``allow_demo`` accepts it (and the fallback to it when
no key is set) with a warning; a federation's nodes never allow it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import string
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

ENV_VAR = "FEDFACE_KEY"
ENV_FILE = "FEDFACE_KEY_FILE"
NODE_KEY = "shuffle-key"
NODE_FILE = "shuffle-key-file"
KEY_BYTES = 32  # a hex key's minimum, and the length a passphrase is stretched to
MIN_PASSPHRASE = 16
_SALT = b"fedface/shuffle1-key/v1"  # one passphrase per federation: a fixed salt still makes every guess cost scrypt
#: Public, hence worthless as a secret: only for demos and tests that ask for it with ``allow_demo=True``.
DEMO_KEY = b"fedface-insecure-demo-key-do-not-use"
WHERE = (f"write the key to a file only the node's user can read (e.g. `openssl rand -hex 32 > key; chmod 600 key`) "
         f"and point node config `{NODE_FILE}` or env {ENV_FILE} at it")


def parse_key(value: str | bytes, source: str) -> bytes:
    """Hex of >= 32 bytes, a passphrase of >= 16 characters (scrypt-stretched), or raw bytes (>= 32) -> key bytes;
    ValueError naming ``source`` otherwise."""
    if isinstance(value, bytes):
        if len(value) < KEY_BYTES:
            raise ValueError(f"the federation key from {source} has {len(value)} bytes; at least {KEY_BYTES} are "
                             "needed")
        return bytes(value)
    text = value.strip()
    if len(text) % 2 == 0 and all(ch in string.hexdigits for ch in text):
        if len(text) < 2 * KEY_BYTES:
            raise ValueError(f"the federation key from {source} is {len(text) // 2} bytes of hex; at least "
                             f"{KEY_BYTES} are needed (openssl rand -hex {KEY_BYTES})")
        return bytes.fromhex(text)
    if len(text) < MIN_PASSPHRASE:
        raise ValueError(f"the federation key from {source} is a passphrase of {len(text)} characters; at least "
                         f"{MIN_PASSPHRASE} are needed, or {KEY_BYTES} random bytes as hex")
    return hashlib.scrypt(text.encode("utf-8"), salt=_SALT, n=2 ** 14, r=8, p=1, dklen=KEY_BYTES)


def _read_file(path: str, source: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as err:
        raise ValueError(f"the federation key file {path} (from {source}) does not read: {err.strerror}") from None


def load_key(
    node_config: Mapping | None = None,
    env: Mapping[str, str] = os.environ,
    allow_demo: bool = False,
) -> bytes:
    """The federation key from the node's key file, or its node config / environment (empty counts as missing).

    Missing, or the demo key itself: the public demo key with a WARNING if ``allow_demo``, else ValueError saying
    how to provide a key (never by putting it on a command line).
    """
    node = node_config or {}
    files = ((f"node config `{NODE_FILE}`", node.get(NODE_FILE)), (f"env {ENV_FILE}", env.get(ENV_FILE)))
    values = ((f"node config `{NODE_KEY}`", node.get(NODE_KEY)), (f"env {ENV_VAR}", env.get(ENV_VAR)))
    found = [(source, _read_file(str(path), source)) for source, path in files if path] + \
            [(source, value) for source, value in values if value is not None]
    for source, value in found:
        if not (value.strip() if isinstance(value, str) else value):
            continue
        raw = value.strip().encode() if isinstance(value, str) else value
        if raw == DEMO_KEY:
            if not allow_demo:
                raise ValueError(f"the federation key from {source} is the public demo key, which is no secret; "
                                 + WHERE)
            log.warning("the federation key from %s is the public demo key: INSECURE, for demos only", source)
            return DEMO_KEY
        return parse_key(value, source)
    if allow_demo:
        log.warning("no federation key in node config `%s` or env %s: using the insecure demo key", NODE_FILE,
                    ENV_FILE)
        return DEMO_KEY
    raise ValueError(f"no federation key on this node: {WHERE}")


def fingerprint(key: bytes, nonce: bytes) -> str:
    """HMAC-SHA256 of a per-run ``nonce`` under ``key``: equal on two nodes iff their keys are equal, and says
    nothing else about the key (the nonce keeps fingerprints of different runs unlinkable)."""
    return hmac.new(key, b"fedface key fingerprint v1|" + nonce, hashlib.sha256).hexdigest()


def same_fingerprint(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
