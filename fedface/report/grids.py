"""Reconstruction grids: one row per named batch (true faces, recovered model inputs, recovered faces), PNG.

A multi-channel model input (frequency channels) is shown by its first channel, each tile min-max scaled on its
own -- a picture of the structure, not of the values (the scores hold those).
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import torch

from fedface.io import atomic_write_bytes


def _tile(x: torch.Tensor) -> torch.Tensor:
    x = x[0].float()
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def save_grid(path: Path, rows: Mapping[str, torch.Tensor], title: str = "", max_cols: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(max_cols, max(len(b) for b in rows.values()))
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.4 * cols, 1.5 * len(rows)), squeeze=False)
    for r, (name, batch) in enumerate(rows.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(batch):
                ax.imshow(_tile(batch[c]).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_title(name, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
