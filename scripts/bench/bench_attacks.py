"""Gradient-attack speed in the federated case (part of `make bench`; not a test).

One ORL client (identity shard of an 8-client federation, head=shared) trains one round; the server-side attack
(``fedface.attacks.update.attack_update``, InvertingGradients through the replayed local steps) then runs a few
iterations. Prints iterations per second per (model, protection, batch, local steps) on this machine; the fixture's
speed is printed by scripts/diagnostics/attack_fixture.py.
usage: python scripts/bench/bench_attacks.py [--iterations 10] [--models tiny fedface_net]
"""
from __future__ import annotations

import argparse
import itertools
import os

import torch

from fedface.attacks.gradient import InversionConfig
from fedface.attacks.threat import Observation, ThreatModel
from fedface.attacks.update import attack_update
from fedface.config import compose_config
from fedface.federation.client import ClientTask
from fedface.federation.params import federated_state
from fedface.federation.setup import prepare_federation


def one(model: str, protect: str, batch: int, steps: int, iterations: int) -> float:
    cfg = prepare_federation(compose_config([
        "data=orl", f"model={model}", f"protect={protect}", f"train.batch_size={batch}", "federation.num_clients=8",
        "federation.head=shared", f"federation.local_steps={steps}"]))
    key = os.urandom(32)
    task = ClientTask(cfg, 0, 8, key)
    sent = federated_state(task.backbone, task.head)
    reply = task.train(sent, 1, {"lr": 0.1, "schedule": "constant", "steps": steps})
    obs = Observation(node=0, server_round=1, sent=sent, returned=reply.arrays, lr=0.1, steps=steps,
                      num_examples=task.num_examples)
    rec, _ = attack_update(obs, cfg, InversionConfig(iterations=iterations, max_seconds=600), ThreatModel())
    return rec.iterations / rec.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--models", nargs="+", default=["tiny", "fedface_net"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| model | protection | batch | local steps | attack it/s |")
    print("|---|---|---|---|---|")
    for model, protect, batch, steps in itertools.product(args.models, ["none", "ppfr_fd"], [2, 8], [1, 4]):
        speed = one(model, protect, batch, steps, args.iterations)
        print(f"| {model} | {protect} | {batch} | {steps} | {speed:.2f} |", flush=True)


if __name__ == "__main__":
    main()
