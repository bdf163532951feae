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
from fedface.report.schema import ACCURACY, ACCURACY_STD, AUC, TAR_1E2, TAR_1E3, TOP1


def evaluate(backbone: nn.Module, protection: Protection, data: FaceDataset, table: PartitionTable,
             seed: int = 0, batch_size: int = 256) -> dict:
    """Embed every test image once, then score the pairs (cosine) and the gallery/probe identification."""
    test_idx = table.test_idx
    emb = embed(backbone, protection, data.take(test_idx), batch_size, seed=seed)
    pos = {int(i): k for k, i in enumerate(test_idx)}
    left = torch.as_tensor([pos[int(i)] for i in table.pairs.left])
    right = torch.as_tensor([pos[int(i)] for i in table.pairs.right])
    scores = (emb[left] * emb[right]).sum(1).numpy()
    out = verification_metrics(scores, table.pairs.same, table.pairs.fold)
    out["identification"] = identification_top1(emb, data.labels[torch.as_tensor(test_idx)].numpy(), seed)
    return out


def utility(metrics: dict) -> dict[str, float | None]:
    """``evaluate``'s nested result as the flat utility row; None where a number does not exist (a FAR that the
    impostor pairs are too few to reach, no identification probe)."""
    tar = metrics["tar_at_far"]
    return {ACCURACY: metrics["accuracy"], ACCURACY_STD: metrics["accuracy_std"], AUC: metrics["auc"],
            TAR_1E3: tar.get("0.001"), TAR_1E2: tar.get("0.01"), TOP1: metrics["identification"]["top1"]}


__all__ = ["embed", "evaluate", "identification_top1", "utility", "verification_metrics"]
