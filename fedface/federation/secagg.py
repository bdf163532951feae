"""Secure aggregation of the federated update (``federation.secagg=true``): settings, and the one vector that is summed.

SecAgg+ (Bell et al. 2020, https://eprint.iacr.org/2020/704; Flower's ``secaggplus_mod`` / ``SecAggPlusWorkflow``,
glued in ``clients/secagg.py`` / ``strategies/secagg.py``) masks every client's vector with pairwise and private
masks that cancel in the sum: the server learns only the weighted mean ``sum_i n_i v_i / sum_i n_i`` of the vectors
``v_i`` (``n_i`` = the client's number of examples), never one ``v_i``. Flower's protocol carries exactly one list of
arrays per client (the legacy ``FitRes.parameters``; the mod empties every other ArrayRecord of the reply,
flwr/client/mod/secure_aggregation/secaggplus_mod.py:169-174), so everything the server must aggregate travels in
that one vector, laid out by ``Layout``:

- the model **deltas** ``w_i - w`` of every array that travels (small values: clipping_range 8 is far away), so the
  mean delta added to ``w`` is FedAvg's ``sum_i n_i w_i / N``;
- with ``mixup=adaptive`` the policy update ``sum_t (r - b) grad log pi`` **divided by n_i**: its weighted mean times
  ``N = sum_i n_i`` is the *sum* over clients that ``fedface.mixup.server_step`` merges (``merge_updates``);
- two small arrays: the train loss and the policy's reward sum / n_i, both divided by ``REWARD_SCALE`` (an ArcFace
  loss is tens, beyond the clipping range; the loss's weighted mean is FedAvg's weighted metric average), and the
  local steps, policy steps and k histogram, each divided by n_i (sums again, rounded to the integers they count).

Quantisation (secaggplus_mod.py:441-463): each client scales its vector by ``q = round(n_i / max_weight * Q) / Q``
(``Q`` = quantization_range), clips every entry to ``[-c, c]`` (c = clipping_range) and rounds it stochastically to
a grid of step ``2c / Q``. The server's mean is therefore exact up to ``k * 2c / Q`` on the sum of the ``k`` scaled
vectors, i.e. ``quantisation_bound`` on the mean. Entries with ``|q v| > c`` are clipped: clients count them
(``clipped`` in the round record).

What the server still learns: the aggregate, the number of examples each client reports (SecAgg+ weights by it, in
clear), the sampled node ids and each client's count of clipped entries.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from fedface.federation.central_dp import dp_mode, sampled_per_round
from fedface.mixup import PolicyUpdate

#: results.json ``per_client_attacks`` and every per-client attack entry of a SecAgg+ round
PER_CLIENT_UNAVAILABLE = "unavailable by construction (SecAgg+: the server receives only the aggregate)"
#: each SecAgg+ round's record says what the server held
SERVER_RECEIVED = "the unmasked weighted mean of the members' vectors only (no individual update)"
#: the label every table puts on a SecAgg+ row
THREAT_NOTE = "server sees only the aggregate: per-client attacks unavailable by construction; attacks ran on the " \
              "aggregate"
#: loss and reward sums travel divided by this (an ArcFace loss of up to 8 * 16 = 128 stays inside clipping range 8)
REWARD_SCALE = 16.0
_PARAMS = ("num_shares", "reconstruction_threshold", "max_weight", "clipping_range", "quantization_range",
           "modulus_range")


@dataclass(frozen=True)
class SecAgg:
    """``federation.secagg_params`` (the arguments of flwr's ``SecAggPlusWorkflow``, secaggplus_workflow.py:162-171)."""

    num_shares: int | float            # int: shares per client; float: share of the sampled clients (1.0: all)
    reconstruction_threshold: int | float  # shares needed to unmask; float: share of num_shares
    max_weight: float | None           # a client's weight is n_i / max_weight (<= 1); None: the largest shard
    clipping_range: float              # c: every entry of n_i / max_weight * v_i is clipped to [-c, c]
    quantization_range: int            # Q: [-c, c] is mapped to the integers [0, Q)
    modulus_range: int                 # masks are drawn from [0, modulus_range); a power of 2 above Q * clients

    @property
    def step(self) -> float:
        """The quantisation grid step 2c / Q."""
        return 2.0 * self.clipping_range / self.quantization_range

    def quantisation_bound(self, clients: int, total_examples: int, max_weight: float) -> float:
        """Largest error of one entry of the unmasked weighted mean: ``clients`` stochastic roundings of at most one
        step each, divided by the summed weights ``total_examples / max_weight`` (secaggplus_workflow.py:639-650)."""
        return clients * self.step * max_weight / total_examples

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "quantisation_step": self.step, "per_client_attacks": PER_CLIENT_UNAVAILABLE}


