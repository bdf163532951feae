"""Benchmark of the frequency masking (run by `make bench`; not a test).

(a) images/s of fedface.freq.bdct vs a straightforward reference: scipy.fft.dctn per image, per 8x8 block (goal >= 30x)
(b) images/s of the full PPFR-FD masking, batch 256 of 112x112 faces (goal >= 5k img/s on 2 cores)
(c) energy on the 400 ORL faces: share in DC, and removed by dropping DC + channels 36..63 (paper 000: >90%, >94%)
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import scipy.fft
import torch

from fedface.data import load_faces
from fedface.freq import ZIGZAG, bdct, energy_report
from fedface.protect import build_protection
from fedface.protect.keys import DEMO_KEY

REPO = Path(__file__).resolve().parents[2]


def orl_faces(root: Path) -> torch.Tensor | None:
    """All 400 ORL faces as (N, 1, 112, 112) float pixels (fedface.data geometry), or None when absent."""
    try:
        return load_faces("orl", root=root).images.float()[:, None]
    except FileNotFoundError:
        return None


def reference_bdct(images: np.ndarray) -> np.ndarray:
    """The loop a first implementation would write: every image, every block, one scipy dctn."""
    n, _, h, w = images.shape
    out = np.empty((n, 64, h // 8, w // 8))
    rows, cols = zip(*ZIGZAG)
    for k in range(n):
        for i in range(h // 8):
            for j in range(w // 8):
                block = scipy.fft.dctn(images[k, 0, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8], norm="ortho")
                out[k, :, i, j] = block[rows, cols]
    return out


def images_per_second(fn, n_images: int, repeats: int) -> float:
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeats))
    return n_images / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FEDFACE_DATA", REPO.parent / "shared/data")))
    parser.add_argument("--threads", type=int, default=1, help="1: a 2-core box shared with training thrashes at 2")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reference-images", type=int, default=16, help="images for the slow scipy loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    faces = orl_faces(args.data)
    source = "ORL" if faces is not None else "random"
    pool = faces if faces is not None else torch.rand(args.batch, 1, 112, 112) * 255
    batch = pool[torch.arange(args.batch) % pool.shape[0]].contiguous()
    print(f"batch: {args.batch} {source} faces 112x112, torch threads: {args.threads}")

    ours = images_per_second(lambda: bdct(batch), args.batch, repeats=10)
    subset = batch[: args.reference_images].double().numpy()
    ref = images_per_second(lambda: reference_bdct(subset), len(subset), repeats=2)
    err = np.abs(bdct(batch[: len(subset)].double()).numpy() - reference_bdct(subset)).max()
    print(f"(a) bdct: {ours:,.0f} img/s   scipy per-block loop: {ref:,.0f} img/s   "
          f"ratio {ours / ref:,.0f}x (goal >= 30x)   max |diff| {err:.1e}")

    protection = build_protection("ppfr_fd", DEMO_KEY)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        rate = images_per_second(lambda: protection(batch, generator), args.batch, repeats=10)
    print(f"(b) PPFR-FD masking (BDCT -> 35 ch -> Shuffle1 -> norm -> mix -> Shuffle2 -> sort -> norm): "
          f"{rate:,.0f} img/s (goal >= 5,000)")

    if faces is None:
        print(f"(c) skipped: no ORL faces under {args.data / 'orl_faces'} (set FEDFACE_DATA or --data)")
        return
    report = energy_report(faces)
    print(f"(c) energy on {report['images']} ORL faces: DC {report['dc']:.2%} (paper >90%), "
          f"removed by dropping DC + channels 36..63: {report['removed']:.2%} (paper >94%)")


if __name__ == "__main__":
    main()
