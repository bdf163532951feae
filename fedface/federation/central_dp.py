"""Central differential privacy of the federated model (``federation.dp``): settings, labels, and which arrays it covers.

Central DP (DP-FedAvg, McMahan et al. 2018, https://arxiv.org/abs/1710.06963): each client's model update
``w_k - w`` is clipped to L2 norm ``C`` (FlatClip), the clipped updates are averaged over the ``m`` sampled clients,
and the server adds Gaussian noise of std ``z * C / m`` to the average. The clipping and the noise are Flower's own
(``flwr.serverapp.strategy.DifferentialPrivacy{Server,Client}SideFixedClipping``, ``flwr.clientapp.mod.
fixedclipping_mod``; glued in ``strategies.central_dp`` / ``clients.central_dp``); this module holds what is not Flower:

- ``server_fixed``: the server clips each reply, averages, adds noise;
- ``client_fixed``: each client clips its own update (Flower's mod) before replying; the server averages and adds noise.

In both the **noise is added by the server** -- the attacker of this project (``attack=...``): it sees every
individual update before any noise, so central DP is *no protection against the server*. It protects the released
global model from an outside observer (another client, whoever receives the final model). Every table says so.

What it covers: the floating-point arrays that travel (weights, BatchNorm affine parameters and running statistics).
Integer buffers (BatchNorm's ``num_batches_tracked``, a step counter unused by momentum BatchNorm) do not travel under
central DP: Flower's FlatClip scales every array of the update in place (``array *= scaling_factor``), which raises
``UFuncTypeError`` on an int64 array, leaves a 0-d int array unscaled while its delta (the local step count) still
enters the norm -- over-clipping every float parameter -- and its noise is truncated to integers. So they stay on the
client, like FedBN's local BatchNorm (``federation.params.federated_state(floats_only=True)``). Not covered: the
MixUp policy update, the k-histograms and the metrics (Flower's wrappers do not touch metrics either).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

DP_MODES = ("none", "server_fixed", "client_fixed")
#: results.json ``privacy_against_server`` of a run with central DP
PRIVACY_AGAINST_SERVER = "none (noise added by the server)"
#: the label every table puts on a central-DP row
THREAT_NOTE = "no protection against the server"


@dataclass(frozen=True)
class CentralDP:
    mode: str                  # server_fixed | client_fixed
    noise_multiplier: float    # z
    clipping_norm: float       # C
    num_sampled_clients: int   # m

    @property
    def noise_std(self) -> float:
        """Std of the Gaussian noise added to every coordinate of the average: z * C / m (flwr ``compute_stdv``)."""
        return float(self.noise_multiplier * self.clipping_norm / self.num_sampled_clients)

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "noise_multiplier": self.noise_multiplier, "clipping_norm": self.clipping_norm,
                "num_sampled_clients": self.num_sampled_clients, "noise_std": self.noise_std,
                "privacy_against_server": PRIVACY_AGAINST_SERVER,
                "covers": "floating-point model arrays only (integer buffers stay on the clients; the MixUp "
                          "policy update and metrics are not noised)"}


def dp_mode(fed: Mapping[str, Any]) -> str:
    mode = str(fed.get("dp", "none") or "none")
    if mode not in DP_MODES:
        raise ValueError(f"federation.dp={mode!r}; known: {', '.join(DP_MODES)}")
    return mode


def sampled_per_round(fed: Mapping[str, Any]) -> int:
    """Nodes FedAvg samples per round when all ``num_clients`` are connected: max(int(n * fraction_train),
    min_train_nodes) (flwr/serverapp/strategy/fedavg.py, FedAvg.configure_train)."""
    return max(int(int(fed["num_clients"]) * float(fed["fraction_train"])), int(fed["min_train_nodes"]))


def central_dp(fed: Mapping[str, Any]) -> CentralDP | None:
    """The run's central-DP settings (None with ``federation.dp=none``); one ValueError naming the bad key."""
    mode = dp_mode(fed)
    if mode == "none":
        return None
    p = dict(fed.get("dp_params") or {})
    unknown = set(p) - {"noise_multiplier", "clipping_norm", "num_sampled_clients"}
    if unknown:
        raise ValueError(f"federation.dp_params: unknown {', '.join(sorted(unknown))}; known: noise_multiplier, "
                         "clipping_norm, num_sampled_clients")
    z, c = float(p.get("noise_multiplier", 1.0)), float(p.get("clipping_norm", 1.0))
    m = p.get("num_sampled_clients")
    m = sampled_per_round(fed) if m is None else int(m)
    if not z >= 0:
        raise ValueError(f"federation.dp_params.noise_multiplier={z} must be >= 0")
    if not c > 0:
        raise ValueError(f"federation.dp_params.clipping_norm={c} must be > 0")
    if m < 1:
        raise ValueError(f"federation.dp_params.num_sampled_clients={m} must be >= 1")
    return CentralDP(mode, z, c, m)


def noise_seed(seed: int, server_round: int) -> int:
    """The seed of round ``server_round``'s noise (one seed -> one result; a resumed run draws the same noise)."""
    return (int(seed) * 1_000_003 + int(server_round) * 7919) % (2**32)


def clamp_variances(arrays: Mapping[str, np.ndarray], floor: float = 1e-5) -> dict[str, np.ndarray]:
    """Noise can push a BatchNorm ``running_var`` below zero (NaN in every later forward pass): clamp it to
    ``floor``. Post-processing of the released aggregate, so the DP guarantee is unchanged."""
    return {k: np.maximum(v, np.asarray(floor, dtype=v.dtype)) if k.endswith("running_var") else v
            for k, v in arrays.items()}


def update_norm(returned: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray]) -> float:
    """L2 norm of a client's update over all the arrays it returned (what FlatClip bounds)."""
    return float(np.sqrt(sum(float(np.sum((np.asarray(returned[k], np.float64) - np.asarray(sent[k], np.float64))
                                          ** 2)) for k in returned)))
