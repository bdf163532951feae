"""The server's round loop: configure -> send/receive -> aggregate (+ policy step) -> evaluate -> record -> checkpoint.

Written out (instead of ``Strategy.start``) so that a run can ``resume`` at the round after its last checkpoint,
and so every round lands in results.json, TensorBoard and a checkpoint before the next one starts.
"""
from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from fedface.federation.central_dp import PRIVACY_AGAINST_SERVER, central_dp
from fedface.federation.checkpoint import (load_checkpoint, load_optimizer_arrays, optimizer_arrays, save_checkpoint,
                                           to_numpy)
from fedface.federation.params import federated_state, floats_only, nbytes
from fedface.federation.secagg import PER_CLIENT_UNAVAILABLE, secagg_settings
from fedface.federation.pretrain import pretrain_public
from fedface.io import atomic_write_json
from fedface.report.schema import SIMULATE, validate
from fedface.protect.keys import same_fingerprint
from fedface.runs import RunLayout, log_hparams, machine_info, resume_mismatch
from fedface.mixup import MixupConfig, PolicyNet, policy_optimizer
from fedface.models import build_backbone, build_head
from fedface.protect import input_spec
from fedface.train.collapse import rounds_verdict
from fedface.train.loop import round_margin_scale
from strategies.central_dp import build_central_dp
from clients.records import from_record, metrics_of, to_record
from strategies.malicious import MaliciousFedFaceAvg
from strategies.secagg import SecAggRound
from strategies.strategy import FedFaceAvg

log = logging.getLogger(__name__)


