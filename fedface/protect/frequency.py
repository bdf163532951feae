"""Frequency-domain protections: ``fr_fd`` (unmasked baseline), ``ppfr_fd`` (paper 000), ``obfuscator`` (paper 002).

Each maps raw pixels (B, 1, H, W) in [0, 255] to (B, C, H/8, W/8); the frequency stems in ``fedface.models`` take it
from there. No protection keeps the key or the unmasked coefficients: Shuffle1 is stored as its permutation only, in
a non-persistent buffer (it moves with ``.to(device)`` but is not in ``state_dict``, so it never leaves the client).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from fedface.freq import ppfr
from fedface.freq.analysis import GAMMA, ChannelGate
from fedface.freq.bdct import BLOCK, bdct, block_grid
from fedface.freq.obfuscator import (BASE, BETA, BIAS, CHANNELS, UPSCALE, V_RANGE, obfuscate, recover,
                                     upscaled_coefficients)
from fedface.freq.ppfr import mask, select_channels, self_normalize
from fedface.protect import register
from fedface.models.spec import InputSpec
from fedface.protect.base import PIXEL_CENTER, PIXEL_SCALE, Protection


def dct_input(x: torch.Tensor, keep: int = 64) -> torch.Tensor:
    """BDCT of the pixels standardised exactly as the ``none`` baseline: ibdct(dct_input(x)) == none(x)."""
    return bdct((x - PIXEL_CENTER) / PIXEL_SCALE, keep)


class FrFd(Protection):
    """`fr_fd`: paper 000's FR-FD, frequency-domain FR without masking. Config: keep (64), drop_dc (false).

    Normalisation: fixed global constants -- the pixel standardisation of ``none``, then the orthonormal BDCT -- so
    the input is an orthogonal change of basis of the raw baseline (same information, same energy, invertible by
    ``ibdct``). The paper's FR-FD row keeps 36 channels ({keep: 36}); its FR-FD-no DC row is {keep: 36, drop_dc: true}.
    """

    name = "fr_fd"
    grid = BLOCK

    def __init__(self, keep: int = 64, drop_dc: bool = False):
        super().__init__()
        self.keep, self.drop_dc = keep, drop_dc

    def output_spec(self, height: int, width: int) -> InputSpec:
        return InputSpec(self.keep - int(self.drop_dc), *block_grid(height, width))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return select_channels(dct_input(x, self.keep), self.keep, self.drop_dc)

    def describe(self) -> dict:
        return {"name": self.name, "keep": self.keep, "drop_dc": self.drop_dc}


class PpfrFd(Protection):
    """`ppfr_fd`: paper 000. Two modes, chosen by config ``analysis``:

    - false (default): the fast masking of Fig. 2(b) -- ``fedface.freq.ppfr.mask`` with the config's ``steps``
      toggles (shuffle1, normalize, mix, shuffle2, sort; all on by default). Needs the key when shuffle1 is on.
    - true: the analysis network of Fig. 2(a): the kept channels, DC included by default, times learnable a_i;
      ``aux_loss()`` is lambda * Loss_pri (eqs. 1-2). The masking steps do not run in this mode: self-normalisation
      would cancel any per-channel weight, so the gates could not learn.

    Config: keep (36), drop_dc (true; false in analysis mode), steps, norm (image: eqs. 4/7 per image, paper 000;
    channel: per channel, paper 002's variant, for the ablation), analysis (false), gamma (0.3), lam (1.0), eps
    (1e-10, self-normalisation guard).
    """

    name = "ppfr_fd"
    grid = BLOCK

    def __init__(
        self,
        key: bytes | None,
        keep: int = ppfr.KEEP,
        drop_dc: bool | None = None,
        steps: Mapping[str, bool] | None = None,
        analysis: bool = False,
        gamma: float = GAMMA,
        lam: float = 1.0,
        eps: float = ppfr.EPS,
        norm: str = "image",
    ):
        super().__init__()
        self.keep, self.analysis, self.lam, self.eps = keep, analysis, lam, eps
        self.norm = ppfr.check_norm(norm)
        self.drop_dc = (not analysis) if drop_dc is None else drop_dc
        self.steps = ppfr.check_steps(steps)
        self.needs_key = not analysis and self.steps["shuffle1"]
        selected = keep - int(self.drop_dc)
        self.gate = ChannelGate(selected, gamma) if analysis else None
        if self.needs_key and key is None:
            raise ValueError(
                "ppfr_fd with Shuffle1 needs the federation key: load it on the client with "
                "fedface.protect.keys.load_key (node config `shuffle-key` or env FEDFACE_KEY)"
            )
        permutation = ppfr.shuffle1_permutation(key, selected) if self.needs_key else None
        self.register_buffer("permutation", permutation, persistent=False)

    def output_spec(self, height: int, width: int) -> InputSpec:
        mixed = not self.analysis and self.steps["mix"]
        return InputSpec(self.keep - int(self.drop_dc) - int(mixed), *block_grid(height, width))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        f = select_channels(ppfr.coefficients(x, self.keep), self.keep, self.drop_dc)
        if self.analysis:
            return self.gate(f)
        return mask(f, self.steps, self.permutation, generator, self.eps, self.norm)

    def aux_loss(self) -> torch.Tensor | None:
        """lambda * Loss_pri of the last forward batch (eq. 2's second term), analysis mode only."""
        if self.gate is None or self.gate.loss_pri is None:
            return None
        return self.lam * self.gate.loss_pri

    def describe(self) -> dict:
        facts = {"name": self.name, "keep": self.keep, "drop_dc": self.drop_dc, "analysis": self.analysis}
        if self.analysis:
            facts.update(gamma=self.gate.gamma, lam=self.lam, weights=self.gate.weights.tolist(), kept=self.gate.kept())
        else:
            facts.update(steps=dict(self.steps), norm=self.norm)
        return facts


class Obfuscator(Protection):
    """`obfuscator`: paper 002. Face upscaled 8x (section 5.1) -> AC01 + AC10 -> self-normalisation (beta) -> sign
    flips and b^v scales (Algorithm 1) -> identity recovery (Algorithm 2). The recovery runs on the client inside its
    model, so ``model_input`` is the RECOVERED tensor (float32), 2 x 112 x 112 for a 112 px face. Config: channels
    ([1, 2]), upscale (8; 1 = the 14 x 14 block grid), base (2), v_min (-60), v_max (60), bias (3), beta (1e-5).
    """

    name = "obfuscator"

    def __init__(
        self,
        channels: tuple[int, ...] = CHANNELS,
        upscale: int = UPSCALE,
        base: float = BASE,
        v_range: tuple[int, int] = V_RANGE,
        bias: int = BIAS,
        beta: float = BETA,
    ):
        super().__init__()
        # Section 4.3.2, "Discussion on the value of b": a * b^v must stay a finite float32 for the stored feature.
        low, high = v_range
        if base <= 0 or base == 1 or low > high or max(-low, high) * abs(math.log2(base)) > 120:
            raise ValueError(f"obfuscator: base={base}, v_range={v_range} need b > 0, b != 1, v_min <= v_max and "
                             "|v log2 b| <= 120 (float32 range)")
        if isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1 or BLOCK % upscale:
            raise ValueError(f"protect.upscale={upscale!r} must be 1, 2, 4 or 8 (paper 002: 8)")
        self.channels, self.base, self.v_range, self.bias, self.beta = list(channels), base, v_range, bias, beta
        self.upscale = upscale
        # A shift by s source pixels moves the upscaled face by s * upscale: block phase kept iff 8 | s * upscale.
        self.grid = BLOCK // upscale

    def output_spec(self, height: int, width: int) -> InputSpec:
        return InputSpec(len(self.channels), *block_grid(height * self.upscale, width * self.upscale))

    def coefficients(self, x: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        """The BDCT channels this protection draws from: all ``keep`` lowest of the upscaled face, or (None) the
        kept ``channels`` only. Float64."""
        c = upscaled_coefficients(x, keep or max(self.channels) + 1, self.upscale)
        return c if keep else c[:, self.channels]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        a = self_normalize(self.coefficients(x), self.beta)
        e = obfuscate(a, generator, self.base, self.v_range)
        return recover(e, self.base, self.bias).to(torch.float32)

    def describe(self) -> dict:
        return {"name": self.name, "channels": self.channels, "upscale": self.upscale, "base": self.base,
                "v_range": list(self.v_range), "bias": self.bias, "beta": self.beta}


@register("fr_fd")
def _fr_fd(cfg: Mapping[str, Any], key: bytes | None) -> Protection:
    return FrFd(keep=int(cfg.get("keep", 64)), drop_dc=bool(cfg.get("drop_dc", False)))


def _ppfr_needs_key(cfg: Mapping[str, Any]) -> bool:
    return not cfg.get("analysis", False) and bool(ppfr.check_steps(cfg.get("steps"))["shuffle1"])


@register("ppfr_fd", needs_key=_ppfr_needs_key)
def _ppfr_fd(cfg: Mapping[str, Any], key: bytes | None) -> Protection:
    keep = cfg.get("keep", ppfr.KEEP)
    if isinstance(keep, bool) or not isinstance(keep, int) or not 2 <= keep <= 64:
        raise ValueError(f"protect.keep={keep!r} must be an integer in [2, 64] (BDCT channels kept, DC first)")
    drop_dc = cfg.get("drop_dc")
    return PpfrFd(
        key,
        keep=int(cfg.get("keep", ppfr.KEEP)),
        drop_dc=None if drop_dc is None else bool(drop_dc),
        steps=cfg.get("steps"),
        analysis=bool(cfg.get("analysis", False)),
        gamma=float(cfg.get("gamma", GAMMA)),
        lam=float(cfg.get("lam", 1.0)),
        eps=float(cfg.get("eps", ppfr.EPS)),
        norm=str(cfg.get("norm", "image")),
    )


@register("obfuscator")
def _obfuscator(cfg: Mapping[str, Any], key: bytes | None) -> Protection:
    return Obfuscator(
        channels=tuple(int(c) for c in cfg.get("channels", CHANNELS)),
        upscale=cfg.get("upscale", UPSCALE),
        base=float(cfg.get("base", BASE)),
        v_range=(int(cfg.get("v_min", V_RANGE[0])), int(cfg.get("v_max", V_RANGE[1]))),
        bias=int(cfg.get("bias", BIAS)),
        beta=float(cfg.get("beta", BETA)),
    )
