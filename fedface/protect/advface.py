"""`advface`: paper 003 (AdvFace, Wang et al., CVPR 2023), moved from split inference into federated training.

The paper (Sec. 3.1, 4): a client sends the output z of a feature extractor to a server; AdvFace trains a *shadow*
reconstruction model S on (feature, face) pairs with the attacker's L1 loss (eq. 3) and perturbs z by PGD so that
S(z + delta) is as far as possible from the face (eq. 2), bounded per iteration (eq. 6):

    z_{t+1} = z_t + alpha * sign(grad_z ||S(z_t) - x||_1),  z_0 = z,  s.t. ||z_{t+1} - z_t|| < eps      (eq. 6)

with 40 iterations, alpha = 0.2 and eps = 0.2 (Sec. 5.1.2), delta initialised to zero (below eq. 5).

Here, in FL, the "feature" is the inner protection's ``model_input`` (``inner``: none, ppfr_fd, ...), computed on
the client, and it is a *training input*: it never leaves the client -- the server receives weight updates -- so the
perturbation acts like a data augmentation against a decoder-based attacker who recovers or simulates model inputs,
not like the paper's protection of stored features. Differences from the paper, each stated:

- Target. The paper's server holds no face, so it reconstructs a shadow image x~ = S(z) and perturbs E(x~) instead
  (eqs. 4-5). Our client holds its own face x, so the PGD maximises eq. 2 itself, ||S(z + delta) - x||_1.
- Shadow training data. The paper trains S at the server on a public set (CASIA-WebFace, Adam lr 1e-4); the client
  here trains S ONCE in ``fit`` on its own shard (model_input -> its own face), with a CPU-sized budget
  (``shadow.steps``; lr 1e-3 by default because a few hundred steps at 1e-4 leave S near the mean face).
  S is the attacker's own U-Net (``fedface.models.decoder``, kind=decoder: the L1 loss of eqs. 1/3).
- Scale. The paper's eps and alpha are absolute on FaceNet's early conv features, which are batch-normalised (unit
  scale). Our model_inputs have other scales (``none``: pixels in [-1, 1]; ``ppfr_fd``: self-normalised DCT
  channels), so alpha and eps are in units of ``scale``: the std of the client's inner model_inputs measured in
  ``fit``. Per iteration the step is alpha * scale * sign(g), clipped to eps * scale (eq. 6's constraint, L_inf).
- Total bound. Eq. 6 bounds each iteration only, which allows up to iterations * min(alpha, eps) = 8 (in scale
  units) in total. We add the projection of standard PGD (Madry et al., the paper's ref. [21]) onto an L_inf ball of
  radius ``total_eps`` * scale (default 1.0: the perturbation is never larger than the signal's own std, element-wise);
  ``total_eps: null`` keeps the paper's literal per-step-only bound.
- BatchNorm statistics (Sec. 4.2, end): the paper recomputes S's BN statistics on each test batch. Our U-Net uses
  instance normalisation, which already normalises each input with its own statistics.

PGD has no randomness of its own (delta starts at zero, as in the paper); the inner protection draws from the
``generator`` passed to ``forward``, so a client's steps replay exactly from its seed. delta is computed on a detached
copy and added as a constant: no gradient of the PGD reaches the training graph, while the inner protection's own
parameters (PPFR-FD's analysis gates) still get theirs.

The shadow decoder describes the client's faces, so it is held outside the module tree: not in ``parameters()`` (the
optimiser never sees it), not in ``state_dict()`` (never saved or sent), like PEEP's eigenfaces.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fedface.models.decoder import DecoderConfig, UNet, to_targets, train
from fedface.config import known_keys_only
from fedface.protect import build_protection, needs_key, register
from fedface.models.spec import InputSpec
from fedface.protect.base import Protection

log = logging.getLogger(__name__)

#: the paper's PGD (Sec. 5.1.2): 40 iterations, alpha = 0.2, per-iteration bound eps = 0.2
ITERATIONS, ALPHA, EPS = 40, 0.2, 0.2
#: our total L_inf bound, in units of the inner model_input's std (the paper states none; see the module docstring)
TOTAL_EPS = 1.0
CONFIG_KEYS = {"name", "inner", "iterations", "alpha", "eps", "total_eps", "shadow"}


@dataclass(frozen=True)
class ShadowConfig:
    """The shadow decoder S (paper 003 Sec. 4.2): the attacker's U-Net with the L1 loss, trained once per client."""

    size: int = 32          # S outputs size x size faces (the learned attack works at 64: 4x the cost of PGD)
    width: int = 16         # U-Net width at full resolution (as the learned attack's config, attack.decoder.width)
    steps: int = 300        # Adam steps in ``fit``
    batch_size: int = 32
    lr: float = 1.0e-3      # the paper uses 1e-4 over a full dataset; see the module docstring
    seed: int = 0
    max_seconds: float = 900.0  # bounds ``fit`` on a slow machine

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | None) -> "ShadowConfig":
        out = cls(**known_keys_only(cls, cfg or {}, "protect.shadow"))
        if out.size < 32 or out.size % 16:
            raise ValueError(f"protect.shadow.size={out.size}: the U-Net halves it 4 times and instance-normalises "
                             "the 2 x 2 bottom, use a multiple of 16 from 32")
        if out.steps < 1 or out.width < 1 or out.batch_size < 1 or out.lr <= 0:
            raise ValueError(f"protect.shadow needs steps, width, batch_size >= 1 and lr > 0, got {asdict(out)}")
        return out

    def decoder(self) -> DecoderConfig:
        return DecoderConfig(kind="decoder", size=self.size, width=self.width, steps=self.steps,
                             batch_size=self.batch_size, lr=self.lr, seed=self.seed, max_seconds=self.max_seconds)


