"""k-way MixUp of masked samples within one batch (paper 001, Sec. 4.1).

The paper's recipe: shuffle the batch k - 1 times and stack the shuffles next to the batch (a B x k "supermatrix"
whose first column is the original batch), draw a B x k weight matrix, normalise each row to sum 1 with no weight
above ``max_weight`` (0.55; MixUp/InstaHide default to 0.65), mix each row of the supermatrix with its weights, and
give the mixed sample the weighted one-hot label. A row may repeat an image (a shuffle can map i to itself), as in
the paper and in InstaHide's code.

The text does not say how the weights are drawn. Paper 001 takes the 0.65 default from InstaHide's released code
(``mixup_data`` in Huang et al.'s ``train_inside.py``), which draws |N(0, 1)|, normalises each row by its sum and
redraws a row while its largest weight exceeds the bound: ``abs_normal`` (default). ``dirichlet`` draws Exp(1)
instead (uniform on the simplex, what ``protect=instahide`` uses), with the same redraw rule.
"""
from __future__ import annotations

import torch

from fedface.freq.ppfr import draw, self_normalize

WEIGHT_DRAWS = {
    "abs_normal": lambda shape, g, device: draw(torch.randn, shape, g, device).abs(),
    "dirichlet": lambda shape, g, device: -torch.log1p(-draw(torch.rand, shape, g, device)),
}


def shuffle_partners(batch: int, k: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(B, k) sample indices: column 0 is the batch itself, columns 1..k-1 the batch shuffled k - 1 times."""
    others = draw(torch.rand, (k - 1, batch), generator, device).argsort(dim=1).T
    return torch.cat([torch.arange(batch, device=device)[:, None], others], dim=1)


def mix_weights(batch: int, k: int, max_weight: float, generator: torch.Generator | None, device: torch.device,
                how: str = "abs_normal") -> torch.Tensor:
    """(B, k) weights, rows summing to 1 with every weight <= ``max_weight``; rows over the bound are redrawn."""
    if max_weight * k <= 1.0:
        raise ValueError(f"no {k} weights summing to 1 stay below max_weight={max_weight}")
    sample = WEIGHT_DRAWS[how]
    w = sample((batch, k), generator, device)
    w = w / w.sum(dim=1, keepdim=True)
    over = w.amax(dim=1) > max_weight
    while over.any():
        redraw = sample((int(over.sum()), k), generator, device)
        w[over] = redraw / redraw.sum(dim=1, keepdim=True)
        over = w.amax(dim=1) > max_weight
    return w


def mix_with(x: torch.Tensor, partners: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Row b of the supermatrix mixed with its weights: sum_j weights[b, j] * x[partners[b, j]]. The one mixing
    formula, used by ``mixup``, InstaHide and attacks that know (or infer) the mixing structure."""
    return torch.einsum("bk,bk...->b...", weights.to(x.dtype), x[partners])


def blend(x: torch.Tensor, partners: torch.Tensor, weights: torch.Tensor, renormalize: bool = False) -> torch.Tensor:
    """A training step's mixed inputs: ``mix_with``, then (``mixup.renormalize``) each blend standardised over all its
    entries -- PPFR-FD's per-image self-normalisation (paper 000 eq. 7) applied again. Why: k images with weights
    c_i mixed have variance sum c_i^2 of one image's (about 0.5 at k=2, 0.2 at k=5), while the test inputs are single,
    unit-variance images; the network's normalisation statistics are learnt on the blends. Not in paper 001's text
    (a lever, off by default); the gradient attack replays it when it replays the mixing."""
    mixed = mix_with(x, partners, weights)
    return self_normalize(mixed, norm="image") if renormalize else mixed


def mixup(x: torch.Tensor, labels: torch.Tensor, k: int, generator: torch.Generator | None, max_weight: float = 0.55,
          how: str = "abs_normal", renormalize: bool = False
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix every sample of ``x`` (B, ...) with k - 1 others of the batch -> (mixed x, labels (B, k), weights (B, k),
    partners (B, k)).

    ``labels``/``weights`` are the MixUp labels: ``ArcFace.forward(emb, labels, weights)`` (Algorithm 1) and
    ``soft_targets(labels, weights, C)`` take them as they are; ``partners`` is the mixing structure (sample indices).
    """
    partners = shuffle_partners(x.shape[0], k, generator, x.device)
    weights = mix_weights(x.shape[0], k, max_weight, generator, x.device, how)
    return blend(x, partners, weights, renormalize), labels.to(x.device)[partners], weights, partners
