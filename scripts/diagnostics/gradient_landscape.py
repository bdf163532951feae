"""What bounds a gradient attack: how far the client's observed update is from the update that other candidate
inputs would have produced, in the attack's own objective (1 - cosine of the concatenated updates, ``ig``).

One simulated client (partition 0) trains one round from the federation's initial global model (pre-trained when
``federation.pretrain.epochs`` > 0) exactly as in `fedface simulate`; its update is then replayed
(``fedface.attacks.replay``, the client's own labels and batch: the ``knows_seed`` upper bound) on:
the true inputs (the replay's exactness: ~0), the best picture the attacker's PCA prior can draw of each true face
(its least-squares fit; GGL's ceiling), a 3x3 blur of the truth, the prior's mean face, and other faces the prior
draws. A gradient attack can only find the truth when the truth's neighbourhood scores better than other faces.

usage: python scripts/diagnostics/gradient_landscape.py [fedface overrides ...]
   e.g. ... data=orl model=tiny federation.head=shared train.batch_size=4 federation.local_steps=1
        federation.pretrain.epochs=20 data.split.public_identities=6
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch.nn import functional as F

from fedface.attacks.gradient import match_loss, target_update
from fedface.attacks.inversion import FacePrior
from fedface.attacks.replay import LossModel, Optimiser, Step, state_of, trainable_names, unroll
from fedface.config import compose_config
from fedface.experiment.ground_truth import load_ground_truth
from fedface.experiment.scoring import attacker_aux
from fedface.federation.client import ClientTask
from fedface.federation.setup import prepare_federation
from fedface.models import build_backbone, build_head
from fedface.protect import input_spec
from fedface.report.tables import markdown_table
from fedface.train.loop import TrainConfig, round_margin_scale
from strategies.server_loop import initial_model

EIGENFACES = 128  # the PCA prior's size in scripts/recipes/ggl_table.sh (attack.gradient.components)


def main(overrides: list[str]) -> None:
    cfg = prepare_federation(compose_config(["federation.num_clients=2", *overrides]))
    if cfg["protect"]["name"] != "none" or cfg["mixup"]["name"] != "none":
        raise SystemExit("the landscape is measured on raw pixels: protect=none mixup=none")
    sent, _ = initial_model(cfg)
    task = ClientTask(cfg, 0, int(cfg["federation"]["num_clients"]), None)
    round_cfg = {"lr": float(cfg["train"]["lr"]), "schedule": "constant", "margin-scale": round_margin_scale(cfg, 1),
                 "epochs": int(cfg["federation"]["local_epochs"]),
                 **({"steps": int(cfg["federation"]["local_steps"])} if cfg["federation"].get("local_steps") else {})}
    with tempfile.TemporaryDirectory() as tmp:
        truth_file = Path(tmp) / "truth.safetensors"
        reply = task.train(sent, 1, round_cfg, ground_truth=truth_file)
        records, _ = load_ground_truth(truth_file)
    spec = input_spec(cfg["protect"])
    backbone = build_backbone(cfg["model"], spec)
    classes = int(cfg["federation"]["num_classes"]) if cfg["federation"]["head"] == "shared" else task.head.num_classes
    model = LossModel(backbone, build_head(cfg["model"], backbone.embedding_size, classes))
    model.head.margin_scale = round_margin_scale(cfg, 1)
    start = state_of(model)
    start.update({k: torch.as_tensor(v).to(start[k].dtype) for k, v in sent.items() if k in start})
    if cfg["federation"]["head"] != "shared":  # a local head: the client's own, as the knows_seed bound grants
        start.update({f"head.{k}": v.detach().clone() for k, v in task.head.state_dict().items()})
    target = target_update(sent, reply.arrays, [n for n in trainable_names(model) if n in sent])
    opt = Optimiser.of(TrainConfig.from_cfg(cfg["train"]))

    def distance(x_steps: list[torch.Tensor]) -> float:
        steps = [Step(x, r.labels, None, r.lr) for x, r in zip(x_steps, records)]
        state = unroll(model, start, steps, opt, create_graph=False)
        return float(match_loss({n: state[n] - start[n] for n in target}, target, "ig", records[0].lr))

    aux = attacker_aux(cfg["data"], int(cfg["seed"]))
    prior = FacePrior(aux[:, 0], EIGENFACES, 0)
    truth = [r.model_input for r in records]

    def fit(x: torch.Tensor) -> torch.Tensor:
        return prior.decode(prior.fit(x))

    def psnr(xs: list[torch.Tensor]) -> float:
        mse = torch.cat([(x - t).square().flatten() for x, t in zip(xs, truth)]).mean()
        return float(10 * torch.log10(4 / mse.clamp_min(1e-12)))

    gen = torch.Generator().manual_seed(0)
    candidates = {
        "the true inputs": truth,
        f"the prior's best fit ({prior.components} eigenfaces)": [fit(x) for x in truth],
        "3x3 blur of the truth": [F.avg_pool2d(x, 3, 1, 1) for x in truth],
        "the prior's mean face": [prior.decode(torch.zeros(len(x), prior.components)) for x in truth],
        "other faces of the prior": [prior.decode(0.7 * torch.randn(len(x), prior.components, generator=gen))
                                     for x in truth],
    }
    rows = [[name, f"{psnr(xs):.1f}", f"{distance(xs):.3f}"] for name, xs in candidates.items()]
    print(f"{cfg['data']['name']}, model={cfg['model']['name']}, head={cfg['federation']['head']}, "
          f"batch {cfg['train']['batch_size']}, {len(records)} local step(s), pretrain "
          f"{cfg['federation'].get('pretrain', {}).get('epochs', 0)} epochs")
    print(markdown_table(["input replayed", "PSNR vs truth (dB)", "1 - cos to the observed update"], rows))


if __name__ == "__main__":
    main(sys.argv[1:])
