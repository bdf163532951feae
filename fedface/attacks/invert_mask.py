"""White-box inversion of a protection: from its ``model_input`` (what gradient inversion recovers) back to pixels.

DESIGN.md "Malicious server": the server may, as a stress test, know the Shuffle1 key (one colluding client hands
it over). This module is that attacker's last step: given the protection and the recovered ``model_input``, undo
every client-side step that the key and public knowledge allow, estimate what was thrown away from the attacker's
auxiliary faces, and say what is lost. ``to_image`` returns (images (B, 1, H, W) in [0, 255], note) or (None, why).

Coefficients a protection does not carry (the DC, the channels past ``keep``) are filled with their mean over the
auxiliary faces -- the attacker's best constant guess for an unknown coefficient -- or with 0 when no auxiliary faces
are given. With that rule an inversion that recovers nothing returns the mean face, i.e. the mean-face floor of
``fedface.metrics.mean_face_floor`` is its zero point. Outputs are clipped to [0, 255], where every original lies.

Per protection: ``none`` exact; ``noise``, ``peep`` the image they send, noise included; ``fr_fd`` exact unless it
drops channels; ``ppfr_fd`` exact in analysis mode, approximate in masking mode and only with the key;
``obfuscator`` close to the mean face (two AC channels without their signs); ``instahide`` None (per-element signs).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

from fedface.attacks.unmix import unmix
from fedface.freq.bdct import BLOCK, ibdct
from fedface.freq.ppfr import coefficients, mix_channels, self_normalize
from fedface.protect.base import PIXEL_CENTER, PIXEL_SCALE, Protection
from fedface.protect.frequency import dct_input

ALL = BLOCK * BLOCK
#: Ridge of the channel un-mixing (in units of the normalised channels' unit variance): the error of a swapped
#: channel is as large as the signal, so a prior of that order: 0.1 was best on ORL (0.03 - 0.3 within 0.1 dB; 0
#: loses 1.4 dB, the swaps blow up through D's inverse).
RIDGE = 0.1
#: Graduated assignment schedule of ``_unsort``: inverse temperature BETA[0] -> BETA[1], x GROWTH a round, INNER
#: soft-assign updates a round, SINKHORN normalisations an update. Set on ORL faces: a slower schedule (1.15, 5) puts
#: 2% more channels right at 3x the time.
BETA, GROWTH, INNER, SINKHORN = (0.01, 100.0), 1.3, 3, 20


def to_image(protection: Protection, model_input: torch.Tensor, aux_images: torch.Tensor | None = None,
             permutation: torch.Tensor | None = None) -> tuple[torch.Tensor | None, str]:
    """(B, 1, H, W) float images in [0, 255] and a note on what the inversion assumed or lost; (None, reason) when
    this protection cannot be inverted white-box.

    ``aux_images`` (N, 1, H, W) in [0, 255]: the attacker's own faces, for the statistics the masking removes.
    ``permutation``: Shuffle1's permutation if the attacker holds the key, else None. It is a parameter, never read
    from ``protection.permutation``, so that an attacker without the key cannot use it by accident.
    """
    invert = _INVERTERS.get(protection.name)
    if invert is None:
        return None, f"no white-box inversion for protection {protection.name!r}"
    aux = None if aux_images is None else aux_images.detach().to(torch.float64)
    images, note = invert(protection, model_input.detach().to(torch.float64), aux, permutation)
    return (None, note) if images is None else (images.clamp(0, 255).to(torch.float32), note)


def _unstandardize(z: torch.Tensor) -> torch.Tensor:
    return z * PIXEL_SCALE + PIXEL_CENTER


def _assemble(known: torch.Tensor, channels: list[int], fill: torch.Tensor | None) -> torch.Tensor:
    """Zig-zag ``channels`` from ``known`` (B, len(channels), h, w), every other channel from ``fill`` (64, h, w;
    zeros when None) -> ibdct image (B, 1, 8h, 8w)."""
    b, _, h, w = known.shape
    full = known.new_zeros(b, ALL, h, w) if fill is None else fill.expand(b, ALL, h, w).clone()
    full[:, channels] = known
    return ibdct(full)


def _pixels(p: Protection, y: torch.Tensor, aux, permutation) -> tuple[torch.Tensor, str]:
    """``none`` and ``dp_sgd`` are exact; ``noise`` and ``peep`` already send an image, which keeps their noise."""
    notes = {"none": "exact", "dp_sgd": "exact: DP-SGD leaves the input as it is (its noise is on the update)",
             "noise": "the Gaussian pixel noise stays in the image",
             "peep": "PEEP's eigenface projection and Laplace noise stay in the image"}
    return _unstandardize(y), notes[p.name]


def _instahide(p: Protection, y: torch.Tensor, aux, permutation) -> tuple[None, str]:
    return None, ("instahide flips the sign of every element at random after mixing: recover |mix| and the mixing "
                  "structure first (Carlini et al. 2021), then fedface.attacks.unmix")


def _unsent(p: Protection, aux) -> str:
    """Which BDCT channels a frequency protection does not send, and what ``_assemble`` puts there ('' if none)."""
    lost = [f"channels {p.keep}-63"] * (p.keep < ALL) + ["DC"] * p.drop_dc
    return f"{' and '.join(lost)} {'set to 0' if aux is None else 'from the aux mean'}" if lost else ""


def _fr_fd(p: Protection, y: torch.Tensor, aux, permutation) -> tuple[torch.Tensor, str]:
    """ibdct of the sent channels: an orthogonal change of basis of ``none``, exact when nothing was dropped."""
    fill = None if aux is None else dct_input(aux).mean(dim=0)
    return _unstandardize(_assemble(y, list(range(p.drop_dc, p.keep)), fill)), _unsent(p, aux) or "exact"


def _channel_stats(x: torch.Tensor, norm: str = "channel") -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, sample std) of each image's channels (``norm="channel"``) or of each whole image (``"image"``),
    averaged over images: what self-normalisation typically removes. Shapes broadcast against one image."""
    dims = (-3, -2, -1) if norm == "image" else (-2, -1)
    mean = x.mean(dim=dims, keepdim=True)
    count = math.prod(x.shape[d] for d in dims)
    std = (x - mean).square().sum(dim=dims, keepdim=True).div(count - 1).sqrt()
    return mean.mean(dim=0), std.mean(dim=0)


