"""Client side of ``federation.secagg=true``: Flower's ``secaggplus_mod``, applied only to SecAgg+ messages.

flwr's mod reads ``msg.content.config_records["secaggplus_configs"]`` of every TRAIN message unconditionally
(flwr/client/mod/secure_aggregation/secaggplus_mod.py:148), so on our one ClientApp -- which also serves plain train
messages -- it runs only when that record is there (as ``clients.central_dp`` does for ``fixedclipping_mod``).

In the masked-vector stage flwr hands the train handler a *legacy FitIns* (``fitins.parameters`` / ``fitins.config``,
secaggplus_workflow.py:300, :486) and reads its reply as a *legacy FitRes* (secaggplus_mod.py:169), of which only
``FitRes.parameters`` is masked and summed; it then empties every ArrayRecord of the reply (:173-174) -- so the policy
update could not travel beside it. This mod translates: FitIns -> our ordinary train message (``arrays``, ``config``,
``policy``), our handler trains as always, and its reply -> one FitRes vector laid out by
``fedface.federation.secagg`` (model deltas, policy update / n, scalars). The FitRes metrics travel in clear: they hold
only this client's count of entries the quantiser clips. Its ``num_examples`` is the SecAgg+ weight (also in clear).

The quantiser rounds stochastically with numpy's global generator (flwr/common/secure_aggregation/quantization.py:
23-31): it is seeded per client and round here (one seed -> one result) and restored afterwards.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from fedface.federation.client import client_seed
from fedface.federation.secagg import Layout, client_vector
from fedface.mixup import PolicyUpdate
from clients.records import (ARRAYS, CONFIG, METRICS, POLICY_UPDATE, RUN_CONFIG, SECAGG_CLIPPED, SECAGG_LAYOUT,
                                SECAGG_NAMES, from_record, to_record)


def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)

    def train(m: Message, ctx: Context) -> Message:  # the masked-vector stage: our train handler as a legacy fit
        fitins = compat.recorddict_to_fitins(m.content, keep_input=True)
        config = dict(fitins.config)
        layout = Layout.from_json(str(config.pop(SECAGG_LAYOUT)))
        names = json.loads(str(config.pop(SECAGG_NAMES)))
        records: dict[str, dict[str, np.ndarray]] = {}
        for (record, name), array in zip(names, parameters_to_ndarrays(fitins.parameters)):
            records.setdefault(record, {})[name] = array
        sent = records[ARRAYS]
        m.content = RecordDict({**{k: to_record(v) for k, v in records.items()}, CONFIG: ConfigRecord(config)})
        reply = call_next(m, ctx)
        if reply.has_error():
            return reply
        metrics = reply.content[METRICS]
        update = None
        if POLICY_UPDATE in reply.content:
            grads = from_record(reply.content[POLICY_UPDATE])
            update = PolicyUpdate([torch.as_tensor(grads[n]) for n in layout.policy], int(metrics["policy-steps"]),
                                  [int(c) for c in metrics["k-counts"]], float(metrics["reward-sum"]))
        n = int(metrics["num-examples"])
        vector, clipped = client_vector(layout, sent, from_record(reply.content[ARRAYS]), n,
                                        float(metrics["train_loss"]), int(metrics["steps"]), update,
                                        [int(c) for c in metrics.get("k-counts", [])])
        run_seed = int(json.loads(str(config[RUN_CONFIG]))["seed"])
        np.random.seed(client_seed(run_seed, int(config["server-round"]),
                                   int(ctx.node_config.get("partition-id", 0))) % 2**32)  # flwr's stochastic rounding
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(vector), n, {SECAGG_CLIPPED: clipped})
        return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=m)

    state = np.random.get_state()
    try:
        return secaggplus_mod(msg, context, train)
    finally:
        np.random.set_state(state)
