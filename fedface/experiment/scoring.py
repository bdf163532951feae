"""Run one gradient attack on one observed reply and score it against the client's recorded ground truth.

The attack side (``update.attack_update``, then the white-box ``invert_mask.to_image`` when the threat grants the
key) sees only what the threat model grants. The scoring side -- the experimenter -- reads the client's recorded
steps (``ground_truth``) to compare: in the masked space (recovered model inputs vs the true ones, Hungarian-matched),
after un-mixing when MixUp mixed the batch and the attacker did not know the structure, and in pixel space when an
image could be formed; each next to the mean-face floor of the attacker's auxiliary faces, plus label accuracy.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedface.attacks.gradient import Generative, InversionConfig, Reconstruction, generative_prior
from fedface.experiment.generators import attack_gan_prior
from fedface.attacks.inversion import InversionConfig as CentreInversionConfig
from fedface.attacks.inversion import invert_centres
from fedface.attacks.invert_mask import to_image
from fedface.attacks.learned import attacker_protection
from fedface.attacks.threat import AttackConfig, Observation, ThreatModel
from fedface.attacks.unmix import coefficients_from_labels, unmix
from fedface.attacks.update import Skip, attack_policy_channel, attack_update
from fedface.experiment.ground_truth import ground_truth_path, load_ground_truth
from fedface.experiment.judge import IdentityJudge, pictures
from fedface.experiment.keys import clients_key, colluders_key
from fedface.io import atomic_save_safetensors, atomic_write_json
from fedface.metrics import mean_face_floor, score
from fedface.protect import build_protection
from fedface.runs import RunLayout
from fedface.train.loop import StepRecord


def attack_and_score(obs: Observation, run_cfg: dict[str, Any], acfg: AttackConfig, threat: ThreatModel,
                     run_dir: Path) -> dict[str, Any]:
    """Attack ``obs`` under ``threat``; save the reconstruction (+ image, grid) and return the scored summary."""
    records, people = _records(obs, run_dir)  # the experimenter's ground truth, for scoring
    icfg = InversionConfig.from_cfg(acfg.gradient)
    granted = records if threat.knows_seed or threat.knows_labels else None  # the attack sees it only when granted
    try:
        generative, prior_facts = _generative(icfg, run_cfg, threat, acfg.cache)
        rec, facts = attack_update(obs, run_cfg, icfg, threat, granted, generative)
    except Skip as why:
        return {"node": obs.node, "round": obs.server_round, "attack": "gradient", "threat": threat.label,
                "skipped": str(why)}
    out_dir = _out_dir(obs, run_dir)
    if rec.pictures is not None:  # GGL: the generated faces are the attacker's pictures
        images, note = rec.pictures, "the generator's faces (GGL)"
    else:
        images, note = _white_box_image(rec.x, run_cfg, threat)
    arrays = {"model_input": rec.x.numpy()}
    if images is not None:
        arrays["image"] = images.numpy()
    if rec.soft_labels is not None:
        arrays["soft_labels"] = rec.soft_labels.numpy()
    atomic_save_safetensors(out_dir / f"{threat.label}.safetensors", arrays)
    summary = {"node": obs.node, "round": obs.server_round, "attack": "gradient", "threat": threat.label,
               **rec.facts(), **facts, **prior_facts, "image_note": note}
    if records is not None:
        summary["scores"] = score_against_truth(rec, images, records, run_cfg, threat)
        if images is not None and people is not None:
            judge = _judge(obs, run_cfg, run_dir)
            summary["scores"]["identity"] = identity_scores(judge, images, people, records,
                                                            summary["scores"]["image"], rec, obs)
            summary["scores"]["ceiling"] = identity_ceilings(judge, people, records, generative)
        _grid(out_dir / f"{threat.label}.png", rec, images, records, summary["scores"])
    atomic_write_json(out_dir / f"{threat.label}.json", summary)
    return summary


def policy_channel_and_score(obs: Observation, run_cfg: dict[str, Any], acfg: AttackConfig,
                             run_dir: Path) -> dict[str, Any]:
    """Invert the policy gradient of ``obs`` (mixup=adaptive) and score it against the true masked batches."""
    base = {"node": obs.node, "round": obs.server_round, "attack": "policy", "threat": "server"}
    try:
        rec = attack_policy_channel(obs, run_cfg, InversionConfig.from_cfg(acfg.gradient))
    except Skip as why:
        return {**base, "skipped": str(why)}
    out_dir = _out_dir(obs, run_dir)
    atomic_save_safetensors(out_dir / "policy.safetensors", {"model_input": rec.x.numpy()})
    summary = {**base, **rec.facts()}
    records, _ = _records(obs, run_dir)
    if records is not None:
        true = truth(records)["model_input"]
        summary["scores"] = {"masked": _brief(score(rec.x, true, _range(true)))}
    atomic_write_json(out_dir / "policy.json", summary)
    return summary


def _out_dir(obs: Observation, run_dir: Path) -> Path:
    return RunLayout(run_dir).attack(obs.server_round, obs.node)


def _records(obs: Observation, run_dir: Path) -> tuple[list[StepRecord] | None, torch.Tensor | None]:
    """The observed client's recorded steps and the person of each of its images (rank among all training
    identities; None unless every client recorded them); for a SecAgg+ aggregate, every member's (shard indices
    offset so that two clients' images stay distinct)."""
    out, people, offset = [], [], 0
    for node in obs.members or [obs.node]:
        gt_file = ground_truth_path(obs.server_round, node, RunLayout(run_dir).ground_truth)
        if gt_file is None or not gt_file.exists():
            return None, None
        records, meta = load_ground_truth(gt_file)
        out += [dataclasses.replace(r, indices=r.indices + offset) for r in records]
        size = max(int(r.indices.max()) for r in records) + 1
        people.append(None if meta.get("identities") is None else torch.as_tensor(meta["identities"]))
        offset += max(size, 0 if people[-1] is None else len(people[-1]))
    return out, None if any(p is None for p in people) else torch.cat(people)


