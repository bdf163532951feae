"""Named face datasets and where their files live.

``load_faces(name, root=None)`` is the public entry point. The data root comes from the argument, then the
``FEDFACE_DATA`` environment variable, then ``../shared/data`` next to the repository when it exists.
Decoded images are kept on disk (``FEDFACE_CACHE``, default ~/.cache/fedface) as one uint8 .npy file keyed by the file
list, sizes and geometry, so a second run does not decode 13k JPEGs again; synthetic sets likewise, keyed by their
arguments and the generator's source. Every process memory-maps that file (copy-on-write): the processes of one machine
share a single copy through the page cache, and each holds only the pages it reads -- a simulation worker, the faces
of the clients it serves, so its memory does not grow with the dataset (docs/scale.md "Memory").
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedface.data.dataset import FaceDataset, FaceFile
from fedface.data.images import FACE_SIZE, Geometry, list_identity_folders, read_face
from fedface.data import synthetic
from fedface.data.synthetic import synthetic_faces
from fedface.io import atomic_save_npy, atomic_write_text

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FolderSource:
    subdir: str
    geometry: Geometry
    description: str


# The sets in ../shared/data (see its README.md for sources, licences and the crops used here).
FOLDER_SOURCES: dict[str, FolderSource] = {
    "orl": FolderSource("orl_faces", Geometry(fit="pad"), "ORL / AT&T, 40 people x 10, 92x112 padded to 112"),
    "lfwa": FolderSource(
        "lfwa", Geometry(crop=(70, 75, 180, 185), fit="resize"), "LFW-a aligned gray, crop x70-179 y75-184 -> 112"
    ),
    "lfw_min20": FolderSource(
        "lfw_min20", Geometry(crop=(25, 25, 125, 125), fit="resize"), "LFW thumbnails (>=20/person), centre 100 -> 112"
    ),
}
KNOWN_DATASETS = sorted([*FOLDER_SOURCES, "folder", "synthetic"])


def default_data_root() -> Path | None:
    env = os.environ.get("FEDFACE_DATA")
    if env:
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def resolve_root(root: str | os.PathLike | None) -> Path:
    path = Path(root) if root else default_data_root()
    if path is None:
        raise FileNotFoundError(
            "no face data root: set data.root=<path> or FEDFACE_DATA, or place the data in ../shared/data"
        )
    if not path.is_dir():
        raise FileNotFoundError(f"face data root {path} does not exist (data.root / FEDFACE_DATA)")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("FEDFACE_CACHE", Path.home() / ".cache" / "fedface"))


_MEMORY: dict[str, FaceDataset] = {}


def load_faces(
    name: str,
    root: str | os.PathLike | None = None,
    min_images_per_identity: int = 1,
    path: str | os.PathLike | None = None,
    **synthetic_kwargs,
) -> FaceDataset:
    """Load a named face dataset: orl, lfwa, lfw_min20, folder (``path`` = any identity-per-folder tree), synthetic."""
    if name == "synthetic":
        data = _synthetic(synthetic_kwargs)
    elif name == "folder":
        if path is None:
            raise ValueError("data=folder needs data.path=<folder with one sub-folder per identity>")
        data = load_folder(Path(path), Geometry(), name="folder")
    elif name in FOLDER_SOURCES:
        src = FOLDER_SOURCES[name]
        data = load_folder(resolve_root(root) / src.subdir, src.geometry, name=name)
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    if min_images_per_identity > 1:
        counts = data.counts()
        keep = np.flatnonzero(counts[data.labels.numpy()] >= min_images_per_identity)
        data = data.subset(keep, name=data.name)
    return data


def load_folder(folder: Path, geometry: Geometry, name: str) -> FaceDataset:
    """Every image under ``folder/<identity>/``; empty identity folders are skipped with a warning naming them."""
    people = list_identity_folders(folder)
    files, labels, names = [], [], []
    for person, paths in people:
        if not paths:
            log.warning("skipping empty identity folder %s", folder / person)
            continue
        names.append(person)
        files.extend(paths)
        labels.extend([len(names) - 1] * len(paths))
    if not files:
        raise ValueError(f"no face images found under {folder} (expected one sub-folder per identity)")
    rel = [str(f.relative_to(folder)) for f in files]
    key = _cache_key(folder, files, geometry)
    if key not in _MEMORY:
        images = _shared_faces(f"faces-{key}", len(files), lambda: _decode(files, geometry))
        _MEMORY[key] = FaceDataset(torch.from_numpy(images), torch.tensor(labels), names, rel, name,
                                   file=face_file(images))
    return _MEMORY[key]


def _synthetic(kwargs: dict) -> FaceDataset:
    """Synthetic faces, drawn once per machine (the key holds the arguments and the generator's source, so a changed
    generator never meets an old drawing)."""
    source = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()
    key = hashlib.sha256(f"synthetic|{sorted(kwargs.items())}|{source}".encode()).hexdigest()[:24]
    if key not in _MEMORY:
        stored: list[np.ndarray] = []

        def store(render: Callable[[], np.ndarray], count: int) -> np.ndarray:
            stored.append(_shared_faces(f"synthetic-{key}", count, render))
            return stored[0]

        data = synthetic_faces(**kwargs, store=store)
        _MEMORY[key] = dataclasses.replace(data, file=face_file(stored[0]))
    return _MEMORY[key]


def face_file(images: np.ndarray) -> FaceFile | None:
    """Where ``images`` lie on disk when they are memory-mapped (``FaceDataset.take`` reads them from there)."""
    return FaceFile(str(images.filename), images.offset) if isinstance(images, np.memmap) else None


def _cache_key(folder: Path, files: list[Path], geometry: Geometry) -> str:
    h = hashlib.sha256(f"{folder.resolve()}|{geometry.key()}|v1".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:24]


def _shared_faces(name: str, count: int, make: Callable[[], np.ndarray]) -> np.ndarray:
    """The uint8 (count, 112, 112) faces cached as ``<name>.npy`` (its SHA-256 beside it), memory-mapped copy-on-write.
    A truncated, foreign or altered cache file is made afresh by ``make`` with a warning, never used; a cache that
    cannot be written (a read-only home) leaves the faces in this process's memory."""
    cached = cache_dir() / f"{name}.npy"
    digest = cached.with_suffix(".sha256")
    if cached.exists():
        try:
            return _verified_map(cached, digest, count)
        except (OSError, ValueError, EOFError) as err:
            log.warning("face cache %s is unusable (%s): making the faces again", cached, err)
    arr = make()
    try:
        atomic_save_npy(cached, arr)
        atomic_write_text(digest, hashlib.sha256(arr.tobytes()).hexdigest() + "\n")
    except OSError as err:  # a read-only home must not stop a run
        log.warning("could not write face cache %s: %s", cached, err)
        return arr
    return np.load(cached, mmap_mode="c", allow_pickle=False)  # this process, too, keeps only what it reads


