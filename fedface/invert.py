"""`fedface invert` and `fedface imprint`: malicious server III on a finished run (``fedface.attacks.inversion``,
``fedface.attacks.imprint``).

``invert`` loads the weights a server holds at the end of a federation (the last global checkpoint: backbone, and
with ``federation.head=shared`` the head's class centres) -- or a centralized model, whose head holds every centre --
and inverts ``attack.identities`` class centres into inputs, with the priors of ``attack.inversion``. Frequency
results become pictures white-box with the key (``knows_key``) and through the learned decoder trained on the
attacker's auxiliary faces (``server``, its own key). With no head (``head=local``) only backbone-only rows run:
BatchNorm feature-statistics inversion and inversion of the attacker's own auxiliary faces' embeddings.

Every row is scored by identity (``fedface.metrics.identity``): COS / same-person / top-1 under the independent dlib
model against the true identity's ORL images, SRRA / top-1 on the target system itself, next to the mean-face floor
and a real-image ceiling. The attacker's prior data is the partition table's auxiliary split, never client data.

``imprint`` runs the malicious-weights attack: the server sends the trap layer in front of the backbone, a few
clients' honest one-step local updates (``train_local``) come back, and the server reads their inputs out of the
trap's update. Its results carry ``"malicious_weights": true``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F

from fedface.attacks import imprint as trap_mod
from fedface.attacks import learned
from fedface.models.decoder import DecoderConfig, reconstruct
from fedface.attacks.inversion import (FacePrior, InversionConfig, head_scores, invert_centres, invert_embeddings,
                                       invert_statistics)
from fedface.attacks.invert_mask import to_image
from fedface.config import check_choice, to_container
from fedface.data.partition import make_partition
from fedface.data.sources import load_aux, load_configured
from fedface.io import atomic_save_tensors
from fedface.experiment.generators import cache_dir, fingerprint, gan_prior, trained_decoder
from fedface.experiment.judge import IdentityJudge, pictures
from fedface.experiment.keys import clients_key
from fedface.experiment.recorded import recorded_inversions
from fedface.metrics.identity import SAME_PERSON_DISTANCE
from fedface.protect import build_protection, input_spec, needs_key, protection_label
from fedface.report.grids import save_grid
from fedface.report.schema import IMPRINT, INVERT, validate
from fedface.federation.checkpoint import global_models
from fedface.runs import RunDir, RunLayout, machine_info, start

log = logging.getLogger(__name__)
ATTACK_KEYS = {"name", "target", "identities", "threats", "inversion", "backbone_only", "decoder", "cache",
               "imprint", "grid_faces", "every", "max_rounds", "max_clients", "ground_truth"}


# --------------------------------------------------------------------------------------------------- the target
def target_weights(run_dir: str | Path) -> tuple[Path, DictConfig]:
    """The weights file a server holds for a finished run: ``model.safetensors`` (centralized) or the last
    ``checkpoint/round-*/global.safetensors`` (federation), and the run's config."""
    layout = RunLayout(run_dir)
    if not layout.config.exists():
        raise FileNotFoundError(f"attack.target={run_dir}: no config.yaml (give a `fedface train`/`simulate` run dir)")
    cfg = OmegaConf.load(layout.config)
    weights = layout.model
    if not weights.exists():
        rounds = global_models(layout.checkpoint)
        if not rounds:
            raise FileNotFoundError(f"attack.target={run_dir}: neither model.safetensors nor checkpoint/round-*")
        weights = rounds[-1]
    return weights, cfg


def load_server_view(run_dir: str | Path) -> dict[str, Any]:
    """Backbone (eval mode), the class centres if the server holds them (None for ``head=local``), the run config,
    and what kind of run it is."""
    from safetensors.torch import load_file

    from fedface.models import backbone_from
    from fedface.protect import input_spec

    weights, cfg = target_weights(run_dir)
    tensors = load_file(str(weights))
    backbone = backbone_from(cfg.model, input_spec(to_container(cfg.protect)), tensors)
    federated = weights.name == "global.safetensors"
    head = "shared" if "head.weight" in tensors else "local"
    if federated:
        head = str(cfg.federation.head)
    return {"backbone": backbone.eval(), "centres": tensors.get("head.weight"), "cfg": cfg, "weights": str(weights),
            "kind": "federation" if federated else "centralized", "head": head if federated else
            "centralized (every centre)"}


