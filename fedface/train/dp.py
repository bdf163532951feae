"""DP-SGD for local training (``protect=dp_sgd``): Abadi et al. 2016, "Deep Learning with Differential Privacy",
Algorithm 1, with Opacus (Yousefpour et al. 2021) computing per-example gradients and accounting the privacy loss.

Per step t, with sampling rate q = L / N (L the batch size, N the client's number of images):
  1. Poisson sampling: every image joins the batch independently with probability q (Algorithm 1's "random sample
     L_t with sampling probability L/N"; Opacus' ``DPDataLoader`` semantics). The batch size therefore varies, and
     may be 0 -- then the step releases noise alone, as it must: skipping it would tell the server the batch was empty.
  2. Per-example gradients g_i (Opacus ``GradSampleModule``; ArcFace's class centres through ``torch.func`` below).
  3. Clip each example's whole gradient to L2 norm C = ``max_grad_norm``: g_i / max(1, ||g_i|| / C).
  4. Add N(0, sigma^2 C^2 I), sigma = ``noise_multiplier``, to the sum, and divide by the *expected* batch size L
     (Opacus ``DPOptimizer``, ``loss_reduction="mean"``).
  5. The SGD step (momentum and weight decay act on the released noisy gradient and on public weights: post-
     processing, no extra privacy cost).
The privacy loss is accounted with the RDP accountant (Mironov 2017; Mironov, Talwar & Zhang 2019 for the sampled
Gaussian mechanism; Opacus ``RDPAccountant``): its history is a list of (sigma, q, steps), and epsilon at ``delta`` is
the client's total over *every* step it ever took on its data -- a federated client reuses its images every round,
so the history must persist across rounds (``fedface.federation.client``; the node's ``context.state``).

What it protects: each client's update against the server (and anyone who sees the model), at record (image) level.
``train.grad_clip`` (a global clip of the averaged gradient) is not applied under DP-SGD: the per-example clip C
replaces it, and clipping the noised sum again would only rescale signal and noise together.

Refused: ``mixup`` (a mixed sample draws on k records, so one example's clipped gradient no longer bounds one
record's influence and this per-example accounting would understate epsilon) and ``model.norm=batch`` (BatchNorm
mixes the examples of a batch; ``fedface.models.norm``).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from fedface.models.norm import has_batch_norm
from fedface.protect.dp import PROTECTION, DPConfig, check_compatible

# Opacus' backward hook on the stem's first layer, whose input (the images) needs no gradient: harmless, every step
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to "
                        "module outputs since no inputs require gradients")


def make_accountant(history: list | None = None):
    """Opacus' RDP accountant, resuming from ``history`` [(noise_multiplier, sample_rate, steps), ...]."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(float(s), float(q), int(n)) for s, q, n in (history or [])]
    return acc


def epsilon(accountant, delta: float) -> float:
    """epsilon spent at ``delta`` over the accountant's whole history; inf when any step had no noise, 0 before any."""
    if any(s == 0 for s, _, _ in accountant.history):
        return math.inf
    return float(accountant.get_epsilon(delta)) if accountant.history else 0.0


_REGISTERED = False


def _register_arcface() -> None:
    """Per-example gradients of ArcFace's class centres: Opacus has no grad sampler for this custom head, and its
    generic ``torch.func`` fallback passes a layer only its first input (the head also needs the labels). This one
    vmaps the exact gradient of <logits_i, dL/dlogits_i> over the batch, through the pure ``ArcFace.logits``."""
    global _REGISTERED
    if _REGISTERED:
        return
    from opacus.grad_sample import register_grad_sampler

    from fedface.models.arcface import ArcFace

    @register_grad_sampler(ArcFace)
    def arcface_grad_sample(layer: ArcFace, activations: list[torch.Tensor], backprops: torch.Tensor):
        emb, labels = activations[0], activations[1]

        def one(w, e, y, g):
            return (layer.logits(e[None], y[None], centres=w) * g[None]).sum()

        per_example = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0, 0))
        return {layer.weight: per_example(layer.weight.detach(), emb, labels, backprops)}

    _REGISTERED = True


class DPSGD:
    """One ``train_local`` call's DP-SGD: Opacus hooks on ``backbone`` + ``head``, the DP optimizer, Poisson batches
    and the accountant. ``close()`` removes the hooks, so the modules are plain again afterwards (the federated
    client keeps them between rounds)."""

    def __init__(self, cfg: DPConfig, backbone: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer,
                 n: int, batch_size: int, generator: torch.Generator, accountant=None):
        if has_batch_norm(backbone) or has_batch_norm(head):
            check_compatible(PROTECTION, "none", "batch")
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        _register_arcface()
        self.cfg, self.n = cfg, n
        self.sample_rate = batch_size / n
        self.model = GradSampleModule(nn.ModuleDict({"backbone": backbone, "head": head}), loss_reduction="mean")
        device = next(backbone.parameters()).device
        # the noise has its own generator on the parameters' device, seeded from the run's generator: reproducible
        noise = torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=cfg.noise_multiplier,
                                     max_grad_norm=cfg.max_grad_norm, expected_batch_size=batch_size,
                                     loss_reduction="mean", generator=noise)
        self.accountant = accountant if accountant is not None else make_accountant()

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """Algorithm 1's lot: each of the n images independently with probability q (Poisson sampling)."""
        return torch.nonzero(torch.rand(self.n, generator=generator) < self.sample_rate).flatten()

    def noise_step(self) -> None:
        """An empty lot: release noise alone (zero per-example gradients), as the mechanism requires."""
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
        self.optimizer.step()

    def stepped(self) -> None:
        """Account one step of the sampled Gaussian mechanism."""
        self.accountant.step(noise_multiplier=self.cfg.noise_multiplier, sample_rate=self.sample_rate)

    def close(self) -> None:
        self.model._close()  # removes Opacus' hooks and per-parameter attributes

    def report(self) -> dict[str, Any]:
        """JSON-able: epsilon (null when infinite, i.e. noise_multiplier = 0) at delta, and what it was computed from."""
        eps = epsilon(self.accountant, self.cfg.delta)
        return {"epsilon": eps if math.isfinite(eps) else None, "delta": self.cfg.delta,
                "noise_multiplier": self.cfg.noise_multiplier, "max_grad_norm": self.cfg.max_grad_norm,
                "sample_rate": self.sample_rate, "steps": sum(n for _, _, n in self.accountant.history),
                "history": [list(h) for h in self.accountant.history]}
