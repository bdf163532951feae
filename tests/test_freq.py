"""fedface.freq: block DCT exactness, the PPFR-FD steps, the analysis network, FaceObfuscator's obfuscation/recovery."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch

from fedface.freq import (
    STEPS,
    ZIGZAG,
    ChannelGate,
    bdct,
    energy_report,
    ibdct,
    mask,
    mix_channels,
    obfuscate,
    recover,
    select_channels,
    self_normalize,
    shuffle1,
    shuffle1_permutation,
    shuffle2,
    sort_by_energy,
)
from fedface.freq.ppfr import check_steps

torch.set_num_threads(1)
DATA = Path(os.environ.get("FEDFACE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def orl_faces(n: int) -> torch.Tensor:
    """The first ``n`` ORL faces (sorted by subject, then file), 92x112 padded with 10 zero columns each side."""
    from PIL import Image

    root = DATA / "orl_faces"
    files = sorted(root.glob("s*/*.pgm"), key=lambda p: (int(p.parent.name[1:]), int(p.stem)))[:n]
    if not files:
        pytest.skip(f"ORL faces not found under {root} (set FEDFACE_DATA to the folder holding orl_faces/)")
    arrays = [np.pad(np.asarray(Image.open(f).convert("L")), ((0, 0), (10, 10))) for f in files]
    return torch.from_numpy(np.stack(arrays)).float()[:, None]


def scipy_bdct(x: np.ndarray) -> np.ndarray:
    """Reference: scipy.fft.dctn(norm='ortho') of every 8x8 block, laid out as (B, 64, H/8, W/8) in zig-zag order."""
    b, _, h, w = x.shape
    blocks = x.reshape(b, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)
    coeffs = scipy.fft.dctn(blocks, axes=(-2, -1), norm="ortho")
    return np.stack([coeffs[..., r, c] for r, c in ZIGZAG], axis=1)


def test_zigzag_is_the_jpeg_order():
    assert ZIGZAG[:10] == ((0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0))
    assert sorted(ZIGZAG) == [(r, c) for r in range(8) for c in range(8)]
    assert ZIGZAG[-1] == (7, 7)
    # the 36 lowest channels are exactly the 8 lowest anti-diagonals, r + c <= 7
    assert {r + c for r, c in ZIGZAG[:36]} == set(range(8))


@pytest.mark.parametrize("shape", [(3, 1, 16, 24), (2, 1, 112, 112)])
def test_bdct_matches_scipy_on_random_images(shape):
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 255
    np.testing.assert_allclose(bdct(x).numpy(), scipy_bdct(x.numpy()), atol=1e-9)


def test_bdct_matches_scipy_on_real_faces():
    x = orl_faces(20)
    ref = scipy_bdct(x.double().numpy())
    np.testing.assert_allclose(bdct(x).numpy(), ref, atol=2e-3, rtol=1e-5)  # float32 vs float64
    np.testing.assert_allclose(bdct(x.double()).numpy(), ref, atol=1e-9)


def test_bdct_layout_and_keep():
    x = torch.rand(4, 1, 112, 112)
    c = bdct(x)
    assert c.shape == (4, 64, 14, 14) and c.dtype == x.dtype
    assert torch.equal(bdct(x, keep=36), c[:, :36])
    # channel 0 of block (i, j) is 8 x the block mean (orthonormal DC)
    assert torch.allclose(c[:, 0], 8 * torch.nn.functional.avg_pool2d(x, 8)[:, 0], atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_bdct_round_trip(dtype):
    x = torch.rand(3, 1, 32, 40, dtype=torch.float64).to(dtype)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 5e-2}[dtype]
    assert ibdct(bdct(x)).dtype == dtype
    assert (ibdct(bdct(x)).double() - x.double()).abs().max() < tol


def test_bdct_rejects_bad_shapes():
    with pytest.raises(ValueError, match="113x112"):
        bdct(torch.zeros(1, 1, 113, 112))
    with pytest.raises(ValueError, match="B, 1, H, W"):
        bdct(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ValueError, match="B, 64, h, w"):
        ibdct(torch.zeros(1, 35, 14, 14))


def test_select_channels_drops_dc_and_keeps_zigzag_1_to_35():
    c = bdct(torch.rand(2, 1, 112, 112))
    f = select_channels(c)
    assert f.shape == (2, 35, 14, 14) and torch.equal(f, c[:, 1:36])
    assert select_channels(c, drop_dc=False).shape[1] == 36
    with pytest.raises(ValueError):
        select_channels(c, keep=65)


def test_shuffle1_is_a_key_derived_fixed_permutation():
    p = shuffle1_permutation(b"k" * 16, 35)
    assert sorted(p.tolist()) == list(range(35))
    assert torch.equal(p, shuffle1_permutation(b"k" * 16, 35))
    assert not torch.equal(p, shuffle1_permutation(b"K" * 16, 35))
    f = torch.randn(2, 35, 14, 14)
    assert torch.equal(shuffle1(f, p), f[:, p])


def test_self_normalize_standardises_every_channel_of_every_image():
    x = torch.randn(3, 5, 14, 14, dtype=torch.float64) * torch.arange(1, 6)[:, None, None] + 7
    y = self_normalize(x)
    assert torch.allclose(y.mean(dim=(-2, -1)), torch.zeros(3, 5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(y.std(dim=(-2, -1)), torch.ones(3, 5, dtype=torch.float64), atol=1e-5)
    assert torch.isfinite(self_normalize(torch.zeros(1, 2, 14, 14))).all()  # eps-guarded


def test_mix_channels_is_eq5():
    e = torch.randn(2, 35, 4, 4)
    m = mix_channels(e)
    assert m.shape == (2, 34, 4, 4) and torch.allclose(m[:, 3], (e[:, 3] + e[:, 4]) / 2)


def test_shuffle2_draws_a_permutation_per_image():
    m = torch.arange(34.0)[None, :, None, None].expand(8, 34, 2, 2)
    s = shuffle2(m, torch.Generator().manual_seed(1))
    orders = s[:, :, 0, 0]
    assert all(sorted(o.tolist()) == list(range(34)) for o in orders)
    assert len({tuple(o.tolist()) for o in orders}) == 8


def test_sort_by_energy_orders_by_mean_abs_before_normalisation():
    x = torch.randn(4, 10, 14, 14) * torch.rand(4, 10, 1, 1)
    energy = sort_by_energy(x).abs().mean(dim=(-2, -1))
    assert (energy[:, :-1] >= energy[:, 1:]).all()
    # after self-normalisation the key is flat: it could not be used there
    flat = self_normalize(x).square().mean(dim=(-2, -1))
    assert torch.allclose(flat, flat[0, 0].expand_as(flat), atol=1e-2)


def test_sort_makes_the_input_independent_of_shuffle2():
    f = select_channels(bdct(torch.rand(2, 1, 112, 112) * 255))
    perm = shuffle1_permutation(b"k" * 16, 35)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    assert torch.equal(mask(f, STEPS, perm, g1), mask(f, STEPS, perm, g2))
    unsorted = check_steps({"sort": False})
    assert not torch.equal(mask(f, unsorted, perm, g1), mask(f, unsorted, perm, g2))


def test_steps_are_toggles():
    f = torch.randn(2, 35, 14, 14)
    off = check_steps({k: False for k in STEPS})
    assert torch.equal(mask(f, off), f)
    assert mask(f, check_steps({"shuffle1": False})).shape == (2, 34, 14, 14)
    with pytest.raises(ValueError, match="shuffle3"):
        check_steps({"shuffle3": True})


def test_energy_report_on_real_faces():
    report = energy_report(orl_faces(400))
    assert report["images"] == 400
    assert report["dc"] > 0.9  # paper 000: DC carries >90% of the energy
    assert report["removed"] > 0.94  # dropping DC + channels 36..63 removes >94%
    assert report["removed"] == pytest.approx(report["dc"] + report["high"])


def test_analysis_loss_pushes_high_energy_channels_down():
    gate = ChannelGate(36)
    assert (gate.weights > 0.9).all()  # a_i start near 1
    scale = 4.0 / torch.arange(1, 37)  # channel energy p_i falls with i, DC-like channel 0 the largest
    c = torch.randn(8, 36, 14, 14, generator=torch.Generator().manual_seed(0)) * scale[:, None, None]
    for _ in range(20):  # plain gradient descent on Loss_pri alone (eq. 1)
        gate(c)
        (grad,) = torch.autograd.grad(gate.loss_pri, gate.logits)
        gate.logits.data -= 1.0 * grad
    a = gate.weights.detach()
    assert a[0] < 0.3 < a[-1]  # the highest-energy channel fell below gamma, the lowest-energy one did not
    above = a > 0.3  # these never reached the ReLU's flat side: more energy, lower weight
    by_energy = a[above][c.abs().mean(dim=(0, 2, 3))[above].argsort(descending=True)]
    assert (by_energy[:-1] <= by_energy[1:]).all()
    assert 0 not in gate.kept() and 35 in gate.kept()


def test_obfuscation_scales_wildly_and_recovery_bounds_each_channel():
    a = self_normalize(torch.randn(6, 2, 14, 14, dtype=torch.float64))
    e = obfuscate(a, torch.Generator().manual_seed(0))
    ratio = (e / a).abs().log2()  # b^v per image and channel, v integer in [-60, 60]
    assert torch.equal(ratio, ratio.round()) and ratio.abs().max() <= 60
    assert ratio.amax() - ratio.amin() > 20
    assert ((e.sign() != a.sign()).double().mean() - 0.5).abs() < 0.1  # (-1)^u per element
    d = recover(e, bias=2)
    top = d.abs().amax(dim=(-2, -1))
    assert ((top > 2) & (top <= 4)).all()  # (b^(bias-1), b^bias] with b = 2, bias = 2
    assert torch.equal(recover(e), 2 * d)  # the default bias 3: one power of two up
    # b^v cancels exactly: magnitudes do not depend on the draw
    d2 = recover(obfuscate(a, torch.Generator().manual_seed(7)), bias=2)
    assert torch.equal(d.abs(), d2.abs())
    assert torch.equal(recover(torch.zeros(1, 2, 14, 14)), torch.zeros(1, 2, 14, 14, dtype=torch.float64))


def test_self_normalize_per_image_keeps_the_channels_relative_energies():
    x = torch.randn(3, 6, 14, 14) * torch.arange(1, 7).view(1, 6, 1, 1) + 5
    y = self_normalize(x, norm="image")
    assert torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.flatten(1).std(dim=1), torch.ones(3), atol=1e-5)
    ratio = y.std(dim=(-2, -1)) / x.std(dim=(-2, -1))  # one scale per image
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    with pytest.raises(ValueError, match="protect.norm"):
        self_normalize(x, norm="block")


def _rank_spread(norm: str) -> float:
    """Std over 80 ORL faces of the slot the energy sort gives each mixed channel, averaged (a random order: 9.8)."""
    f = select_channels(bdct(orl_faces(80)))[:, shuffle1_permutation(b"k" * 32, 35)]
    mixed = mix_channels(self_normalize(f, norm=norm))  # eqs. 3-5; the sort's key is taken here (sort_by_energy)
    order = mixed.abs().mean(dim=(-2, -1)).argsort(dim=1, descending=True, stable=True)
    return float(order.argsort(dim=1).double().std(dim=0).mean())


def test_per_image_normalisation_makes_the_energy_sort_stable():
    """Paper 000's eq. 4 per image keeps the energies that the sort orders by: each channel lands within about one
    slot of the same place in every face. Per channel, every mixed channel's energy is ~(1 + rho)/2 and the order is
    close to random (measured on 400 LFW-a faces: rank std 1.1 per image, 8.3 per channel, 9.8 random)."""
    assert _rank_spread("image") < 2.0 < 6.0 < _rank_spread("channel")