def secagg_settings(fed: Mapping[str, Any]) -> SecAgg | None:
    """The run's SecAgg+ settings (None without ``federation.secagg``); one ValueError naming the bad key."""
    if not fed.get("secagg", False):
        return None
    p = dict(fed.get("secagg_params") or {})
    unknown = set(p) - set(_PARAMS)
    if unknown:
        raise ValueError(f"federation.secagg_params: unknown {', '.join(sorted(unknown))}; known: {', '.join(_PARAMS)}")
    if dp_mode(fed) != "none":
        # server_fixed clips each individual update, which the server never sees under SecAgg+; client_fixed would
        # need the noise on the secure aggregate, which flwr's DP wrappers (Message-API replies) cannot reach
        raise ValueError(f"federation.secagg=true with federation.dp={fed['dp']}: central DP is not combined with "
                         "SecAgg+ here (server_fixed clips individual updates the server never sees); set "
                         "federation.dp=none")
    if sampled_per_round(fed) < 2 or int(fed["min_train_nodes"]) < 2:
        raise ValueError(f"federation.secagg=true needs at least 2 clients per round (SecAgg+ refuses fewer, "
                         f"secaggplus_workflow.py:308): federation.min_train_nodes={fed['min_train_nodes']}, "
                         f"num_clients={fed['num_clients']} x fraction_train={fed['fraction_train']}")
    s = SecAgg(num_shares=_number(p.get("num_shares", 1.0)),
               reconstruction_threshold=_number(p.get("reconstruction_threshold", 0.5)),
               max_weight=None if p.get("max_weight") is None else float(p["max_weight"]),
               clipping_range=float(p.get("clipping_range", 8.0)),
               quantization_range=int(p.get("quantization_range", 2**22)),
               modulus_range=int(p.get("modulus_range", 2**32)))
    if s.max_weight is not None and not s.max_weight > 0:
        raise ValueError(f"federation.secagg_params.max_weight={s.max_weight} must be > 0 (or null: the largest shard)")
    if not s.clipping_range > 0:
        raise ValueError(f"federation.secagg_params.clipping_range={s.clipping_range} must be > 0")
    if s.quantization_range < 2 or s.modulus_range <= s.quantization_range or s.modulus_range & (s.modulus_range - 1):
        raise ValueError(f"federation.secagg_params.modulus_range={s.modulus_range} must be a power of 2 above "
                         f"quantization_range={s.quantization_range} (>= 2)")
    if s.modulus_range > 2**32:  # flwr: at most 2**32 (secaggplus_workflow.py:134-137)
        raise ValueError(f"federation.secagg_params.modulus_range={s.modulus_range} must be <= 2**32")
    return s


def _number(v: Any) -> int | float:
    """flwr reads an int as a count and a float as a share (secaggplus_workflow.py:206-239): keep the type."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else float(v)


@dataclass(frozen=True)
class Layout:
    """Which arrays the one SecAgg+ vector holds, in order (the server sends it; the client fills it)."""

    arrays: list[str]   # model arrays (their deltas)
    policy: list[str]   # policy parameters (their REINFORCE sums / n_i); empty without mixup=adaptive
    num_k: int          # length of the k histogram; 0 without MixUp
    max_weight: float   # the max_weight of the round (the client counts its clipped entries with it)
    clipping_range: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Layout":
        return cls(**json.loads(text))


def client_vector(layout: Layout, sent: Mapping[str, np.ndarray], returned: Mapping[str, np.ndarray],
                  num_examples: int, train_loss: float, steps: int, policy_update: PolicyUpdate | None,
                  k_counts: Sequence[int]) -> tuple[list[np.ndarray], int]:
    """The client's SecAgg+ vector (see the module doc) and how many of its entries the quantiser will clip."""
    n = float(num_examples)
    parts = [np.asarray(returned[k], np.float64) - np.asarray(sent[k], np.float64) for k in layout.arrays]
    if layout.policy:
        parts += [g.detach().cpu().double().numpy() / n for g in policy_update.grads]
    k_counts = list(policy_update.k_counts if policy_update is not None else k_counts)
    if len(k_counts) != layout.num_k:
        raise ValueError(f"k histogram of length {len(k_counts)}, the server expects {layout.num_k} (mixup.* differs "
                         "between server and client?)")
    pol_steps, reward = (policy_update.steps, policy_update.reward_sum) if policy_update is not None else (0, 0.0)
    parts.append(np.asarray([train_loss / REWARD_SCALE, reward / n / REWARD_SCALE]))
    parts.append(np.asarray([steps / n, pol_steps / n, *[c / n for c in k_counts]]))
    weight = num_examples / layout.max_weight
    clipped = sum(int(np.count_nonzero(np.abs(p) * weight > layout.clipping_range)) for p in parts)
    return parts, clipped


@dataclass
class SecureSum:
    """What the server recovers from the unmasked mean (``decode``)."""

    arrays: dict[str, np.ndarray]       # the new global arrays: sent + mean delta (= FedAvg)
    mean_delta: dict[str, np.ndarray]
    policy_update: PolicyUpdate | None  # the clients' summed policy update (as merge_updates would give)
    train_loss: float                   # weighted by n_i, as FedAvg's metric average
    steps: int                          # local optimiser steps, summed over clients
    k_counts: list[int]
    total_examples: int


def decode(layout: Layout, mean: Sequence[np.ndarray], total_examples: int, sent: Mapping[str, np.ndarray]
           ) -> SecureSum:
    """Server side: the weighted mean of the clients' vectors back to the global model, policy sum and metrics."""
    na, npol = len(layout.arrays), len(layout.policy)
    if len(mean) != na + npol + 2:
        raise ValueError(f"SecAgg+ aggregate has {len(mean)} arrays, the layout {na + npol + 2}")
    delta = {k: np.asarray(m).reshape(np.shape(sent[k])) for k, m in zip(layout.arrays, mean[:na])}
    arrays = {k: (np.asarray(sent[k], np.float64) + d).astype(np.asarray(sent[k]).dtype) for k, d in delta.items()}
    loss, reward = np.asarray(mean[-2], np.float64) * REWARD_SCALE
    c = [int(round(v * total_examples)) for v in np.asarray(mean[-1], np.float64)]  # steps, policy steps, k counts
    update = None
    if npol:
        update = PolicyUpdate([torch.as_tensor(np.asarray(g) * total_examples, dtype=torch.float32)
                               for g in mean[na:na + npol]], c[1], c[2:], float(reward * total_examples))
    return SecureSum(arrays, delta, update, float(loss), c[0], c[2:], total_examples)
