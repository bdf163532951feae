"""Validate the gradient attack before trusting it on face models (issue 7's fixture; part of `make bench`).

DLG's setting (Zhu et al. 2019): LeNet (``fedface.models.convnet``) with DLG's initialisation (uniform in
[-0.5, 0.5]), one training image, one SGD step, no protection; the label is read off the update (iDLG), then the
image is recovered by L2 matching with L-BFGS (DLG) and by cosine + TV with signed Adam (InvertingGradients).
One ORL face at several resolutions (area-downsampled from 112 x 112). Then the FedAvg case (``--fedavg``, Geiping
et al. 2020 Sec. 5's multi-step setting): 4 faces of 4 people, 4 local full-batch SGD steps, inverted through the
same differentiable replay of the client's steps the federated attack uses. ``--minimums``: what a node policy's
``min_batch_size`` / ``min_local_steps`` buy where the attack works -- DLG at 32 px over batches 1, 2, 4, 8 and 1 or 4
local steps (docs/attacks.md "What a node's minimums buy"). Prints PSNR / SSIM against the original and the mean-face
floor of the attacker's auxiliary LFW-a faces, and attack iterations per second on this machine.
usage: python scripts/diagnostics/attack_fixture.py [--sizes 32 64 112] [--lbfgs-iterations 100] [--adam-iterations 2000]
       [--fedavg 32] [--minimums] [--out docs/results/attack-fixture.json]
"""
from __future__ import annotations

import argparse

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


def run(faces: torch.Tensor, labels: torch.Tensor, aux: torch.Tensor | None, size: int, method: str, optimizer: str,
        iterations: int, steps: int = 1, seed: int = 0) -> dict:
    """Invert ``steps`` full-batch SGD steps on ``faces`` (distinct ``labels``); Hungarian-matched scores."""
    torch.manual_seed(seed)
    net = ConvNet(size=size, num_classes=40)
    # DLG's weights_init: the attack's success depends on it (see docs/attacks.md "Malicious server I")
    for p in net.parameters():
        torch.nn.init.uniform_(p, -0.5, 0.5)
    x, n = to_unit(faces, size), len(faces)
    start, opt = state_of(net), Optimiser(momentum=0.0, weight_decay=0.0, grad_clip=0.0)
    after = unroll(net, start, [Step(x, labels, None, 0.1)] * steps, opt, create_graph=False)
    target = {name: after[name] - start[name] for name in trainable_names(net)}
    inferred = idlg_label(target["fc.bias"], count=n)
    # the bias rule is exact for one step; after several the client has fitted its batch (p_c > 1/n for a true c), so
    # the multi-step case is given the labels (threat knows_labels) and reports whether the rule would have found them
    hard = torch.tensor(inferred) if steps == 1 else labels.sort().values
    plan = Plan([torch.arange(n)] * steps, [0.1] * steps, hard=hard)
    cfg = InversionConfig(method=method, optimizer=optimizer, iterations=iterations, lr=0.1, tv=1e-4,
                          max_seconds=1800)
    rec = invert(net, start, target, plan, (1, size, size), opt, cfg, project=lambda v: v.clamp(-1, 1))
    s = score(rec.x, x, data_range=2.0, match=n > 1)
    out = {"size": size, "images": n, "local_steps": steps, "method": method, "optimizer": optimizer,
           "iterations": rec.iterations, "labels": "inferred" if steps == 1 else "given",
           "label_correct": inferred == sorted(labels.tolist()), "psnr": s["psnr"],
           "ssim": s["ssim"], "seconds": rec.seconds, "iterations_per_second": rec.iterations / rec.seconds}
    if aux is not None:
        floor = mean_face_floor(to_unit(aux, size), x, 2.0)
        out.update(floor_psnr=floor["psnr"], floor_ssim=floor["ssim"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 112])
    ap.add_argument("--lbfgs-iterations", type=int, default=100)
    ap.add_argument("--adam-iterations", type=int, default=2000)
    ap.add_argument("--fedavg", type=int, nargs="*", default=[32], help="face sizes of the 4-image x 4-step case")
    ap.add_argument("--minimums", action="store_true", help="only DLG at 32 px, batch 1/2/4/8 x 1/4 local steps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_configured(ORL)
    aux = load_aux(make_partition(data, ORL, 0))
    rows = []
    print("| images x local steps | size | method (optimiser) | iterations | labels | PSNR dB | SSIM | floor PSNR / SSIM "
          "| it/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    first = torch.tensor([int(data.labels.tolist().index(c)) for c in range(8)])  # the first face of people 0-7
    cases = [(size, 1, 1) for size in args.sizes] + [(size, 4, 4) for size in args.fedavg]
    methods = [("dlg", "lbfgs", args.lbfgs_iterations), ("ig", "adam", args.adam_iterations)]
    if args.minimums:
        cases, methods = [(32, n, steps) for steps in (1, 4) for n in (1, 2, 4, 8)], methods[:1]
    for size, n, steps in cases:
        for method, optimizer, iters in methods:
            faces = data.images[first[:n]]
            r = run(faces, torch.as_tensor(data.labels[first[:n]]).long(), aux, size, method, optimizer, iters, steps)
            rows.append(r)
            print(f"| {n} x {steps} | {size} | {method} ({optimizer}) | {r['iterations']} | {r['labels']}, rule "
                  f"{'right' if r['label_correct'] else 'wrong'} | {r['psnr']:.1f} | {r['ssim']:.3f} | "
                  f"{r.get('floor_psnr', float('nan')):.1f} / {r.get('floor_ssim', float('nan')):.3f} | "
                  f"{r['iterations_per_second']:.1f} |", flush=True)
    if args.out:
        command = "python scripts/diagnostics/attack_fixture.py" + (" --minimums" if args.minimums else "")
        atomic_write_json(args.out, {"command": command, "machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
