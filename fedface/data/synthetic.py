"""Procedurally generated, identity-structured faces for scale tests (any number of identities and images).

Each identity draws fixed geometry (face oval, eye spacing and size, brows, nose, mouth, tone, hair line); each image
of that identity adds pose jitter (shift, scale), lighting, expression and sensor noise. Identities are therefore
separable by a face model, but not trivially (within-identity variation is comparable to between-identity steps).
Drawing is vectorised over a chunk of images with numpy.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedface.data.dataset import FaceDataset

SIZE = 112
_IDENTITY_PARAMS = {  # name: (low, high) of the per-identity draw
    "face_w": (30, 42), "face_h": (42, 52), "eye_dx": (14, 22), "eye_y": (-12, -4), "eye_r": (3.0, 6.0),
    "brow_dy": (6, 11), "brow_tilt": (-0.25, 0.25), "nose_len": (10, 20), "nose_w": (3, 7),
    "mouth_y": (14, 24), "mouth_w": (10, 20), "mouth_curve": (-0.04, 0.06), "tone": (120, 210),
    "hair": (-48, -34), "bg": (10, 80),
}


def synthetic_faces(
    num_identities: int = 50, images_per_identity: int = 10, seed: int = 0, noise: float = 6.0,
    store: Callable[[Callable[[], np.ndarray], int], np.ndarray] | None = None,
) -> FaceDataset:
    """The set; ``store(render, count)`` returns its ``count`` images from wherever it keeps them (``render`` draws
    them afresh), so a caller can share one drawing between processes (``fedface.data.sources``)."""
    if num_identities < 1 or images_per_identity < 1:
        raise ValueError("synthetic faces need data.num_identities >= 1 and data.images_per_identity >= 1")
    labels = np.repeat(np.arange(num_identities), images_per_identity)
    render = lambda: _render(labels, num_identities, seed, noise)  # noqa: E731 - drawn only when not stored
    images = store(render, len(labels)) if store else render()
    names = [f"synthetic_{i:05d}" for i in range(num_identities)]
    return FaceDataset(torch.from_numpy(images), torch.from_numpy(labels), names, [], "synthetic")


def _render(labels: np.ndarray, num_identities: int, seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ident = {k: rng.uniform(lo, hi, num_identities) for k, (lo, hi) in _IDENTITY_PARAMS.items()}
    images = np.empty((len(labels), SIZE, SIZE), dtype=np.uint8)
    chunk = 512
    for start in range(0, len(labels), chunk):
        idx = labels[start : start + chunk]
        params = {k: v[idx] for k, v in ident.items()}
        images[start : start + len(idx)] = _draw(params, rng, noise)
    return images


def _draw(p: dict[str, np.ndarray], rng: np.random.Generator, noise: float) -> np.ndarray:
    m = len(p["tone"])
    col = lambda a: a[:, None, None]  # noqa: E731 - broadcast a per-image value over the pixel grid
    # per-image pose/lighting/expression
    cx = col(56 + rng.normal(0, 2.0, m))
    cy = col(58 + rng.normal(0, 2.0, m))
    scale = col(1 + rng.normal(0, 0.03, m))
    light = col(rng.normal(0, 0.25, m))  # left-right lighting gradient
    smile = col(p["mouth_curve"] + rng.normal(0, 0.015, m))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    y, x = (yy[None] - cy) / scale, (xx[None] - cx) / scale
    img = np.broadcast_to(col(p["bg"]), (m, SIZE, SIZE)).astype(np.float32).copy()
    face = (x / col(p["face_w"])) ** 2 + (y / col(p["face_h"])) ** 2 <= 1
    shade = col(p["tone"]) * (1 + light * x / 60) - 0.15 * (y.clip(0) ** 1.2)
    img = np.where(face, shade, img)
    hair = face & (y < col(p["hair"]) + 6 * np.cos(x / 9))
    img = np.where(hair, 0.35 * col(p["tone"]), img)
    for side in (-1, 1):
        ex, ey = side * col(p["eye_dx"]), col(p["eye_y"])
        eye = ((x - ex) / (1.6 * col(p["eye_r"]))) ** 2 + ((y - ey) / col(p["eye_r"])) ** 2 <= 1
        img = np.where(eye, 40.0, img)
        pupil = (x - ex) ** 2 + (y - ey) ** 2 <= (0.45 * col(p["eye_r"])) ** 2
        img = np.where(pupil, 10.0, img)
        by = ey - col(p["brow_dy"]) + side * col(p["brow_tilt"]) * (x - ex)
        brow = (np.abs(y - by) < 1.6) & (np.abs(x - ex) < 1.8 * col(p["eye_r"]) + 2)
        img = np.where(brow, 0.3 * col(p["tone"]), img)
    nose = (np.abs(x) < col(p["nose_w"]) * (y / col(p["nose_len"])).clip(0, 1)) & (y > 0) & (y < col(p["nose_len"]))
    img = np.where(nose, 0.8 * img, img)
    mouth_line = col(p["mouth_y"]) - smile * x**2
    mouth = (np.abs(y - mouth_line) < 1.8) & (np.abs(x) < col(p["mouth_w"]))
    img = np.where(mouth, 0.45 * col(p["tone"]), img)
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return img.clip(0, 255).astype(np.uint8)
