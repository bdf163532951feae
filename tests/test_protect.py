"""fedface.protect: the registered protections, the federation key, and what a protection may (not) keep."""
from __future__ import annotations

import functools
import logging
import types

import pytest
import torch
from torch import nn

from fedface.freq import bdct, ibdct
from fedface.protect import build_protection, known_protections
from fedface.protect.keys import DEMO_KEY, load_key

torch.set_num_threads(1)
KEY = bytes(range(32))
ALL = [
    {"name": "none"},
    {"name": "fr_fd"},
    {"name": "fr_fd", "keep": 36, "drop_dc": True},
    {"name": "ppfr_fd"},
    {"name": "ppfr_fd", "analysis": True},
    {"name": "obfuscator"},
    {"name": "peep", "epsilon": 3},
    {"name": "noise", "sigma": 0.2},
    {"name": "instahide"},
    {"name": "instahide", "domain": "freq", "k": 3},
]


def faces(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 112, 112, generator=torch.Generator().manual_seed(seed)) * 255


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_knows_every_protection():
    assert set(known_protections()) >= {"none", "fr_fd", "ppfr_fd", "obfuscator", "peep", "noise", "instahide"}


@pytest.mark.parametrize("cfg", ALL, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_output_matches_output_spec(cfg):
    p = build_protection(cfg, KEY)
    y = p(faces(), gen())
    assert y.shape[1:] == p.output_spec(112, 112).shape
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_spec_channel_counts():
    spec = lambda cfg: build_protection(cfg, KEY).output_spec(112, 112).shape  # noqa: E731
    assert spec("fr_fd") == (64, 14, 14)
    assert spec("ppfr_fd") == (34, 14, 14)
    assert spec({"name": "ppfr_fd", "steps": {"mix": False}}) == (35, 14, 14)
    assert spec({"name": "ppfr_fd", "drop_dc": False}) == (35, 14, 14)  # the paper's PPFR-FD-DC ablation
    assert spec({"name": "ppfr_fd", "analysis": True}) == (36, 14, 14)
    assert spec("obfuscator") == (2, 112, 112)  # paper 002 section 5.1: the face upscaled 8x before the BDCT
    assert spec({"name": "obfuscator", "upscale": 1}) == (2, 14, 14)
    assert spec({"name": "instahide", "domain": "freq"}) == (64, 14, 14)


@pytest.mark.parametrize("name, height, shown", [("fr_fd", 100, "100x112"), ("ppfr_fd", 100, "100x112"),
                                                  ({"name": "obfuscator", "upscale": 1}, 100, "100x112"),
                                                  ({"name": "obfuscator", "upscale": 2}, 98, "196x224")])
def test_frequency_protections_reject_sizes_not_divisible_by_8(name, height, shown):
    p = build_protection(name, KEY)  # the obfuscator's BDCT runs on the upscaled face: the error shows that shape
    with pytest.raises(ValueError, match=shown):
        p.output_spec(height, 112)
    with pytest.raises(ValueError, match=shown):
        p(torch.zeros(2, 1, height, 112))


def test_the_8x_obfuscator_takes_any_face_size():
    p = build_protection("obfuscator")
    assert p.output_spec(100, 112).shape == p(torch.rand(2, 1, 100, 112) * 255).shape[1:] == (2, 100, 112)


def test_fr_fd_is_the_raw_baseline_in_the_dct_basis():
    x = faces()
    assert torch.allclose(ibdct(build_protection("fr_fd")(x)), build_protection("none")(x), atol=1e-5)


def test_ppfr_fd_needs_the_key():
    with pytest.raises(ValueError, match="FEDFACE_KEY"):
        build_protection("ppfr_fd", None)
    assert build_protection("ppfr_fd", KEY).needs_key
    # no Shuffle1 (or the analysis network) -> nothing keyed
    assert not build_protection({"name": "ppfr_fd", "steps": {"shuffle1": False}}, None).needs_key
    assert not build_protection({"name": "ppfr_fd", "analysis": True}, None).needs_key


def test_the_key_changes_the_output_and_fixes_it():
    x = faces()
    a = build_protection("ppfr_fd", KEY)(x, gen())
    assert torch.equal(a, build_protection("ppfr_fd", KEY)(x, gen(5)))  # sorted: Shuffle2's draw does not matter
    assert not torch.allclose(a, build_protection("ppfr_fd", KEY[::-1])(x, gen()))


def test_ppfr_permutation_is_not_in_the_state_dict():
    p = build_protection("ppfr_fd", KEY)
    assert "permutation" not in p.state_dict() and p.permutation is not None


def _leaves(obj, seen):
    """Every tensor, bytes and str reachable from ``obj``: vars, containers, closures, autograd saved tensors."""
    if id(obj) in seen or obj is None or isinstance(obj, (bool, int, float, type, torch.dtype, torch.device)):
        return
    seen.add(id(obj))
    if isinstance(obj, (torch.Tensor, bytes, bytearray, str)):
        yield obj
        if isinstance(obj, torch.Tensor) and obj.grad_fn is not None:
            yield from _leaves(obj.grad_fn, seen)
        return
    if isinstance(obj, nn.Module):
        yield from (t for t in list(obj.parameters()) + list(obj.buffers()))
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(k, seen)
            yield from _leaves(v, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from _leaves(v, seen)
    elif type(obj).__module__ == "torch.autograd.graph" or "Backward" in type(obj).__name__:
        for attr in dir(obj):
            if attr.startswith("_saved_"):
                yield from _leaves(getattr(obj, attr), seen)
        yield from _leaves([f for f, _ in obj.next_functions], seen)
    elif isinstance(obj, functools.partial):
        yield from _leaves([obj.func, obj.args, obj.keywords], seen)
    elif isinstance(obj, types.FunctionType):
        yield from _leaves([c.cell_contents for c in obj.__closure__ or ()] + [obj.__defaults__], seen)
    elif isinstance(obj, types.MethodType):
        yield from _leaves(obj.__self__, seen)
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith("fedface"):
        yield from _leaves(vars(obj), seen)


def _matches_any(t: torch.Tensor, rows: torch.Tensor) -> bool:
    """Does any 196-long (14x14 channel) run of ``t`` equal one of ``rows`` up to scale and offset?"""
    if not t.is_floating_point() or t.numel() % 196:
        return False
    flat = t.detach().double().reshape(-1, 196)
    flat = flat - flat.mean(dim=1, keepdim=True)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return bool(((flat @ rows.T).abs() > 0.999).any())


@pytest.mark.parametrize("cfg", ALL, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_no_protection_keeps_the_key_or_the_unmasked_coefficients(cfg):
    p = build_protection(cfg, KEY)
    x = faces(6)
    out = p(x, gen())
    rows = bdct(x.double()).reshape(-1, 196)
    rows = rows - rows.mean(dim=1, keepdim=True)
    rows = rows[rows.norm(dim=1) > 1e-9]
    rows = rows / rows.norm(dim=1, keepdim=True)
    for leaf in _leaves(p, set()):
        if isinstance(leaf, torch.Tensor):
            assert KEY not in leaf.detach().flatten().to(torch.uint8).numpy().tobytes()
            assert not _matches_any(leaf, rows), f"{p.name} keeps an unmasked BDCT channel"
        else:
            text = leaf.encode("latin-1", "ignore") if isinstance(leaf, str) else bytes(leaf)
            assert KEY not in text and KEY.hex().encode() not in text
    assert KEY.hex() not in str(p.describe())
    # and what the protection outputs -- what the client's model sees and its update is computed from
    assert KEY not in out.detach().flatten().to(torch.uint8).numpy().tobytes()
    if p.name != "fr_fd" and not cfg.get("analysis"):  # FR-FD and paper 000's analysis net select, never mask
        assert not _matches_any(out, rows), f"{p.name}'s output carries an unmasked BDCT channel"


def test_obfuscator_feeds_the_recovered_tensor():
    p = build_protection("obfuscator")
    y1, y2 = p(faces(), gen(1)), p(faces(), gen(2))
    top = y1.abs().amax(dim=(-2, -1))
    assert ((top > 4) & (top <= 8)).all()  # bounded per-channel scale after recovery: (2^(bias-1), 2^bias]
    assert torch.equal(y1.abs(), y2.abs()) and not torch.equal(y1, y2)  # only the sign flips remain random
    with pytest.raises(ValueError, match="float32"):
        build_protection({"name": "obfuscator", "v_max": 200})
    for bad in (3, 0, True):
        with pytest.raises(ValueError, match="protect.upscale"):
            build_protection({"name": "obfuscator", "upscale": bad})


@pytest.mark.parametrize("upscale", [1, 2, 4, 8])
def test_obfuscator_channels_are_those_of_the_upscaled_face(upscale):
    """Section 5.1's literal pipeline -- bilinear upscale, then the 8x8 BDCT -- equals the probed convolution the
    protection runs, on every block including the borders (where resizing clamps)."""
    from torch.nn import functional as F

    from fedface.freq.ppfr import coefficients

    x = faces().to(torch.float64)
    literal = coefficients(F.interpolate(x, scale_factor=upscale, mode="bilinear", align_corners=False), 6)
    p = build_protection({"name": "obfuscator", "upscale": upscale})
    assert torch.allclose(p.coefficients(x, 6), literal, atol=1e-12)
    assert torch.allclose(p.coefficients(x), literal[:, [1, 2]], atol=1e-12)


def test_upscaled_ac_channels_are_slopes():
    """Why the paper upscales: on an 8x bilinear upscale, AC01 of the block over pixel i measures the horizontal
    slope there, so a horizontal ramp gives a constant AC01 and no AC10 away from the border."""
    ramp = torch.arange(112, dtype=torch.float64).expand(1, 1, 112, 112) * 2.0
    c = build_protection("obfuscator").coefficients(ramp)[0, :, 2:-2, 2:-2]
    assert c[0].std() < 1e-9 * c[0].abs().mean() and c[0].abs().mean() > 1e-3 and c[1].abs().max() < 1e-12


def test_ppfr_analysis_mode_trains_the_gate():
    p = build_protection({"name": "ppfr_fd", "analysis": True, "lam": 2.0})
    assert p.aux_loss() is None  # nothing before the first batch
    y = p(faces(), gen())
    (y.square().mean() + p.aux_loss()).backward()
    assert p.gate.logits.grad is not None and p.gate.logits.grad.abs().sum() > 0
    facts = p.describe()
    assert facts["kept"] == list(range(36)) and len(facts["weights"]) == 36


def test_peep_noise_falls_with_epsilon():
    x = faces(8)
    scales = [build_protection({"name": "peep", "epsilon": e}).fit(x).noise_scale for e in (1, 3, 5)]
    assert (scales[0] > scales[1]).all() and (scales[1] > scales[2]).all()
    clean = build_protection({"name": "peep", "epsilon": 1e9})(x, gen())
    err = [(build_protection({"name": "peep", "epsilon": e})(x, gen()) - clean).std() for e in (3, 5)]
    assert err[0] > err[1]


def test_peep_fits_on_the_first_batch_and_checks_inputs():
    p = build_protection("peep")
    assert p.describe()["fitted_components"] is None
    p(faces(5), gen())
    assert p.describe()["fitted_components"] == 4  # at most N - 1 eigenfaces
    assert "mean" not in p.state_dict()  # eigenfaces describe the client's faces: never shared
    with pytest.raises(ValueError, match="fit on"):
        p(torch.zeros(2, 1, 96, 96))
    with pytest.raises(ValueError, match="at least 2"):
        build_protection("peep").fit(faces(1))


def test_pixel_noise_sigma():
    x = faces(8)
    y = build_protection({"name": "noise", "sigma": 0.3})(x, gen())
    assert (y - build_protection("none")(x)).std().item() == pytest.approx(0.3, rel=0.05)


def test_instahide_inside_dataset_exposes_the_mix_for_label_mixing():
    p = build_protection({"name": "instahide", "k": 2, "public": 0})
    with pytest.raises(RuntimeError):
        p.last_mix()
    x = faces(8)
    y = p(x, gen())
    partners, weights = p.last_mix()
    assert partners.shape == weights.shape == (8, 2)
    assert torch.equal(partners[:, 0], torch.arange(8)) and torch.allclose(weights.sum(1), torch.ones(8))
    z = build_protection("none")(x)
    expected = (weights[:, :, None, None, None] * z[partners]).sum(1)
    assert torch.allclose(y.abs(), expected.abs(), atol=1e-6)  # mix, then per-element random signs
    assert 0.3 < (y.sign() != expected.sign()).float().mean() < 0.7


def test_instahide_mixes_one_fixed_public_image_at_training_and_at_test():
    """Paper 000's protocol: k = 3 with one fixed public image, the same at training and test; a test face is mixed
    with the public image only, never with another test face."""
    p = build_protection("instahide")
    assert (p.k, p.public) == (3, 1)
    x = faces(8)
    z, public = build_protection("none")(x), build_protection("none")(p.public_faces)
    y = p(x, gen())
    partners, label_weights = p.last_mix()
    assert partners.shape == (8, 2) and torch.allclose(label_weights.sum(1), torch.ones(8))
    p.eval()
    test = p(x, gen(1))
    assert torch.allclose(test.abs(), (2 / 3 * z + 1 / 3 * public).abs(), atol=1e-5)
    alone = p(x[3:4], gen(2))  # the same face in another batch: the same mixture, whatever its batch holds
    assert torch.allclose(alone.abs(), test[3:4].abs(), atol=1e-5)
    other = build_protection({"name": "instahide", "public_seed": 1})
    assert not torch.equal(other.public_faces, p.public_faces)
    assert not torch.allclose(y.abs(), test.abs())
    with pytest.raises(ValueError, match="public"):
        build_protection({"name": "instahide", "k": 2, "public": 2})


def test_ppfr_fd_norm_is_configurable_and_checked():
    assert build_protection("ppfr_fd", key=b"k" * 32).describe()["norm"] == "image"
    assert build_protection({"name": "ppfr_fd", "norm": "channel"}, key=b"k" * 32).norm == "channel"
    with pytest.raises(ValueError, match=r"protect.norm='pixel'; known: image, channel"):
        build_protection({"name": "ppfr_fd", "norm": "pixel"}, key=b"k" * 32)


def test_load_key_sources_and_errors(caplog, tmp_path):
    hex_key = KEY.hex()
    assert load_key({"shuffle-key": hex_key}, env={}) == KEY
    stretched = load_key(None, env={"FEDFACE_KEY": "a passphrase of 29 characters"})
    assert len(stretched) == 32 and stretched != b"a passphrase of 29 characters"  # scrypt, not the text itself
    assert load_key({"shuffle-key": hex_key}, env={"FEDFACE_KEY": "other secret, 21 bytes"}) == KEY
    key_file = tmp_path / "key"
    key_file.write_text(hex_key + "\n")
    assert load_key({"shuffle-key-file": str(key_file)}, env={"FEDFACE_KEY": "another secret of 24 b"}) == KEY
    assert load_key(None, env={"FEDFACE_KEY_FILE": str(key_file)}) == KEY
    with pytest.raises(ValueError, match="FEDFACE_KEY_FILE.*does not read"):
        load_key(None, env={"FEDFACE_KEY_FILE": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="FEDFACE_KEY"):
        load_key(None, env={"FEDFACE_KEY": "short"})
    with pytest.raises(ValueError, match="shuffle-key.*16 bytes of hex"):
        load_key({"shuffle-key": "00" * 16}, env={})  # a 128-bit hex key: refused, not read as a passphrase
    with pytest.raises(ValueError, match="FEDFACE_KEY_FILE"):
        load_key(None, env={})
    with pytest.raises(ValueError, match="no federation key"):
        load_key({"shuffle-key": ""}, env={"FEDFACE_KEY": "  "})
    with pytest.raises(ValueError, match="public demo key"):  # set explicitly: no secret, refused in a federation
        load_key(None, env={"FEDFACE_KEY": DEMO_KEY.decode()})
    with caplog.at_level(logging.WARNING, logger="fedface.protect.keys"):
        assert load_key(None, env={"FEDFACE_KEY": DEMO_KEY.decode()}, allow_demo=True) == DEMO_KEY
        assert load_key(None, env={}, allow_demo=True) == DEMO_KEY
    assert "INSECURE" in caplog.text
    assert "insecure demo key" in caplog.text