def _verified_map(cached: Path, digest: Path, count: int) -> np.ndarray:
    """``cached`` mapped, once its shape, dtype and SHA-256 are right. The checksum is computed by reading the file,
    not through the map, so checking does not make the whole array resident in this process."""
    arr = np.load(cached, mmap_mode="c", allow_pickle=False)
    if arr.shape != (count, FACE_SIZE, FACE_SIZE) or arr.dtype != np.uint8:
        raise ValueError(f"holds {arr.dtype}{list(arr.shape)}, expected uint8[{count}, 112, 112]")
    if not digest.exists():
        raise ValueError("it has no checksum file (an older fedface wrote it)")
    with open(cached, "rb") as fh:
        fh.seek(arr.offset)  # the pixels only, as written (file_digest reads on from here, through one small buffer)
        pixels = hashlib.file_digest(fh, "sha256").hexdigest()
    if digest.read_text().strip() != pixels:
        raise ValueError("its checksum does not match")
    return arr


def _decode(files: list[Path], geometry: Geometry) -> np.ndarray:
    from tqdm import tqdm

    return np.stack(
        [read_face(f, geometry) for f in tqdm(files, desc="decoding faces", disable=len(files) < 2000, leave=False)]
    )


def load_configured(data_cfg: Mapping) -> FaceDataset:
    """The dataset named by a ``data`` config group (a DictConfig or a plain dict)."""
    if data_cfg["name"] == "synthetic":
        return load_faces("synthetic", num_identities=int(data_cfg["num_identities"]),
                          images_per_identity=int(data_cfg["images_per_identity"]),
                          seed=int(data_cfg.get("generator_seed", 0)))
    return load_faces(data_cfg["name"], root=data_cfg.get("root"), path=data_cfg.get("path"),
                      min_images_per_identity=int(data_cfg.get("min_images_per_identity", 1)))


def load_aux(table, root: str | os.PathLike | None = None, limit: int | None = 512, seed: int = 0
             ) -> torch.Tensor | None:
    """The attacker's auxiliary faces (uint8 (N, 112, 112)): LFW-a images of ``table.aux_identities`` (people in no
    client's data and no test pair), a seeded sample of at most ``limit``. None when the table has no aux source."""
    if table.aux_source != "lfwa" or not table.aux_identities:
        return None
    lfwa = load_faces("lfwa", root)
    wanted = set(table.aux_identities)
    idx = [i for i, lab in enumerate(lfwa.labels.tolist()) if lfwa.identity_names[lab] in wanted]
    if limit is not None and len(idx) > limit:
        idx = sorted(np.random.default_rng(seed).choice(idx, limit, replace=False).tolist())
    return lfwa.take(idx)
