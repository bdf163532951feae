import pytest
import torch

from fedface.attacks.invert_mask import to_image
from fedface.data import load_faces
from fedface.metrics import mean_face_floor, score
from fedface.protect import build_protection
from tests.conftest import needs_data

KEY = b"k" * 32


def synthetic(n_aux=20, n_targets=16):
    """Aux faces and target faces of disjoint identities, (N, 1, 112, 112) floats in [0, 255]."""
    d = load_faces("synthetic", num_identities=n_aux + n_targets, images_per_identity=4, seed=0)
    x = d.images.float()[:, None]
    return x[d.labels < n_aux], x[d.labels >= n_aux][::4][:n_targets]


def wrong_permutation(p):
    g = torch.Generator().manual_seed(1)
    while True:  # any permutation but the key's
        perm = torch.randperm(len(p.permutation), generator=g)
        if not torch.equal(perm, p.permutation):
            return perm


def invert_scores(p, targets, aux):
    """PSNR / SSIM of the white-box inversion with the key, with a wrong key, and of the mean-face floor."""
    y = p(targets, torch.Generator().manual_seed(0))
    out = {}
    for name, perm in (("key", p.permutation), ("wrong", wrong_permutation(p))):
        images, _ = to_image(p, y, aux, perm)
        assert images.shape == targets.shape and images.min() >= 0 and images.max() <= 255
        out[name] = score(images, targets, 255, match=False)
    out["floor"] = mean_face_floor(aux, targets, 255)
    return out


@pytest.mark.parametrize("cfg", [{"name": "none"}, {"name": "fr_fd", "keep": 64},
                                 {"name": "ppfr_fd", "analysis": True, "keep": 64}])
def test_lossless_protections_invert_exactly(cfg):
    _, x = synthetic()
    p = build_protection(cfg)
    images, note = to_image(p, p(x))
    assert torch.allclose(images, x, atol=1e-3)
    assert note in ("exact", "analysis mode: exact")


def test_dropped_channels_are_named_and_filled_from_aux():
    aux, x = synthetic()
    p = build_protection({"name": "fr_fd", "keep": 36, "drop_dc": True})
    with_aux, note = to_image(p, p(x), aux)
    assert note == "channels 36-63 and DC from the aux mean"
    without, _ = to_image(p, p(x))
    assert score(with_aux, x, 255, match=False)["psnr"] > score(without, x, 255, match=False)["psnr"]


def test_ppfr_fd_key_beats_a_wrong_key():
    aux, x = synthetic()
    s = invert_scores(build_protection("ppfr_fd", KEY), x, aux)
    assert s["key"]["psnr"] > s["wrong"]["psnr"] and s["key"]["ssim"] > s["wrong"]["ssim"]


@needs_data("orl_faces")
def test_ppfr_fd_with_key_beats_wrong_key_and_mean_face_on_orl():
    d = load_faces("orl")
    x = d.images.float()[:, None]
    aux, targets = x[d.labels < 20], x[d.labels >= 20][::12]  # identity-disjoint: 200 aux faces, 17 targets
    s = invert_scores(build_protection("ppfr_fd", KEY), targets, aux)
    for metric in ("psnr", "ssim"):
        assert s["key"][metric] > s["wrong"][metric] and s["key"][metric] > s["floor"][metric]


def test_key_unknown_gives_no_image():
    aux, x = synthetic()
    p = build_protection("ppfr_fd", KEY)
    assert to_image(p, p(x), aux, permutation=None) == (None, "Shuffle1 key unknown")


def test_what_cannot_be_inverted_says_why():
    aux, x = synthetic()
    cases = [
        ({"name": "instahide"}, None, "sign"),
        ({"name": "ppfr_fd", "steps": {"sort": False}}, "key", "no sort undoes it"),
        ({"name": "ppfr_fd"}, "key", "needs aux_images"),
        ({"name": "obfuscator"}, None, "needs aux_images"),
    ]
    for cfg, perm, reason in cases:
        p = build_protection(cfg, KEY)
        images, note = to_image(p, p(x, torch.Generator().manual_seed(0)), None,
                                p.permutation if perm else None)
        assert images is None and reason in note, cfg


def test_noisy_image_protections_return_their_image():
    aux, x = synthetic()
    for name in ("noise", "peep"):
        p = build_protection(name)
        images, note = to_image(p, p(x, torch.Generator().manual_seed(0)), aux)
        assert images.shape == x.shape and "stay" in note


def test_obfuscator_gives_an_image_near_the_mean_face():
    aux, x = synthetic()
    p = build_protection("obfuscator")
    images, note = to_image(p, p(x, torch.Generator().manual_seed(0)), aux)
    assert images.shape == x.shape and "signs guessed" in note
    floor = mean_face_floor(aux, x, 255)["psnr"]
    assert abs(score(images, x, 255, match=False)["psnr"] - floor) < 1.0  # two AC channels without signs: ~nothing