def _mixing(channels: int) -> torch.Tensor:
    """Eq. 5 as a matrix: M = D E with D (C - 1, C), D[j, j] = D[j, j + 1] = 1/2."""
    d = torch.zeros(channels - 1, channels, dtype=torch.float64)
    j = torch.arange(channels - 1)
    d[j, j] = d[j, j + 1] = 0.5
    return d


def _rank_log_prob(pre_aux: torch.Tensor) -> torch.Tensor:
    """(C, C) log P(the sort puts channel j at position l) over the aux faces, +1 smoothed (unseen pairs possible)."""
    n, c = pre_aux.shape[:2]
    order = pre_aux.abs().mean(dim=(-2, -1)).argsort(dim=1, descending=True, stable=True)  # [i, l] = channel at l
    counts = torch.zeros(c, c, dtype=torch.float64, device=pre_aux.device)
    counts.index_put_((torch.arange(c, device=pre_aux.device).expand(n, c), order),
                      torch.ones(n, c, dtype=torch.float64, device=pre_aux.device), accumulate=True)
    return torch.log((counts + 1) / (n + c))


def _sinkhorn(logits: np.ndarray) -> np.ndarray:
    """Sinkhorn (1964): alternately normalise rows and columns of exp(logits) -> a doubly stochastic matrix."""
    for _ in range(SINKHORN):
        logits = logits - logsumexp(logits, axis=-1, keepdims=True)
        logits = logits - logsumexp(logits, axis=-2, keepdims=True)
    return np.exp(logits)


