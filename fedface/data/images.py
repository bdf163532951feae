"""Reading face images from disk into 112x112 grayscale uint8 arrays.

Geometry choices (documented in docs/guide.md "Data and the partition table"):
- ORL (92x112): *padded* left/right with zeros to 112x112. Padding keeps every pixel and the aspect ratio; a resize
  would interpolate and change the frequency content that the masking works on.
- LFW-a (250x250, aligned): crop the box x 70-179, y 75-184 advised by ../shared/data/README.md, resize to 112.
- LFW thumbnails (150x150, unaligned RGB): central 100x100, gray, resize to 112.
- Any other folder: images already 112x112 are kept; smaller ones are padded; larger ones are centre-cropped to a
  square and resized.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

FACE_SIZE = 112
IMAGE_SUFFIXES = {".pgm", ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm"}


@dataclass(frozen=True)
class Geometry:
    """How to bring one source image to FACE_SIZE x FACE_SIZE: an optional crop box, then pad or resize."""

    crop: tuple[int, int, int, int] | None = None  # (left, top, right, bottom), Pillow convention
    fit: str = "auto"  # "pad" | "resize" | "auto"

    def key(self) -> str:
        return f"crop={self.crop},fit={self.fit}"


class CorruptImageError(ValueError):
    """An image file that Pillow cannot decode; the message names the file."""


#: the smallest and largest images read as faces: below, there is no face to see; above, a decompression bomb (a
#: small file that decodes to gigabytes) -- both refused by their header, before any pixel is decoded
MIN_SIDE, MAX_PIXELS = 16, 4096 * 4096


def read_face(path: Path, geometry: Geometry) -> np.ndarray:
    """Decode ``path`` to a (112, 112) uint8 grayscale array, or raise CorruptImageError naming the file."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if min(w, h) < MIN_SIDE or w * h > MAX_PIXELS:
                raise CorruptImageError(f"face image {path} is {w}x{h}: faces are read from {MIN_SIDE} px a side up "
                                        f"to {MAX_PIXELS} pixels")
            im.load()
            gray = im.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"cannot read face image {path}: {err}") from None
    if geometry.crop is not None:
        gray = gray.crop(geometry.crop)
    return fit_to_face(gray, geometry.fit)


def fit_to_face(gray: Image.Image, fit: str = "auto") -> np.ndarray:
    w, h = gray.size
    if (w, h) == (FACE_SIZE, FACE_SIZE):
        return np.asarray(gray, dtype=np.uint8)
    if fit == "pad" or (fit == "auto" and w <= FACE_SIZE and h <= FACE_SIZE):
        if w > FACE_SIZE or h > FACE_SIZE:
            raise ValueError(f"image of {w}x{h} cannot be padded to {FACE_SIZE}x{FACE_SIZE}")
        out = np.zeros((FACE_SIZE, FACE_SIZE), dtype=np.uint8)
        top, left = (FACE_SIZE - h) // 2, (FACE_SIZE - w) // 2
        out[top : top + h, left : left + w] = np.asarray(gray, dtype=np.uint8)
        return out
    if fit == "auto":  # larger than the face size: centre square first so faces are not squashed
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        gray = gray.crop((left, top, left + side, top + side))
    return np.asarray(gray.resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)


def list_identity_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """One folder per identity; returns (identity name, sorted image paths). Empty folders are reported by caller."""
    if not root.is_dir():
        raise FileNotFoundError(f"face folder {root} does not exist")
    out = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        out.append((person.name, files))
    return out
