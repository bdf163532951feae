"""A client's local update as a differentiable function of what entered its model (the FedAvg attack's simulator).

Geiping et al. 2020 ("Inverting Gradients", Sec. 5 / eq. 5) invert a FedAvg update -- several local SGD steps --
by simulating those steps on dummy data and matching the resulting weight change. ``unroll`` is that simulator. It
re-states, as a pure function of tensors, exactly the optimiser ``fedface.train.train_step`` runs on a client:
torch's SGD (momentum, dampening 0, weight decay added to the gradient, fresh momentum buffer every round because a
client builds its optimiser per round), global-norm gradient clipping (``torch.nn.utils.clip_grad_norm_``'s formula)
and the per-step learning rate. Train-mode BatchNorm uses batch statistics and updates running statistics, as the
client's did. ``tests/test_attacks.py`` checks it reproduces ``train_local`` on the same model inputs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from fedface.models.arcface import fr_loss
from fedface.train.loop import TrainConfig


class LossModel(nn.Module):
    """Backbone + ArcFace head -> the client's FR loss on a model input (one module, so one functional call)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return fr_loss(self.backbone, self.head, x, labels, weights)


@dataclass
class Step:
    """One local step as the simulator sees it: the backbone's input, its (mixed) labels and the step's lr."""

    x: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor | None
    lr: float


@dataclass(frozen=True)
class Optimiser:
    """The client's optimiser settings (the server configured them, so the threat model grants them)."""

    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0

    @classmethod
    def of(cls, cfg: TrainConfig) -> "Optimiser":
        return cls(cfg.momentum, cfg.weight_decay, cfg.grad_clip)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name (detached copies): the simulator's starting point."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def trainable_names(model: nn.Module) -> list[str]:
    """The parameters the client's optimiser updates (those with requires_grad, e.g. not the embedding BN scale)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def unroll(model: LossModel, start: Mapping[str, torch.Tensor], steps: Sequence[Step], opt: Optimiser,
           create_graph: bool = True) -> dict[str, torch.Tensor]:
    """State after running ``steps`` of the client's SGD from ``start``; differentiable in the steps' inputs (and in
    any ``start`` tensor that requires grad, e.g. an unknown local head) when ``create_graph``."""
    names = trainable_names(model)
    params = {n: start[n] for n in names}
    fixed = {n: t for n, t in start.items() if n not in params}
    buffer_names = {n for n, _ in model.named_buffers()}
    buffers = {n: t.clone() for n, t in fixed.items() if n in buffer_names}  # BN statistics are updated in place
    momentum: dict[str, torch.Tensor] = {}
    model.train()
    for step in steps:
        # a tensor outside the graph (the known global weights, or every step without create_graph) becomes a leaf
        params = {n: p if p.requires_grad else p.detach().requires_grad_() for n, p in params.items()}
        loss = functional_call(model, {**fixed, **buffers, **params}, (step.x, step.labels, step.weights))
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
        grads = _clip(grads, opt.grad_clip)
        new = {}
        for n, g in zip(names, grads):
            if g is None:  # torch's SGD skips a parameter without gradient (no weight decay either)
                new[n] = params[n]
                continue
            d = g + opt.weight_decay * params[n]
            momentum[n] = d if n not in momentum else opt.momentum * momentum[n] + d
            new[n] = params[n] - step.lr * momentum[n]
        params = new if create_graph else {n: p.detach() for n, p in new.items()}
    return {**fixed, **buffers, **params}


def _clip(grads: Sequence[torch.Tensor | None], max_norm: float) -> list[torch.Tensor | None]:
    """``clip_grad_norm_``: scale every gradient by min(1, max_norm / (global L2 norm + 1e-6))."""
    if max_norm <= 0:
        return list(grads)
    total = torch.stack([g.norm() for g in grads if g is not None]).norm()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [None if g is None else g * coef for g in grads]
