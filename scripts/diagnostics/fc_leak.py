"""Does the embedding layer's update leak the batch, on the architecture the client actually runs (no trap module)?

The trunk ends in a linear layer (``trunk.fc``: flattened feature map -> embedding). Its weight gradient for a batch
is sum_i g_i f_i^T: every row is a mixture of the B feature vectors f_i. Independent component analysis separates
such mixtures when B is at most the number of rows (the Cocktail Party Attack, Kariyappa et al., ICML 2023). The
server knows every weight, so it can also compute the features of its own aux faces and train a decoder from
features to faces. This probe measures both steps on one client step of ``--batch`` ORL faces (protect none, the
weights the server sent, BatchNorm in train mode as the client trains):
  1. |correlation| between each separated component and the true f_i it matches (Hungarian), vs the best
     correlation the true f_i have with each other (what mixing alone would give);
  2. the decoded faces' PSNR against the originals and the mean-face floor (64 x 64).

usage: python scripts/diagnostics/fc_leak.py [--model tiny] [--embedding-size 128] [--batch 4 8] [--steps 400]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import FastICA
from torch.nn import functional as F

from fedface.data.partition import make_partition
from fedface.data.sources import load_aux, load_configured
from fedface.experiment.judge import IdentityJudge, pictures
from fedface.metrics import mean_face_floor, score
from fedface.models import build_backbone, build_head
from fedface.models.decoder import DecoderConfig, reconstruct, to_targets, train as train_decoder
from fedface.protect import build_protection

ORL = {"name": "orl", "root": None, "min_images_per_identity": 1, "aux": "lfwa",
       "split": {"protocol": "identity", "test_identities": 10, "public_identities": 0},
       "pairs": {"folds": 10, "per_fold": 60}}


def features(backbone, protection, faces: torch.Tensor) -> torch.Tensor:
    """The fc layer's input for a batch, as the client computes it in training (BatchNorm on batch statistics)."""
    captured = {}

    def keep(module, inputs, output):  # returns None: the layer's output is left as it is
        captured["f"] = inputs[0].detach()

    hook = backbone.trunk.fc.register_forward_hook(keep)
    backbone.train()
    with torch.no_grad():
        backbone(protection(faces.float().unsqueeze(1)))
    hook.remove()
    return captured["f"]


def client_fc_gradient(backbone, head, protection, faces, labels) -> torch.Tensor:
    """What one SGD step of the client reveals about trunk.fc.weight: (W_before - W_after) / lr = its gradient."""
    backbone.train()
    backbone.zero_grad(), head.zero_grad()
    emb = backbone(protection(faces.float().unsqueeze(1)))
    F.cross_entropy(head(emb, labels), labels).backward()
    return backbone.trunk.fc.weight.grad.detach().clone()


