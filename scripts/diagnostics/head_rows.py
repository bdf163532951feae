"""What a shared ArcFace head's one-step update tells the server about each face, and the best a picture could score.

For a label row y the update is +lr * s * (1 - p_y) * (e - cos * w_y) / |w_y| (the sample's embedding e, less its part
along the row); for any other row c it is -lr * s * p_c * (e - cos * w_c) / |w_c| (Deng et al. 2019, eq. 3, through
the cosine's gradient). So the label rows point *towards* the batch's embeddings and every other row *away* from them:
the server reads each face's embedding off its label row (Phong et al. 2018: a dense layer's update holds its input)
and can invert it through the weights it sent with its face prior -- a per-face problem, unlike matching the whole
update. One simulated client per partition trains one round from the federation's initial global model (pre-trained
when ``federation.pretrain.epochs`` > 0), exactly as in `fedface simulate`. Printed per partition: the labels each
rule infers (``infer_labels``: the largest row updates; "direction": rows whose update points towards the attacker's
aux faces' mean embedding), how close each label row is to the true embedding (against the cosine of two different
people's embeddings: the cone the trunk maps faces into), and dlib top-1 / SRRA (``fedface.experiment.judge``, every
training image as gallery, the sent model as target) of: the embeddings inverted with the PCA prior, the prior's best
fit of each true face (GGL-PCA's ceiling) and the true faces themselves (any attack's ceiling).

usage: python scripts/diagnostics/head_rows.py [fedface overrides ...]
   e.g. ... data=lfwa model=tiny federation.head=shared train.batch_size=4 federation.local_steps=1
        data.split.public_identities=60 federation.pretrain.epochs=30
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fedface.attacks.gradient import infer_labels
from fedface.attacks.inversion import FacePrior
from fedface.config import compose_config
from fedface.experiment.ground_truth import load_ground_truth
from fedface.experiment.judge import IdentityJudge, pictures
from fedface.experiment.scoring import _gallery, attacker_aux
from fedface.federation.client import ClientTask
from fedface.federation.setup import prepare_federation
from fedface.models import backbone_from
from fedface.protect import build_protection, input_spec
from fedface.report.tables import markdown_table
from fedface.train.loop import round_margin_scale
from strategies.server_loop import initial_model

EIGENFACES = 128  # the PCA prior's size in scripts/recipes/ggl_table.sh (attack.gradient.components)
STEPS = 400       # Adam steps of the embedding inversion


def label_rows(w0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """Each head row's update without its part along the row (the cosine's gradient has none)."""
    unit = F.normalize(w0, dim=1)
    d = w1 - w0
    return d - (d * unit).sum(dim=1, keepdim=True) * unit


def invert_embeddings(embed, prior: FacePrior, targets: torch.Tensor) -> torch.Tensor:
    """Faces of the prior whose embeddings point along ``targets`` (1 - cosine, a small latent penalty)."""
    z = torch.zeros(len(targets), prior.components, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = (1 - (embed(prior.decode(z)) * targets).sum(dim=1)).mean() + 1e-3 * z.square().mean()
        loss.backward()
        opt.step()
    return prior.decode(z.detach())


def main(overrides: list[str]) -> None:
    cfg = prepare_federation(compose_config(["federation.num_clients=2", *overrides]))
    if cfg["protect"]["name"] != "none" or cfg["federation"]["head"] != "shared":
        raise SystemExit("the head rows are read on raw pixels with a shared head: protect=none federation.head=shared")
    sent, _ = initial_model(cfg)
    backbone = backbone_from(cfg["model"], input_spec(cfg["protect"]), sent, strict=False).eval()
    backbone.requires_grad_(False)
    protection = build_protection(cfg["protect"])

    def embed(faces: torch.Tensor) -> torch.Tensor:  # faces in [-1, 1], as protect=none feeds them
        return F.normalize(backbone(protection((faces + 1) * 127.5)), dim=1)

    aux = attacker_aux(cfg["data"], int(cfg["seed"]))
    prior = FacePrior(aux[:, 0], EIGENFACES, 0)
    with torch.no_grad():
        cone = F.normalize(embed(aux[:256] / 127.5 - 1).mean(0), dim=0)
    gallery, labels = _gallery(json.dumps(cfg["data"], sort_keys=True), int(cfg["seed"]))
    judge = IdentityJudge(gallery, labels, (backbone, protection), 0)
    w0 = torch.as_tensor(np.asarray(sent["head.weight"])).float()
    rows, pics = [], {"embeddings inverted (PCA prior)": [], "the prior's best fit of each face": [],
                      "the true faces": []}
    ids = []
    for part in range(int(cfg["federation"]["num_clients"])):
        task = ClientTask(cfg, part, int(cfg["federation"]["num_clients"]), None)
        round_cfg = {"lr": float(cfg["train"]["lr"]), "schedule": "constant", "epochs": 1, "steps": 1,
                     "margin-scale": round_margin_scale(cfg, 1)}
        with tempfile.TemporaryDirectory() as tmp:
            reply = task.train(sent, 1, round_cfg, ground_truth=Path(tmp) / "truth.safetensors")
            records, _ = load_ground_truth(Path(tmp) / "truth.safetensors")
        step = records[0]
        rows_update = label_rows(w0, torch.as_tensor(np.asarray(reply.arrays["head.weight"])).float())
        true = sorted(set(step.labels.tolist()))
        towards = (rows_update @ cone).argsort(descending=True)[:len(true)].tolist()
        with torch.no_grad():
            e_true = embed(step.model_input)
        read = F.normalize(rows_update[step.labels], dim=1)
        other = [float(e_true[i] @ e_true[j]) for i in range(len(e_true)) for j in range(i)
                 if step.labels[i] != step.labels[j]]
        rows.append([part, str(true), str(infer_labels(w0, w0 + rows_update, len(step.labels))), str(sorted(towards)),
                     " ".join(f"{float(v):.3f}" for v in (read * e_true).sum(dim=1)),
                     f"{np.mean(other):.3f}" if other else "-"])
        pics["embeddings inverted (PCA prior)"].append(invert_embeddings(embed, prior, read))
        pics["the prior's best fit of each face"].append(prior.decode(prior.fit(step.model_input)))
        pics["the true faces"].append(step.model_input)
        ids.append(step.labels)
    print(f"{cfg['data']['name']}, model={cfg['model']['name']}, batch {cfg['train']['batch_size']}, one local step, "
          f"pretrain {cfg['federation'].get('pretrain', {}).get('epochs', 0)} epochs")
    print(markdown_table(["partition", "true labels", "largest rows (infer_labels)", "rows towards the aux faces",
                          "cos(label row, true embedding)", "cos of two people's embeddings"], rows))
    scored = []
    for name, faces in pics.items():
        s = judge.score(pictures(torch.cat(faces)), torch.cat(ids))
        scored.append([name, f"{s.get('top1', float('nan')):.2f}", f"{s.get('chance', float('nan')):.3f}",
                       "n/a" if s.get("srra") is None else f"{s['srra']:.2f}",
                       "n/a" if s.get("target_top1") is None else f"{s['target_top1']:.2f}"])
    print(markdown_table(["pictures", "dlib top-1", "chance", "SRRA", "target top-1"], scored))


if __name__ == "__main__":
    main(sys.argv[1:])
