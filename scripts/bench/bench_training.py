"""Training throughput of the default backbone under each protection (run by `make bench`; not a test).

Same trunk (fedface_net), batch 64, same process and threads: images/s of `train_step` and the ratio to raw pixels
(`none`). The rows are timed round-robin ``--repeats`` times and each keeps its best, so that load from other jobs on
a shared machine does not favour one row.
usage: python scripts/bench/bench_training.py [--steps 8] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from fedface.data import load_faces
from fedface.models import build_backbone, build_head
from fedface.protect import build_protection
from fedface.protect.keys import DEMO_KEY
from fedface.train import TrainConfig, make_optimizer, train_step

ROWS = {
    "none": ({"name": "none"}, "auto"),
    "fr_fd": ({"name": "fr_fd"}, "auto"),
    "ppfr_fd (native 14x14 stem)": ({"name": "ppfr_fd"}, "auto"),
    "ppfr_fd (upsample to 112 stem)": ({"name": "ppfr_fd"}, "freq_upsample"),
    "ppfr_fd + analysis": ({"name": "ppfr_fd", "analysis": True}, "auto"),
    "obfuscator": ({"name": "obfuscator"}, "auto"),
    "peep": ({"name": "peep", "epsilon": 5}, "auto"),
    "instahide": ({"name": "instahide"}, "auto"),
    "noise": ({"name": "noise"}, "auto"),
}


def images_per_second(protect_cfg: dict, stem: str, faces: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    prot = build_protection(protect_cfg, DEMO_KEY).fit(faces.unsqueeze(1).float())
    net = build_backbone({"name": "fedface_net", "stem": stem}, prot.output_spec(112, 112))
    head = build_head({}, net.embedding_size, int(labels.max()) + 1)
    cfg = TrainConfig(batch_size=64)
    opt = make_optimizer([*net.parameters(), *head.parameters(), *prot.parameters()], cfg)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(labels), generator=gen)[:64] for _ in range(steps + 1)]
    train_step(net, head, prot, faces[batches[0]], labels[batches[0]], opt, cfg, gen)  # warm-up
    t0 = time.perf_counter()
    for idx in batches[1:]:
        train_step(net, head, prot, faces[idx], labels[idx], opt, cfg, gen)
    return 64 * steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        data = load_faces("orl")
        faces, labels, source = data.images, data.labels, "ORL"
    except FileNotFoundError:
        data = load_faces("synthetic", num_identities=40, images_per_identity=10)
        faces, labels, source = data.images, data.labels, "synthetic"
    print(f"training img/s, fedface_net, batch 64, {args.steps} steps on {source} faces, {args.threads} threads")
    best = dict.fromkeys(ROWS, 0.0)
    for _ in range(args.repeats):
        for name, (cfg, stem) in ROWS.items():
            best[name] = max(best[name], images_per_second(cfg, stem, faces, labels, args.steps))
    for name, rate in best.items():
        print(f"  {name:32s} {rate:7.1f} img/s   {rate / best['none']:5.2f}x of none")


if __name__ == "__main__":
    main()