@dataclass
class _Shadow:
    """A plain holder (not an ``nn.Module``), so that the trained S stays out of the protection's module tree."""

    net: UNet
    scale: float           # std of the inner model_inputs S was trained on: the unit of alpha / eps / total_eps
    facts: dict[str, Any]


class AdvFace(Protection):
    """`advface`: ``inner`` protection, then PGD against the client's shadow decoder (paper 003 eq. 6).

    Config: inner (none; a protection name or a mapping with its own config), iterations (40), alpha (0.2), eps (0.2,
    per iteration), total_eps (1.0; null: no total bound, the paper's literal eq. 6), shadow (size, width, steps,
    batch_size, lr, seed, max_seconds). alpha, eps and total_eps are in units of the inner model_input's std.
    """

    name = "advface"

    def __init__(self, inner: Protection, iterations: int = ITERATIONS, alpha: float = ALPHA, eps: float = EPS,
                 total_eps: float | None = TOTAL_EPS, shadow: ShadowConfig | None = None):
        super().__init__()
        if iterations < 0:
            raise ValueError(f"protect.iterations={iterations} must be >= 0")
        if alpha <= 0 or eps <= 0:
            raise ValueError(f"protect.alpha={alpha} and protect.eps={eps} must be > 0")
        if total_eps is not None and total_eps <= 0:
            raise ValueError(f"protect.total_eps={total_eps} must be > 0 (or null for no total bound)")
        if isinstance(inner, AdvFace):
            raise ValueError("protect.inner=advface: AdvFace cannot stack on itself")
        self.inner = inner
        self.needs_key, self.grid = inner.needs_key, inner.grid
        self.iterations, self.alpha, self.eps, self.total_eps = iterations, alpha, eps, total_eps
        self.shadow_cfg = shadow or ShadowConfig()
        self._shadow: _Shadow | None = None
        self.last_seconds: float | None = None  # wall time of the last forward's PGD

    # ------------------------------------------------------------------------------------------ the bound
    @property
    def step_bound(self) -> float:
        """Absolute L_inf size of one PGD iteration: min(alpha, eps) * scale (eq. 6)."""
        return min(self.alpha, self.eps) * self._fitted().scale

    @property
    def total_bound(self) -> float:
        """Absolute L_inf bound of the whole perturbation: total_eps * scale, or iterations * step without one."""
        if self.total_eps is None:
            return self.iterations * self.step_bound
        return min(self.total_eps * self._fitted().scale, self.iterations * self.step_bound)

    # ------------------------------------------------------------------------------------------ the shadow model
    def fit(self, images: torch.Tensor) -> "AdvFace":
        """Fit the inner protection, then train S on (inner(images), images) -- the client's own pairs, once."""
        self.inner.fit(images)
        cfg = self.shadow_cfg
        gen = torch.Generator().manual_seed(cfg.seed)  # the inner protection's per-image randomness (Shuffle2)
        was_training = self.inner.training
        self.inner.eval()
        with torch.no_grad():
            inputs = torch.cat([self.inner(images[i:i + 64].float(), generator=gen).float()
                                for i in range(0, len(images), 64)])
        self.inner.train(was_training)
        targets = to_targets(images.float(), cfg.size)
        # decoder.train seeds the global RNG: keep the caller's untouched; and it needs autograd even when fit runs
        # under a caller's no_grad (forward fits on the first batch it sees)
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            net, facts = train(inputs, targets, cfg.decoder())
        net.zero_grad(set_to_none=True)
        net.requires_grad_(False)
        net.eval()
        scale = float(inputs.std())
        if not scale > 0:
            raise ValueError(f"advface: the inner protection {self.inner.name!r} gave constant model_inputs on the "
                             f"{len(images)} fit images; the bound (protect.eps x std) would be 0")
        self._shadow = _Shadow(net, scale, {k: facts[k] for k in ("steps", "seconds", "stopped", "pairs")}
                               | {"final_l1": facts["history"][-1]["l1"]})
        log.info("advface: shadow decoder trained on %d own images in %.1fs (L1 %.3f); scale %.4f, L_inf bounds "
                 "%.4f per iteration, %.4f total", len(images), facts["seconds"], facts["history"][-1]["l1"], scale,
                 self.step_bound, self.total_bound)
        return self

    def _fitted(self) -> _Shadow:
        if self._shadow is None:
            raise RuntimeError("advface: the shadow decoder is not trained yet; call fit(images) on the client's "
                               "own faces first (forward does it on the first batch)")
        return self._shadow

    @property
    def shadow(self) -> UNet:
        return self._fitted().net

    def shadow_loss(self, model_input: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Per-sample L1 reconstruction loss of S (eqs. 2-3): sum |S(model_input) - x| over pixels, (B,)."""
        net = self.shadow
        net.to(model_input.device)
        target = to_targets(images.float(), net.size).to(model_input.device)
        return (net(model_input) - target).abs().flatten(1).sum(1)

    # ------------------------------------------------------------------------------------------ the protection
    def output_spec(self, height: int, width: int) -> InputSpec:
        return self.inner.output_spec(height, width)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self._shadow is None:
            log.info("advface: training the shadow decoder on the first batch (%d images)", x.shape[0])
            self.fit(x)
        z = self.inner(x, generator=generator)
        return z + self.perturbation(z.detach(), x).to(z.dtype)

    def perturbation(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """delta for model_inputs ``z`` of raw faces ``x``: eq. 6's PGD, maximising S's L1 loss, within the bounds.
        Returns a tensor with no autograd history."""
        t0 = time.perf_counter()
        step, total = self.step_bound, self.total_bound
        z = z.detach().float()
        delta = torch.zeros_like(z)  # "delta being initialized to zero" (below eq. 5)
        with torch.enable_grad():  # callers may run under no_grad (evaluation, the attacker's masking)
            for _ in range(self.iterations):
                zt = (z + delta).requires_grad_(True)
                loss = self.shadow_loss(zt, x).sum()  # eq. 5: grad of ||S(z~ + delta) - x||_1
                (grad,) = torch.autograd.grad(loss, zt)
                # eq. 6: a signed step of size alpha, each iteration's change bounded by eps (L_inf)
                move = (self.alpha * self._shadow.scale * grad.sign()).clamp(-step, step)
                delta = (delta + move).clamp(-total, total)  # our total bound (standard PGD projection)
        self.last_seconds = time.perf_counter() - t0
        return delta.detach()

    def aux_loss(self) -> torch.Tensor | None:
        return self.inner.aux_loss()

    def mixed_labels(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.inner.mixed_labels(labels)

    def describe(self) -> dict:
        facts: dict[str, Any] = {"name": self.name, "inner": self.inner.describe(), "iterations": self.iterations,
                                 "alpha": self.alpha, "eps": self.eps, "total_eps": self.total_eps,
                                 "shadow": asdict(self.shadow_cfg)}
        if self._shadow is not None:
            facts.update(scale=self._shadow.scale, step_bound=self.step_bound, total_bound=self.total_bound,
                         shadow_training=dict(self._shadow.facts))
        return facts


def inner_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``protect.inner`` as a protection config: a name (its defaults) or a mapping with ``name``."""
    inner = cfg.get("inner", "none")
    if inner is None:
        inner = "none"
    if isinstance(inner, str):
        return {"name": inner}
    if isinstance(inner, Mapping) and "name" in inner:
        return dict(inner)
    raise ValueError(f"protect.inner={inner!r}: give a protection name (none, ppfr_fd, ...) or a mapping with "
                     f"`name` and that protection's keys")


def _needs_key(cfg: Mapping[str, Any]) -> bool:
    return needs_key(inner_cfg(cfg))  # AdvFace adds no key: it is keyed exactly when its inner protection is


@register("advface", needs_key=_needs_key)
def _advface(cfg: Mapping[str, Any], key: bytes | None) -> Protection:
    unknown = sorted(set(cfg) - CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown protect key(s) {', '.join('protect.' + k for k in unknown)} for advface; "
                         f"known: {', '.join(sorted(CONFIG_KEYS))}")
    total = cfg.get("total_eps", TOTAL_EPS)
    return AdvFace(
        build_protection(inner_cfg(cfg), key),
        iterations=int(cfg.get("iterations", ITERATIONS)),
        alpha=float(cfg.get("alpha", ALPHA)),
        eps=float(cfg.get("eps", EPS)),
        total_eps=None if total is None else float(total),
        shadow=ShadowConfig.from_cfg(cfg.get("shadow")),
    )
