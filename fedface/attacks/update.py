"""Attack one observed client update: rebuild what the server knows, plan the client's steps, invert.

Only the ``Observation`` (built from messages), the resolved run config (the server's own: architecture, protection
*settings*, hyper-parameters -- never the key) and the ``ThreatModel`` enter here. ``structure`` (the client's
recorded steps) is consulted only for the ``knows_seed`` / ``knows_labels`` upper bounds, and then only for labels,
batch composition and the MixUp structure, never for pixels.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from fedface.attacks.gradient import Generative, InversionConfig, Plan, Reconstruction, infer_labels, invert, \
    invert_policy_update, slot_plan, stand_in_head, target_update
from fedface.attacks.replay import LossModel, Optimiser, state_of, trainable_names
from fedface.attacks.threat import Observation, ThreatModel
from fedface.freq.ppfr import self_normalize
from fedface.mixup import MixupConfig, PolicyNet
from fedface.models import build_backbone, build_head
from fedface.protect import input_spec
from fedface.train.loop import StepRecord, TrainConfig, round_margin_scale


class Skip(Exception):
    """The reply lacks what the configured attack needs (the federation goes on; the reason is logged)."""


def attack_update(obs: Observation, run_cfg: Mapping[str, Any], icfg: InversionConfig, threat: ThreatModel,
                  structure: list[StepRecord] | None = None, generative: Generative | None = None
                  ) -> tuple[Reconstruction, dict[str, Any]]:
    """Gradient inversion of ``obs``; returns the reconstruction and facts (label inference, plan, assumptions).
    ``generative``: search a face generator's latent (GGL, ``gradient.generative_prior``) instead of the input."""
    if obs.steps < 1 or not obs.returned:
        raise Skip(f"node {obs.node}: the reply carries no update (steps={obs.steps})")
    if threat.knows_seed and obs.members:
        raise Skip("knows_seed replays one client's steps in order; a SecAgg+ aggregate is several clients' at once")
    if (threat.knows_seed or threat.knows_labels) and structure is None:
        raise Skip(f"node {obs.node}: {threat.label} needs the client's recorded steps (ground truth not recorded)")
    spec = input_spec(run_cfg["protect"])
    mixing_on = run_cfg["mixup"]["name"] != "none"
    tcfg = TrainConfig.from_cfg(run_cfg["train"])
    plan, facts = _plan(obs, run_cfg, tcfg, threat, structure, icfg)
    if icfg.max_inputs is not None and plan.slots > icfg.max_inputs:
        raise Skip(f"node {obs.node}: the update needs {plan.slots} unknown inputs ({obs.steps} steps over "
                   f"{obs.num_examples} examples), above attack.gradient.max_inputs={icfg.max_inputs} (memory bound)")
    if obs.has_head:  # the shared head's global label space
        classes = int(run_cfg["federation"]["num_classes"])
    elif plan.hard is None and plan.mixing is None:  # stand-in head: one row per assumed class
        classes = len(plan.label_set)
    else:  # stand-in head sized by the known (local) labels
        classes = _max_label(plan) + 1
    backbone = build_backbone(run_cfg["model"], spec)
    model = LossModel(backbone, build_head(run_cfg["model"], backbone.embedding_size, classes))
    model.head.margin_scale = round_margin_scale(run_cfg, obs.server_round)  # what the client's head used
    start = state_of(model)
    known = {k: torch.as_tensor(np.asarray(v)).to(start[k].dtype) for k, v in obs.sent.items() if k in start}
    start.update(known)
    unknown = tuple(n for n in trainable_names(model) if n not in known)
    if not obs.has_head:  # head=local: a random stand-in head, optimised jointly with the inputs
        start.update(stand_in_head(model.head, classes, icfg.seed))
    facts["unknown_tensors"] = len(unknown)
    target = target_update(obs.sent, obs.returned, trainable_names(model))
    project = _projection(run_cfg["protect"], mixing_on and plan.mixing is None)
    rec = invert(model, start, target, plan, spec.shape, Optimiser.of(tcfg), icfg, unknown, project, generative)
    return rec, facts