def _label(tcfg: DictConfig) -> str:
    return protection_label(to_container(tcfg.protect), to_container(tcfg.mixup) if "mixup" in tcfg else None)


# --------------------------------------------------------------------------------------------------- invert
def check_attack_cfg(acfg: DictConfig, command: str = "invert") -> None:
    check_choice(acfg.get("name"), ("inversion",), f"attack.name (fedface {command} needs attack=inversion)")
    unknown = sorted(set(acfg) - ATTACK_KEYS)
    if unknown:
        raise ValueError(f"unknown attack config key(s) {', '.join('attack.' + k for k in unknown)}; "
                         f"known: {', '.join(sorted(ATTACK_KEYS))}")
    if acfg.get("target") in (None, ""):
        raise ValueError("attack.target: give the run dir of a finished `fedface train` / `fedface simulate` run")
    InversionConfig.from_cfg(to_container(acfg.inversion))


def _identity_data(tcfg: DictConfig, seed: int):
    data = load_configured(tcfg.data)
    table = make_partition(data, tcfg.data, int(tcfg.seed), root=tcfg.data.get("root"))
    train_labels = data.labels[torch.as_tensor(table.train_idx)].numpy()
    global_ids = np.unique(train_labels)  # class c of a shared head / centralized head = rank among train ids
    gallery = data.take(table.train_idx)
    labels = torch.as_tensor(np.searchsorted(global_ids, train_labels))
    aux = load_aux(table, tcfg.data.get("root"), limit=None, seed=seed)
    if aux is None:
        raise ValueError("the target run's data config gives no auxiliary faces (data.aux=lfwa and LFW-a needed): "
                         "the attacker's priors come from them")
    return data, table, gallery, labels, aux, len(global_ids)


def _decoder_for(tcfg: DictConfig, attacker, aux: torch.Tensor, acfg: DictConfig, seed: int, progress: bool):
    """The learned decoder (server threat: its own key) for the target's protection, trained on (or loaded from
    ``attack.cache``) the attacker's auxiliary faces through ``attacker`` (its fitted copy of the protection,
    ``learned.attacker_protection``), unmixed (a centre is one identity)."""
    protect_cfg = to_container(tcfg.protect)
    dcfg = DecoderConfig.from_cfg(to_container(acfg.decoder))
    pair_x, pair_y = learned.aux_pairs(attacker, {"name": "none"}, aux, dcfg.size, seed)
    cache_id = fingerprint("inversion", protect_cfg, "server", dcfg.to_json(), len(aux), learned.CACHE_VERSION)
    net, facts = trained_decoder(pair_x, pair_y, dcfg, cache_dir(acfg.cache), f"decoder-{cache_id}", progress)
    return net, {k: facts.get(k) for k in ("steps", "seconds", "cached")}


def run_invert(cfg: DictConfig) -> dict[str, Any]:
    """``fedface invert``: the floor and ceiling rows, then each attack family the target's weights allow -- class
    centres (``head=shared``), backbone only (BN statistics, the aux faces' embeddings), and the inversions recorded
    inside a federation -- each scored by identity (``_Inversions``)."""
    acfg = cfg.attack
    check_attack_cfg(acfg)
    start(cfg)
    view = load_server_view(acfg.target)
    before = {k: v.clone() for k, v in view["backbone"].state_dict().items()}
    inv = _Inversions(cfg, view)
    inv.floor_and_ceiling()
    inv.class_centres()
    if acfg.backbone_only:
        inv.backbone_only()
    if inv.view["kind"] == "federation":
        inv.in_federation()
    after = inv.backbone.state_dict()
    inv.results["model_unchanged"] = all(torch.equal(before[n], after[n]) for n in before)
    atomic_save_tensors(inv.run.path / "inversions.safetensors", inv.arrays)
    save_grid(inv.run.path / "grids" / f"{inv.label}-{inv.view['head'].split()[0]}.png", inv.grid,
              title=f"{inv.tcfg.data.name} {inv.label} head={inv.view['head']}: real | floor | ceiling | inversions")
    validate(inv.results, INVERT)  # the documented shape (docs/results-schema.md), or one error naming the key
    inv.run.finish(inv.results)
    return inv.results


