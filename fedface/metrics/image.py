"""Image metrics of reconstructions against originals: MSE, PSNR, SSIM, Hungarian matching and the mean-face floor.

Every attack table scores with ``score``. Inputs are float batches (B, C, H, W) in any units; the caller says which
through ``data_range`` (255 for pixels, 2 for the [-1, 1] standardisation, max - min for frequency maps).

- PSNR = 10 log10(range^2 / MSE) per image. Identical images have MSE 0 and an infinite PSNR; it is capped at
  ``PSNR_MAX`` = 100 dB so that means stay finite and results.json stays valid JSON (json has no Infinity).
- SSIM (Wang et al. 2004, eq. 13) is torchmetrics', Gaussian window sigma 1.5 (11 x 11), k1 0.01, k2 0.03. Maps
  smaller than 11 pixels use the largest odd window that fits (see ``ssim``).
- A gradient attack returns its reconstructions in no particular order, so ``match`` pairs them with the originals by
  the Hungarian algorithm (Kuhn 1955), as in Geiping et al. 2020's and Yin et al. 2021's evaluations.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.image import structural_similarity_index_measure

PSNR_MAX = 100.0
#: torchmetrics' default SSIM window: sigma 1.5 -> a Gaussian of 2 * int(3.5 * 1.5 + 0.5) + 1 = 11 taps.
SIGMA, WINDOW = 1.5, 11


def _check(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"image metrics need two (B, C, H, W) batches of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    # float64: an exact copy must give MSE 0, and 255-range squares lose digits in float32
    return a.detach().to(torch.float64), b.detach().to(torch.float64)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error (B,)."""
    a, b = _check(a, b)
    return (a - b).square().flatten(1).mean(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    """Per-image PSNR in dB (B,): 10 log10(data_range^2 / MSE), capped at ``PSNR_MAX`` (identical images)."""
    return (10 * torch.log10(data_range**2 / mse(a, b))).clamp(max=PSNR_MAX)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    """Per-image SSIM (B,), torchmetrics, channels averaged.

    torchmetrics sizes its Gaussian window from sigma (2 * int(3.5 sigma + 0.5) + 1 taps) and ignores
    ``kernel_size``. A map smaller than 11 pixels (a 14 x 14 frequency map fits 11; an 8 x 8 one does not) gets the
    largest odd window w <= min(H, W), through sigma = 1.5 w / 11, which gives exactly w taps for every odd w >= 3:
    the reflection padding of (w - 1) / 2 pixels then stays inside the map.
    """
    a, b = _check(a, b)
    side = min(a.shape[-2:])
    if side < 3:
        raise ValueError(f"SSIM needs maps of at least 3 x 3 pixels, got {tuple(a.shape[-2:])}")
    window = min(WINDOW, side - (1 - side % 2))
    return structural_similarity_index_measure(
        a, b, sigma=SIGMA * window / WINDOW, data_range=float(data_range), reduction="none"
    )


def _pair_costs(recon: torch.Tensor, originals: torch.Tensor, metric: str, data_range: float) -> np.ndarray:
    """(R, O) matrix of costs to minimise: MSE, or -PSNR / -SSIM (higher is better for those)."""
    if metric == "mse":
        r = recon.detach().to(torch.float64).flatten(1)
        o = originals.detach().to(torch.float64).flatten(1)
        return (torch.cdist(r, o).square() / r.shape[1]).cpu().numpy()
    if metric not in ("psnr", "ssim"):
        raise ValueError(f"unknown matching metric {metric!r}; known: mse, psnr, ssim")
    fn = psnr if metric == "psnr" else ssim
    # one reconstruction against every original at a time: all R x O pairs at once would not fit for large batches
    rows = [fn(r[None].expand_as(originals), originals, data_range) for r in recon]
    return -torch.stack(rows).cpu().numpy()


def match(recon: torch.Tensor, originals: torch.Tensor, metric: str = "mse",
          data_range: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of reconstructions (R, C, H, W) to originals (O, C, H, W) -> (recon_idx, orig_idx).

    Minimises the summed per-pair MSE (``metric="mse"``) or maximises the summed PSNR / SSIM (``data_range`` is used
    by those two only). Unequal counts are allowed: min(R, O) pairs come back, the unmatched ones are left out.
    """
    if recon.shape[1:] != originals.shape[1:]:
        raise ValueError(f"cannot match {tuple(recon.shape[1:])} reconstructions to {tuple(originals.shape[1:])} "
                         "originals")
    return linear_sum_assignment(_pair_costs(recon, originals, metric, data_range))


def _pairs(recon: torch.Tensor, originals: torch.Tensor, matched: bool) -> tuple[np.ndarray, np.ndarray]:
    if matched:
        return match(recon, originals)
    if recon.shape[0] != originals.shape[0]:
        raise ValueError(f"{recon.shape[0]} reconstructions for {originals.shape[0]} originals: pass match=True")
    return np.arange(recon.shape[0]), np.arange(originals.shape[0])


def score(recon: torch.Tensor, originals: torch.Tensor, data_range: float, match: bool = True) -> dict:
    """MSE / PSNR / SSIM of reconstructions against originals, as JSON-able floats.

    ``match=True`` pairs them first by minimum summed MSE (``match``); ``match=False`` pairs recon[i] with
    originals[i]. Returns the means over the pairs (mse, psnr, ssim), the per-pair ``psnr_each`` / ``ssim_each`` and
    the ``matching`` used, a list of [recon_idx, orig_idx] pairs.
    """
    r_idx, o_idx = _pairs(recon, originals, match)
    r, o = recon[torch.as_tensor(r_idx)], originals[torch.as_tensor(o_idx)]
    p, s = psnr(r, o, data_range), ssim(r, o, data_range)
    return {
        "mse": float(mse(r, o).mean()),
        "psnr": float(p.mean()),
        "ssim": float(s.mean()),
        "psnr_each": p.tolist(),
        "ssim_each": s.tolist(),
        "matching": [[int(i), int(j)] for i, j in zip(r_idx, o_idx)],
    }


def mean_face_floor(aux_images: torch.Tensor, originals: torch.Tensor, data_range: float) -> dict:
    """``score`` of the trivial guess: the mean of the attacker's auxiliary images, the same for every original.

    An attack that does not beat this floor has learnt nothing about the individual faces beyond the population.
    """
    if aux_images.shape[1:] != originals.shape[1:]:
        raise ValueError(f"auxiliary images {tuple(aux_images.shape[1:])} and originals "
                         f"{tuple(originals.shape[1:])} differ in shape")
    guess = aux_images.detach().to(torch.float64).mean(dim=0, keepdim=True).expand(originals.shape)
    # every guess is the same image, so any matching scores the same: pair them in order
    return score(guess, originals, data_range, match=False)
