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


def test_synthetic_faces_are_drawn_once_per_machine(monkeypatch):
    """A second process (here: the in-memory memo dropped) maps the drawing from the cache instead of drawing again,
    and gets exactly the faces the generator draws."""
    from fedface.data import sources, synthetic

    first = load_faces("synthetic", num_identities=7, images_per_identity=3, seed=5)
    monkeypatch.setattr(sources, "_MEMORY", {})
    monkeypatch.setattr(synthetic, "_render", lambda *a: pytest.fail("drew the faces again"))
    again = load_faces("synthetic", num_identities=7, images_per_identity=3, seed=5)
    monkeypatch.undo()
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert torch.equal(again.images, synthetic.synthetic_faces(7, 3, seed=5).images)  # the plain drawing


def test_a_process_holds_only_the_cached_faces_it_reads():
    """The cache is memory-mapped: mapping a 60 MB set, checking its checksum and reading one client's 16 faces costs a
    few MB of a fresh process's memory (the kernel maps file pages in folios of up to 2 MB, so faces far apart each
    cost a folio -- shared with every other process mapping the file); loading it whole (the control: the code
    before) costs the whole set."""
    import json
    import subprocess
    import sys

    from fedface.data.sources import _shared_faces

    count = 5000
    _shared_faces("faces-memtest", count,
                  lambda: np.random.default_rng(0).integers(0, 256, (count, 112, 112), dtype=np.uint8))
    probe = f"""
import json, numpy as np, psutil, pytest, torch
from fedface.data.sources import _shared_faces, cache_dir
rss = psutil.Process().memory_info
torch.zeros(4, 112, 112, dtype=torch.uint8)[torch.arange(2)]  # torch's first indexing is not the dataset's
before = rss().rss
faces = _shared_faces("faces-memtest", {count}, lambda: pytest.fail("the cache was not used"))
some = torch.from_numpy(faces)[torch.arange(2000, 2016)]
mapped = rss().rss - before
whole = np.load(cache_dir() / "faces-memtest.npy")
print(json.dumps([mapped, rss().rss - before - mapped, bool(np.array_equal(some.numpy(), whole[2000:2016]))]))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    mapped, loaded, same = json.loads(out.stdout.splitlines()[-1])
    assert same and mapped < 8 * 2**20 and loaded > 0.9 * count * 112 * 112, (mapped, loaded)


def test_a_worker_keeps_only_its_clients_faces():
    """A simulation worker reads each client's few faces with ``FaceDataset.take``, from the cache file: 40 clients of
    4 faces scattered over a 60 MB set cost < 8 MB of a fresh process. Read through the map instead (the code before),
    the kernel maps each touched page-cache folio (up to 2 MB) whole, so such a worker came to hold the whole set."""
    import json
    import subprocess
    import sys

    from fedface.data.sources import _shared_faces

    count = 5000
    _shared_faces("faces-memtest", count,
                  lambda: np.random.default_rng(0).integers(0, 256, (count, 112, 112), dtype=np.uint8))
    probe = f"""
import json, sys, numpy as np, psutil, pytest, torch
from fedface.data import FaceDataset
from fedface.data.sources import _shared_faces, face_file
rss = psutil.Process().memory_info
faces = _shared_faces("faces-memtest", {count}, lambda: pytest.fail("the cache was not used"))
data = FaceDataset(torch.from_numpy(faces), torch.zeros({count}, dtype=torch.long), ["x"], file=face_file(faces))
clients = [np.arange(c, c + 4) for c in np.random.default_rng(1).choice({count} - 4, 40, replace=False)]
data.take([0]); torch.from_numpy(faces)[torch.arange(2)]  # first calls' own allocations are not the faces'
before = rss().rss
read = [data.take(c) if sys.argv[1] == "take" else data.images[torch.from_numpy(c)] for c in clients]
grown = rss().rss - before
whole = np.load(data.file.path)
print(json.dumps([grown, all(np.array_equal(r.numpy(), whole[c]) for r, c in zip(read, clients))]))
"""
    grown = {}
    for mode in ("take", "map"):
        out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True)
        grown[mode], same = json.loads(out.stdout.splitlines()[-1])
        assert same, mode
    assert grown["take"] < 8 * 2**20, grown


def test_synthetic_faces_are_identity_structured_and_seeded():
    a = load_faces("synthetic", num_identities=20, images_per_identity=5, seed=3)
    b = load_faces("synthetic", num_identities=20, images_per_identity=5, seed=3)
    assert torch.equal(a.images, b.images) and a.num_identities == 20 and len(a) == 100
    x = a.images.float().reshape(20, 5, -1)
    within = (x - x.mean(1, keepdim=True)).pow(2).mean()
    between = (x.mean(1) - x.mean((0, 1))).pow(2).mean()
    assert between > 0.5 * within  # identities differ by more than the per-image jitter
