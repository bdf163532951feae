"""Malicious weights: the imprint ("trap") layer of Robbing the Fed (Fowl et al. 2021).

A dishonest server prepends ``ImprintLayer`` to the model it sends. Every one of its N rows measures the same
linear statistic m(x) = w . x of the flattened ``model_input``, with increasing thresholds t_0 < ... < t_{N-1}
(bias -t_i), then ReLU: h_i = relu(m(x) - t_i). The layer returns x + v * sum_i h_i, so every bin feeds the rest of
the model through the same direction v and a sample's loss gradient reaches all its active bins with one scalar
gamma_s = v . dL_s/d(out_s). Hence, for the gradients of row i's weight and bias,

    (gW_i - gW_{i+1}) / (gb_i - gb_{i+1}) = sum_{s in bin i} gamma_s x_s / sum_{s in bin i} gamma_s,

which is exactly x_s when one sample s falls in bin i (t_i < m(x_s) <= t_{i+1}). The server reads the gradient from
one client's update: with one local SGD step (fresh momentum buffer) update = -lr (c g + wd W) -- c the client's
gradient-clipping factor, common to all rows, cancels in the ratio; the server knows lr, wd and the W it sent.

What it recovers is the ``model_input``: raw (standardised) pixels for ``protect=none``, the masked tensor for a
frequency protection -- then mapped to pixels white-box with the key (``invert_mask.to_image``) or by the learned
decoder. The thresholds are quantiles of m over the attacker's *own* auxiliary faces through the protection.

Honest clients are never affected: ``malicious_model`` returns the model untouched unless ``malicious_weights`` is on,
and results of such runs carry ``"malicious_weights": true``.

Inside a federation (``fedface simulate attack=imprint``, ``strategies/malicious.py``; research mode, run only by
nodes whose policy sets ``allow_trap``) the malicious server sends ONE target node, in an attacked round, a run config
whose ``model.imprint.bins`` asks for the trap (``fedface.models.trap.install_trap``: a ``trap`` submodule of the
backbone applied to its input, so its tensors travel as ``backbone.trap.*`` like any other weight), the trap's
weights (``trap_arrays``) and a one-step round; it reads the inputs back from that node's reply
(``read_reply``) and leaves that reply out of FedAvg. Every other node gets the honest message.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from fedface.metrics.image import psnr
from fedface.models.trap import Imprinted, ImprintLayer


def build_trap(shape: tuple[int, int, int], aux_inputs: torch.Tensor, bins: int, seed: int = 0,
               strength: float = 1.0) -> ImprintLayer:
    """A trap whose thresholds are the quantiles 0, 1/N, ..., (N-1)/N of m(x) = w . x over the attacker's own
    ``aux_inputs`` (model-input space; the first one lowered below every value), w a seeded random unit vector and
    v = ``strength`` times another (small, so the model still works almost as before)."""
    gen = torch.Generator().manual_seed(int(seed))
    d = int(np.prod(shape))
    w = torch.randn(d, generator=gen)
    w = w / w.norm()
    v = torch.randn(d, generator=gen)
    v = strength * v / v.norm()
    m = aux_inputs.flatten(1).float() @ w
    q = torch.quantile(m.double(), torch.linspace(0, 1, bins + 1, dtype=torch.float64)[:-1]).float()
    q[0] = m.min() - 10 * (m.std() + 1)
    q = torch.cummax(q, 0).values
    q = q + torch.arange(bins, dtype=torch.float32) * 1e-6 * (m.std() + 1)  # strictly increasing
    return ImprintLayer(shape, w, q, v)


def malicious_model(backbone: nn.Module, trap: ImprintLayer | None, malicious_weights: bool) -> nn.Module:
    """What the server sends: the honest backbone itself unless ``malicious_weights`` is on (then a copy behind the
    trap). Honest runs are untouched by construction."""
    if not malicious_weights:
        return backbone
    if trap is None:
        raise ValueError("malicious_weights=true needs a trap layer (attack.imprint)")
    return Imprinted(copy.deepcopy(trap), copy.deepcopy(backbone))


def trap_gradients(trap_sent: dict[str, torch.Tensor], trap_returned: dict[str, torch.Tensor], lr: float,
                   weight_decay: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (clipping-scaled) gradients of the trap's weight and bias from one client's one-step SGD update:
    g = -(returned - sent) / lr - wd * sent (SGD with a fresh momentum buffer; torch's coupled weight decay)."""
    gw = -(trap_returned["weight"] - trap_sent["weight"]).double() / lr - weight_decay * trap_sent["weight"].double()
    gb = -(trap_returned["bias"] - trap_sent["bias"]).double() / lr - weight_decay * trap_sent["bias"].double()
    return gw, gb


