"""Server side of ``federation.secagg=true``: one train round through Flower's ``SecAggPlusWorkflow``.

flwr 1.42 has no Message-API SecAgg+ strategy: the workflow (flwr/server/workflow/secure_aggregation/
secaggplus_workflow.py) demands a ``LegacyContext`` (:185-188) holding a *legacy* ``flwr.server.strategy.Strategy``,
reads the round from ``context.state`` config record ``"config"["current_round"]`` and the global parameters from
array record ``"parameters"`` (:280-285), asks ``strategy.configure_fit`` for (client proxy, FitIns) pairs (:286; a
proxy needs ``.node_id``), runs its four stages over the Grid, and after unmasking hands the weighted mean
``sum_i n_i v_i / sum_i n_i`` to ``strategy.aggregate_fit`` as the parameters of *every* legacy result (:652-667).

``SecAggRound`` is that legacy strategy, wrapped around our ``FedFaceAvg``: ``configure_fit`` returns the per-node
instructions ``FedFaceAvg.configure_train`` built (same sampling, round config, policy weights; flattened into one
FitIns with the names in its config), ``aggregate_fit`` keeps the unmasked mean, and ``FedFaceAvg.aggregate_secure``
turns it into the new global model and policy step (``fedface.federation.secagg.decode``). So no reply of a client
ever reaches our strategy code: the server loop does not call ``aggregate_train`` in a SecAgg+ round.
"""
from __future__ import annotations

import json
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key as WorkflowKey
from flwr.serverapp import Grid

from fedface.federation.secagg import SERVER_RECEIVED, Layout, SecAgg, decode
from clients.records import (ARRAYS, CONFIG, POLICY, SECAGG_CLIPPED, SECAGG_LAYOUT, SECAGG_NAMES, from_record,
                                to_record)
from strategies.strategy import FedFaceAvg


class SecAggRound(LegacyFedAvg):
    """The legacy strategy flwr's workflow drives (only ``configure_fit`` and ``aggregate_fit`` are called)."""

    def __init__(self, strategy: FedFaceAvg, settings: SecAgg, max_weight: float, num_k: int, timeout: float):
        super().__init__()
        self.strategy, self.settings, self.max_weight, self.num_k = strategy, settings, float(max_weight), num_k
        self.timeout = timeout
        self._fitins: list[tuple[GridClientProxy, FitIns]] = []
        self._mean: tuple[list[np.ndarray], int, list[int], int] | None = None
        self._failures: list[str] = []

    def round(self, grid: Grid, server_round: int, arrays: dict[str, np.ndarray], config: ConfigRecord
              ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """One SecAgg+ train round; the new global arrays (None when the protocol halted) and the loss metric."""
        t0 = time.perf_counter()
        self._instructions(grid, server_round, arrays, config)
        s = self.settings
        workflow = SecAggPlusWorkflow(s.num_shares, s.reconstruction_threshold, max_weight=self.max_weight,
                                      clipping_range=s.clipping_range, quantization_range=s.quantization_range,
                                      modulus_range=s.modulus_range, timeout=self.timeout)
        state = RecordDict({MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round}),
                            MAIN_PARAMS_RECORD: ArrayRecord()})  # unused: configure_fit sends our own instructions
        context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=state, run_config={}),
                                strategy=self)
        counting = _CountingGrid(grid)
        self._mean, self._failures = None, []
        workflow(counting, context)
        facts = {"bytes_received": counting.received, "protocol_seconds": time.perf_counter() - t0,
                 "max_weight": self.max_weight}
        failed = [{"node": None, "reason": f} for f in self._failures]  # flwr keeps no node id with a failure
        if self._mean is None:
            halted = "SecAgg+ halted (too few clients answered a stage; see the log): global model kept"
            self.strategy.last_round.update(received=0, failed=failed, bytes_received=counting.received, k_counts=[],
                                            secagg={**facts, "halted": halted})
            return None, None
        mean, total, nodes, clipped = self._mean
        secure = decode(self._layout(arrays), mean, total, arrays)
        facts.update(clipped=clipped, quantisation_bound=s.quantisation_bound(len(nodes), total, self.max_weight),
                     total_examples=total, members=nodes, server_received=SERVER_RECEIVED)
        return self.strategy.aggregate_secure(server_round, secure, nodes, failed, facts)

    def _layout(self, sent: dict[str, np.ndarray]) -> Layout:
        policy = [] if self.strategy.policy is None else [k for k, _ in self.strategy.policy.named_parameters()]
        return Layout(list(sent), policy, self.num_k, self.max_weight, self.settings.clipping_range)

    def _instructions(self, grid: Grid, server_round: int, arrays: dict[str, np.ndarray], config: ConfigRecord
                      ) -> None:
        """Our per-node train messages, as the legacy (proxy, FitIns) pairs the workflow sends."""
        messages = self.strategy.configure_train(server_round, to_record(arrays), config, grid)
        layout = self._layout(arrays).to_json()
        self._fitins = []
        for m in messages:
            sent = {rec: from_record(m.content[rec]) for rec in (ARRAYS, POLICY) if rec in m.content}
            names = [(rec, k) for rec, a in sent.items() for k in a]
            cfg = {**dict(m.content[CONFIG]), SECAGG_LAYOUT: layout, SECAGG_NAMES: json.dumps(names)}
            ins = FitIns(ndarrays_to_parameters([sent[rec][k] for rec, k in names]), cfg)
            self._fitins.append((GridClientProxy(m.metadata.dst_node_id, grid, 0), ins))

    def configure_fit(self, server_round, parameters, client_manager):
        return self._fitins

    def aggregate_fit(self, server_round, results, failures):
        """Receives only the unmasked weighted mean, set as the parameters of every result (secaggplus_workflow.py:
        652-656); per result, the node id, its reported num_examples and its clipped-entry count (clear metrics)."""
        mean = parameters_to_ndarrays(results[0][1].parameters)
        # flwr lists an error reply of the masked-vector stage twice (secaggplus_workflow.py:517-519, :533-535)
        self._failures = list(dict.fromkeys(str(f) for f in failures))
        self._mean = (mean, sum(int(r.num_examples) for _, r in results), sorted(int(p.node_id) for p, _ in results),
                      sum(int(r.metrics.get(SECAGG_CLIPPED, 0)) for _, r in results))
        return None, {}


class _CountingGrid:
    """The Grid the workflow talks to, counting the bytes of the masked vectors that come back."""

    def __init__(self, grid: Grid):
        self.grid, self.received = grid, 0

    def send_and_receive(self, messages, *, timeout=None):
        replies = self.grid.send_and_receive(messages, timeout=timeout)
        for r in replies:
            if not r.has_error() and RECORD_KEY_CONFIGS in r.content.config_records:
                masked = r.content.config_records[RECORD_KEY_CONFIGS].get(Key.MASKED_PARAMETERS, [])
                self.received += sum(len(b) for b in masked)
        return replies