def initial_model(cfg: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """The global model the federation starts from (seeded): backbone, plus the head when it is shared; with
    ``federation.pretrain.epochs`` the backbone is first pre-trained on the public identities (returns its facts)."""
    torch.manual_seed(int(cfg["seed"]))
    fed = cfg["federation"]
    backbone = build_backbone(cfg["model"], input_spec(cfg["protect"]))
    head = build_head(cfg["model"], backbone.embedding_size, int(fed["num_classes"]))
    epochs = int(fed.get("pretrain", {}).get("epochs", 0))
    facts = pretrain_public(cfg, backbone, epochs) if epochs > 0 else None
    return federated_state(backbone, head, fed["head"], fed["bn"], floats_only=floats_only(fed)), facts


def build_policy(cfg: dict[str, Any]) -> tuple[PolicyNet | None, torch.optim.Optimizer | None, MixupConfig]:
    mcfg = MixupConfig.from_cfg(cfg["mixup"])
    if mcfg.name != "adaptive":
        return None, None, mcfg
    torch.manual_seed(int(cfg["seed"]) + 1)
    policy = PolicyNet(input_spec(cfg["protect"]), len(mcfg.ks), mcfg.policy_width)
    return policy, policy_optimizer(policy, mcfg.policy_lr), mcfg


def round_lr(cfg: dict[str, Any], server_round: int) -> float:
    """Cosine decay of the clients' learning rate over rounds (constant within a round)."""
    base, rounds = float(cfg["train"]["lr"]), int(cfg["federation"]["rounds"])
    if cfg["train"].get("schedule", "cosine") != "cosine":
        return base
    return base * 0.5 * (1 + math.cos(math.pi * (server_round - 1) / max(rounds, 1)))


def plateaued(history: list[dict[str, Any]], plateau: dict[str, Any]) -> bool:
    """True when the last ``patience`` evaluations brought no accuracy gain of ``min_delta`` over the best one
    before them. Computed from the round history alone, so a resumed run stops where an uninterrupted one would."""
    patience = plateau.get("patience")
    if not patience:
        return False
    accs = [r["accuracy"] for r in history if r.get("accuracy") is not None]
    if len(accs) <= int(patience):
        return False
    return max(accs[-int(patience):]) < max(accs[:-int(patience)]) + float(plateau.get("min_delta", 0.0))


def run_federation(grid: Grid, cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    fed = cfg["federation"]
    policy, optimizer, mcfg = build_policy(cfg)
    # all num_clients nodes must be there for the pre-flight; afterwards a round needs only min_train_nodes, so a
    # deployed node that drops does not stall the federation (flwr's sampler waits for min_available_nodes)
    kwargs = dict(fraction_train=float(fed["fraction_train"]), fraction_evaluate=1.0,
                  min_train_nodes=int(fed["min_train_nodes"]), min_evaluate_nodes=1,
                  min_available_nodes=int(fed["min_train_nodes"]))
    dp = central_dp(fed)  # federation.dp: flwr's central-DP wrapper, inside our strategy (strategies.central_dp)
    kwargs["dp"] = build_central_dp(dp, int(cfg["seed"]), **kwargs)
    if cfg.get("attack", {}).get("name", "none") != "none":  # the malicious server (attacks, same aggregation)
        strategy = MaliciousFedFaceAvg(cfg, run_dir, policy, optimizer, mcfg.baseline_momentum, **kwargs)
    else:
        strategy = FedFaceAvg(cfg, policy, optimizer, mcfg.baseline_momentum, **kwargs)
    results: dict[str, Any] = {"command": "simulate", "status": "running", "rounds": [], "config": cfg,
                               "machine": machine_info(),  # the server's; provenance: commit, packages, command
                               # attack=imprint: the server sent modified weights (rounds name the trapped node)
                               "malicious_weights": bool(getattr(strategy, "malicious_weights", False))}
    if dp is not None:  # the server adds the noise after seeing every update: say so wherever results are read
        results.update(central_dp=dp.describe(), privacy_against_server=PRIVACY_AGAINST_SERVER)
    secagg = secagg_settings(fed)  # federation.secagg: train rounds through flwr's SecAgg+ (strategies.secagg)
    if secagg is not None:
        results.update(secagg=secagg.describe(), per_client_attacks=PER_CLIENT_UNAVAILABLE)
    start = 1
    ckpt_dir = RunLayout(run_dir).checkpoint
    ckpt = load_checkpoint(ckpt_dir) if fed.get("resume") else None
    if ckpt is None:
        arrays, results["pretrain"] = initial_model(cfg)
    else:
        last, arrays, policy_state, state = ckpt
        if "config" not in state:
            raise ValueError(f"federation.resume=true but the checkpoint in {ckpt_dir} records no config (an older "
                             "fedface wrote it): start a new run.dir")
        changed = resume_mismatch(state["config"], cfg)
        if changed:
            raise ValueError(f"federation.resume=true but the run in {run_dir} had another config: "
                             f"{', '.join(changed)} differ (only run.*, federation.rounds and "
                             "federation.round_timeout may change)")
        results["resumed_after_round"] = last
        if policy is not None and policy_state is not None:
            policy.load_state_dict({k: torch.as_tensor(v) for k, v in policy_state.items() if not k.startswith("opt.")})
            load_optimizer_arrays(optimizer, policy_state, state["policy_optimizer"])
        strategy.baseline = state.get("baseline")
        results["rounds"], results["pretrain"] = state.get("history", []), state.get("pretrain")
        start = last + 1
        log.info("resuming after round %d from %s", last, ckpt_dir)
    key_then = (ckpt[3].get("key") or {}) if ckpt is not None else {}
    results["preflight"] = strategy.preflight(grid, list(input_spec(cfg["protect"]).shape),
                                              float(fed["round_timeout"]), int(fed["num_clients"]),
                                              nonce=key_then.get("nonce"))
    key_now = {"nonce": results["preflight"]["key_nonce"], "fingerprint": results["preflight"]["key_fingerprint"]}
    if key_then.get("fingerprint") and not same_fingerprint(key_now["fingerprint"] or "", key_then["fingerprint"]):
        # resumed rounds under another key would train on another Shuffle1 permutation than the checkpointed ones
        raise ValueError(f"federation.resume=true but the nodes hold another federation key than the rounds in "
                         f"{ckpt_dir} were trained with (key fingerprints differ): give them that run's key "
                         "(FEDFACE_KEY / FEDFACE_KEY_FILE), or start a new run.dir")
    results["mixup_k"] = list(mcfg.ks) if mcfg.name != "none" else []
    secure = None
    if secagg is not None:
        largest = int(results["preflight"]["max_examples"])
        max_weight = float(secagg.max_weight or largest)
        if largest > max_weight:  # a weight n_i / max_weight above 1 may overflow the modulus (secaggplus_mod.py:443)
            raise ValueError(f"federation.secagg_params.max_weight={max_weight:g} is below the largest shard "
                             f"({largest} examples): raise it or set it to null")
        results["secagg"]["max_weight"] = max_weight
        secure = SecAggRound(strategy, secagg, max_weight, len(results["mixup_k"]), float(fed["round_timeout"]))
    writer = _tensorboard(run_dir)
    for rnd in range(start, int(fed["rounds"]) + 1):
        t0 = time.perf_counter()
        random.seed(int(cfg["seed"]) * 100_003 + rnd)  # node sampling: same draw for a round whether resumed or not
        train_cfg = ConfigRecord({"lr": round_lr(cfg, rnd), "schedule": "constant",
                                  "margin-scale": round_margin_scale(cfg, rnd),
                                  "epochs": int(fed["local_epochs"]),
                                  **({"steps": int(fed["local_steps"])} if fed.get("local_steps") else {})})
        if secure is None:
            messages = strategy.configure_train(rnd, to_record(arrays), train_cfg, grid)
            replies, seconds = _exchange(grid, messages, float(fed["round_timeout"]))
            exchange = {"train": seconds}
            new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
        else:  # SecAgg+: the server never holds a reply's update, only the unmasked aggregate
            new_arrays, train_metrics = secure.round(grid, rnd, arrays, train_cfg)
            exchange = {}
        if new_arrays is not None:
            arrays = from_record(new_arrays)
        record = {"round": rnd, **strategy.last_round, "seconds": 0.0,
                  "train_loss": None if train_metrics is None else float(train_metrics["train_loss"]),
                  "global_bytes": nbytes(arrays), **collapse_record(train_metrics)}
        if rnd % int(fed["eval_every"]) == 0 or rnd == int(fed["rounds"]):
            eval_msgs = strategy.configure_evaluate(rnd, to_record(arrays), ConfigRecord({}), grid)
            eval_replies, exchange["evaluate"] = _exchange(grid, eval_msgs, float(fed["round_timeout"]))
            metrics = strategy.aggregate_evaluate(rnd, eval_replies)
            if metrics is not None:
                record.update({k: v for k, v in metrics_of(metrics).items() if k != "num-examples"})
        record["seconds"] = time.perf_counter() - t0
        record["exchange_seconds"] = exchange  # send to last reply; minus the clients' own seconds: the transport
        if policy is not None:
            record["policy_baseline"] = strategy.baseline
        results["rounds"].append(record)
        _log_round(writer, record, results["mixup_k"])
        _checkpoint(ckpt_dir, rnd, arrays, policy, optimizer,
                    {"baseline": strategy.baseline, "history": results["rounds"], "pretrain": results["pretrain"],
                     "config": cfg, "key": key_now})
        atomic_write_json(RunLayout(run_dir).results, results)
        log.info("%s", round_line(record))
        if plateaued(results["rounds"], fed.get("plateau") or {}):
            results["stopped"] = f"accuracy plateaued: no gain >= {fed['plateau']['min_delta']} in " \
                                 f"{fed['plateau']['patience']} evaluations (round {rnd})"
            log.info(results["stopped"])
            break
    results["status"] = "done"
    if results["rounds"] and not any(r.get("received") for r in results["rounds"]):
        results.update(status="failed", error="no client reply was aggregated in any round (see each round's "
                                               "`failed` reasons)")
        log.error("every round failed: %s", results["rounds"][-1].get("failed"))
    verdict = rounds_verdict(results["rounds"])
    if verdict is not None:
        results["collapse"] = verdict
        if verdict["collapsed"]:
            log.warning("COLLAPSED: the clients' loss sits at %.2f x ArcFace's degenerate solution (class centres' "
                        "mean cosine %.2f): its accuracy does not measure the protection",
                        verdict["loss_over_degenerate"], verdict["head_row_cosine"])
    validate(results, SIMULATE)  # the documented shape (docs/results-schema.md), or one error naming the key
    atomic_write_json(RunLayout(run_dir).results, results)
    final = next((r for r in reversed(results["rounds"]) if r.get("accuracy") is not None), {})
    log_hparams(writer, cfg, {k: final.get(k) for k in ("accuracy", "auc", "train_loss")})
    writer.close()
    return results


def _exchange(grid: Grid, messages, timeout: float) -> tuple[list, float]:
    """One message exchange: the replies, and the seconds from sending to the last reply (the round records it)."""
    t0 = time.perf_counter()
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    return replies, time.perf_counter() - t0


def collapse_record(train_metrics) -> dict[str, Any]:
    """The round's evidence for the collapse verdict (``fedface.train.collapse``): the clients' example-weighted mean
    loss over L_deg and head-row cosine; nothing when the replies do not carry them (SecAgg+ sums only the loss)."""
    if train_metrics is None or "loss-over-degenerate" not in train_metrics:
        return {}
    ratio, cosine = float(train_metrics["loss-over-degenerate"]), float(train_metrics["head-row-cosine"])
    return {"loss_over_degenerate": ratio, "head_row_cosine": cosine,
            "mixed_samples": float(train_metrics.get("mixed-samples", 0.0)) > 0}


def _checkpoint(folder: Path, rnd: int, arrays: dict[str, np.ndarray], policy, optimizer,
                state: dict[str, Any]) -> None:
    policy_arrays, groups = None, None
    if policy is not None:
        opt_arrays, groups = optimizer_arrays(optimizer)
        policy_arrays = {**to_numpy(policy.state_dict()), **opt_arrays}
    save_checkpoint(folder, rnd, arrays, policy_arrays, {**state, "policy_optimizer": groups})


def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(RunLayout(run_dir).tensorboard))


def round_line(r: dict[str, Any]) -> str:
    """One finished round on one console line (the run's progress; results.json keeps every field)."""
    acc = r.get("accuracy")
    return (f"round {r['round']:3d}  acc {'   n/a' if acc is None else f'{100 * acc:6.2f}'}  "
            f"loss {r.get('train_loss') or float('nan'):.3f}  replies {r.get('received')}/{r.get('sampled')}  "
            f"sent {r.get('bytes_sent', 0) / 1e6:.1f} MB  received {r.get('bytes_received', 0) / 1e6:.1f} MB  "
            f"{r.get('seconds', 0):.1f} s" + (f"  loss/L_deg {r['loss_over_degenerate']:.2f}"
                                            if r.get("loss_over_degenerate") else ""))


def _log_round(writer, record: dict[str, Any], ks: list[int]) -> None:
    rnd = record["round"]
    for key in ("accuracy", "auc", "train_loss", "bytes_sent", "bytes_received", "received", "epsilon_max"):
        if record.get(key) is not None:
            writer.add_scalar(f"federation/{key}", record[key], rnd)
    if record.get("k_counts"):
        counts = np.asarray(record["k_counts"], dtype=float)
        if counts.sum() > 0:
            for k, share in zip(ks, counts / counts.sum()):
                writer.add_scalar(f"mixup/share_k{k}", share, rnd)
    writer.flush()
