"""Validate the gradient attack before trusting it on face models (issue 7's fixture; part of `make bench`).

DLG's setting (Zhu et al. 2019): LeNet (``fedface.models.convnet``) with DLG's initialisation (uniform in
[-0.5, 0.5]), one training image, one SGD step, no protection; the label is read off the update (iDLG), then the
image is recovered by L2 matching with L-BFGS (DLG) and by cosine + TV with signed Adam (InvertingGradients).
One ORL face at several resolutions (area-downsampled from 112 x 112). Prints PSNR / SSIM against the original and
the mean-face floor of the attacker's auxiliary LFW-a faces, and attack iterations per second on this machine.
usage: python scripts/attack_fixture.py [--sizes 32 64 112] [--lbfgs-iterations 100] [--adam-iterations 2000]
       [--out docs/results/attack-fixture.json]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from fedface.attacks.gradient import InversionConfig, Plan, idlg_label, invert
from fedface.attacks.replay import Optimiser, Step, state_of, trainable_names, unroll
from fedface.data.partition import make_partition
from fedface.data.sources import load_aux, load_configured
from fedface.io import atomic_write_json
from fedface.metrics import mean_face_floor, score
from fedface.models.convnet import ConvNet
from fedface.runs import machine_info

ORL = {"name": "orl", "root": None, "min_images_per_identity": 1, "aux": "lfwa",
       "split": {"protocol": "identity", "test_identities": 10, "public_identities": 0},
       "pairs": {"folds": 10, "per_fold": 60}}


def to_unit(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 faces (N, 112, 112) -> (N, 1, size, size) in [-1, 1] (the `none` standardisation)."""
    x = (x.float().unsqueeze(1) - 127.5) / 127.5
    return x if size == x.shape[-1] else F.interpolate(x, size=(size, size), mode="area")


def run(face: torch.Tensor, label: int, aux: torch.Tensor | None, size: int, method: str, optimizer: str,
        iterations: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = ConvNet(size=size, num_classes=40)
    for p in net.parameters():  # DLG's weights_init: the attack's success depends on it (see README)
        torch.nn.init.uniform_(p, -0.5, 0.5)
    x = to_unit(face[None], size)
    start, opt = state_of(net), Optimiser(momentum=0.0, weight_decay=0.0, grad_clip=0.0)
    after = unroll(net, start, [Step(x, torch.tensor([label]), None, 0.1)], opt, create_graph=False)
    target = {n: after[n] - start[n] for n in trainable_names(net)}
    inferred = idlg_label(target["fc.bias"])
    plan = Plan([torch.arange(1)], [0.1], hard=torch.tensor([inferred]))
    cfg = InversionConfig(method=method, optimizer=optimizer, iterations=iterations, lr=0.1, tv=1e-4,
                          max_seconds=1800)
    rec = invert(net, start, target, plan, (1, size, size), opt, cfg, project=lambda v: v.clamp(-1, 1))
    s = score(rec.x, x, data_range=2.0, match=False)
    out = {"size": size, "method": method, "optimizer": optimizer, "iterations": rec.iterations,
           "label_correct": inferred == label, "psnr": s["psnr"], "ssim": s["ssim"], "seconds": rec.seconds,
           "iterations_per_second": rec.iterations / rec.seconds}
    if aux is not None:
        floor = mean_face_floor(to_unit(aux, size), x, 2.0)
        out.update(floor_psnr=floor["psnr"], floor_ssim=floor["ssim"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 112])
    ap.add_argument("--lbfgs-iterations", type=int, default=100)
    ap.add_argument("--adam-iterations", type=int, default=2000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_configured(ORL)
    aux = load_aux(make_partition(data, ORL, 0))
    rows = []
    print("| size | method (optimiser) | iterations | label | PSNR dB | SSIM | floor PSNR / SSIM | it/s |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for method, optimizer, iters in (("dlg", "lbfgs", args.lbfgs_iterations), ("ig", "adam", args.adam_iterations)):
            r = run(data.images[0], int(data.labels[0]), aux, size, method, optimizer, iters)
            rows.append(r)
            print(f"| {size} | {method} ({optimizer}) | {r['iterations']} | {'ok' if r['label_correct'] else 'WRONG'} "
                  f"| {r['psnr']:.1f} | {r['ssim']:.3f} | {r.get('floor_psnr', float('nan')):.1f} / "
                  f"{r.get('floor_ssim', float('nan')):.3f} | {r['iterations_per_second']:.1f} |", flush=True)
    if args.out:
        atomic_write_json(args.out, {"command": "python scripts/attack_fixture.py", "machine": machine_info(),
                                     "rows": rows})


if __name__ == "__main__":
    main()
