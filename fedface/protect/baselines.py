"""Non-frequency baselines of paper 000's Table 1: ``peep`` (DP), ``noise`` (plain pixel noise), ``instahide``
(``dp_sgd``, DP-SGD on the client's update, is ``fedface.protect.dp``).

All take raw pixels (B, 1, H, W) in [0, 255] and work on the ``none`` standardisation, (x - 127.5) / 127.5.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F

from fedface.data.synthetic import synthetic_faces
from fedface.freq.bdct import BLOCK, block_grid
from fedface.freq.ppfr import draw
from fedface.mixup.mix import mix_weights, mix_with, shuffle_partners
from fedface.protect import register
from fedface.models.spec import InputSpec
from fedface.protect.base import PIXEL_CENTER, PIXEL_SCALE, Protection
from fedface.protect.frequency import dct_input

log = logging.getLogger(__name__)


def standardize(x: torch.Tensor) -> torch.Tensor:
    return (x - PIXEL_CENTER) / PIXEL_SCALE


def laplace(scale: torch.Tensor, shape, generator: torch.Generator | None) -> torch.Tensor:
    """Laplace(0, scale) by inverse CDF: -scale * sign(u) * log(1 - 2|u|), u ~ U(-1/2, 1/2)."""
    u = draw(torch.rand, shape, generator, scale.device) - 0.5
    return -scale * torch.sign(u) * torch.log1p(-2 * u.abs())


class Peep(Protection):
    """`peep`: PEEP (Chamikara et al. 2020): eigenface projection + Laplace noise (local DP). Config: epsilon (5),
    components (64). Paper 000's DP row uses epsilon = 5; 3 is the stricter setting.

    Eigenfaces (PCA of standardised images) are fit on the client's own images: ``fit(images)``, or automatically on
    the first batch ``forward`` sees. They are non-persistent buffers -- they describe the client's faces and stay
    out of ``state_dict``. Each of the K projection weights w_k is clipped to the range [lo_k, hi_k] seen at fit time,
    so its sensitivity is Delta_k = hi_k - lo_k, and released with Laplace noise of scale Delta_k / epsilon
    (per-coefficient epsilon, as PEEP perturbs each eigenface weight independently). ``model_input`` is the noisy
    projection reconstructed back to an image (1, H, W): the model stem stays the raw one.
    """

    name = "peep"

    def __init__(self, epsilon: float = 5.0, components: int = 64):
        super().__init__()
        if epsilon <= 0 or components < 1:
            raise ValueError(f"peep needs epsilon > 0 and components >= 1, got {epsilon}, {components}")
        self.epsilon, self.components = epsilon, components
        for name in ("mean", "basis", "low", "high"):
            self.register_buffer(name, None, persistent=False)
        self.shape: tuple[int, int] | None = None

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> Peep:
        """PCA of ``images`` (N, 1, H, W), N >= 2: the mean face, min(components, N - 1) eigenfaces, weight ranges."""
        if images.shape[0] < 2:
            raise ValueError(f"peep needs at least 2 images to fit eigenfaces, got {images.shape[0]}")
        z = standardize(images.to(torch.float32)).flatten(1)
        self.mean = z.mean(dim=0)
        _, _, vh = torch.linalg.svd(z - self.mean, full_matrices=False)
        self.basis = vh[: min(self.components, z.shape[0] - 1)]
        w = (z - self.mean) @ self.basis.T
        self.low, self.high = w.amin(dim=0), w.amax(dim=0)
        self.shape = tuple(images.shape[-2:])
        return self

    @property
    def noise_scale(self) -> torch.Tensor:
        """Laplace scale per eigenface weight, Delta_k / epsilon."""
        return (self.high - self.low) / self.epsilon

    def output_spec(self, height: int, width: int) -> InputSpec:
        return InputSpec(1, height, width)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.basis is None:
            log.info("peep: fitting %d eigenfaces on the first batch (%d images)", self.components, x.shape[0])
            self.fit(x)
        if tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"peep was fit on {self.shape} images, got {tuple(x.shape[-2:])}")
        w = ((standardize(x).flatten(1) - self.mean) @ self.basis.T).clamp(self.low, self.high)
        w = w + laplace(self.noise_scale.expand_as(w), w.shape, generator)
        return (self.mean + w @ self.basis).view_as(x)

    def describe(self) -> dict:
        k = None if self.basis is None else self.basis.shape[0]
        return {"name": self.name, "epsilon": self.epsilon, "components": self.components, "fitted_components": k}


class PixelNoise(Protection):
    """`noise`: standardised pixels + Gaussian noise of std ``sigma`` (config, default 0.1, in [-1, 1] units)."""

    name = "noise"

    def __init__(self, sigma: float = 0.1):
        super().__init__()
        self.sigma = sigma

    def output_spec(self, height: int, width: int) -> InputSpec:
        return InputSpec(1, height, width)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return standardize(x) + self.sigma * draw(torch.randn, x.shape, generator, x.device)

    def describe(self) -> dict:
        return {"name": self.name, "sigma": self.sigma}


class InstaHide(Protection):
    """`instahide` (Huang et al. 2020) as paper 000 runs it for its Table 1 row: k = 3 images per mix, of which
    ``public`` (1) is "a fixed public image ... the same public image for encryption in training and testing".

    Training: each face is mixed with k - 1 - public random partners from its batch and the fixed public image(s),
    weights ~ Dirichlet(1, ..., 1), then every element's sign is flipped at random (the one-time mask). Test (eval
    mode): each face is mixed with the same public image(s) only, each at its expected training weight 1/k, the
    face at the rest, with fresh signs -- never with another test face. The public image is not a client's face: a
    procedural face (``fedface.data.synthetic``, seed ``public_seed``), so every client and the evaluator share it.
    Labels: the private columns' weights renormalised (the public image has no label).
    Config: k (3), public (1; 0 is the inside-dataset variant), public_seed (0), domain (pixel | freq: mix the
    ``fr_fd`` coefficients, paper 001's InstaHide-FD).

    ``last_mix()`` returns (partners, weights) of the last training batch's private columns, both (B, k - public),
    column 0 being the image itself, weights summing to 1, for the target sum_j weights[i, j] onehot(y[partners]).
    """

    name = "instahide"

    def __init__(self, k: int = 3, domain: str = "pixel", public: int = 1, public_seed: int = 0):
        super().__init__()
        if k < 1 or domain not in ("pixel", "freq") or not 0 <= public < k:
            raise ValueError(f"instahide needs k >= 1, 0 <= public < k and domain pixel|freq, got k={k}, "
                             f"public={public}, domain={domain!r}")
        self.k, self.domain, self.public, self.public_seed = k, domain, public, public_seed
        self.grid = BLOCK if domain == "freq" else 1
        faces = synthetic_faces(num_identities=max(public, 1), images_per_identity=1, seed=public_seed).images
        self.register_buffer("public_faces", faces[:public].unsqueeze(1).float(), persistent=False)
        self._mix: tuple[torch.Tensor, torch.Tensor] | None = None

    def output_spec(self, height: int, width: int) -> InputSpec:
        return InputSpec(64, *block_grid(height, width)) if self.domain == "freq" else InputSpec(1, height, width)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return dct_input(x) if self.domain == "freq" else standardize(x)

    def _public(self, x: torch.Tensor) -> torch.Tensor:
        faces = self.public_faces.to(x.device)
        if faces.shape[-2:] != x.shape[-2:]:
            faces = F.interpolate(faces, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self._encode(faces)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z, b = self._encode(x), x.shape[0]
        if self.training:
            private = self.k - self.public
            partners = shuffle_partners(b, private, generator, x.device)
            weights = mix_weights(b, self.k, 1.0, generator, x.device, "dirichlet")  # Exp(1) -> Dirichlet(1)
            mixed = mix_with(z, partners, weights[:, :private])
            own = weights[:, :private]
            self._mix = (partners, own / own.sum(dim=1, keepdim=True))
        else:
            weights = torch.full((b, self.k), 1.0 / self.k, device=x.device)
            mixed = z * (1.0 - self.public / self.k)
        if self.public:
            mixed = mixed + torch.einsum("bp,p...->b...", weights[:, self.k - self.public:].to(z.dtype),
                                         self._public(x))
        sign = torch.where(draw(torch.rand, z.shape, generator, x.device) < 0.5, -1.0, 1.0)
        return sign * mixed

    def last_mix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(partners (B, k - public) long, weights (B, k - public), rows summing to 1) of the last training batch."""
        if self._mix is None:
            raise RuntimeError("instahide.last_mix() called before any training forward")
        return self._mix

    def mixed_labels(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        partners, weights = self.last_mix()
        return labels.to(partners.device)[partners], weights

    def mix_spec(self) -> dict:
        return {"k": [self.k - self.public], "shares": [1], "max_weight": 1.0, "weight_draw": "dirichlet"}

    def describe(self) -> dict:
        return {"name": self.name, "k": self.k, "public": self.public, "public_seed": self.public_seed,
                "domain": self.domain}


@register("peep")
def _peep(cfg: Mapping[str, Any], key: bytes | None) -> Protection:
    return Peep(epsilon=float(cfg.get("epsilon", 5.0)), components=int(cfg.get("components", 64)))


@register("noise")
def _noise(cfg: Mapping[str, Any], key: bytes | None) -> Protection:
    return PixelNoise(sigma=float(cfg.get("sigma", 0.1)))


@register("instahide")
def _instahide(cfg: Mapping[str, Any], key: bytes | None) -> Protection:
    return InstaHide(k=int(cfg.get("k", 3)), domain=str(cfg.get("domain", "pixel")), public=int(cfg.get("public", 1)),
                     public_seed=int(cfg.get("public_seed", 0)))
