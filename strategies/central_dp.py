"""``federation.dp=server_fixed|client_fixed``: Flower's central-DP strategy wrappers, composed with our FedFaceAvg.

Composition (why the wrapper sits *inside* FedFaceAvg): ``FedFaceAvg`` (and the malicious subclass) keeps its own
per-node messages, policy hosting, bookkeeping and attacks, and hands sampling + aggregation to ``FedFaceAvg.dp`` --
a flwr ``DifferentialPrivacy{Server,Client}SideFixedClipping`` wrapping a plain ``FedAvg``. So

- the malicious server attacks each *individual, unclipped, noise-free* reply first (``MaliciousFedFaceAvg.
  aggregate_train`` runs before ``FedFaceAvg.aggregate_train``): attacks work exactly as without DP;
- the policy update is taken out of each reply before the wrapper sees it (flwr's server-side clipping iterates
  *every* ArrayRecord of a reply against the global model's arrays, dp_fixed_clipping.py:366-383, and would fail on
  the policy update; its client-side mod demands exactly one ArrayRecord, centraldp_mods.py:64-65);
- ``preflight``, ``evaluators``, ``last_round``, ``baseline`` stay on the object the server loop holds: nothing to
  forward.

What we add to Flower's wrappers (a mixin, both modes): the noise is drawn from a per-round seed (flwr draws from the
global ``np.random``, differential_privacy.py:43-47; we seed it for the call and restore its state), BatchNorm
variances are clamped after the noise (post-processing), clients are weighted uniformly (the z*C/m calibration of
DP-FedAvg assumes each client moves the average by at most C/m; flwr's own accountant refuses unequal weights,
dp_fixed_clipping.py:176-200), and the std actually added is recorded per round.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (DifferentialPrivacyClientSideFixedClipping,
                                     DifferentialPrivacyServerSideFixedClipping, FedAvg)
from flwr.supercore.differential_privacy import compute_stdv

from fedface.federation.central_dp import CentralDP, clamp_variances, noise_seed
from clients.records import ARRAYS, CONFIG, METRICS, from_record, to_record

#: metric the server sets to 1 on every reply under central DP: FedAvg then weights clients uniformly
UNIFORM_WEIGHT = "dp-uniform-weight"


class _Seeded:
    """Seeded noise, clamped BatchNorm variances, uniform weights, and the round's DP facts in ``last``."""

    def __init__(self, strategy: FedAvg, settings: CentralDP, seed: int):
        super().__init__(strategy, settings.noise_multiplier, settings.clipping_norm, settings.num_sampled_clients)
        self.settings, self.seed = settings, int(seed)
        self._round = 0
        self.last: dict[str, Any] = {}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for r in replies:
            if not r.has_error():
                r.content[METRICS][UNIFORM_WEIGHT] = 1
        self._round = server_round
        self.last = {"mode": self.settings.mode, "noise_std": None, "clipping_norm": self.clipping_norm,
                     "num_sampled_clients": self.num_sampled_clients}
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:  # flwr skips the release when any sampled client failed (dp_fixed_clipping.py:530-536)
            self.last["skipped"] = "a sampled client failed: no release this round (flwr validate_replies)"
        if metrics is not None and UNIFORM_WEIGHT in metrics:
            del metrics[UNIFORM_WEIGHT]
        return arrays, metrics

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        state = np.random.get_state()
        np.random.seed(noise_seed(self.seed, self._round))
        try:
            noisy = super()._add_noise_to_aggregated_arrays(aggregated_arrays)  # flwr: + N(0, (z C / m)^2)
        finally:
            np.random.set_state(state)
        self.last["noise_std"] = compute_stdv(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
        return to_record(clamp_variances(from_record(noisy)))


class ServerSideFixedClipping(_Seeded, DifferentialPrivacyServerSideFixedClipping):
    """flwr's server-side fixed clipping: clips each reply's update against the arrays it recorded in
    ``configure_train`` (``current_arrays``), then FedAvg, then noise."""


class ClientSideFixedClipping(_Seeded, DifferentialPrivacyClientSideFixedClipping):
    """flwr's client-side fixed clipping: puts ``clipping_norm`` into the round config (the clients'
    ``fixedclipping_mod`` clips), then FedAvg, then noise."""

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        # flwr writes clipping_norm into the ConfigRecord it is given (dp_fixed_clipping.py:463): give it a copy
        return super().configure_train(server_round, arrays, ConfigRecord(dict(config)), grid)


def build_central_dp(settings: CentralDP | None, seed: int, **fedavg_kwargs: Any) -> _Seeded | None:
    """The DP wrapper FedFaceAvg aggregates through (None without central DP). ``fedavg_kwargs``: the sampling
    parameters FedFaceAvg itself got (fraction_train, min_train_nodes, ...)."""
    if settings is None:
        return None
    inner = FedAvg(arrayrecord_key=ARRAYS, configrecord_key=CONFIG, weighted_by_key=UNIFORM_WEIGHT, **fedavg_kwargs)
    cls = ServerSideFixedClipping if settings.mode == "server_fixed" else ClientSideFixedClipping
    return cls(inner, settings, seed)
