"""Named numpy arrays <-> Flower records, and the record keys of our messages (one home for the wire format)."""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from io import BytesIO

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord
from flwr.common.constant import SType

from fedface.report.schema import UTILITY_METRICS

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

#: a metric that does not exist (None) on the wire, where a MetricRecord holds numbers only; only these metrics may be
#: missing, and each is >= 0 when present (utility numbers, DP-SGD's epsilon: None when infinite)
MISSING = -1.0
OPTIONAL_METRICS = (*UTILITY_METRICS, "epsilon")


def metric_record(metrics: Mapping[str, object]) -> MetricRecord:
    """A client's metrics as a record: a missing optional metric (None) travels as ``MISSING``."""
    missing = [k for k, v in metrics.items() if v is None and k not in OPTIONAL_METRICS]
    if missing:
        raise ValueError(f"metrics {missing} are None: only {OPTIONAL_METRICS} may be missing")
    return MetricRecord({k: MISSING if v is None else v for k, v in metrics.items()})


def metrics_of(record: MetricRecord) -> dict[str, object]:
    """The metrics a record carries, ``MISSING`` optional metrics back to None."""
    return {k: None if k in OPTIONAL_METRICS and v == MISSING else v for k, v in record.items()}


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: encode(v) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: decode(v) for k, v in record.items()}


@lru_cache(maxsize=4096)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The .npy header ``np.save`` writes for a C-ordered array of this dtype and shape (what Flower's
    ``Array(ndarray)`` stores before the raw bytes)."""
    buffer = BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def encode(value: np.ndarray) -> Array:
    """``Array(value)`` byte for byte, without ``np.save``'s per-call header work: an array's header depends only on
    its dtype and shape, so it is built once per (dtype, shape). Thousands of clients x dozens of arrays a round made
    the generic path a measurable share of a round (docs/ray-cluster.md "Where a round's time goes")."""
    value = np.ascontiguousarray(value)
    if value.dtype.hasobject:
        return Array(value)  # Flower refuses object arrays (allow_pickle=False); let it say so
    header = _npy_header(value.dtype.str, tuple(value.shape))
    return Array(dtype=str(value.dtype), shape=tuple(value.shape), stype=SType.NUMPY, data=header + value.tobytes())


def decode(array: Array) -> np.ndarray:
    """``array.numpy()`` without ``np.load``'s header parsing (``ast.literal_eval`` per array): when the bytes start
    with exactly the header ``np.save`` writes for the declared dtype and shape, the rest is the raw C-ordered data.
    Anything else -- another header, a Fortran-ordered or foreign array, a wrong length -- takes Flower's own
    ``numpy()``, so a reply decodes to what Flower would have decoded."""
    if array.stype == SType.NUMPY:
        try:
            dtype, shape = np.dtype(array.dtype), tuple(int(n) for n in array.shape)
        except (TypeError, ValueError):
            return array.numpy()
        header = _npy_header(dtype.str, shape) if not dtype.hasobject else b""
        if header and array.data[:len(header)] == header and \
                len(array.data) - len(header) == dtype.itemsize * int(np.prod(shape)):
            return np.frombuffer(array.data, dtype=dtype, offset=len(header)).reshape(shape).copy()
    return array.numpy()


def record_bytes(record: ArrayRecord) -> int:
    return int(record.count_bytes())
