"""The experimenter's one way to the clients' federation key -- every command that must mask, unmask or score as the
clients did asks here, and gets the key parsed exactly as a client parses it (``fedface.protect.keys.load_key``).

Where the key comes from depends on who trained:
- ``centralized``: the experimenter itself trained (``fedface train``, demos, ``fedface reconstruct``), so it holds
  the key a client would read: ``FEDFACE_KEY``/``FEDFACE_KEY_FILE``, else the public demo key (logged as insecure).
- ``federation``: the clients read their own key; the experimenter has it only if it set ``FEDFACE_KEY`` or
  ``FEDFACE_KEY_FILE`` for them. A simulation without one drew a random key for its clients (``simulation_key``)
  that is gone afterwards -- then the answer is no key, with the reason.
A colluding client (threat ``knows_key``) hands the server exactly that ``federation`` key.
"""
from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fedface.protect import needs_key
from fedface.protect.keys import ENV_FILE, ENV_VAR, load_key

log = logging.getLogger(__name__)

KINDS = ("centralized", "federation")


def clients_key(protect_cfg: Mapping[str, Any] | str, kind: str = "centralized") -> tuple[bytes | None, str | None]:
    """(the clients' key, None), or (None, why the experimenter does not have it); (None, None) when the protection
    is not keyed."""
    if kind not in KINDS:
        raise ValueError(f"key source {kind!r}; known: {', '.join(KINDS)}")
    if not needs_key(protect_cfg):
        return None, None
    if kind == "federation" and not (os.environ.get(ENV_VAR) or os.environ.get(ENV_FILE)):
        return None, (f"the simulated clients' key was random and is gone (set {ENV_VAR} or {ENV_FILE} to the "
                      "federation's key): SRRA and the white-box knows_key rows are n/a")
    return load_key(None, allow_demo=True), None


def colluders_key(protect_cfg: Mapping[str, Any] | str, knows_key: bool) -> bytes | None:
    """The key a colluding client hands the server under the ``knows_key`` threat; None without that threat or when
    the experimenter does not hold the clients' key."""
    return clients_key(protect_cfg, "federation")[0] if knows_key else None


@contextmanager
def simulation_key(protect_cfg: Mapping[str, Any] | str | None = None) -> Iterator[None]:
    """Simulated clients read the key from their environment like real ones. Without ``FEDFACE_KEY``/``_FILE``, a
    fresh random key is set for the duration (this process and the Ray workers it starts): never written to a config,
    never sent, gone afterwards. ``protect_cfg`` None: draw whenever no key is set (a compare's many protections)."""
    drawn = ((protect_cfg is None or needs_key(protect_cfg))
             and not (os.environ.get(ENV_VAR) or os.environ.get(ENV_FILE)))
    if drawn:
        os.environ[ENV_VAR] = secrets.token_hex(32)
        log.info("generated a random federation key for the simulated clients (set %s to choose one)", ENV_VAR)
    try:
        yield
    finally:
        if drawn:
            os.environ.pop(ENV_VAR, None)
