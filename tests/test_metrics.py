import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from fedface.metrics import PSNR_MAX, match, mean_face_floor, mse, psnr, score, ssim


def faces(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, size, size), generator=g) * 255


def test_identical_images():
    x = faces()
    assert torch.equal(mse(x, x), torch.zeros(6, dtype=torch.float64))
    assert torch.equal(psnr(x, x, 255), torch.full((6,), PSNR_MAX, dtype=torch.float64))  # capped, not inf
    assert torch.allclose(ssim(x, x, 255), torch.ones(6, dtype=torch.float64))


def test_known_noise_gives_analytic_psnr():
    x = torch.full((2, 1, 16, 16), 100.0)
    pattern = torch.where(torch.arange(256).view(1, 1, 16, 16) % 2 == 0, 5.0, -5.0)  # |error| = 5 everywhere
    y = x + pattern
    assert torch.allclose(mse(x, y), torch.full((2,), 25.0, dtype=torch.float64))
    assert psnr(x, y, 255) == pytest.approx([10 * math.log10(255**2 / 25)] * 2)
    assert (ssim(x, y, 255) < 1).all()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one shape"):
        mse(faces(2), faces(3))


def test_hungarian_recovers_a_permutation():
    x = faces(8)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    recon = x[perm] + 10 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    for metric in ("mse", "psnr", "ssim"):
        r_idx, o_idx = match(recon, x, metric, data_range=255)
        assert np.array_equal(r_idx, np.arange(8)) and np.array_equal(o_idx, perm.numpy())
    s = score(recon, x, 255)
    assert s["matching"] == [[i, int(perm[i])] for i in range(8)]
    assert s["psnr"] == pytest.approx(float(psnr(recon, x[perm], 255).mean()))
    assert len(s["psnr_each"]) == len(s["ssim_each"]) == 8
    unmatched = score(recon, x, 255, match=False)
    assert unmatched["psnr"] < s["psnr"] and unmatched["ssim"] < s["ssim"]


def test_rectangular_matching():
    x = faces(6)
    few = x[[4, 0, 2]] + 3.0
    r_idx, o_idx = match(few, x)
    assert r_idx.tolist() == [0, 1, 2] and o_idx.tolist() == [4, 0, 2]
    many = torch.cat([faces(3, seed=9), x[[5, 1]]])  # 5 reconstructions for 2 originals: the copies win
    assert score(many, x[[1, 5]], 255)["matching"] == [[3, 1], [4, 0]]
    with pytest.raises(ValueError, match="match=True"):
        score(few, x, 255, match=False)


def test_mean_face_floor():
    x = faces(6)
    floor = mean_face_floor(x, x, 255)  # the aux set's mean is the batch mean here
    deviation = (x - x.mean(dim=0)).square().flatten(1).mean(dim=1).mean()
    assert floor["mse"] == pytest.approx(float(deviation))
    assert set(floor) == set(score(x, x, 255))
    assert score(x + 5.0, x, 255)["psnr"] > floor["psnr"]  # a real reconstruction beats the floor
    constant = torch.full_like(x, 77.0)
    assert mean_face_floor(constant, constant, 255)["psnr"] == PSNR_MAX  # nothing to guess about a constant face


@pytest.mark.parametrize("size", [14, 8, 5])
def test_ssim_small_multichannel_maps(size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn((4, 34, size, size), generator=g)
    y = x + 0.3 * torch.randn(x.shape, generator=g)
    assert torch.allclose(ssim(x, x, 8.0), torch.ones(4, dtype=torch.float64))
    s = ssim(x, y, 8.0)
    assert s.shape == (4,) and ((s > 0) & (s < 1)).all()
    if size >= 11:  # the map fits torchmetrics' default 11 x 11 window: same numbers as its default call
        default = structural_similarity_index_measure(x.double(), y.double(), data_range=8.0, reduction="none")
        assert torch.allclose(s, default)