def _judge(obs: Observation, run_cfg: dict[str, Any], run_dir: Path) -> IdentityJudge:
    """The one judge of a reply's pictures: every training image of the federation as gallery, the global model the
    server sent this round behind the clients' protection (their key, when the experimenter holds it) as target."""
    gallery, labels = _gallery(json.dumps(run_cfg["data"], sort_keys=True), int(run_cfg["seed"]))
    return IdentityJudge(gallery, labels, _target_system(obs, run_cfg, gallery), int(run_cfg["seed"]),
                         cache=RunLayout(run_dir).judge_cache)


def identity_scores(judge: IdentityJudge, images: torch.Tensor, people: torch.Tensor, records: list[StepRecord],
                    image_scores: dict, rec: Reconstruction, obs: Observation) -> dict[str, Any]:
    """Does each recovered face show its person? dlib COS / same person / top-1 among all training identities, and
    SRRA / top-1 on the target system (``_judge``). Whose face a recovered one should be: with a shared head, the
    class the attack itself assigned it (its learned label: a shared head's class is a training identity) -- the
    attacker must name the person; otherwise the person of the true image it was matched to in pixel space."""
    if rec.soft_labels is not None and obs.has_head:
        slots = list(range(len(images)))
        claimed = torch.as_tensor(rec.label_set)[rec.soft_labels.argmax(dim=1)]
        pairing = "the attack's own labels"
    else:
        slots = [i for i, _ in image_scores["matching"]]
        claimed = people[list(_first_uses(records))][[j for _, j in image_scores["matching"]]]
        pairing = "pixel matching"
    pics = images[slots].float().reshape(len(slots), 1, *images.shape[-2:])
    return {**judge.score(pictures((pics / 127.5 - 1).clamp(-1, 1)), claimed), "pairing": pairing}


def identity_ceilings(judge: IdentityJudge, people: torch.Tensor, records: list[StepRecord],
                      generative: Generative | None) -> dict[str, Any]:
    """What a gradient attack could at best score with the same judge: ``truth`` -- the attacked faces themselves
    (a perfect reconstruction: on a weak target system even they may not pass its threshold); ``prior_fit`` (GGL
    with a linear prior, PCA) -- the prior's least-squares fit of each face, the best picture the attack can draw."""
    true = truth(records)
    faces = true["pixels"].float().reshape(len(true["pixels"]), 1, *true["pixels"].shape[-2:]) / 127.5 - 1
    ids = people[list(_first_uses(records))]
    out = {"truth": judge.score(pictures(faces), ids)}
    if generative is not None and generative.fit is not None:
        out["prior_fit"] = judge.score(pictures(generative.decode(generative.fit(faces))), ids)
    return out