class _Inversions:
    """One ``fedface invert`` run: the attacked identities, the attacker's tools (face prior, its copies of the
    protection, the decoder), and what it writes (rows scored by identity, the picture grid, the raw arrays)."""

    def __init__(self, cfg: DictConfig, view: dict[str, Any]):
        self.cfg, self.acfg, self.view = cfg, cfg.attack, view
        self.seed = seed = int(cfg.seed)
        self.icfg = InversionConfig.from_cfg(to_container(self.acfg.inversion))
        self.tcfg, self.backbone = tcfg, backbone = view["cfg"], view["backbone"]
        self.run = RunDir(cfg.run.dir, cfg)
        _, _, self.gallery, self.labels, self.aux, n_classes = _identity_data(tcfg, seed)
        self.key, self.key_note = clients_key(tcfg.protect, view["kind"])
        self.protection = (build_protection(to_container(tcfg.protect), self.key)
                           if self.key or not needs_key(tcfg.protect) else None)
        if self.protection is not None:
            self.protection.fit(self.gallery.unsqueeze(1).float())
        self.shape = input_spec(to_container(tcfg.protect)).shape
        self.k = k = min(int(self.acfg.identities), n_classes)
        self.ids = torch.as_tensor(np.sort(np.random.default_rng(seed).choice(n_classes, k, replace=False)))
        self.label = _label(tcfg)
        cache = None if self.acfg.cache in (None, "") else Path(self.acfg.cache)
        self.scorer = IdentityJudge(self.gallery, self.labels,
                                    self.key_note if self.protection is None else (backbone, self.protection),
                                    seed, cache)
        self.results: dict[str, Any] = {
            "command": "invert", "status": "running", "target": str(self.acfg.target), "weights": view["weights"],
            "run_kind": view["kind"], "head": view["head"], "protection": self.label, "identities": self.ids.tolist(),
            "classes": n_classes, "aux": len(self.aux), "inversion": self.icfg.to_json(), "malicious_weights": False,
            "seed": seed, "machine": machine_info(), "rows": []}
        if self.key_note:
            self.results["key"] = self.key_note
        self.rows = self.results["rows"]
        # one real image per attacked identity
        self.first = torch.stack([self.gallery[self.labels == c][0] for c in self.ids.tolist()])
        self.grid: dict[str, torch.Tensor] = {"real (one of the identity's)": self.first[:, None].float() / 255}
        self.arrays: dict[str, torch.Tensor] = {}
        self.prior, prior_facts = face_prior(self.icfg, self.aux, seed, cache, bool(cfg.run.progress))
        if prior_facts:
            self.results["prior"] = prior_facts
        self.pixels = self.shape[0] == 1 and self.shape[1] >= 32
        self._decoder: dict[str, Any] = {}
        self._fitted: dict[str, Any] = {}  # threat -> the attacker's fitted copy of the protection

    def add(self, attack: str, threat: str, pics: torch.Tensor | None, extra: dict[str, Any], truth=None,
            board: dict[str, torch.Tensor] | None = None) -> None:
        """One row (scored by identity when it has pictures), its pictures on ``board``; results written at once."""
        truth = self.ids if truth is None else truth
        board = self.grid if board is None else board
        row = {"protection": self.label, "head": self.view["head"], "attack": attack, "threat": threat, **extra}
        if pics is not None:
            row["identity"] = self.scorer.score(pics, truth)
            board[f"{attack} ({threat})"] = pics / 255
            self.arrays[f"{attack}-{threat}"] = pics
        self.rows.append(row)
        log.info("%s %s (%s): %s", self.label, attack, threat, row.get("identity", row.get("skipped")))
        self.run.write_results(self.results)

    def floor_and_ceiling(self) -> None:
        mean_face = self.aux.float().mean(0)[None, None].expand(self.k, 1, -1, -1)
        self.add("mean face (floor)", "-", mean_face, {})
        self.add("real image (ceiling)", "-", self.first[:, None].float(),
                 {"note": "one training image per identity, itself enrolled"})

    def attacker_copy(self, threat: str):
        """Fitted once per threat: fitting can be costly (AdvFace trains its shadow decoder)."""
        if threat not in self._fitted:
            self._fitted[threat] = learned.attacker_protection(to_container(self.tcfg.protect), self.aux, self.seed,
                                                                self.key if threat == "knows_key" else None)
        return self._fitted[threat]

    def _knows_key(self) -> bool:
        return any(t.get("knows_key") for t in self.acfg.threats)

    def variants(self) -> list[tuple[str, str, Any, Any]]:
        """(name, threat, through, prior) of each way the attacker optimises: the model_input itself (pixels with
        the face prior for `none`; the standardised masked tensor otherwise), and for a keyed frequency protection
        pictures (face prior) through its own copy of the protection -- its own key, and the clients' key."""
        if self.pixels:
            return [("", "server", None, self.prior)]
        out = [(" (masked space)", "server", None, None)]
        for tname in ("server", "knows_key"):
            if tname == "knows_key" and (self.key is None or not self._knows_key()):
                continue
            out.append((" (pictures through the protection)", tname,
                        lambda x, g, p=self.attacker_copy(tname): p((x + 1) * 127.5, generator=g), self.prior))
        return out

    def pictures_of(self, name: str, threat: str, inv: dict[str, Any], through, facts: dict[str, Any],
                    truth: torch.Tensor, board: dict[str, torch.Tensor] | None = None) -> None:
        """Score one inversion: pictures directly, or a masked-space result via decoder / white-box."""
        if through is not None or self.pixels:
            self.add(name, threat, (inv["inputs"] + 1) * 127.5, facts, truth, board)
            return
        x = inv["inputs"]
        self.arrays[f"{name}-model_input"] = x
        self.add(name, threat, None,
                 {**facts, "note": "the optimised model_input (pictures: decoder / white-box rows)"})
        if self.acfg.decoder is not None:
            if "net" not in self._decoder:
                self._decoder["net"], self._decoder["facts"] = _decoder_for(
                    self.tcfg, self.attacker_copy("server"), self.aux, self.acfg, self.seed,
                    bool(self.cfg.run.progress))
            self.add(f"{name} + decoder", "server", pictures(reconstruct(self._decoder["net"], x)),
                     {"decoder": self._decoder["facts"]}, truth, board)
        if self.key is not None and self._knows_key():
            images, note = to_image(self.protection, x, self.aux.unsqueeze(1).float(),
                                    getattr(self.protection, "permutation", None))
            self.add(f"{name} + white-box", "knows_key", images, {"note": note}, truth, board)
        elif self.key is None:
            self.rows.append({"protection": self.label, "head": self.view["head"], "attack": f"{name} + white-box",
                              "threat": "knows_key", "skipped": self.key_note})

    def class_centres(self) -> None:
        """Each attacked identity's class centre inverted (head=shared: the centres reach the server)."""
        if self.view["centres"] is None:
            self.rows.append({"protection": self.label, "head": self.view["head"], "attack": "class-centre",
                              "threat": "server", "skipped": "head=local: no class centre leaves the clients"})
            return
        centres = self.view["centres"][self.ids]
        for suffix, threat, through, pri in self.variants():
            inv = invert_centres(self.backbone, centres, self.shape, self.icfg, prior=pri, through=through)
            with torch.no_grad():
                scores = head_scores(self.view["centres"], self.backbone(inv["model_inputs"]))
            facts = {"centre_cos": [round(float(c), 4) for c in inv["cos"]],
                     "centre_cos_mean": float(inv["cos"].mean()),
                     "head_top1": float((scores.argmax(1) == self.ids).double().mean()), "curve": inv["curve"],
                     "steps": inv["steps"], "seconds": round(inv["seconds"], 1), "stopped": inv["stopped"],
                     "bn_layers": inv["bn_layers"], "prior": self.icfg.prior if pri is not None else "free"}
            self.pictures_of("class-centre" + suffix, threat, inv, through, facts, self.ids)

    def backbone_only(self) -> None:
        """The backbone alone: its BN statistics, and the attacker's own aux faces' embeddings, inverted."""
        k, seed, aux = self.k, self.seed, self.aux
        aux_pick = aux[torch.as_tensor(np.random.default_rng(seed + 1).choice(len(aux), k, replace=False))]
        picture_variants = [v for v in self.variants() if v[2] is not None or self.pixels][:1]  # server, pictures
        for suffix, threat, through, pri in picture_variants:
            stats = invert_statistics(self.backbone, k, self.shape, self.icfg, prior=pri, through=through)
            self.pictures_of("BN statistics only" + suffix, threat, stats, through,
                             {"steps": stats["steps"], "seconds": round(stats["seconds"], 1),
                              "note": "no target: picture i is scored as a guess for attacked identity i"}, self.ids)
            with torch.no_grad():
                aux_emb = self.backbone(_through(self.attacker_copy(threat), aux_pick, seed))
            emb_inv = invert_embeddings(self.backbone, aux_emb, self.shape, self.icfg, prior=pri, through=through)
            facts = {"centre_cos_mean": float(emb_inv["cos"].mean()),
                     "note": "inverts the attacker's own aux faces' embeddings (backbone invertibility); scored as "
                             "guesses for the attacked identities"}
            if self.scorer.independent.available() and (through is not None or self.pixels):
                e1 = self.scorer.independent.embed((emb_inv["inputs"] + 1) * 127.5)
                e2 = self.scorer.independent.embed(aux_pick[:, None].float())
                facts.update(dlib_cos_to_aux_face=float(F.cosine_similarity(e1, e2, dim=1).mean()),
                             dlib_same_person_as_aux_face=float(((e1 - e2).norm(dim=1) <
                                                                 SAME_PERSON_DISTANCE).double().mean()))
            self.pictures_of("aux-embedding inversion" + suffix, threat, emb_inv, through, facts, self.ids)

    def in_federation(self) -> None:
        """The inversions the malicious server made inside the federation (attack=inversion), scored here."""
        gallery, labels = self.gallery, self.labels
        for rnd, rec in recorded_inversions(self.acfg.target).items():
            truth = rec["rows"].long()  # a shared head's row c is training identity c
            board = {"real (the row's identity)": torch.stack([gallery[labels == c][0] for c in truth.tolist()])
                     [:, None].float() / 255}
            precision = [n["row_precision"] for n in rec["nodes"] if "row_precision" in n]
            facts = {"round": rnd, "nodes": [n["node"] for n in rec["nodes"]], "rows": truth.tolist(),
                     "centre_cos_mean": float(np.mean([n["centre_cos_mean"] for n in rec["nodes"]])),
                     "row_precision": float(np.mean(precision)) if precision else None,
                     "note": "inverted inside the federation from each attacked reply's most-moved head rows and "
                             "its own backbone (attack=inversion); scored against the final model"}
            self.pictures_of(f"in-federation replies, round {rnd}", "server", {"inputs": rec["model_input"]}, None,
                             facts, truth, board)
            save_grid(self.run.path / "grids" / f"{self.label}-in-federation-round-{rnd}.png", board,
                      title=f"{self.tcfg.data.name} {self.label}: each attacked client's head rows, round {rnd}",
                      max_cols=len(truth))


