"""`fedface reconstruct`: the learned-reconstruction attack on one protection (``fedface.attacks.learned``).

One run = one protection (``protect``, ``mixup``) on one dataset: per threat (``attack.threats``) and attack kind
(``attack.kinds``: decoder, cgan) a generator trained on the attacker's auxiliary faces (cached in
``attack.cache``) reconstructs the victims; with the key, the white-box inversion too; and the mean-face floor.
Each row is scored in pixels (64 x 64 PSNR / SSIM) and by identity (``fedface.metrics.identity``: COS under an
independent face model, SRRA against the target FR system ``attack.target``, attack top-1). Writes
``results.json``, ``config.yaml``, ``grids/*.png`` and ``reconstructions.safetensors`` in ``run.dir``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fedface.attacks import learned
from fedface.experiment.recorded import gradient_recoveries
from fedface.models.decoder import DecoderConfig, reconstruct, to_targets
from fedface.experiment.generators import cache_dir, fingerprint, trained_decoder
from fedface.experiment.judge import IdentityJudge, pictures
from fedface.experiment.keys import clients_key
from fedface.config import check_choice, to_container
from fedface.data.partition import make_partition
from fedface.data.sources import load_aux, load_configured
from fedface.io import atomic_save_tensors
from fedface.protect import build_protection, protection_label
from fedface.report.grids import save_grid
from fedface.report.schema import RECONSTRUCT, validate
from fedface.runs import RunDir, RunLayout, machine_info, start

log = logging.getLogger(__name__)
ATTACK_KEYS = {"name", "threats", "kinds", "decoder", "victims", "cache", "target", "white_box", "grid_faces",
               "recovered"}


def check_attack_cfg(acfg: DictConfig) -> None:
    check_choice(acfg.get("name"), ("learned",), "attack.name (fedface reconstruct needs attack=learned)")
    unknown = sorted(set(acfg) - ATTACK_KEYS)
    if unknown:
        raise ValueError(f"unknown attack config key(s) {', '.join('attack.' + k for k in unknown)}; "
                         f"known: {', '.join(sorted(ATTACK_KEYS))}")
    for threat in acfg.threats:
        bad = sorted(set(threat) - {"knows_key"})
        if bad:
            raise ValueError(f"attack.threats: unknown key(s) {bad}; the learned attack knows only knows_key")


def load_target(run_dir: str | Path) -> tuple[torch.nn.Module, DictConfig]:
    """The target FR system of a finished run: its backbone (centralized ``model.safetensors`` or a federation's
    last checkpoint) and its config (whose ``protect``/``mixup`` must match the attacked protection)."""
    from safetensors.torch import load_file

    from fedface.models import backbone_from
    from fedface.protect import input_spec

    from fedface.invert import target_weights

    weights, cfg = target_weights(run_dir)
    backbone = backbone_from(cfg.model, input_spec(to_container(cfg.protect)), load_file(str(weights)))
    return backbone.eval(), cfg


#: the MixUp settings that shape a mixed input (the policy's training settings do not)
MIXING_KEYS = ("name", "k", "k_min", "k_max", "max_weight", "weight_draw")


def _same_protection(cfg: DictConfig, target_cfg: DictConfig) -> None:
    """The target system must run the attacked protection: else its SRRA would judge another pipeline."""
    def mixing(c: DictConfig) -> dict:
        m = to_container(c.mixup) if "mixup" in c else {"name": "none"}
        return {k: m.get(k) for k in MIXING_KEYS} if m.get("name", "none") != "none" else {"name": "none"}

    pairs = {"protect": (to_container(cfg.protect), to_container(target_cfg.protect)),
             "mixup": (mixing(cfg), mixing(target_cfg))}
    for group, (ours, theirs) in pairs.items():
        if ours != theirs:
            raise ValueError(f"attack.target was trained with {group}={theirs}, not the attacked {group}={ours}")


def run_reconstruct(cfg: DictConfig) -> dict[str, Any]:
    acfg = cfg.attack
    progress = bool(cfg.run.progress)
    check_attack_cfg(acfg)
    seed = int(cfg.seed)
    start(cfg)
    dcfg_base = DecoderConfig.from_cfg(to_container(acfg.decoder))
    run = RunDir(cfg.run.dir, cfg)
    data = load_configured(cfg.data)
    table = make_partition(data, cfg.data, seed, root=cfg.data.get("root"))
    aux = load_aux(table, cfg.data.get("root"), limit=None, seed=seed)
    if aux is None:
        raise ValueError(f"data.aux={cfg.data.get('aux')!r} gives no auxiliary faces ({table.aux_source}); the "
                         f"attacker's prior data comes from LFW-a (../shared/data/lfw or FEDFACE_DATA)")
    victim_idx = learned.victims_of(table.train_idx, acfg.victims, seed)
    faces, labels = data.take(victim_idx), data.labels[torch.as_tensor(victim_idx)]
    size = dcfg_base.size
    targets = to_targets(faces.unsqueeze(1).float(), size)

    protect_cfg, mixup_cfg = to_container(cfg.protect), to_container(cfg.mixup)
    key, _ = clients_key(cfg.protect)  # this command trains its own protection: the centralized key
    client = build_protection(protect_cfg, key)
    client.fit(data.take(table.train_idx).unsqueeze(1).float())
    inputs = learned.mask(client, mixup_cfg, faces, seed + 1)
    label = protection_label(protect_cfg, mixup_cfg)

    backbone = _target(acfg, cfg)
    judge = IdentityJudge(faces, labels, "no attack.target (the target FR system's run dir)" if backbone is None
                          else (backbone, client), seed)
    results: dict[str, Any] = {"command": "reconstruct", "status": "running", "protection": label,
                               "data": table.summary(), "victims": len(victim_idx), "aux": len(aux),
                               "seed": seed, "machine": machine_info(), "rows": []}
    rows = results["rows"]
    floor = learned.floor_scores(aux, targets)
    rows.append({"protection": label, "attack": "mean face", "threat": "-", **floor,
                 "identity": judge.score(pictures(_mean_face(aux, len(faces), size)))})
    results["ceiling"] = judge.score(pictures(targets))  # a perfect reconstruction's identity scores
    results["masking_effect"] = judge.effect(learned.visualise(inputs, size), targets)
    grid = {"original": targets[: acfg.grid_faces], "masked": learned.visualise(inputs, size)[: acfg.grid_faces]}
    arrays = {"original": targets}
    generators = {}
    for threat in acfg.threats:
        knows_key = bool(threat.get("knows_key", False))
        tname = "knows_key" if knows_key else "server"
        if knows_key and key is None:
            continue  # an unkeyed protection: the knows_key row would repeat the server row
        attacker = build_protection(protect_cfg, learned.attacker_key(protect_cfg, knows_key, key, seed))
        attacker.fit(aux.unsqueeze(1).float())
        pair_x, pair_y = learned.aux_pairs(attacker, mixup_cfg, aux, size, seed)
        for kind in acfg.kinds:
            dcfg = DecoderConfig.from_cfg(to_container(acfg.decoder), kind=kind)
            cache_id = fingerprint(label, protect_cfg, mixup_cfg, tname, key.hex() if knows_key and key else None,
                                   dcfg.to_json(), table.aux_identities, learned.CACHE_VERSION)
            t0 = time.perf_counter()
            net, facts = trained_decoder(pair_x, pair_y, dcfg, cache_dir(acfg.cache), f"{kind}-{cache_id}", progress)
            generators[tname, kind] = net
            recon = reconstruct(net, inputs, dropout=kind == "cgan")
            row = {"protection": label, "attack": kind, "threat": tname, **learned.pixel_scores(recon, targets),
                   "identity": judge.score(pictures(recon)), "train": {k: facts[k] for k in ("steps", "seconds", "stopped",
                                                                                   "pairs", "cached")},
                   "seconds": time.perf_counter() - t0}
            rows.append(row)
            grid[f"{kind} ({tname})"] = recon[: acfg.grid_faces]
            arrays[f"{kind}-{tname}"] = recon
            log.info("%s %s %s: PSNR %.2f SSIM %.3f", label, kind, tname, row["psnr"], row["ssim"])
            run.write_results(results)  # partial results land after every row
        if acfg.white_box and knows_key:
            images, note = learned.white_box(attacker, inputs, aux, size, key_known=True)
            if images is not None:
                rows.append({"protection": label, "attack": "white-box", "threat": tname,
                             **learned.pixel_scores(images, targets), "identity": judge.score(pictures(images)),
                             "note": note})
                grid[f"white-box ({tname})"] = images[: acfg.grid_faces]
                arrays[f"white-box-{tname}"] = images
            else:
                rows.append({"protection": label, "attack": "white-box", "threat": tname, "skipped": note})
    if acfg.get("recovered"):
        results["gradient_recoveries"] = _decode_recovered(acfg.recovered, cfg, generators, aux, size)
    atomic_save_tensors(run.layout.reconstructions, arrays)
    png = run.layout.grids / f"{label}.png"
    save_grid(png, {k: (v + 1) / 2 for k, v in grid.items()},
              title=f"{cfg.data.name}: {label} -- original | masked (channel mean) | reconstructions")
    run.log_image(f"reconstruction/{label}", png)
    validate(results, RECONSTRUCT)  # the documented shape (docs/results-schema.md), or one error naming the key
    run.finish(results)
    return results


def _decode_recovered(run_dir: str, cfg: DictConfig, generators: dict, aux: torch.Tensor,
                      size: int) -> list[dict[str, Any]]:
    """Issue 8 (b): the generators applied to what gradient inversion recovered in a federation run of the same
    protection, scored against the attacked client's true faces (Hungarian-matched) next to the mean-face floor."""
    from fedface.metrics import score

    run_cfg = OmegaConf.load(RunLayout(run_dir).config)
    _same_protection(cfg, run_cfg)
    rows, grid = [], {}
    for rec in gradient_recoveries(Path(run_dir)):
        truth = to_targets(rec["pixels"], size)
        tname = "knows_key" if "knows_key" in rec["threat"] else "server"
        base = {"threat": rec["threat"], "round": rec["round"], "node": rec["node"], "faces": len(truth),
                "floor": learned.floor_scores(aux, truth)}
        if not grid:  # the first attacked reply's faces: true | recovered model input | decoded (report grid)
            grid = {"original": truth, f"gradient-recovered input ({rec['threat']})":
                    learned.visualise(rec["model_input"], size)}
        for kind in cfg.attack.kinds:
            net = generators.get((tname, kind)) or generators.get(("server", kind))
            decoded = reconstruct(net, rec["model_input"], dropout=kind == "cgan")
            s = score(decoded.double(), truth.double(), 2.0)
            rows.append({**base, "attack": f"gradient+{kind}", "psnr": s["psnr"], "ssim": s["ssim"]})
            if len(grid) < 2 + len(cfg.attack.kinds):
                grid[f"gradient+{kind} ({rec['threat']})"] = decoded
    if grid:
        label = protection_label(to_container(cfg.protect), to_container(cfg.mixup))
        save_grid(Path(cfg.run.dir) / "grids" / f"gradient-{label}.png", {k: (v + 1) / 2 for k, v in grid.items()},
                  title=f"{cfg.data.name}: {label} -- original | gradient inversion's recovered input | decoded")
    return rows


def _target(acfg: DictConfig, cfg: DictConfig) -> torch.nn.Module | None:
    """The target system's backbone; it runs behind the client's own protection (fitted on the client's data, as
    PEEP's eigenfaces were when the target trained)."""
    if acfg.target in (None, ""):
        return None
    backbone, target_cfg = load_target(acfg.target)
    _same_protection(cfg, target_cfg)
    return backbone


def _mean_face(aux: torch.Tensor, n: int, size: int) -> torch.Tensor:
    return to_targets(aux.unsqueeze(1).float(), size).mean(dim=0, keepdim=True).expand(n, -1, -1, -1)


__all__ = ["load_target", "run_reconstruct"]
