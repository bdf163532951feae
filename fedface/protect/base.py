"""The protection contract: what a client does to its images before they touch a trainable model.

Every protection maps a batch of raw grayscale faces ``x`` -- float tensor (B, 1, H, W) with pixel values in
[0, 255] -- to its ``model_input``: the exact tensor that enters the trainable model after every client-side step.
That tensor is what a gradient attack recovers, so it is the one thing the attack issues target.

A protection is an ``nn.Module`` so that learnable client-side pieces (the PPFR-FD analysis network) train with the
model; most protections have no parameters. Randomness that must differ per image (Shuffle2, noise, InstaHide
partners) is drawn from the ``generator`` passed to ``forward`` so that runs are reproducible from the seed.
"""
from __future__ import annotations

import torch
from torch import nn

from fedface.models.spec import InputSpec

# Pixel statistics used to standardise raw images: 127.5 maps [0, 255] onto [-1, 1] (arcface_torch convention).
PIXEL_CENTER = 127.5
PIXEL_SCALE = 127.5


class Protection(nn.Module):
    """Base class. Subclasses set ``name`` and implement ``output_spec`` and ``forward``."""

    name: str = "base"
    #: True when the transform is keyed by the federation secret (then the key must come from the client side).
    needs_key: bool = False
    #: a ``fedface.train.dp.DPConfig`` when the protection is DP-SGD on the update (``dp_sgd``): ``train_local`` then
    #: trains with per-example clipping and noise; None for input transforms.
    dp = None
    #: the pixel period the model_input is tied to: 8 for block-DCT inputs (a shift by a non-multiple of 8 changes
    #: every block's phase, which test images never see), 1 for pixel inputs. Training shifts use it
    #: (``fedface.train.loop.augment_batch``).
    grid: int = 1

    def output_spec(self, height: int, width: int) -> InputSpec:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, images: torch.Tensor) -> "Protection":
        """Fit data-dependent parts on the client's own raw images (N, 1, H, W) -- PEEP's eigenfaces. Default: none."""
        return self

    def aux_loss(self) -> torch.Tensor | None:
        """A loss term this protection adds to the FR loss during training (e.g. PPFR-FD's Loss_pri), or None."""
        return None

    def mixed_labels(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For protections that mix samples (InstaHide): (labels (B, k), weights (B, k)) of the last batch, else None.

        The training routine then uses the MixUp-ArcFace loss (``ArcFace.forward`` with weights).
        """
        return None

    def mix_spec(self) -> dict | None:
        """How this protection mixes samples (InstaHide): {k, shares, max_weight, weight_draw} as
        ``fedface.train.collapse.expected_degenerate_loss`` takes it; None for protections that do not mix."""
        return None

    def describe(self) -> dict:
        """JSON-able facts about the configured protection for results.json (never the key)."""
        return {"name": self.name}


class NoProtection(Protection):
    """`none`: raw pixels, standardised to [-1, 1]. The unprotected baseline every table compares with."""

    name = "none"

    def output_spec(self, height: int, width: int) -> InputSpec:
        return InputSpec(1, height, width)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return (x - PIXEL_CENTER) / PIXEL_SCALE