def face_prior(icfg: InversionConfig, aux: torch.Tensor, seed: int, cache: Path | None, progress: bool):
    """The attacker's picture prior, learned from its auxiliary faces only: eigenfaces (``pca``), a DCGAN (``gan``,
    trained once and cached in ``attack.cache``) or none (``free``); and the facts to record."""
    if icfg.prior == "pca":
        return FacePrior(aux, icfg.components, seed), {"kind": "pca", "components": icfg.components}
    if icfg.prior == "gan":
        from fedface.models.face_gan import GanConfig

        gcfg = GanConfig.from_cfg(icfg.gan)
        prior, facts = gan_prior(aux, gcfg, cache, progress)
        return prior, {"kind": "gan", **facts, "config": gcfg.to_json()}
    return None, {}


def _through(protection, faces: torch.Tensor, seed: int) -> torch.Tensor:
    """``faces`` (N, H, W) through a fitted protection, seeded."""
    with torch.no_grad():
        return protection(faces[:, None].float(), generator=torch.Generator().manual_seed(seed)).float()


# --------------------------------------------------------------------------------------------------- imprint
def run_imprint(cfg: DictConfig) -> dict[str, Any]:
    """Malicious weights (Fowl et al. 2021) against a few ORL clients of the target run's protection: the server
    sends trap + backbone, each client runs its honest ``train_local`` for one step on one batch, the server reads
    the inputs back from the trap's update. Recovery rate in model_input space; pixels via the white-box inverse
    (with the key) for frequency protections."""
    from fedface.data.shards import make_shards
    from fedface.models import build_head
    from fedface.metrics.image import psnr
    from fedface.train.loop import TrainConfig, train_local

    acfg = cfg.attack
    check_attack_cfg(acfg, "imprint")
    icfg = acfg.imprint
    seed = int(cfg.seed)
    start(cfg)
    view = load_server_view(acfg.target)
    tcfg, backbone = view["cfg"], view["backbone"]
    run = RunDir(cfg.run.dir, cfg)
    data, table, gallery, labels, aux, n_classes = _identity_data(tcfg, seed)
    protect_cfg = to_container(tcfg.protect)
    key = learned.attacker_key(protect_cfg, False, None, seed + 7)  # the clients' key, unknown to the server
    shape = input_spec(protect_cfg).shape
    # its own key; also the decoder's (server threat)
    attacker = learned.attacker_protection(to_container(tcfg.protect), aux, seed)
    aux_in = _through(attacker, aux, seed)  # the trap's thresholds come from the attacker's own faces
    trap = trap_mod.build_trap(shape, aux_in, int(icfg.bins), seed, float(icfg.strength))
    malicious = bool(icfg.malicious_weights)
    label = _label(tcfg)
    results: dict[str, Any] = {"command": "imprint", "status": "running", "malicious_weights": malicious,
                               "target": str(acfg.target), "protection": protect_cfg["name"], "bins": trap.bins,
                               "batch_size": int(icfg.batch_size), "clients": int(icfg.clients), "seed": seed,
                               "machine": machine_info(), "rows": []}
    if not malicious:
        results["skipped"] = "attack.imprint.malicious_weights=false: the honest model was sent, nothing to read"
        results["status"] = "done"
        validate(results, IMPRINT)
        run.write_results(results)
        run.close()
        return results
    shards = make_shards(labels.numpy(), int(tcfg.federation.num_clients) if "federation" in tcfg else 8,
                         "identity", 0.5, int(tcfg.seed))
    tcfg_train = TrainConfig.from_cfg({**to_container(tcfg.train), "steps": 1, "batch_size": int(icfg.batch_size)})
    grid: dict[str, torch.Tensor] = {}
    decoder_box: dict[str, Any] = {}
    for client in range(min(int(icfg.clients), len(shards))):
        idx = torch.as_tensor(shards[client])
        local_ids, local_labels = torch.unique(labels[idx], return_inverse=True)
        sent = trap_mod.malicious_model(backbone, trap, True)  # a fresh copy of what the server sent
        trap_sent = {k: v.clone() for k, v in sent.trap.state_dict().items()}
        client_protection = build_protection(protect_cfg, key)
        client_protection.fit(gallery[idx].unsqueeze(1).float())
        torch.manual_seed(seed + client)  # the client's own head initialisation, independent of what ran before
        head = build_head(tcfg.model, sent.embedding_size, len(local_ids))
        record: list = []
        t0 = time.perf_counter()
        train_local(sent, head, client_protection, gallery[idx], local_labels, tcfg_train,
                    torch.Generator().manual_seed(seed + client), record=record)
        gw, gb = trap_mod.trap_gradients(trap_sent, sent.trap.state_dict(), tcfg_train.lr, tcfg_train.weight_decay)
        cands, bins = trap_mod.recover(gw, gb, shape)
        truth = record[0].model_input
        rate = trap_mod.recovery_rate(cands, truth, float(icfg.psnr_db))
        row = {"client": client, "protection": label, "threat": "server", **rate,
               "seconds": round(time.perf_counter() - t0, 2)}
        matched = cands[torch.as_tensor(rate["best"])] if rate["best"] else None
        if matched is not None:
            pix_truth = record[0].pixels
            if shape[0] == 1 and shape[1] >= 32:
                pics = (matched.clamp(-1, 1) + 1) * 127.5
                row["pixels_note"] = "model_input is the picture"
            else:  # a frequency tensor: to pixels white-box with the key (one colluding client)
                pics, note = to_image(client_protection, matched, aux.unsqueeze(1).float(),
                                      getattr(client_protection, "permutation", None))
                row["pixels_note"] = f"white-box with the key (knows_key): {note}"
            if pics is not None:
                p = psnr(pics.double(), pix_truth.double(), 255.0)
                row["pixel_psnr"] = [round(float(v), 2) for v in p]
                row["pixel_psnr_mean"] = float(p.mean())
                if not (shape[0] == 1 and shape[1] >= 32):  # what the same inverse makes of the true tensors
                    ceil, _ = to_image(client_protection, truth, aux.unsqueeze(1).float(),
                                       getattr(client_protection, "permutation", None))
                    row["pixel_psnr_white_box_of_truth"] = float(psnr(ceil.double(), pix_truth.double(),
                                                                      255.0).mean())
                if client == 0:
                    grid = {"client's face (before its protection)": pix_truth / 255,
                            "read from the trap (to pixels)": pics / 255}
            if not (shape[0] == 1 and shape[1] >= 32) and acfg.decoder is not None:  # server threat: no key
                if "net" not in decoder_box:
                    decoder_box["net"], decoder_box["facts"] = _decoder_for(tcfg, attacker, aux, acfg, seed,
                                                                            bool(cfg.run.progress))
                dec = pictures(reconstruct(decoder_box["net"], matched))
                p = psnr(dec.double(), pix_truth.double(), 255.0)
                row["decoder_pixel_psnr_mean"] = float(p.mean())
                if client == 0:
                    grid["read from the trap + decoder (no key)"] = dec / 255
        results["rows"].append(row)
        log.info("imprint %s client %d: %d/%d recovered (> %.0f dB)", label, client, rate["recovered"],
                 rate["batch"], float(icfg.psnr_db))
        run.write_results(results)
    rec = sum(r["recovered"] for r in results["rows"])
    tot = sum(r["batch"] for r in results["rows"])
    results["recovery_rate"] = rec / tot if tot else None
    if grid:
        save_grid(run.path / "grids" / f"imprint-{label}.png", grid,
                  title=f"MALICIOUS WEIGHTS (imprint) {label}: client 0's batch | read back by the server")
    validate(results, IMPRINT)
    run.finish(results)
    return results


__all__ = ["face_prior", "load_server_view", "run_imprint", "run_invert",
           "target_weights"]
