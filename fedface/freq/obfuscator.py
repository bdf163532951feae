"""FaceObfuscator (paper 002): client-side obfuscation of two low-frequency AC channels and its identity recovery.

Section 4.2.2 keeps only AC01 and AC10 (zig-zag channels 1 and 2). Algorithm 1 (section 4.3.1) self-normalises each
channel (Appendix B), flips the sign of every element by (-1)^u and scales every channel by b^v, u and v random
integers (b = 2, v in [-60, 60], section 5.2). Algorithm 2 (section 4.3.2) recovers a trainable input: for channel k
with m = max|e_k| > 0, r = floor(-log_b m) and d_k = e_k * b^(r + bias), else d_k = 0. The random scale b^v cancels
exactly (r absorbs -v), so max|d_k| lies in (b^(bias-1), b^bias]; the sign flips stay (the paper leaves them, citing
InstaHide: sign has little effect on classification).

``bias`` is not given in the paper. Default 2: a self-normalised 14x14 channel has max |a| of about 2-4, so the
recovered channel is then the self-normalised one up to signs and a power-of-two rescale, keeping the input at unit
scale. Note the paper states the range as [b^bias, b^(bias+1)); with r = floor(-log_b m) as written in Algorithm 2
the maximum lands in (b^(bias-1), b^bias] -- we follow the algorithm.
"""
from __future__ import annotations

import math

import torch

from fedface.freq.ppfr import draw

#: AC01 and AC10 (row, col) = (0, 1), (1, 0): zig-zag channels 1 and 2.
CHANNELS = (1, 2)
BASE = 2.0
V_RANGE = (-60, 60)
BIAS = 2
#: beta of Appendix B's sqrt(Var + beta); the paper gives no value.
BETA = 1e-5


def obfuscate(
    a: torch.Tensor,
    generator: torch.Generator | None = None,
    base: float = BASE,
    v_range: tuple[int, int] = V_RANGE,
) -> torch.Tensor:
    """Algorithm 1, lines 5-11: e = a * (-1)^u * b^v, u per element, v per image and channel. Returns float64."""
    a = a.to(torch.float64)
    sign = torch.where(draw(torch.rand, a.shape, generator, a.device) < 0.5, -1.0, 1.0).to(torch.float64)
    low, high = v_range
    u = draw(torch.rand, (*a.shape[:2], 1, 1), generator, a.device).to(torch.float64)
    v = torch.floor(u * (high - low + 1)) + low  # uniform integer in [low, high]
    return a * sign * torch.pow(torch.tensor(base, dtype=torch.float64, device=a.device), v)


def recover(e: torch.Tensor, base: float = BASE, bias: int = BIAS) -> torch.Tensor:
    """Algorithm 2, lines 2-7: d_k = e_k * b^(r + bias), r = floor(-log_b max|e_k|); all-zero channels stay zero.

    Computed in float64 (b^v reaches 2^60); log2 of a power-of-two multiple is exact, so for b = 2 the cancellation
    of b^v is bit-exact.
    """
    e = e.to(torch.float64)
    m = e.abs().amax(dim=(-2, -1), keepdim=True)
    m = torch.where(m > 0, m, torch.ones_like(m))  # zero channels: e_k = 0 already, any scale keeps them 0
    r = torch.floor(-torch.log2(m) / math.log2(base))
    return e * torch.pow(torch.tensor(base, dtype=torch.float64, device=e.device), r + bias)