def recover(grad_weight: torch.Tensor, grad_bias: torch.Tensor, shape: tuple[int, int, int],
            rel_eps: float = 1e-4) -> tuple[torch.Tensor, list[int]]:
    """Inputs read back from the trap's gradients: one candidate per bin whose bias-gradient difference is not ~0.
    Returns (M, C, H, W) candidates and their bin indices."""
    gw = torch.cat([grad_weight, torch.zeros_like(grad_weight[:1])])
    gb = torch.cat([grad_bias, torch.zeros_like(grad_bias[:1])])
    dw, db = gw[:-1] - gw[1:], gb[:-1] - gb[1:]
    scale = db.abs().max().clamp_min(1e-30)
    keep = (db.abs() > rel_eps * scale).nonzero().flatten()
    out = (dw[keep] / db[keep, None]).float().view(len(keep), *shape)
    return out, keep.tolist()


def recovery_rate(candidates: torch.Tensor, truth: torch.Tensor, threshold_db: float = 30.0) -> dict[str, Any]:
    """Share of the batch's true inputs that some candidate matches with PSNR > ``threshold_db`` (data range of each
    true input = its max - min), and each input's best PSNR / candidate index."""
    if len(candidates) == 0:
        return {"recovered": 0, "batch": len(truth), "rate": 0.0, "best_psnr": [None] * len(truth), "best": []}
    best, which = [], []
    for x in truth:
        rng = float(x.max() - x.min()) or 1.0
        p = psnr(candidates.double(), x.double().expand_as(candidates), rng)
        i = int(p.argmax())
        best.append(float(p[i]))
        which.append(i)
    hits = sum(b > threshold_db for b in best)
    return {"recovered": int(hits), "batch": len(truth), "rate": hits / len(truth), "threshold_db": threshold_db,
            "best_psnr": [round(b, 2) for b in best], "best": which, "candidates": len(candidates)}


# --------------------------------------------------------------------------------------------------- in a federation
def trap_arrays(trap: ImprintLayer) -> dict[str, np.ndarray]:
    """The trap as the named arrays a client loads into an ``install_trap`` backbone."""
    return {f"backbone.trap.{k}": v.detach().cpu().numpy().copy() for k, v in trap.state_dict().items()}


def server_trap(protect_cfg: dict[str, Any], aux: torch.Tensor, bins: int, strength: float, seed: int
                ) -> ImprintLayer:
    """The server's trap for this federation's ``model_input``: thresholds from the quantiles of the measurement over
    the attacker's own auxiliary faces ``aux`` (N, 1, H, W) in [0, 255] through its own copy of the protection (its own
    key, never the clients')."""
    from fedface.attacks.learned import attacker_key
    from fedface.protect import build_protection, input_spec

    protect_cfg = dict(protect_cfg)
    mine = build_protection(protect_cfg, attacker_key(protect_cfg, False, None, seed))
    mine.eval()
    with torch.no_grad():
        aux_in = mine(aux.float(), generator=torch.Generator().manual_seed(seed)).float()
    return build_trap(input_spec(protect_cfg).shape, aux_in, bins, seed, strength)


def read_reply(trap_sent: dict[str, np.ndarray], returned: dict[str, np.ndarray], lr: float, weight_decay: float,
               shape: tuple[int, int, int]) -> tuple[torch.Tensor, list[int]]:
    """Candidates read from one trapped node's reply (its one local SGD step): the trap's update -> gradients ->
    inputs (``recover``). ``trap_sent`` / ``returned``: named arrays (``backbone.trap.*``)."""
    as_t = lambda arrays: {k[len("backbone.trap."):]: torch.as_tensor(np.asarray(arrays[k]))  # noqa: E731
                           for k in arrays if k.startswith("backbone.trap.")}
    gw, gb = trap_gradients(as_t(trap_sent), as_t(returned), lr, weight_decay)
    return recover(gw, gb, tuple(shape))


__all__ = ["build_trap", "malicious_model", "read_reply", "recover", "recovery_rate", "server_trap", "trap_arrays",
           "trap_gradients"]
