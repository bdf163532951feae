"""Probe the gradient attack on one ORL client's real update, outside a federation (diagnostics, not a test).

One ORL client (partition 0 of 8, head=shared) trains one round and records what entered its model; the attack then
inverts the update under the chosen threat and options and is scored against the truth in the masked space. Also
prints the matching loss *at the true inputs* (the replay's fidelity: ~0 means the truth is a global minimum).
usage: python scripts/diagnostics/attack_probe.py --protect none --batch 4 --steps 1 --method ig --optimizer adam \
         --iterations 2000 --lr 0.01 [--threat knows_seed] [--near 0.5] [--scale 1]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

import fedface.attacks.gradient as gradient
from fedface.experiment.ground_truth import load_ground_truth
from fedface.attacks.gradient import InversionConfig, match_loss, target_update
from fedface.attacks.replay import LossModel, Optimiser, Step, state_of, trainable_names, unroll
from fedface.experiment.scoring import truth
from fedface.attacks.threat import Observation, ThreatModel
from fedface.attacks.update import attack_update
from fedface.config import compose_config
from fedface.federation.client import ClientTask
from fedface.federation.params import federated_state
from fedface.federation.setup import prepare_federation
from fedface.metrics import score
from fedface.models import build_backbone, build_head
from fedface.protect import input_spec
from fedface.train import TrainConfig


def loss_at_truth(cfg: dict, sent: dict, returned: dict, records: list, method: str) -> float:
    spec = input_spec(cfg["protect"])
    backbone = build_backbone(cfg["model"], spec)
    model = LossModel(backbone, build_head(cfg["model"], backbone.embedding_size,
                                           int(cfg["federation"]["num_classes"])))
    start = state_of(model)
    start.update({k: torch.as_tensor(np.asarray(v)) for k, v in sent.items()})
    target = target_update(sent, returned, trainable_names(model))
    steps = [Step(r.mixed if r.mixed is not None else r.model_input,
                  r.mix_labels if r.mix_labels is not None else r.labels, r.mix_weights, r.lr) for r in records]
    state = unroll(model, start, steps, Optimiser.of(TrainConfig.from_cfg(cfg["train"])), create_graph=False)
    return float(match_loss({n: state[n] - start[n] for n in target}, target, method, records[0].lr))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--protect", default="none")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--method", default="ig")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--threat", default="knows_seed", help="server | knows_seed | knows_labels")
    ap.add_argument("--near", type=float, default=None, help="start at the truth + this much Gaussian noise")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = prepare_federation(compose_config([
        "data=orl", f"model={args.model}", f"protect={args.protect}", f"train.batch_size={args.batch}",
        "federation.num_clients=8", "federation.head=shared", f"federation.local_steps={args.steps}"]))
    task = ClientTask(cfg, 0, 8, os.urandom(32))
    sent = federated_state(task.backbone, task.head)
    with tempfile.TemporaryDirectory() as d:
        gt = Path(d) / "truth.safetensors"
        reply = task.train(sent, 1, {"lr": 0.1, "schedule": "constant", "steps": args.steps}, ground_truth=gt)
        records, _ = load_ground_truth(gt)
    true = truth(records)["model_input"]
    print(f"matching loss at the true inputs: {loss_at_truth(cfg, sent, reply.arrays, records, args.method):.3g}")
    if args.near is not None:  # a warm start: does the optimiser stay at (converge to) the truth?
        noise = torch.randn

        def near(*shape, **kw):
            out = noise(*shape, **kw)
            return true + args.near * out if out.shape == true.shape else out

        gradient.torch.randn = near
    obs = Observation(node=0, server_round=1, sent=sent, returned=reply.arrays, lr=0.1, steps=args.steps,
                      num_examples=task.num_examples)
    threat = ThreatModel() if args.threat == "server" else ThreatModel(**{args.threat: True})
    icfg = InversionConfig(method=args.method, optimizer=args.optimizer, iterations=args.iterations, lr=args.lr,
                           scale=args.scale, max_seconds=3600)
    rec, facts = attack_update(obs, cfg, icfg, threat, records)
    s = score(rec.x, true, float(true.max() - true.min()))
    print(f"{threat.label}: masked PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.3f}; final match {rec.match_loss:.4g}; "
          f"{rec.iterations} iterations in {rec.seconds:.0f} s; labels {facts.get('labels')}")


if __name__ == "__main__":
    main()
