"""Gradient inversion of one client's update: label inference, DLG, InvertingGradients, FedAvg multi-step inversion.

- Label inference (Zhao et al. 2020, iDLG): the classifier row of a class present in the batch receives the largest
  update. For an ArcFace head (rows normalised in the forward) weight decay moves a row only along itself, and the
  cross-entropy pull of a present class is orthogonal-dominant, so a row's score is the norm of its update with the
  radial part removed; the classes kept are the top rows up to the largest ratio gap (``infer_labels``).
- DLG (Zhu et al. 2019): minimise || delta(x) - delta_observed ||^2 (in gradient units: divided by the step's lr).
- InvertingGradients (Geiping et al. 2020, eq. 4): minimise 1 - cos(delta(x), delta_observed) + tv * TV(x), Adam on
  the sign of the gradient, lr decayed x0.1 at 3/8, 5/8, 7/8 of the iterations, restarts keep the best match.
- FedAvg multi-step (Geiping et al. 2020 Sec. 5): delta(x) is the update after *all* the client's local steps,
  simulated by ``replay.unroll`` with the client's own optimiser. The attack recovers the model input (the
  protection's ``model_input``, MixUp mixtures when the mixing structure is unknown) of every batch slot.
- ``head=local``: the client's head never travels; the attacker optimises a stand-in head jointly with the inputs.

What the attacker assumes about the client's batches (threat model: ``fedface.attacks.threat``): without the seed it
knows the batch size, the reported step count and sample count, so batch t uses slots (t mod (n // B)) * B ...; in
one epoch (steps <= n // B) this is no assumption (slots are free variables), in later epochs it wrongly assumes the
same order and ignores augmentation. BatchNorm: the simulator runs train-mode BN (batch statistics), as the client
did; a batch of one sample cannot train our trunks (their embedding BatchNorm1d needs >= 2 samples in train mode), so
batch-size-1 cases use a BN-free model (the DLG fixture).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fedface.attacks.replay import LossModel, Optimiser, Step, unroll
from fedface.config import check_choice, known_keys_only
from fedface.mixup.mix import blend


@dataclass
class InversionConfig:
    method: str = "ig"  # ig: cosine + TV, signed Adam (Geiping et al.) | dlg: L2 (Zhu et al.)
    optimizer: str = "adam"  # adam (InvertingGradients) | lbfgs (DLG's original optimiser)
    iterations: int = 1000
    lr: float = 0.1
    restarts: int = 1
    tv: float = 1e-4  # total-variation weight (ig)
    max_seconds: float = 120.0  # per attack (all restarts); then the best so far is reported as partial
    local_classes: int | None = None  # head=local: classes of the stand-in head (None: the batch size)
    scale: int = 1  # optimise a 1/scale-resolution input, bilinearly upsampled (a smoothness prior; 1 = off)
    seed: int = 0
    # memory bound: every unknown input is unrolled through all the update's steps (a 4-client SecAgg+ aggregate of
    # 6 ORL steps asks for 240 inputs of 112x112 and took > 19 GB here); above it the attack is skipped, saying why
    max_inputs: int | None = 128
    # Generative gradient leakage (GGL, Li et al. CVPR 2022; GIAS, Jeon et al. NeurIPS 2021): search the latent space
    # of a face generator learned on the attacker's own auxiliary faces, each generated face passed through the
    # attacker's copy of the protection into the replayed local steps. free: the model input itself (DLG / IG);
    # pca: eigenfaces (a linear generator, seconds to fit); gan: the DCGAN prior (trained once by `fedface prior`;
    # fedface.experiment.generators reads it from attack.cache)
    prior: str = "free"
    components: int = 64  # prior=pca: eigenfaces of the aux faces and their mirrors
    latent_weight: float = 1e-2  # the latent's standard-normal prior: weight * mean(z^2) added to the match loss
    gan: dict[str, Any] = field(default_factory=dict)  # prior=gan: fedface.models.face_gan.GanConfig

    METHODS = ("ig", "dlg")
    OPTIMIZERS = ("adam", "lbfgs")
    PRIORS = ("free", "pca", "gan")

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> "InversionConfig":
        out = cls(**known_keys_only(cls, cfg, "attack.gradient"))
        check_choice(out.method, cls.METHODS, "attack.gradient.method")
        check_choice(out.optimizer, cls.OPTIMIZERS, "attack.gradient.optimizer")
        check_choice(out.prior, cls.PRIORS, "attack.gradient.prior")
        return out


@dataclass
class Generative:
    """GGL's search space: a latent (slots, ``dim``) -> ``decode`` -> faces (slots, 1, H, W) in [-1, 1] ->
    ``to_input`` (the attacker's copy of the protection) -> the model inputs the replayed steps train on. ``fit``
    (linear priors only): each face's least-squares latent, the best face the prior can draw of it (the ceiling
    scoring reports)."""

    decode: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    to_input: Callable[[torch.Tensor], torch.Tensor]
    fit: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class Plan:
    """How the dummy slots make up the client's steps, and with which labels.

    ``batches[t]``: slot indices of step t. Labels: ``hard`` (slots,) when known; otherwise ``label_set`` and every
    slot learns a soft label over it (DLG's learned labels, Algorithm 1 mixed-label form). ``mixing[t]``: the known
    MixUp structure (partners into the step's slots, weights, mixed labels) -- ``knows_seed`` only.
    """

    batches: list[torch.Tensor]
    lrs: list[float]
    hard: torch.Tensor | None = None
    label_set: list[int] = field(default_factory=list)
    mixing: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    renormalize: bool = False  # mixup.renormalize: the client standardised each blend (fedface.mixup.mix.blend)

    @property
    def slots(self) -> int:
        return int(torch.cat(self.batches).max()) + 1


@dataclass
class Reconstruction:
    x: torch.Tensor  # (slots, C, H, W) recovered model inputs (MixUp sources when the structure was known)
    label_set: list[int]
    soft_labels: torch.Tensor | None  # (slots, |label_set|) learned label weights, when labels were not known
    match_loss: float
    iterations: int
    seconds: float
    stopped: str  # "iterations" | "max_seconds"
    pictures: torch.Tensor | None = None  # (slots, 1, H, W) in [0, 255]: the generated faces (a generative prior)
    latent: torch.Tensor | None = None  # the optimised variable (a generator's latent, or a 1/scale image)

    def facts(self) -> dict[str, Any]:
        return {"slots": int(self.x.shape[0]), "label_set": self.label_set, "match_loss": self.match_loss,
                "iterations": self.iterations, "seconds": self.seconds, "stopped": self.stopped}


def row_scores(w_before: torch.Tensor, w_after: torch.Tensor) -> torch.Tensor:
    """Per class: norm of the head row's update without its radial part (weight decay acts only radially)."""
    delta = w_after - w_before
    unit = w_before / w_before.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (delta - (delta * unit).sum(dim=1, keepdim=True) * unit).norm(dim=1)


def infer_labels(w_before: torch.Tensor, w_after: torch.Tensor, max_labels: int) -> list[int]:
    """iDLG-style label inference for an ArcFace head: the top-scored rows up to the largest ratio gap among the
    first ``max_labels + 1`` scores (a batch of B samples holds at most B classes)."""
    scores = row_scores(w_before, w_after)
    order = scores.argsort(descending=True)
    top = scores[order[: max_labels + 1]].clamp_min(1e-30)
    if len(top) <= 1:
        return order[:1].tolist()
    ratios = top[:-1] / top[1:]
    count = int(ratios[:max_labels].argmax()) + 1
    return sorted(order[:count].tolist())


def idlg_label(bias_update: torch.Tensor, count: int = 1) -> list[int]:
    """iDLG (Zhao et al. 2020) for a softmax classifier with bias: one sample's bias gradient p - onehot(y) is negative
    only at y, so its SGD update (-lr * gradient) is positive only there. For ``count`` samples of distinct classes
    (and several plain SGD steps on them) the batch-mean gradient p_c - 1/count is negative at the true classes while
    p_c < 1/count, so their updates are the ``count`` largest."""
    return sorted(bias_update.topk(count).indices.tolist())


def slot_plan(steps: int, num_examples: int, batch_size: int) -> list[torch.Tensor]:
    """The attacker's batch layout without the seed: step t uses batch (t mod n // B) of consecutive slots."""
    bs = min(batch_size, num_examples)
    per_epoch = max(num_examples // bs, 1)
    return [torch.arange(bs) + (t % per_epoch) * bs for t in range(steps)]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def match_loss(pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], method: str,
               lr: float) -> torch.Tensor:
    """ig: 1 - cosine of the concatenated updates; dlg: squared L2 distance in gradient units (update / lr)."""
    names = sorted(target)
    p = torch.cat([pred[n].flatten() for n in names])
    t = torch.cat([target[n].flatten() for n in names])
    if method == "ig":
        return 1 - (p * t).sum() / (p.norm() * t.norm()).clamp_min(1e-12)
    return ((p - t) / lr).square().sum()


def _steps(x: torch.Tensor, plan: Plan, soft: torch.Tensor | None) -> list[Step]:
    out = []
    for t, idx in enumerate(plan.batches):
        xb = x[idx]
        if plan.mixing is not None:  # knows_seed: mix the dummy sources exactly as the client mixed its batch
            partners, weights, mix_labels = plan.mixing[t]
            out.append(Step(blend(xb, partners, weights, plan.renormalize), mix_labels, weights, plan.lrs[t]))
        elif plan.hard is not None:
            out.append(Step(xb, plan.hard[idx], None, plan.lrs[t]))
        else:
            labels = torch.as_tensor(plan.label_set).expand(len(idx), -1)
            out.append(Step(xb, labels, soft[idx].softmax(dim=1), plan.lrs[t]))
    return out


def invert(model: LossModel, start: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], plan: Plan,
           input_shape: tuple[int, ...], opt: Optimiser, cfg: InversionConfig, unknown: tuple[str, ...] = (),
           project: Callable[[torch.Tensor], torch.Tensor] | None = None,
           generative: Generative | None = None) -> Reconstruction:
    """Recover the model inputs of ``plan``'s slots from the observed update ``target`` (returned - sent, by name).

    ``unknown``: names in ``start`` the attacker does not know (a local head), optimised jointly from their start
    values. ``project``: the attacker's knowledge of the input's structure (pixel box [-1, 1], PPFR-FD's per-channel
    self-normalisation), applied after every Adam step, and to L-BFGS's result only (a projection between L-BFGS
    steps would break its curvature history). ``generative``: optimise a face generator's latent instead (GGL); the
    latent's prior replaces TV and the projection.
    """
    lr_scale = sum(plan.lrs) / len(plan.lrs)
    channels, height, width = input_shape
    low = (channels, max(1, height // cfg.scale), max(1, width // cfg.scale))

    def render(z: torch.Tensor) -> torch.Tensor:
        """The model input from the optimised variable: the generated face through the attacker's protection;
        else the variable itself, or a bilinear upsampling of a 1/scale image."""
        if generative is not None:
            return generative.to_input(generative.decode(z))
        return z if low == tuple(input_shape) else F.interpolate(z, size=(height, width), mode="bilinear")

    def prior(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor | float:
        if generative is not None:
            return cfg.latent_weight * z.square().mean()
        return cfg.tv * total_variation(x) if cfg.method == "ig" and cfg.tv > 0 else 0.0

    def problem(gen: torch.Generator):
        if generative is not None:  # GGL starts from the generator's typical faces, |z| ~ sqrt(dim) / 2
            z = (0.5 * torch.randn(plan.slots, generative.dim, generator=gen)).requires_grad_()
        else:
            z = torch.randn(plan.slots, *low, generator=gen)
            z = (project(z) if project else z).requires_grad_()
        soft = None if plan.hard is not None or plan.mixing is not None else \
            torch.zeros(plan.slots, len(plan.label_set)).requires_grad_()
        hidden = {n: start[n].detach().clone().requires_grad_() for n in unknown}

        def objective() -> tuple[torch.Tensor, float]:
            x = render(z)
            state = unroll(model, {**start, **hidden}, _steps(x, plan, soft), opt)
            match = match_loss({n: state[n] - start[n] for n in target}, target, cfg.method, lr_scale)
            return match + prior(z, x), float(match.detach())

        return z, soft, [z, *([soft] if soft is not None else []), *hidden.values()], objective

    rec = _optimise(problem, cfg, None if generative is not None else project, list(plan.label_set), render)
    if generative is not None:
        with torch.no_grad():
            rec.pictures = (generative.decode(rec.latent) + 1) * 127.5
    return rec


def invert_policy_update(policy: nn.Module, update: Mapping[str, torch.Tensor], k_indices: list[int],
                         batch_size: int, input_shape: tuple[int, ...], cfg: InversionConfig,
                         project: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Reconstruction:
    """The policy channel (paper 001): a client sends g = sum_t (r_t - b) grad log pi(k_t | x_t), where x_t is its
    masked batch of step t. The server holds pi and reads each k_t's count from the reply, so it can match
    sum_t a_t grad log pi(k_t | x^_t) to g over dummy batches x^_t and unknown advantages a_t (1 - cosine, ig's
    optimiser). The order of the k_t over steps is unknown; they are taken in index order (exact for one step)."""
    names = [n for n, _ in policy.named_parameters()]
    target = {n: torch.as_tensor(np.asarray(update[n])).float() for n in names}
    params = dict(policy.named_parameters())
    steps = len(k_indices)

    def problem(gen: torch.Generator):
        x = torch.randn(steps * batch_size, *input_shape, generator=gen)
        x = (project(x) if project else x).requires_grad_()
        advantage = torch.ones(steps, requires_grad=True)

        def objective() -> tuple[torch.Tensor, float]:
            total = None
            for t, k in enumerate(k_indices):
                log_pmf = functional_call(policy, params, (x[t * batch_size:(t + 1) * batch_size],))
                grads = torch.autograd.grad(log_pmf[k], list(params.values()), create_graph=True)
                scaled = [advantage[t] * g for g in grads]
                total = scaled if total is None else [a + b for a, b in zip(total, scaled)]
            match = match_loss(dict(zip(names, total)), target, "ig", 1.0)
            return match, float(match.detach())

        return x, None, [x, advantage], objective

    return _optimise(problem, replace(cfg, method="ig", optimizer="adam"), project, [])


def _optimise(problem, cfg: InversionConfig, project, label_set: list[int],
              render: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Reconstruction:
    """Restarts of one inversion ``problem(generator) -> (x, soft labels, variables, objective)``; the best match
    wins. Every restart and iteration counts against ``cfg.max_seconds``; when it runs out, the best so far returns
    with ``stopped="max_seconds"``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    t0, best = time.perf_counter(), None
    for _ in range(cfg.restarts):
        x, soft, variables, objective = problem(gen)
        step = _lbfgs_steps(variables, objective) if cfg.optimizer == "lbfgs" else \
            _adam_steps(variables, objective, x, cfg, project)
        stopped, it, value = "iterations", 0, float("inf")
        for it in range(1, cfg.iterations + 1):
            value = step()
            if time.perf_counter() - t0 > cfg.max_seconds:
                stopped = "max_seconds"
                break
        variable = x.detach().clone()
        variable = project(variable) if project is not None else variable
        with torch.no_grad():
            result = render(variable) if render is not None else variable
        if best is None or value < best[1]:
            best = (result, value, None if soft is None else soft.detach().softmax(dim=1), it, stopped, variable)
        if stopped == "max_seconds":
            break
    x, value, soft_w, iters, stopped, variable = best
    return Reconstruction(x, label_set, soft_w, value, iters, time.perf_counter() - t0, stopped, latent=variable)


def _adam_steps(variables, objective, x: torch.Tensor, cfg: InversionConfig, project) -> Callable[[], float]:
    """InvertingGradients' optimiser: Adam on signed gradients (ig), lr x0.1 at 3/8, 5/8 and 7/8 of the run."""
    optimizer = torch.optim.Adam(variables, lr=cfg.lr)
    milestones = [int(cfg.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)

    def step() -> float:
        optimizer.zero_grad()
        loss, value = objective()
        loss.backward()
        if cfg.method == "ig":
            x.grad.sign_()
        optimizer.step()
        scheduler.step()
        if project is not None:
            with torch.no_grad():
                x.copy_(project(x))
        return value

    return step


def _lbfgs_steps(variables, objective) -> Callable[[], float]:
    """DLG's optimiser (Zhu et al. 2019): L-BFGS, lr 1, up to 20 evaluations per iteration (strong Wolfe search)."""
    optimizer = torch.optim.LBFGS(variables, lr=1.0, max_iter=20, history_size=100, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-12, tolerance_change=1e-15)
    last = [float("inf")]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss, last[0] = objective()
        loss.backward()
        return loss

    def step() -> float:
        optimizer.step(closure)
        return last[0]

    return step


def generative_prior(cfg: InversionConfig, aux: torch.Tensor, protection: nn.Module, seed: int,
                     gan: Any = None) -> tuple[Generative, dict[str, Any]]:
    """GGL's generator for ``cfg.prior``, learned from the attacker's auxiliary faces ``aux`` (N, H, W) in [0, 255]
    only, and ``protection``: the attacker's fitted copy of the clients' protection (its own key unless it was handed
    the clients'). The protection's per-image randomness is drawn from ``seed`` on every pass: the attacker cannot
    know the client's draws, and a fixed draw keeps its objective deterministic. ``prior=gan``: ``gan`` is the GAN
    prior trained beforehand on those faces (``fedface.experiment.generators.attack_gan_prior``)."""
    from fedface.attacks.inversion import FacePrior

    if cfg.prior == "pca":
        prior, facts = FacePrior(aux, cfg.components, seed), {"prior": "pca", "components": cfg.components}
    elif gan is None:
        raise ValueError("attack.gradient.prior=gan needs the trained GAN prior (fedface.experiment.generators)")
    else:
        prior, facts = gan, {"prior": "gan"}

    def to_input(faces: torch.Tensor) -> torch.Tensor:
        return protection((faces + 1) * 127.5, generator=torch.Generator().manual_seed(seed))

    return Generative(prior.decode, prior.components, to_input, prior.fit if cfg.prior == "pca" else None), facts


def target_update(sent: Mapping[str, Any], returned: Mapping[str, Any], names: list[str]) -> dict[str, torch.Tensor]:
    """returned - sent for every trainable parameter the reply carries (the client's update, per tensor)."""
    return {n: torch.as_tensor(returned[n]).float() - torch.as_tensor(sent[n]).float() for n in names if n in returned}


def stand_in_head(head: nn.Module, classes: int, seed: int) -> dict[str, torch.Tensor]:
    """A random ArcFace head of ``classes`` rows for the attacker's joint optimisation (head=local)."""
    gen = torch.Generator().manual_seed(seed)
    return {f"head.{n}": torch.randn(classes, *p.shape[1:], generator=gen) * 0.01 for n, p in head.named_parameters()}
