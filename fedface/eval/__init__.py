"""Evaluation: verification on the partition table's pairs and identification on its test identities."""
from __future__ import annotations

import torch
from torch import nn

from fedface.data.dataset import FaceDataset
from fedface.data.partition import PartitionTable
from fedface.eval.embed import embed
from fedface.eval.identification import identification_top1
from fedface.eval.verification import verification_metrics
from fedface.protect.base import Protection


def evaluate(backbone: nn.Module, protection: Protection, data: FaceDataset, table: PartitionTable,
             seed: int = 0, batch_size: int = 256) -> dict:
    """Embed every test image once, then score the pairs (cosine) and the gallery/probe identification."""
    test_idx = table.test_idx
    emb = embed(backbone, protection, data.images[torch.as_tensor(test_idx)], batch_size, seed=seed)
    pos = {int(i): k for k, i in enumerate(test_idx)}
    left = torch.as_tensor([pos[int(i)] for i in table.pairs.left])
    right = torch.as_tensor([pos[int(i)] for i in table.pairs.right])
    scores = (emb[left] * emb[right]).sum(1).numpy()
    out = verification_metrics(scores, table.pairs.same, table.pairs.fold)
    out["identification"] = identification_top1(emb, data.labels[torch.as_tensor(test_idx)].numpy(), seed)
    return out


__all__ = ["embed", "evaluate", "identification_top1", "verification_metrics"]