@functools.lru_cache(maxsize=2)
def _gallery(data_cfg_json: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training image of the federation and its person (rank among the training identities, the label space
    of a shared head and of ``NodeData.identities``)."""
    from fedface.data.partition import make_partition
    from fedface.data.sources import load_configured

    data_cfg = json.loads(data_cfg_json)
    data = load_configured(data_cfg)
    table = make_partition(data, data_cfg, seed, root=data_cfg.get("root"))
    train = data.labels[torch.as_tensor(table.train_idx)].numpy()
    return data.take(table.train_idx), torch.as_tensor(np.searchsorted(np.unique(train), train))


def _target_system(obs: Observation, run_cfg: dict[str, Any], gallery: torch.Tensor) -> tuple | str:
    """(backbone, protection) of the FR system the recovered faces are replayed to, or why there is none."""
    from fedface.models import backbone_from
    from fedface.protect import input_spec

    protect = run_cfg["protect"]
    key, missing = clients_key(protect, "federation")
    if missing:
        return missing
    backbone = backbone_from(run_cfg["model"], input_spec(protect), obs.sent, strict=False)
    protection = build_protection(protect, key).fit(gallery.unsqueeze(1).float())
    return backbone.eval(), protection.eval()


def _generative(icfg: InversionConfig, run_cfg: dict[str, Any], threat: ThreatModel, cache: Any
                ) -> tuple[Generative | None, dict[str, Any]]:
    """GGL's generator (``attack.gradient.prior``), from the attacker's own aux faces and its copy of the protection:
    its own key, or the colluding client's under ``knows_key``."""
    if icfg.prior == "free":
        return None, {}
    aux = attacker_aux(run_cfg["data"], int(run_cfg["seed"]))
    if aux is None:
        raise Skip(f"attack.gradient.prior={icfg.prior} learns from the attacker's aux faces: data.aux gives none")
    protect = run_cfg["protect"]
    protection = attacker_protection(protect, aux[:, 0], icfg.seed, colluders_key(protect, threat.knows_key))
    if icfg.prior != "gan":
        return generative_prior(icfg, aux[:, 0], protection, icfg.seed)
    gan, trained = attack_gan_prior(aux[:, 0], icfg.gan, cache)
    generative, facts = generative_prior(icfg, aux[:, 0], protection, icfg.seed, gan)
    return generative, {**facts, "gan": trained}


def _white_box_image(x: torch.Tensor, run_cfg: dict[str, Any], threat: ThreatModel
                     ) -> tuple[torch.Tensor | None, str]:
    """Back to pixels as far as the threat allows; the key only with ``knows_key`` (the colluding client's copy)."""
    if run_cfg["mixup"]["name"] != "none" and not threat.knows_seed:
        return None, "MixUp mixtures: pixels only after un-mixing (see scores.unmixed)"
    protect = run_cfg["protect"]
    colluder_key = colluders_key(protect, threat.knows_key)
    protection = build_protection(protect, colluder_key or os.urandom(32))  # own random key: unused without knows_key
    permutation = getattr(protection, "permutation", None) if colluder_key else None
    return to_image(protection, x, attacker_aux(run_cfg["data"], int(run_cfg["seed"])),
                    permutation)


def attacker_aux(data_cfg: dict[str, Any], seed: int) -> torch.Tensor | None:
    """The attacker's auxiliary faces (N, 1, 112, 112) float in [0, 255] (LFW-a people outside the federation)."""
    return _aux(json.dumps(data_cfg, sort_keys=True), seed)


@functools.lru_cache(maxsize=2)
def _aux(data_cfg_json: str, seed: int) -> torch.Tensor | None:
    from fedface.data.partition import make_partition
    from fedface.data.sources import load_aux, load_configured

    data_cfg = json.loads(data_cfg_json)
    table = make_partition(load_configured(data_cfg), data_cfg, seed, root=data_cfg.get("root"))
    aux = load_aux(table, data_cfg.get("root"), seed=seed)
    return None if aux is None else aux.unsqueeze(1).float()


def _first_uses(records: list[StepRecord]) -> dict[int, tuple[int, int]]:
    """Each distinct shard image this round -> (step, batch row) of its first use, in order of first use."""
    seen: dict[int, tuple[int, int]] = {}
    for t, r in enumerate(records):
        for j, i in enumerate(r.indices.tolist()):
            seen.setdefault(i, (t, j))
    return seen


def truth(records: list[StepRecord]) -> dict[str, torch.Tensor]:
    """Each distinct shard image at its first use this round: model input, pixels and label."""
    pick = list(_first_uses(records).values())
    return {"model_input": torch.stack([records[t].model_input[j] for t, j in pick]),
            "pixels": torch.stack([records[t].pixels[j] for t, j in pick]),
            "labels": torch.tensor([int(records[t].labels[j]) for t, j in pick])}


def _range(x: torch.Tensor) -> float:
    return float(x.max() - x.min())


def score_against_truth(rec: Reconstruction, images: torch.Tensor | None, records: list[StepRecord],
                        run_cfg: dict[str, Any], threat: ThreatModel) -> dict[str, Any]:
    true = truth(records)
    mixed = records[0].mixed is not None and not threat.knows_seed
    out: dict[str, Any] = {}
    if mixed:  # the attacker recovered mixtures: compare with the true mixtures, then un-mix
        true_mixed = torch.cat([r.mixed for r in records])
        out["masked"] = _brief(score(rec.x, true_mixed, _range(true_mixed)))
        if rec.soft_labels is not None and rec.label_set:
            labels = torch.as_tensor(rec.label_set)
            a = coefficients_from_labels(labels.expand(len(rec.x), -1), rec.soft_labels, labels)
            sources, facts = unmix(rec.x.to(torch.float64), a)
            out["unmixed"] = {**_brief(score(sources.float(), true["model_input"],
                                             _range(true["model_input"]))), **_jsonable(facts)}
    else:
        out["masked"] = _brief(score(rec.x, true["model_input"], _range(true["model_input"])))
    aux = attacker_aux(run_cfg["data"], int(run_cfg["seed"]))
    if images is not None:
        out["image"] = _brief(score(images, true["pixels"], 255.0))
    if aux is not None:
        out["floor_image"] = _brief(mean_face_floor(aux, true["pixels"], 255.0))
        # the same trivial guess in the masked space: the mean of the aux faces' model inputs (attacker's own key)
        masked_aux = build_protection(run_cfg["protect"], os.urandom(32))(aux, torch.Generator().manual_seed(0))
        out["floor_masked"] = _brief(mean_face_floor(masked_aux, true["model_input"], _range(true["model_input"])))
    true_set = set(true["labels"].tolist()) if records[0].mix_labels is None else \
        {int(v) for r in records for v in r.mix_labels.flatten()}
    if rec.label_set and run_cfg["federation"]["head"] == "shared":
        got = set(rec.label_set)
        out["labels"] = {"precision": len(got & true_set) / len(got), "recall": len(got & true_set) / len(true_set),
                         "inferred": sorted(got), "true": sorted(true_set)}
    return out


def _brief(s: dict[str, Any]) -> dict[str, Any]:
    return {k: s[k] for k in ("mse", "psnr", "ssim", "psnr_each", "matching")}


def _jsonable(facts: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in facts.items()
            if isinstance(v, (int, float, str, bool, np.floating))}


def _grid(path: Path, rec: Reconstruction, images: torch.Tensor | None, records: list[StepRecord],
          scores: dict[str, Any]) -> None:
    from fedface.report.grids import save_grid

    true = truth(records)
    pairs = scores["masked"]["matching"]  # recovered i <-> true j, Hungarian (mixtures: against true mixtures)
    r_idx = torch.tensor([i for i, _ in pairs])
    o_idx = torch.tensor([j for _, j in pairs])
    if "unmixed" in scores:
        rows = {"true mixture": torch.cat([r.mixed for r in records])[o_idx], "recovered mixture": rec.x[r_idx]}
    else:
        rows = {"true model input": true["model_input"][o_idx], "recovered": rec.x[r_idx]}
        if images is not None:
            rows = {"true face": true["pixels"][o_idx], **rows, "recovered face": images[r_idx]}
    save_grid(path, rows, title=f"masked PSNR {scores['masked']['psnr']:.1f} dB"
              + (f", image PSNR {scores['image']['psnr']:.1f} dB" if "image" in scores else ""))


def inversion_and_score(obs, run_config: Mapping[str, Any], inversion_cfg: Mapping[str, Any], identities: int,
                       run_dir) -> dict[str, Any]:
    """The malicious server's per-reply inversion inside a federation (``attack.name=inversion``; called by
    ``strategies/malicious.py`` on a copy of one client's reply before FedAvg, every ``attack.every`` rounds).

    With a shared head the reply carries the client's head rows. The server picks the ``identities`` rows that
    moved most from what it sent -- a heuristic for the client's own classes (the cross-entropy pulls the centres of
    the classes in its batches; the others only get the softmax push; checked by ``row_precision`` below) -- and
    inverts them with this client's returned backbone (free low-resolution pixels / standardised masked tensors: no
    auxiliary data needed here). Writes ``attacks/round-R/node-N/inversion.{safetensors,json}``. When the client
    recorded its ground truth (the experimenter's, ``fedface.experiment.ground_truth``; read by this scorer, never by
    the attack), ``row_precision`` says how many picked rows really are classes the client trained on this round.
    Identity scores of the inversions (dlib, SRRA on the final model) are ``fedface invert``'s on the finished run
    (``fedface.experiment.recorded.recorded_inversions``). With a local head nothing identifies a client's people:
    the reply is skipped with that reason.
    """
    import numpy as np

    from fedface.io import atomic_save_safetensors, atomic_write_json
    from fedface.models import backbone_from
    from fedface.protect import input_spec

    base = {"node": obs.node, "attack": "inversion", "threat": "server"}
    if not obs.has_head:
        return {**base, "skipped": "head=local: the reply carries no class centre (backbone-only inversion: "
                                   "`fedface invert` on the run)"}
    spec = input_spec(dict(run_config["protect"]))
    backbone = backbone_from(run_config["model"], spec, obs.returned, strict=False)
    returned = torch.as_tensor(np.asarray(obs.returned["head.weight"])).float()
    sent = torch.as_tensor(np.asarray(obs.sent["head.weight"])).float()
    moved = (returned - sent).norm(dim=1)
    rows = torch.argsort(moved, descending=True)[: max(1, int(identities))]
    cfg = CentreInversionConfig.from_cfg({**dict(inversion_cfg), "prior": "free"})
    out = invert_centres(backbone, returned[rows], spec.shape, cfg)
    folder = _out_dir(obs, run_dir)
    summary = {**base, "rows": rows.tolist(), "row_movement": [round(float(moved[r]), 6) for r in rows],
               "centre_cos": [round(float(c), 4) for c in out["cos"]], "centre_cos_mean": float(out["cos"].mean()),
               "steps": out["steps"], "seconds": round(out["seconds"], 2), "stopped": out["stopped"],
               "malicious_weights": False, **_row_truth(rows.tolist(), obs, run_dir)}
    atomic_save_safetensors(folder / "inversion.safetensors",
                            {"model_input": out["model_inputs"].contiguous().numpy(), "rows": rows.numpy()})
    atomic_write_json(folder / "inversion.json", summary)
    return summary


def _row_truth(rows: list[int], obs, run_dir) -> dict[str, Any]:
    """The scorer's check of the most-moved-rows heuristic against the client's recorded labels (every class it
    trained on this round, MixUp partners included)."""
    path = ground_truth_path(obs.server_round, obs.node, RunLayout(run_dir).ground_truth)
    if path is None or not path.exists():
        return {"row_truth_unavailable": "no ground truth recorded by the client (attack.ground_truth=false?)"}
    own = set()
    for record in load_ground_truth(path)[0]:
        for labels in (record.labels, record.mix_labels):
            if labels is not None:
                own.update(int(c) for c in labels.reshape(-1).tolist())
    hits = [r in own for r in rows]
    return {"own_classes": sorted(own), "row_is_own": hits, "row_precision": sum(hits) / len(rows)}