def _unsort(y: torch.Tensor, pre_aux: torch.Tensor) -> torch.Tensor:
    """Un-sort by graph matching: (B, C) index j of the pre-sort channel at each sorted position l of each image.

    The sort keys are gone from a self-normalised input, but each channel keeps two fingerprints that the aux faces,
    run through the same steps with the attacker's Shuffle1 permutation, give a model of:
    - its own map: channel j's maps are Gaussian around their aux mean (per-channel variance), and the sort put it
      at position l with the aux frequency P(l | j) -- the energy rule;
    - its correlations with the other channels: neighbours M_j, M_{j+1} share E_{j+1} (correlation ~0.5, where
      unrelated channels have ~0.1), and the F_i correlate as faces do. Each entry is Gaussian around its aux mean.
    The assignment minimising the summed negative log-likelihoods is a quadratic assignment problem; graduated
    assignment (Gold & Rangarajan, TPAMI 1996) relaxes it to doubly stochastic matrices, anneals towards a
    permutation and is rounded by the Hungarian algorithm. On 40 ORL faces it puts 81% of the channels where they
    were, the energy rule alone 6%.
    """
    z, za = self_normalize(y), self_normalize(pre_aux)  # scale-free, so also right when ``normalize`` is off
    pixels = z.shape[-2] * z.shape[-1]
    mean, var = za.mean(dim=0), za.var(dim=0).mean(dim=(-2, -1))
    fit = (z[:, :, None] - mean).square().sum(dim=(-2, -1)) / (2 * var) + pixels / 2 * var.log()
    unary = fit - _rank_log_prob(pre_aux)  # (B, l, j)
    corr = z.flatten(2) @ z.flatten(2).transpose(1, 2) / (pixels - 1)
    corr_aux = za.flatten(2) @ za.flatten(2).transpose(1, 2) / (pixels - 1)
    # the annealing loop runs thousands of ops on (B, C, C) arrays: numpy, because torch's thread pool spends far
    # longer waking up on arrays this small than computing, badly so on a busy CPU
    unary, corr = unary.cpu().numpy(), corr.cpu().numpy()
    r = corr_aux.mean(dim=0).cpu().numpy()
    w = 1 / (2 * corr_aux.var(dim=0).cpu().numpy() + 1 / pixels)  # 1 / pixels: sampling noise of a correlation
    np.fill_diagonal(w, 0)
    p = np.full_like(unary, 1 / unary.shape[-1])
    beta = BETA[0]
    while beta < BETA[1]:
        for _ in range(INNER):
            # gradient of sum P U + 1/2 sum P[l,j] P[l',j'] w[j,j'] (corr[l,l'] - r[j,j'])^2, expanded into matmuls
            grad = unary + corr**2 @ p @ w - 2 * corr @ p @ (w * r) + p.sum(axis=1, keepdims=True) @ (w * r**2)
            p = _sinkhorn(-beta * grad)
        beta *= GROWTH
    return torch.stack([torch.as_tensor(linear_sum_assignment(-q)[1]) for q in p]).to(y.device)


