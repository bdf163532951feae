"""FaceObfuscator (paper 002): client-side obfuscation of two low-frequency AC channels and its identity recovery.

Section 4.2.2 keeps only AC01 and AC10 (zig-zag channels 1 and 2) -- of the gray image *upscaled 8 times* (section
5.1, Implementation: "upscale this image by 8 times ... the image size after BDCT transformation aligns with the
original"), so each kept channel is as large as the face (112 x 112), not the 14 x 14 block grid. The interpolation
is not named; bilinear (OpenCV's and PyTorch's default for resizing) -- nearest would leave every 8 x 8 block constant
and both AC channels zero. On a bilinearly upscaled face, AC01 / AC10 of the block over source pixel i are its
horizontal / vertical slope there: two full-resolution gradient maps. ``upscale`` = 1 is the 14 x 14 variant this
project shipped before (an ablation). Algorithm 1 (section 4.3.1) self-normalises each
channel (Appendix B), flips the sign of every element by (-1)^u and scales every channel by b^v, u and v random
integers (b = 2, v in [-60, 60], section 5.2). Algorithm 2 (section 4.3.2) recovers a trainable input: for channel k
with m = max|e_k| > 0, r = floor(-log_b m) and d_k = e_k * b^(r + bias), else d_k = 0. The random scale b^v cancels
exactly (r absorbs -v), so max|d_k| lies in (b^(bias-1), b^bias]; the sign flips stay (the paper leaves them, citing
InstaHide: sign has little effect on classification).

``bias`` is not given in the paper. Default 3: a self-normalised 112 x 112 channel of the 8x-upscaled face has
max |a| of about 5-9 (10th-90th percentile over 400 LFW-a faces; 3.3-5.1 at 14 x 14), so with the maximum recovered
into (4, 8] the channel is the self-normalised one up to signs and a power-of-two rescale of 1/2 to 1 -- the input
stays at unit scale (recovered std 0.93; 0.46 with bias 2). For ``upscale`` = 1, bias 2 does the same job.
Note the paper states the range as [b^bias, b^(bias+1)); with r = floor(-log_b m) as written in Algorithm 2
the maximum lands in (b^(bias-1), b^bias] -- we follow the algorithm.
"""
from __future__ import annotations

import functools
import math

import torch
from torch.nn import functional as F

from fedface.freq.bdct import BLOCK, bdct, block_grid
from fedface.freq.ppfr import draw

#: AC01 and AC10 (row, col) = (0, 1), (1, 0): zig-zag channels 1 and 2.
CHANNELS = (1, 2)
BASE = 2.0
V_RANGE = (-60, 60)
BIAS = 3
#: beta of Appendix B's sqrt(Var + beta); the paper gives no value.
BETA = 1e-5
#: section 5.1: the gray face is upscaled 8 times before the BDCT.
UPSCALE = 8


@functools.lru_cache(maxsize=None)
def _upscaled_dct_kernel(upscale: int, keep: int) -> torch.Tensor:
    """(keep, 1, n + 2, n + 2) float64, n = 8 / upscale: the composite "bilinear upscale, then 8x8 block DCT" as a
    stride-n convolution of the replicate-padded face.

    Both steps are linear and the composite repeats every n source pixels; block b of the upscaled face samples
    source pixels bn - 1 .. bn + n (half-pixel centres), and bilinear resizing clamps at the border exactly as
    replicate padding does. So the kernel is read off by probing the literal pipeline with unit impulses -- the
    upscaled face (64x the pixels) is never built.
    """
    n = BLOCK // upscale
    side = 3 * n  # a 3 x 3 grid of blocks once upscaled; the middle block is away from the probe's borders
    offsets = [(n - 1 + i, n - 1 + j) for i in range(n + 2) for j in range(n + 2)]
    probes = torch.zeros(len(offsets), 1, side, side, dtype=torch.float64)
    for k, (i, j) in enumerate(offsets):
        probes[k, 0, i, j] = 1.0
    up = F.interpolate(probes, scale_factor=upscale, mode="bilinear", align_corners=False)
    middle = bdct(up, keep)[:, :, 1, 1]  # (probes, keep)
    return middle.T.reshape(keep, 1, n + 2, n + 2).contiguous()


def upscaled_coefficients(x: torch.Tensor, keep: int, upscale: int = UPSCALE) -> torch.Tensor:
    """Raw pixels (B, 1, H, W) in [0, 255] -> the lowest ``keep`` zig-zag BDCT channels of the face upscaled
    ``upscale`` times (bilinear, half-pixel centres), (B, keep, H*upscale/8, W*upscale/8), float64.
    ``upscale`` divides 8 (``Obfuscator`` checks ``protect.upscale``)."""
    block_grid(x.shape[-2] * upscale, x.shape[-1] * upscale)  # ValueError naming the upscaled shape
    x = x.to(torch.float64) / 255.0  # as ppfr.coefficients: [0, 1], not centred
    if upscale == 1:
        return bdct(x, keep)
    kernel = _upscaled_dct_kernel(upscale, keep).to(x.device)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, stride=BLOCK // upscale)


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
