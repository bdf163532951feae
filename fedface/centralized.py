"""`fedface train`: centralized ArcFace training on the train identities of the partition table, then evaluation.

This is the unprotected (or protected, with ``protect=...``) baseline every federated table is compared with.
``mixup=fixed|adaptive`` adds paper 001's MixUp of the masked batch; adaptive, the policy steps every
``mixup.policy_every`` FR steps through the same server function a federated server uses.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from omegaconf import DictConfig

from fedface.data.partition import make_partition
from fedface.data.sources import load_configured
from fedface.eval import evaluate, utility
from fedface.io import atomic_save_safetensors, atomic_write_json
from fedface.mixup import build_mixer
from fedface.models import build_backbone, build_head, count_parameters
from fedface.experiment.keys import clients_key
from fedface.protect import build_protection
from fedface.runs import RunDir, log_hparams, machine_info, start
from fedface.train import NonFiniteLossError, TrainConfig, collapse, pick_device, train_local
from fedface.train.collapse import expected_degenerate_loss
from fedface.protect.dp import check_config as check_dp
from fedface.report.schema import ACCURACY, AUC, TAR_1E3, TRAIN, validate

log = logging.getLogger(__name__)


def run_train(cfg: DictConfig) -> dict:
    check_dp(cfg)  # protect=dp_sgd with mixup or BatchNorm: refused before anything is written
    gen = start(cfg)
    device = pick_device(cfg.device)
    data = load_configured(cfg.data)
    table = make_partition(data, cfg.data, int(cfg.seed), root=cfg.data.get("root"))  # an impossible split: here
    run = RunDir(cfg.run.dir, cfg)
    atomic_write_json(run.layout.partition, table.to_json())
    train = data.subset(table.train_idx)
    protection = build_protection(cfg.protect, key=clients_key(cfg.protect)[0])
    protection.fit(train.images.unsqueeze(1).float())
    spec = protection.output_spec(112, 112)
    backbone = build_backbone(cfg.model, spec).to(device)
    head = build_head(cfg.model, backbone.embedding_size, train.num_identities).to(device)
    tcfg = TrainConfig.from_cfg(cfg.train)
    mixer = build_mixer(cfg.mixup, spec, tcfg.batch_size)
    if mixer is not None:
        mixer.to(device)
    results: dict[str, Any] = {
        "command": "train",
        "status": "running",
        "data": table.summary(),
        "protection": protection.describe(),
        "mixup": mixer.describe() if mixer is not None else {"name": "none"},
        "model": {"name": cfg.model.name, "parameters": count_parameters(backbone),
                  "input": list(spec.shape), "stem": backbone.stem.kind},
        "seed": int(cfg.seed),
        "machine": machine_info(),
        "curve": [],
    }
    log.info("training %s on %d images of %d identities (%s input %s)", cfg.model.name, len(train),
             train.num_identities, protection.name, spec.shape)

    def collapse_check(loss: float, earlier: list[dict]) -> dict:
        """The verdict after ``loss``, with the ``earlier`` curve points as its history."""
        mix = mixer.mix_spec() if mixer is not None else protection.mix_spec()
        degenerate = expected_degenerate_loss(train.num_identities, cfg.model.head, mix)
        return collapse.check(loss, degenerate, head.weight, [p["loss"] / p["degenerate_loss"] for p in earlier],
                              mixed=mix is not None, cosine_history=[p["head_row_cosine"] for p in earlier])

    def on_epoch(epoch: int, loss: float) -> None:
        run.tensorboard.add_scalar("train/loss", loss, epoch)
        verdict = collapse_check(loss, results["curve"])
        point: dict[str, Any] = {"epoch": epoch + 1, "loss": loss, "degenerate_loss": verdict["degenerate_loss"],
                                 "head_row_cosine": verdict["head_row_cosine"]}
        run.tensorboard.add_scalar("train/loss_over_degenerate", verdict["loss_ratio"] or 0.0, epoch)
        run.tensorboard.add_scalar("train/head_row_cosine", verdict["head_row_cosine"], epoch)
        if cfg.eval.every and (epoch + 1) % int(cfg.eval.every) == 0:
            metrics = evaluate(backbone, protection, data, table, int(cfg.seed), int(cfg.eval.batch_size))
            point["accuracy"] = metrics["accuracy"]
            run.tensorboard.add_scalar("eval/accuracy", metrics["accuracy"], epoch)
        results["curve"].append(point)

    t0 = time.perf_counter()
    try:
        stats = train_local(backbone, head, protection, train.images, train.labels, tcfg, gen,
                            progress=bool(cfg.run.progress), on_epoch=on_epoch, mixer=mixer)
    except NonFiniteLossError as err:
        results.update(status="failed", error=str(err))
        validate(results, TRAIN)
        run.write_results(results)
        run.close()
        raise
    t_train = time.perf_counter() - t0
    results["collapse"] = collapse_check(stats.loss, results["curve"][:-1])
    c = results["collapse"]
    if c["collapsed"]:
        log.warning("COLLAPSED: final loss %.2f = %.2f x ArcFace's degenerate solution (%.2f), %d epochs stalled "
                    "there, class centres' mean cosine %.2f -- its accuracy does not measure its input", stats.loss,
                    c["loss_ratio"] or float("nan"), c["degenerate_loss"], c["stalled_epochs"], c["head_row_cosine"])
    metrics = evaluate(backbone, protection, data, table, int(cfg.seed), int(cfg.eval.batch_size))
    results.update(
        status="done",
        verification=metrics,
        train={"seconds": t_train, "steps": stats.steps, "examples": stats.examples,
               "images_per_second": stats.images_per_second, "seconds_per_epoch": t_train / max(tcfg.epochs, 1),
               "final_loss": stats.loss},
        eval_seconds=time.perf_counter() - t0 - t_train,
        protection=protection.describe(),  # after training: learnt parts (the analysis gates) as trained
    )
    if mixer is not None:
        results["mixup"] = mixer.describe()
    if stats.dp is not None:  # protect=dp_sgd: (epsilon, delta) of the whole training (RDP accountant)
        results["dp"] = stats.dp
        log.info("DP-SGD: epsilon = %s at delta = %g after %d steps (noise %g, clip %g, sample rate %.4f)",
                 stats.dp["epsilon"], stats.dp["delta"], stats.dp["steps"], stats.dp["noise_multiplier"],
                 stats.dp["max_grad_norm"], stats.dp["sample_rate"])
    run.tensorboard.add_scalar("eval/accuracy", metrics["accuracy"], tcfg.epochs)
    log_hparams(run.tensorboard, cfg, {k: v for k, v in utility(metrics).items() if k in (ACCURACY, AUC, TAR_1E3)})
    if cfg.run.save_model:
        state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
        state.update({f"head.{k}": v for k, v in head.state_dict().items()})
        atomic_save_safetensors(run.layout.model, {k: v.detach().cpu().numpy() for k, v in state.items()})
    validate(results, TRAIN)  # the documented shape (docs/results-schema.md), or one error naming the key
    run.write_results(results)
    run.close()
    return results
