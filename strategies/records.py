"""Named numpy arrays <-> Flower records, and the record keys of our messages (one home for the wire format)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

ARRAYS = "arrays"            # federated model parameters (server -> client, client -> server)
CONFIG = "config"            # round config (server -> client)
METRICS = "metrics"          # client metrics (client -> server)
POLICY = "policy"            # policy network weights (server -> client)
POLICY_UPDATE = "policy-update"  # sum (r - b) grad log pi(k) of the client's steps (client -> server)
LOCAL = "local"              # context.state: what a node keeps between rounds (local head / BN); never sent
DP_HISTORY = "dp-history"    # context.state: the node's DP-SGD accountant history (sigma, q, steps); never sent
RUN_CONFIG = "fedface-config"  # the resolved run config as JSON inside CONFIG (no secrets, no paths of nodes)
KEY_NONCE = "key-nonce"      # pre-flight (server -> client): hex nonce of this run's key fingerprints
KEY_FINGERPRINT = "key-fingerprint"  # pre-flight (client -> server): HMAC(key, nonce), never the key
# federation.secagg: keys of the legacy FitIns config / FitRes metrics (strategies/secagg.py, clients/secagg.py)
SECAGG_LAYOUT = "secagg-layout"  # fedface.federation.secagg.Layout as JSON: what the one summed vector holds
SECAGG_NAMES = "secagg-names"    # [[record, name], ...] of the FitIns parameters (global arrays, policy weights)
SECAGG_CLIPPED = "secagg-clipped"  # FitRes metric (in clear): entries of the client's vector the quantiser clips


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def record_bytes(record: ArrayRecord) -> int:
    return int(record.count_bytes())
