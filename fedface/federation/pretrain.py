"""Public pre-training by the server (FedFR's protocol, Liu et al. 2022): before round 1 the server trains the
backbone on the partition table's *public* identities, then the federation fine-tunes it.

Without it, a few identities per client with ``head=local`` can collapse (each client's head separates only 3-4
people). The server never holds the federation key: for a keyed protection (PPFR-FD's Shuffle1) it masks the public
faces with a throwaway key of its own. The trunk's features transfer; the stem re-adapts to the clients' key.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedface.data.partition import make_partition
from fedface.data.sources import load_configured
from fedface.models import build_head
from fedface.protect import build_protection, needs_key
from fedface.train import TrainConfig, train_local


def pretrain_public(cfg: Mapping[str, Any], backbone: nn.Module, epochs: int) -> dict[str, Any]:
    """Train ``backbone`` in place on the public identities for ``epochs``; returns facts for results.json."""
    data = load_configured(cfg["data"])
    table = make_partition(data, cfg["data"], int(cfg["seed"]), root=cfg["data"].get("root"))
    if len(table.public_idx) == 0:
        raise ValueError("federation.pretrain.epochs > 0 needs public identities: set data.split.public_identities")
    public = data.subset(table.public_idx)
    protection = build_protection(cfg["protect"], os.urandom(32) if needs_key(cfg["protect"]) else None)
    if protection.dp is not None:  # dp_sgd protects the clients' updates; public faces need no DP (same input)
        protection = build_protection("none")
    protection.fit(public.images.unsqueeze(1).float())
    head = build_head(cfg["model"], backbone.embedding_size, public.num_identities)
    tcfg = TrainConfig.from_cfg({**cfg["train"], "epochs": epochs, "steps": None})
    t0 = time.perf_counter()
    res = train_local(backbone, head, protection, public.images, public.labels, tcfg,
                      torch.Generator().manual_seed(int(cfg["seed"]) + 7))
    return {"identities": public.num_identities, "images": len(public), "epochs": epochs, "loss": res.loss,
            "seconds": time.perf_counter() - t0}
