"""Client side of ``federation.dp=client_fixed``: Flower's ``fixedclipping_mod``, applied only when the round asks.

One ClientApp serves every config, so this thin mod runs flwr's own ``fixedclipping_mod`` only on a train message
whose round config holds ``clipping_norm`` (put there by ``DifferentialPrivacyClientSideFixedClipping.
configure_train``, flwr/serverapp/strategy/dp_fixed_clipping.py:463); any other message passes straight through.

flwr's mod demands exactly one ArrayRecord in the instruction and in the reply (flwr/clientapp/mod/centraldp_mods.py:
64-65, 87-88), and the reply's keys in the order they were sent (:94-95). With ``mixup=adaptive`` our train message
also carries the policy weights and the reply the policy update, so they are set aside around flwr's mod: it clips
the model update only (the policy update is not covered by central DP).
"""
from __future__ import annotations

from flwr.app import Context, Message, MessageType
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from clients.records import CONFIG, POLICY, POLICY_UPDATE


def central_dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if (msg.metadata.message_type != MessageType.TRAIN or CONFIG not in msg.content.config_records
            or KEY_CLIPPING_NORM not in msg.content[CONFIG]):
        return call_next(msg, context)
    policy = msg.content.array_records.get(POLICY)
    if policy is not None:
        del msg.content[POLICY]
    aside = {}

    def train(m: Message, ctx: Context) -> Message:
        if policy is not None:
            m.content[POLICY] = policy  # the train handler gets the message as sent
        reply = call_next(m, ctx)
        if not reply.has_error() and POLICY_UPDATE in reply.content:
            aside[POLICY_UPDATE] = reply.content[POLICY_UPDATE]
            del reply.content[POLICY_UPDATE]
        return reply

    reply = fixedclipping_mod(msg, context, train)  # flwr: w_k = w + clip(w_k - w, C)
    if not reply.has_error() and aside:
        reply.content[POLICY_UPDATE] = aside[POLICY_UPDATE]
    return reply
