import hashlib
import io
import zipfile

import pytest

from fedface.data import load_faces
from fedface.data.fetch import ChecksumError, RemoteFile, fetch


def _zip_of_faces(tmp_path):
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in range(2):
            for i in range(2):
                img = io.BytesIO()
                Image.fromarray(np.full((112, 92), 40 * (p + i + 1), np.uint8)).save(img, format="PPM")
                zf.writestr(f"s{p + 1}/{i + 1}.pgm", img.getvalue())
    path = tmp_path / "att_faces.zip"
    path.write_bytes(buf.getvalue())
    return path


def test_fetch_verifies_checksum_and_extracts_from_a_local_url(tmp_path):
    archive = _zip_of_faces(tmp_path)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    rf = RemoteFile("att_faces.zip", (archive.as_uri(),), digest, "md5", "orl_faces")
    target = fetch("orl", tmp_path / "cache", files=(rf,))
    data = load_faces("folder", path=target / "orl_faces")
    assert data.num_identities == 2 and len(data) == 4
    fetch("orl", tmp_path / "cache", files=(rf,))  # second call: verified, not downloaded again


def test_fetch_refuses_a_wrong_checksum(tmp_path):
    archive = _zip_of_faces(tmp_path)
    rf = RemoteFile("att_faces.zip", (archive.as_uri(),), "0" * 64, "sha256", "orl_faces")
    with pytest.raises(ChecksumError, match="att_faces.zip"):
        fetch("orl", tmp_path / "cache", files=(rf,))
    assert not (tmp_path / "cache" / "orl" / "att_faces.zip").exists()


def test_fetch_unknown_dataset():
    with pytest.raises(ValueError, match="known: lfw, orl"):
        fetch("casia")
