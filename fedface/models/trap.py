"""The imprint ("trap") layer of Robbing the Fed (Fowl et al. 2021) as a network: the layer, the model a malicious
server builds with it, and the ``trap`` submodule a backbone gets when its model config says ``model.imprint.bins``.

The attack that sets its weights and reads inputs back from the update is ``fedface.attacks.imprint``; the layer lives
with the networks because a model config may describe it (research mode ``attack=imprint``: a node runs it only
when its policy sets ``allow_trap``, ``fedface.federation.policy``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ImprintLayer(nn.Module):
    """Trap layer for inputs of ``shape`` (C, H, W): ``bins`` rows of measurement ``w`` with thresholds."""

    def __init__(self, shape: tuple[int, int, int], measurement: torch.Tensor, thresholds: torch.Tensor,
                 direction: torch.Tensor):
        super().__init__()
        d = int(np.prod(shape))
        if measurement.numel() != d or direction.numel() != d:
            raise ValueError(f"imprint: measurement/direction must have {d} elements for input shape {shape}")
        t = torch.as_tensor(thresholds, dtype=torch.float32).flatten()
        if len(t) < 2 or bool((t[1:] <= t[:-1]).any()):
            raise ValueError("imprint: thresholds must be strictly increasing, at least 2")
        self.shape = tuple(shape)
        self.weight = nn.Parameter(measurement.float().flatten().repeat(len(t), 1))  # (N, D)
        self.bias = nn.Parameter(-t.clone())  # (N,)
        self.register_buffer("direction", direction.float().flatten().clone())  # v (D,)

    @property
    def bins(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.nn.functional.linear(x.flatten(1), self.weight, self.bias))  # (B, N)
        return x + (h.sum(1, keepdim=True) * self.direction).view(x.shape)


class Imprinted(nn.Module):
    """The model a malicious server sends: trap layer, then the honest backbone (``.trap``, ``.backbone``)."""

    def __init__(self, trap: ImprintLayer, backbone: nn.Module):
        super().__init__()
        self.trap, self.backbone = trap, backbone

    @property
    def embedding_size(self) -> int:
        return self.backbone.embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.trap(x))


def install_trap(backbone: nn.Module, shape: tuple[int, int, int], bins: int) -> nn.Module:
    """Give ``backbone`` a ``trap`` submodule (placeholder weights, to be loaded) applied to its input: what a client
    builds when the run config it received says ``model.imprint.bins``. Returns the same backbone."""
    d = int(np.prod(shape))
    trap = ImprintLayer(tuple(shape), torch.zeros(d), torch.arange(int(bins), dtype=torch.float32), torch.zeros(d))
    backbone.add_module("trap", trap)
    backbone.register_forward_pre_hook(lambda module, args: (module.trap(args[0]), *args[1:]))
    return backbone
