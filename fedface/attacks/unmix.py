"""MixUp un-mixing: recover the sources of k-way mixtures once the mixing coefficients are known.

Carlini et al., "Is Private Learning Possible with Instance Encoding?" (IEEE S&P 2021), break InstaHide in two
stages: first recover which images each encoding mixes and with what weights, then solve the resulting linear system
for the private images. Paper 001's k-way MixUp (``fedface.mixup.mix.mixup``) mixes a batch within itself, with no
sign mask, so the second stage is plain linear least squares once an attacker has the coefficients -- e.g. from the
per-mixture (label, weight) pairs that label inference reads off the soft-target gradient.

Mixture b is y_b = sum_j w[b, j] x[partners[b, j]], i.e. Y = A X with A (B, n) the mixing matrix.
"""
from __future__ import annotations

import torch


def mixing_matrix(partners: torch.Tensor, weights: torch.Tensor, n_sources: int) -> torch.Tensor:
    """A (B, n_sources) float64 with A[b, partners[b, j]] += weights[b, j] (a row may name one source twice)."""
    a = torch.zeros(partners.shape[0], n_sources, dtype=torch.float64, device=weights.device)
    return a.scatter_add_(1, partners.to(weights.device), weights.to(torch.float64))


def coefficients_from_labels(mix_labels: torch.Tensor, mix_weights: torch.Tensor,
                             source_labels: torch.Tensor) -> torch.Tensor:
    """A (B, n) from what label inference gives: each mixture's labels (B, k) and weights (B, k), sources by label.

    With distinct ``source_labels`` this is exactly ``mixing_matrix``. When m sources share a label, the attacker
    cannot tell which of them a mixture holds, so each gets 1/m of that label's weight: their m columns are equal and
    sum to the single column of label L, A loses rank (``unmix`` reports it), and ``unmix``'s minimum-norm solution
    gives each of the m sources the same image z_L -- the least-squares solution of the system with one source per
    label. z_L is a blend of the label's sources weighted by how they were mixed, not any one of them. A mixed label
    that no source carries adds nothing to A (that row then sums to less than 1).
    """
    hits = (mix_labels[:, :, None] == source_labels.to(mix_labels.device)[None, None, :]).to(torch.float64)
    per_label = hits.sum(dim=2, keepdim=True).clamp(min=1)  # sources carrying each mixed label, m
    return torch.einsum("bk,bkn->bn", mix_weights.to(torch.float64), hits / per_label)


def unmix(mixtures: torch.Tensor, a: torch.Tensor, ridge: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Sources X minimising ||A X - Y||^2 + ridge ||X||^2 for mixtures Y (B, ...) -> (X (n, ...), facts).

    One SVD, A = U S V^T, gives every case: X = V diag(S / (S^2 + ridge)) U^T Y over the singular values above
    numpy's rank tolerance (max(S) max(B, n) eps). With ridge 0 that is the minimum-norm least-squares solution
    (Moore-Penrose), exact when A has full column rank; otherwise the directions of A's null space are set to zero.
    ``facts``: rank, n_sources, determined (rank == n_sources) and the condition number of A over its n columns
    (inf when rank-deficient), which bounds how much noise in Y the solution amplifies.
    """
    if a.dim() != 2 or a.shape[0] != mixtures.shape[0]:
        raise ValueError(f"mixing matrix {tuple(a.shape)} does not match {mixtures.shape[0]} mixtures")
    n = a.shape[1]
    u, s, vh = torch.linalg.svd(a.to(device=mixtures.device, dtype=torch.float64), full_matrices=False)
    tol = s.max() * max(a.shape) * torch.finfo(torch.float64).eps
    kept = s > tol
    gain = torch.where(kept, s / (s.square() + ridge), torch.zeros_like(s))
    y = mixtures.to(torch.float64).flatten(1)
    x = vh.T @ (gain[:, None] * (u.T @ y))
    rank = int(kept.sum())
    facts = {
        "rank": rank,
        "n_sources": n,
        "determined": rank == n,
        "condition": float(s.max() / s[n - 1]) if rank == n else float("inf"),
    }
    return x.view(n, *mixtures.shape[1:]).to(mixtures.dtype), facts
