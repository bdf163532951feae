"""Embeddings for evaluation: protection -> backbone, flip-sum (embedding of x plus of its mirror), L2-normalised."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedface.protect.base import Protection


@torch.no_grad()
def embed(backbone: nn.Module, protection: Protection, images: torch.Tensor, batch_size: int = 256,
          flip: bool = True, seed: int = 0) -> torch.Tensor:
    """uint8 (N, H, W) faces -> (N, d) unit embeddings, on CPU. The protection's randomness is seeded."""
    was_training = backbone.training, protection.training
    backbone.eval(), protection.eval()
    device = next(backbone.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].unsqueeze(1).float()
        e = backbone(protection(x, generator=gen).to(device))
        if flip:
            e = e + backbone(protection(x.flip(-1), generator=gen).to(device))
        out.append(F.normalize(e.float(), dim=1).cpu())
    backbone.train(was_training[0]), protection.train(was_training[1])
    return torch.cat(out)