def _ppfr_fd(p: Protection, y: torch.Tensor, aux, permutation) -> tuple[torch.Tensor | None, str]:
    """Undo paper 000's masking (``fedface.freq.ppfr.mask``) step by step, last step first.

    Masking mode, every step on: y = norm(sort(shuffle2(D norm(F[:, perm])))). Known: Shuffle1's ``permutation``
    (the key), the mixing D, the sort rule. Unknown, estimated from the aux faces run through the same steps:
    1. the sort order (the sort undoes Shuffle2, so only the sort's order matters): ``_unsort``;
    2. each mixed channel's (``norm=image``: each image's) mean and std removed by eq. 7: their aux averages;
    3. the mixing: 34 equations, 35 unknowns per coefficient, with D's null space the alternating vector
       (+1, -1, ...). Solved as ridge regression around the aux mean of the normalised E (``unmix`` on the
       residual, ``RIDGE``): the null-space component and the part that channels swapped by step 1 corrupt shrink
       towards the typical face instead of being amplified (D's condition number is ~20);
    4. each F_i's (``norm=image``: each image's) mean and std removed by eq. 4: their aux averages;
    5. the DC and the channels past ``keep``: the aux mean.
    Analysis mode: y = a * F with the gate weights a_i > 0, which travel with the model: exact on the kept channels.
    """
    kept = list(range(p.drop_dc, p.keep))
    fill = None if aux is None else coefficients(aux).mean(dim=0)
    if p.analysis:
        f = y / p.gate.weights.detach().to(y)[None, :, None, None]
        return _assemble(f, kept, fill) * 255, "; ".join(filter(None, ["analysis mode: exact", _unsent(p, aux)]))
    steps = p.steps
    if steps["shuffle1"] and permutation is None:
        return None, "Shuffle1 key unknown"
    if steps["shuffle2"] and not steps["sort"]:
        return None, "Shuffle2 draws a fresh channel order per image and no sort undoes it"
    if aux is None:
        return None, "ppfr_fd inversion needs aux_images for the statistics the masking removes"
    perm = permutation.to(y.device) if steps["shuffle1"] else torch.arange(len(kept), device=y.device)
    e_aux = coefficients(aux, p.keep)[:, kept][:, perm]
    n_aux = self_normalize(e_aux, p.eps, p.norm) if steps["normalize"] else e_aux
    pre_aux = mix_channels(n_aux) if steps["mix"] else n_aux
    pre = y
    if steps["sort"]:
        pre = torch.empty_like(y).scatter_(1, _unsort(y, pre_aux)[:, :, None, None].expand_as(y), y)
    if steps["normalize"]:
        mean, std = _channel_stats(pre_aux, p.norm)
        pre = pre * std + mean
    n = pre
    if steps["mix"]:
        d, prior = _mixing(len(kept)).to(y.device), n_aux.mean(dim=0)
        residual = pre - torch.einsum("jk,khw->jhw", d, prior)
        n = prior + unmix(residual.transpose(0, 1), d, RIDGE)[0].transpose(0, 1)
    if steps["normalize"]:
        mean, std = _channel_stats(e_aux, p.norm)
        n = n * std + mean
    f = torch.empty_like(n)
    f[:, perm] = n
    guessed = [("sort", "sort order by graph matching"), ("normalize", "channel means/stds from the aux faces"),
               ("mix", "the mixing's null space shrunk to the aux mean")]
    guesses = [text for step, text in guessed if steps[step]]
    note = "; ".join(filter(None, ["approximate: " + ", ".join(guesses) if guesses else "exact", _unsent(p, aux)]))
    return _assemble(f, kept, fill) * 255, note


def _obfuscator(p: Protection, y: torch.Tensor, aux, permutation) -> tuple[torch.Tensor | None, str]:
    """Paper 002's recovered channels d_k = a_k * s * b^t: a_k self-normalised, s a random sign per element, t an
    integer per image and channel (Algorithm 2 cancels the random b^v up to the power t set by max |a_k|).

    |a_k| comes back exactly: a self-normalised channel has sum a^2 = n - 1 (up to beta), which fixes b^t. The signs
    are gone; the estimate multiplies |a_k| by E[sign a_k] at each block over the aux faces (the least-squares guess
    when signs are independent of magnitudes), then restores the aux-average mean and std. The DC and the other 61
    channels are never sent: the aux mean face's (BDCT is linear, so that is the mean of the aux faces' channels).
    With ``upscale`` > 1 the channels belong to the upscaled face; its inverse BDCT is averaged back over each
    upscale x upscale cell (the least-squares downscale of a box-sampled image).
    """
    if aux is None:
        return None, "obfuscator inversion needs aux_images: signs, scales and the other channels are not sent"
    size = y.shape[-2] * y.shape[-1]
    rms = y.square().sum(dim=(-2, -1), keepdim=True).div(size - 1).sqrt()
    magnitude = y.abs() / torch.where(rms > 0, rms, torch.ones_like(rms))  # all-zero channel: a_k was constant
    c_aux = p.coefficients(aux)
    sign = torch.sign(self_normalize(c_aux, p.beta)).mean(dim=0)
    mean, std = _channel_stats(c_aux)
    fill = p.coefficients(aux.to(torch.float64).mean(dim=0, keepdim=True), ALL)[0]
    images = _assemble(magnitude * sign * std + mean, p.channels, fill)
    if p.upscale > 1:
        images = F.avg_pool2d(images, p.upscale)
    note = "approximate: per-element signs guessed from the aux faces; DC and other channels from the aux mean"
    return images * 255, note


_INVERTERS = {"none": _pixels, "dp_sgd": _pixels, "noise": _pixels, "peep": _pixels, "instahide": _instahide, "fr_fd": _fr_fd,
              "ppfr_fd": _ppfr_fd, "obfuscator": _obfuscator}
