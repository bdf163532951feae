"""Download the public face sets into a cache folder, verified by checksum (for users with internet access).

Tests never download: they call ``fetch`` with ``file://`` URLs or a pre-placed archive. Checksums are those
published with the files (scikit-learn's LFW metadata; Idiap's bob mirror for ORL).
"""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fedface.data.sources import cache_dir


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    urls: tuple[str, ...]
    digest: str
    algorithm: str = "sha256"
    extract_to: str | None = None  # folder (relative to the dataset dir) the archive unpacks into


REMOTE: dict[str, tuple[RemoteFile, ...]] = {
    "orl": (
        RemoteFile(
            "att_faces.zip",
            ("https://www.idiap.ch/software/bob/data/bob/att_faces.zip",
             "https://www.cl.cam.ac.uk/research/dtg/attarchive/pub/data/att_faces.zip"),
            "6efb25cb0d40755e9492b9c012e3348d", "md5", "orl_faces",
        ),
    ),
    "lfw": (
        RemoteFile("lfw.tgz", ("https://ndownloader.figshare.com/files/5976018",),
                   "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0", extract_to="."),
        RemoteFile("pairs.txt", ("https://ndownloader.figshare.com/files/5976006",),
                   "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592", extract_to=None),
    ),
}


class ChecksumError(ValueError):
    pass


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, dest: Path | None = None, files: tuple[RemoteFile, ...] | None = None) -> Path:
    """Download (if not already present and verified) and unpack dataset ``name`` into ``dest/name``."""
    if files is None:
        if name not in REMOTE:
            raise ValueError(f"no download known for {name!r}; known: {', '.join(sorted(REMOTE))}")
        files = REMOTE[name]
    target = Path(dest or cache_dir() / "downloads") / name
    target.mkdir(parents=True, exist_ok=True)
    for rf in files:
        path = target / rf.filename
        if not (path.exists() and file_digest(path, rf.algorithm) == rf.digest):
            _download(rf, path)
        if rf.extract_to is not None:
            _extract(path, target / rf.extract_to)
    return target


def _download(rf: RemoteFile, path: Path) -> None:
    errors = []
    tmp = path.with_suffix(path.suffix + ".part")
    for url in rf.urls:
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as err:
            errors.append(f"{url}: {err}")
            continue
        got = file_digest(tmp, rf.algorithm)
        if got != rf.digest:
            tmp.unlink(missing_ok=True)
            raise ChecksumError(f"{rf.filename} from {url}: {rf.algorithm} {got} != expected {rf.digest}")
        tmp.replace(path)
        return
    raise OSError(f"could not download {rf.filename}: " + "; ".join(errors))


def _extract(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