def standardise(v: torch.Tensor) -> torch.Tensor:
    v = v - v.mean(dim=-1, keepdim=True)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def separate(grad: torch.Tensor, batch: int, reference: torch.Tensor, seed: int = 0, fun: str = "logcosh"
             ) -> torch.Tensor:
    """ICA on the rows of the fc gradient -> ``batch`` standardised feature vectors, each signed to correlate
    positively with ``reference`` (the aux faces' mean feature vector: ICA leaves the sign open)."""
    ica = FastICA(n_components=batch, whiten="unit-variance", random_state=seed, max_iter=2000, fun=fun)
    sources = torch.as_tensor(ica.fit_transform(grad.T.double().numpy()).T, dtype=torch.float32)
    sources = standardise(sources)
    sign = torch.sign(sources @ standardise(reference))
    return sources * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--embedding-size", type=int, default=128,
                    help="rows of trunk.fc (ICA separates at most this many); configs/model/tiny.yaml uses 64")
    ap.add_argument("--batch", type=int, nargs="*", default=[4, 8])
    ap.add_argument("--steps", type=int, default=400, help="decoder training steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fun", default="logcosh", help="FastICA's contrast: logcosh | exp | cube")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load_configured(ORL)
    table = make_partition(data, ORL, 0)
    aux = load_aux(table)
    aux = torch.cat([aux, aux.flip(-1)])
    protection = build_protection("none")
    backbone = build_backbone({"name": args.model, "embedding_size": args.embedding_size},
                              protection.output_spec(112, 112))
    head = build_head({"head": {"s": 32.0, "m": 0.5}}, backbone.embedding_size, data.num_identities)
    train_idx = np.asarray(table.train_idx)
    judge = IdentityJudge(data.images[train_idx], data.labels[train_idx], "no target system in this probe", args.seed)
    # the server's decoder: its own aux faces through the weights it sent, in batches of the client's size
    t0 = time.perf_counter()
    for b in args.batch:
        order = torch.randperm(len(aux), generator=torch.Generator().manual_seed(b))
        feats = torch.cat([features(backbone, protection, aux[order[i:i + b]]) for i in range(0, len(aux) - b + 1, b)])
        faces = aux[order[: len(feats)]]
        reference = standardise(feats).mean(dim=0)
        shape = _fc_input_shape(backbone)
        dcfg = DecoderConfig(kind="decoder", steps=args.steps, width=16, batch_size=32)
        decoder, facts = train_decoder(standardise(feats).view(-1, *shape) * np.sqrt(feats.shape[1]),
                                       to_targets(faces.unsqueeze(1), 64), dcfg)
        # one client step on b ORL faces of b people
        firsts = [int(train_idx[np.flatnonzero(data.labels[train_idx].numpy() == c)[0]])
                  for c in np.unique(data.labels[train_idx].numpy())[:b]]
        x, y = data.images[firsts], data.labels[firsts].long()
        truth = features(backbone, protection, x)
        grad = client_fc_gradient(backbone, head, protection, x, y)
        rec = separate(grad, b, reference, args.seed, args.fun)
        corr = (standardise(truth) @ rec.T).abs()
        row, col = linear_sum_assignment(-corr.numpy())
        mixing = (standardise(truth) @ standardise(truth).T).abs().fill_diagonal_(0).max(dim=1).values
        decoded = reconstruct(decoder, rec.view(-1, *shape) * np.sqrt(feats.shape[1]))
        oracle = reconstruct(decoder, standardise(truth).view(-1, *shape) * np.sqrt(feats.shape[1]))
        target = to_targets(x.unsqueeze(1), 64)
        s = score(decoded, target, data_range=2.0, match=True)
        o = score(oracle, target, data_range=2.0, match=False)
        floor = mean_face_floor(to_targets(aux.unsqueeze(1), 64), target, 2.0)
        # whose face each decoded picture is: the true face it matches in pixels (Hungarian), judged by dlib among
        # every training identity of the federation (chance 1 / 30)
        mse = ((decoded[:, None] - target[None]) ** 2).flatten(2).mean(-1)
        pic, true = linear_sum_assignment(mse.numpy())
        who = judge.score(pictures(decoded[pic]), y[true])
        print(f"batch {b}: |corr| separated vs true features {corr[row, col].mean():.3f} (min {corr[row, col].min():.3f}; "
              f"true features' own max cross-corr {mixing.mean():.3f}); decoded PSNR {s['psnr']:.2f} dB SSIM "
              f"{s['ssim']:.3f}; dlib COS {who['cos']:.3f} same {who['same_person']:.2f} top-1 {who['top1']:.2f} "
              f"(chance {who['chance']:.3f}); decoder on the true features {o['psnr']:.2f} dB; floor "
              f"{floor['psnr']:.2f} dB; decoder {facts.get('seconds', 0):.0f} s; {time.perf_counter() - t0:.0f} s",
              flush=True)


def _fc_input_shape(backbone) -> tuple[int, int, int]:
    """(C, H, W) of the feature map the fc flattens: the decoder reads it as an image."""
    fc_in = backbone.trunk.fc.in_features
    c = backbone.trunk.bn2.num_features
    side = int(round((fc_in // c) ** 0.5))
    return c, side, side


if __name__ == "__main__":
    main()