def attack_policy_channel(obs: Observation, run_cfg: Mapping[str, Any], icfg: InversionConfig) -> Reconstruction:
    """Invert the policy gradient a client sent (mixup=adaptive) for its masked, un-mixed batches."""
    if obs.policy_update is None or obs.policy_sent is None:
        raise Skip(f"node {obs.node}: no policy update in the reply (mixup is not adaptive)")
    if not any(np.any(np.asarray(g) != 0) for g in obs.policy_update.values()):
        raise Skip(f"node {obs.node}: the policy update is zero (no REINFORCE baseline yet, or a single k: log pi = 0)")
    mcfg = MixupConfig.from_cfg(run_cfg["mixup"])
    spec = input_spec(run_cfg["protect"])
    policy = PolicyNet(spec, len(mcfg.ks), mcfg.policy_width)
    policy.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in obs.policy_sent.items()})
    k_indices = [i for i, c in enumerate(obs.k_counts) for _ in range(int(c))]
    batch = min(int(run_cfg["train"]["batch_size"]), obs.num_examples)
    return invert_policy_update(policy, obs.policy_update, k_indices, batch, spec.shape, icfg,
                                _projection(run_cfg["protect"], mixed=False))


def _max_label(plan: Plan) -> int:
    if plan.mixing is not None:
        return max(int(m[2].max()) for m in plan.mixing)
    return int(plan.hard.max())


def _plan(obs: Observation, run_cfg: Mapping[str, Any], tcfg: TrainConfig, threat: ThreatModel,
          structure: list[StepRecord] | None, icfg: InversionConfig) -> tuple[Plan, dict[str, Any]]:
    facts: dict[str, Any] = {"threat": threat.label}
    if threat.knows_seed:  # upper bound: the true batch composition, labels and MixUp structure
        shard_ids = torch.cat([r.indices for r in structure]).unique()  # slot s = s-th distinct image used
        slot_of = {int(i): s for s, i in enumerate(shard_ids)}
        batches = [torch.tensor([slot_of[int(i)] for i in r.indices]) for r in structure]
        hard = torch.zeros(len(shard_ids), dtype=torch.long)
        for r, b in zip(structure, batches):
            hard[b] = r.labels
        mixing = None
        if structure[0].partners is not None:
            mixing = [(r.partners, r.mix_weights, r.mix_labels) for r in structure]
        facts["labels"] = "known (seed)"
        renorm = bool(run_cfg["mixup"].get("renormalize", False))
        return Plan(batches, [r.lr for r in structure], hard=hard, mixing=mixing, renormalize=renorm), facts
    plan = Plan(slot_plan(obs.steps, obs.num_examples, tcfg.batch_size), [obs.lr] * obs.steps)
    slots = plan.slots
    if threat.knows_labels:
        label_set = sorted({int(v) for r in structure for v in (r.mix_labels if r.mix_labels is not None
                                                                   else r.labels).flatten()})
        facts["labels"] = "known set"
    elif obs.has_head:
        w0, w1 = (torch.as_tensor(np.asarray(a["head.weight"])) for a in (obs.sent, obs.returned))
        label_set = infer_labels(w0, w1, min(slots, w0.shape[0]))
        facts["labels"] = "inferred (head rows)"
    else:
        label_set = list(range(icfg.local_classes or min(slots, tcfg.batch_size)))
        facts["labels"] = "stand-in head"
    facts["label_set"] = plan.label_set = label_set
    return plan, facts


def _projection(protect_cfg: Mapping[str, Any], mixed: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What the attacker knows of the input's form (Kerckhoffs: the protection's design is public): raw pixels lie in
    [-1, 1]; PPFR-FD's masked input is self-normalised (eq. 7, per image or per channel). Mixtures of them have no
    such form."""
    if mixed:
        return None
    if protect_cfg["name"] == "none":
        return lambda x: x.clamp(-1.0, 1.0)
    if protect_cfg["name"] == "ppfr_fd" and not protect_cfg.get("analysis") and \
            protect_cfg.get("steps", {}).get("normalize", True):
        norm = str(protect_cfg.get("norm", "image"))
        return lambda x: self_normalize(x, norm=norm)
    return None
