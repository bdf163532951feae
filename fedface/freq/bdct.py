"""Block DCT (BDCT) of paper 000, section "Block Discrete Cosine Transform": 8x8 blocks, stride 8, orthonormal DCT-II.

The coefficients of the same frequency from all blocks form one channel, so a (B, 1, 112, 112) image becomes
(B, 64, 14, 14). Channels are in JPEG zig-zag order (Wallace 1992, the order of JPEG's entropy coder): channel 0 is
DC, then frequencies rise along anti-diagonals. Coordinates are (row, col) = (vertical, horizontal) frequency, so
channel 1 is (0, 1) -- a horizontal cosine, FaceObfuscator's AC01 -- and channel 2 is (1, 0), its AC10.

The transform is one 64x64 matmul on flattened blocks: vec(D X D^T) = (D kron D) vec(X) for row-major vec, with the
rows of D kron D reordered to zig-zag. The matrix is orthogonal, so the inverse is its transpose. No strided conv.
"""
from __future__ import annotations

import functools
import math

import torch

BLOCK = 8


def _zigzag(n: int) -> list[tuple[int, int]]:
    # Walk anti-diagonals s = row + col; even s runs bottom-left -> top-right (row falling), odd s the other way.
    order = []
    for s in range(2 * n - 1):
        rows = range(max(0, s - n + 1), min(s, n - 1) + 1)
        order += [(r, s - r) for r in (reversed(rows) if s % 2 == 0 else rows)]
    return order


#: (row, col) frequency of each BDCT channel, low -> high: ZIGZAG[c] is channel c's position in the 8x8 block.
ZIGZAG: tuple[tuple[int, int], ...] = tuple(_zigzag(BLOCK))


def dct_matrix(n: int = BLOCK, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n x n): D[k, i] = s_k cos(pi (2i + 1) k / 2n), s_0 = sqrt(1/n), else sqrt(2/n)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype)


@functools.lru_cache(maxsize=None)
def _block_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Row c of the result maps a row-major flattened 8x8 block to zig-zag coefficient c.
    d = dct_matrix()
    rows = [r * BLOCK + c for r, c in ZIGZAG]
    return torch.kron(d, d)[rows].to(device=device, dtype=dtype)


def block_grid(height: int, width: int) -> tuple[int, int]:
    """Blocks per column and per row; ValueError naming the shape when a side is not a multiple of 8."""
    if height % BLOCK or width % BLOCK:
        raise ValueError(f"BDCT needs height and width divisible by {BLOCK}, got {height}x{width}")
    return height // BLOCK, width // BLOCK


def bdct(x: torch.Tensor, keep: int = BLOCK * BLOCK) -> torch.Tensor:
    """(B, 1, H, W) float -> (B, keep, H/8, W/8) orthonormal 8x8 block DCT-II coefficients in zig-zag order.

    ``keep`` < 64 computes only the lowest ``keep`` channels (the rows of the matrix that are needed).
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"bdct expects a (B, 1, H, W) tensor, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    nh, nw = block_grid(h, w)
    # (B, 64, nh * nw): column j holds block j flattened row-major, so one matmul gives channels-first output.
    blocks = x.reshape(b, nh, BLOCK, nw, BLOCK).permute(0, 2, 4, 1, 3).reshape(b, BLOCK * BLOCK, nh * nw)
    return (_block_matrix(x.device, x.dtype)[:keep] @ blocks).view(b, keep, nh, nw)


def ibdct(c: torch.Tensor) -> torch.Tensor:
    """Inverse of ``bdct``: (B, 64, h, w) zig-zag coefficients -> (B, 1, 8h, 8w) image."""
    if c.dim() != 4 or c.shape[1] != BLOCK * BLOCK:
        raise ValueError(f"ibdct expects a (B, 64, h, w) tensor, got shape {tuple(c.shape)}")
    b, _, nh, nw = c.shape
    blocks = _block_matrix(c.device, c.dtype).T @ c.reshape(b, BLOCK * BLOCK, nh * nw)
    x = blocks.view(b, BLOCK, BLOCK, nh, nw).permute(0, 3, 1, 4, 2)
    return x.reshape(b, 1, nh * BLOCK, nw * BLOCK)
