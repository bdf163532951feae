"""The bad-input battery (docs/guide.md "Using it"): wrong types, ranges, choices, files and deploy files.

Every case must end in one line on stderr that names the key or the file, exit code 2, no traceback, and nothing
written (no run folder) -- before any data is loaded. Round-loop cases (rogue replies, every round failing, a
truncated checkpoint, a resume under another config, a second run into the same folder) live next to what they
test: tests/test_federation.py, tests/test_cli.py.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedface.cli import main

FAST = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
        "data.pairs.per_fold=6", "model=tiny", "train.epochs=1", "train.batch_size=16", "run.progress=false"]

#: (command, overrides, what the one line must name)
CONFIG_CASES = [
    ("train", ["train.epochs=abc"], "train.epochs"),
    ("train", ["train.epochs=-1"], "train.epochs"),
    ("train", ["train.epochs=0"], "train.epochs"),
    ("train", ["train.batch_size=0"], "train.batch_size"),
    ("train", ["train.lr=-0.1"], "train.lr"),
    ("train", ["train.lr=abc"], "train.lr"),
    ("train", ["train.momentum=1.5"], "train.momentum"),
    ("train", ["train.flip=maybe"], "train.flip"),
    ("train", ["train.shift=-2"], "train.shift"),
    ("train", ["train.schedule=linear"], "train.schedule"),
    ("train", ["train.margin_warmup=2"], "train.margin_warmup"),
    ("train", ["train.steps=0"], "train.steps"),
    ("train", ["train.epochz=3"], "train.epochz"),
    ("train", ["seed=abc"], "seed"),
    ("train", ["threads=-1"], "threads"),
    ("train", ["data=casia"], "casia"),
    ("train", ["model=resnet9000"], "resnet9000"),
    ("train", ["protect=rot13"], "obfuscator, peep, ppfr_analysis, ppfr_fd"),  # every choice, on the one line
    ("train", ["protect=ppfr_fd", "protect.norm=pixel"], "protect.norm"),
    ("train", ["protect=ppfr_fd", "protect.keep=0"], "keep"),
    ("train", ["+protect.key=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"], "key"),
    ("train", ["mixup=fixed", "mixup.k=1"], "mixup.k"),
    ("train", ["mixup=fixed", "mixup.k=abc"], "mixup.k"),
    ("train", ["mixup=fixed", "mixup.k=64"], "mixup.k"),
    ("train", ["mixup=adaptive", "mixup.k_min=4", "mixup.k_max=3"], "mixup.k_max"),
    ("train", ["mixup=fixed", "mixup.max_weight=0.2"], "mixup.max_weight"),
    ("train", ["model.name=tiny2"], "model.name"),
    ("train", ["data.split.test_identities=12"], "data.split.test_identities"),
    ("simulate", ["federation.num_clients=abc"], "federation.num_clients"),
    ("simulate", ["federation.ray.address=127.0.0.1:1"], "federation.ray.address='127.0.0.1:1'"),  # nothing listens
    ("simulate", ["federation.ray.address=ray://127.0.0.1:10001"], "federation.ray.address"),
    ("simulate", ["federation.ray.address=localhost"], "federation.ray.address"),
    ("simulate", ["federation.ray.address=127.0.0.1:1", "federation.ray.num_cpus=2"], "federation.ray.num_cpus"),
    ("simulate", ["federation.ray.num_cpus=0"], "federation.ray.num_cpus"),
    ("simulate", ["+federation.ray.adress=127.0.0.1:6379"], "federation.ray.adress"),
    ("simulate", ["federation.rounds=0"], "federation.rounds"),
    ("simulate", ["federation.num_clients=20"], "federation.num_clients"),
    ("simulate", ["federation.fraction_train=0.01"], "federation.fraction_train"),
    ("simulate", ["federation.fraction_train=1.5"], "federation.fraction_train"),
    ("simulate", ["federation.head=global"], "federation.head"),
    ("simulate", ["federation.min_train_nodes=0"], "federation.min_train_nodes"),
    ("simulate", ["federation.local_steps=-3"], "federation.local_steps"),
    ("simulate", ["federation.local_epochs=1.5"], "federation.local_epochs"),
    ("simulate", ["federation.dp=laplace"], "federation.dp"),
]


def _one_line(capsys, needle: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("WARNING", "INFO"))]
    assert len(lines) == 1, err
    assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.mark.parametrize("command,overrides,needle", CONFIG_CASES, ids=lambda v: " ".join(v) if isinstance(v, list)
                         else str(v))
def test_bad_config_is_one_line_before_anything_is_written(tmp_path, capsys, command, overrides, needle):
    run_dir = tmp_path / "run"
    assert main([command, *FAST, "federation.num_clients=3", f"run.dir={run_dir}", *overrides]) == 2
    _one_line(capsys, needle)
    assert not run_dir.exists(), "a refused config created its run folder"


def _folder(tmp_path: Path, bad: tuple[str, bytes] | None) -> Path:
    """A face folder of 3 identities x 4 faces (noise), plus one bad file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "faces"
    for person in range(3):
        (root / f"p{person}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (112, 112), dtype=np.uint8)).save(root / f"p{person}" / f"{i}.png")
    if bad is not None:
        (root / "p0" / bad[0]).write_bytes(bad[1])
    return root


def _png_bomb() -> bytes:
    """A valid 30000 x 30000 grayscale PNG header and a few zero rows: ~0.9 gigapixels if decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    side = 30000
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    rows = zlib.compress(b"\x00" * (side + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _tiny_png() -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("name,content,needle", [
    ("corrupt.png", b"\x89PNG\r\n\x1a\nthis is not an image", "corrupt.png"),
    ("bomb.png", None, "bomb.png"),
    ("tiny.png", None, "tiny.png"),
    ("empty.jpg", b"", "empty.jpg"),
])
def test_bad_image_files_name_the_file(tmp_path, capsys, monkeypatch, name, content, needle):
    monkeypatch.setenv("FEDFACE_CACHE", str(tmp_path / "cache"))
    content = {"bomb.png": _png_bomb, "tiny.png": _tiny_png}.get(name, lambda: content)()
    root = _folder(tmp_path, (name, content))
    over = [o for o in FAST if not o.startswith("data")]
    assert main(["train", *over, "data=folder", f"data.path={root}", "data.split.test_identities=1",
                 f"run.dir={tmp_path / 'run'}"]) == 2
    _one_line(capsys, needle)


def test_missing_folder_and_run_dir_under_a_file(tmp_path, capsys):
    over = [o for o in FAST if not o.startswith("data")]
    assert main(["train", *over, "data=folder", f"data.path={tmp_path / 'nowhere'}"]) == 2
    _one_line(capsys, "nowhere")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", *FAST, f"run.dir={blocker / 'run'}"]) == 2
    _one_line(capsys, str(blocker))


@pytest.mark.parametrize("how", ["truncated", "foreign", "altered"])
def test_a_bad_face_cache_is_never_used(tmp_path, monkeypatch, caplog, how):
    from fedface.data.sources import load_configured

    monkeypatch.setenv("FEDFACE_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path, None)
    cfg = {"name": "folder", "path": str(root), "split": {}, "pairs": {}}
    first = load_configured(cfg).images.clone()
    [cached] = (tmp_path / "cache").glob("faces-*.npy")
    if how == "truncated":
        cached.write_bytes(cached.read_bytes()[:200])
    elif how == "foreign":  # another array of the same length (a stale or planted file)
        np.save(cached, np.zeros((12, 112, 112), np.uint8))
    else:  # the right shape, pixels changed, checksum kept
        arr = np.load(cached)
        arr[0, 0, :8] ^= 0xFF
        np.save(cached, arr)
    monkeypatch.setattr("fedface.data.sources._MEMORY", {})  # as a new process would: from the disk cache
    again = load_configured(cfg).images
    assert "unusable" in caplog.text and np.array_equal(again.numpy(), first.numpy())


DEPLOY_CASES = [
    ("missing", None, "does not exist"),
    ("not yaml", "superlink: [", "not valid YAML"),
    ("unknown key", "superlink: {address: 127.0.0.1:9300}\nnodez: []\n", "nodez"),
    ("bad address", "superlink: {address: nowhere}\nnodes: [{name: a, data: /tmp}]\n"
                    "overrides: federation.num_classes=2\n", "superlink.address"),
    ("duplicate node", "superlink: {address: 127.0.0.1:9300}\nnodes: [{name: a, data: /tmp}, {name: a, data: /tmp}]\n"
                       "overrides: federation.num_classes=2\n", "nodes.*.name"),
    ("a path in the overrides", "superlink: {address: 127.0.0.1:9300}\nnodes: [{name: a, data: /tmp}]\n"
                                "overrides: data.path=/secret federation.num_classes=2\n", "data.path"),
    ("control port = port", "superlink: {address: 127.0.0.1:9300, control_port: 9300}\n"
                            "nodes: [{name: a, data: /tmp}]\noverrides: federation.num_classes=2\n", "control_port"),
    ("node port", "superlink: {address: 127.0.0.1:9300}\nnodes: [{name: a, data: /tmp, port: 70000}]\n"
                  "overrides: federation.num_classes=2\n", "port"),
]


@pytest.mark.parametrize("case,text,needle", DEPLOY_CASES, ids=[c[0] for c in DEPLOY_CASES])
def test_bad_deploy_files_are_one_line(tmp_path, capsys, case, text, needle):
    path = tmp_path / "fed.yaml"
    if text is not None:
        path.write_text(text)
    assert main(["deploy", "certs", "--config", str(path)]) == 2
    _one_line(capsys, needle)
    assert not (tmp_path / "deploy-work").exists()
