import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fedface.data import CorruptImageError, FaceDataset, load_faces
from tests.conftest import needs_data


@needs_data("orl_faces")
def test_orl_loads_40_people_400_images_padded():
    d = load_faces("orl")
    assert isinstance(d, FaceDataset)
    assert d.images.shape == (400, 112, 112) and d.images.dtype == torch.uint8
    assert d.num_identities == 40 and len(d.labels) == 400
    assert np.all(d.counts() == 10)
    # 92 -> 112 is padding: the 10 columns on each side are zero, the face columns are not
    assert d.images[:, :, :10].max() == 0 and d.images[:, :, 102:].max() == 0
    assert d.images[:, :, 10:102].float().mean() > 50


@needs_data("lfwa")
def test_lfwa_full_set_and_min_images_filter():
    d = load_faces("lfwa")
    assert (d.num_identities, len(d)) == (5749, 13233)
    d10 = load_faces("lfwa", min_images_per_identity=10)
    assert (d10.num_identities, len(d10)) == (158, 4324)
    assert d10.images.shape[1:] == (112, 112)


@needs_data("lfw_min20")
def test_lfw_min20_thumbnails():
    d = load_faces("lfw_min20")
    assert (d.num_identities, len(d)) == (62, 3023)


def _write_folder(root, people=3, per=4, size=(100, 120)):
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"person{p}").mkdir(parents=True)
        for i in range(per):
            Image.fromarray(rng.integers(0, 255, size[::-1], dtype=np.uint8)).save(root / f"person{p}" / f"{i}.png")


def test_folder_dataset_any_layout(tmp_path):
    _write_folder(tmp_path / "faces")
    d = load_faces("folder", path=tmp_path / "faces")
    assert (d.num_identities, len(d)) == (3, 12)
    assert d.images.shape == (12, 112, 112)
    assert d.identity_names == ["person0", "person1", "person2"]


def test_corrupt_image_error_names_the_file(tmp_path):
    _write_folder(tmp_path / "faces", people=2, per=2)
    bad = tmp_path / "faces" / "person1" / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        load_faces("folder", path=tmp_path / "faces")


def test_empty_identity_folder_is_skipped_with_warning(tmp_path, caplog):
    _write_folder(tmp_path / "faces", people=2, per=2)
    (tmp_path / "faces" / "nobody").mkdir()
    with caplog.at_level(logging.WARNING):
        d = load_faces("folder", path=tmp_path / "faces")
    assert d.num_identities == 2
    assert "nobody" in caplog.text


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="known: .*orl.*synthetic"):
        load_faces("casia")


def test_synthetic_faces_are_identity_structured_and_seeded():
    a = load_faces("synthetic", num_identities=20, images_per_identity=5, seed=3)
    b = load_faces("synthetic", num_identities=20, images_per_identity=5, seed=3)
    assert torch.equal(a.images, b.images) and a.num_identities == 20 and len(a) == 100
    x = a.images.float().reshape(20, 5, -1)
    within = (x - x.mean(1, keepdim=True)).pow(2).mean()
    between = (x.mean(1) - x.mean((0, 1))).pow(2).mean()
    assert between > 0.5 * within  # identities differ by more than the per-image jitter
