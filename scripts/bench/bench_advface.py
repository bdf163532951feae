"""Cost and effect of protect=advface (paper 003) per training batch (not a test; run it by hand).

For each inner protection: fit (the shadow decoder's training, once per client) on ORL's faces (synthetic faces when
ORL is absent), then one batch of ``--batch`` 112x112 faces through the protection with the configured PGD
(configs/protect/advface.yaml, overrides allowed): seconds per batch, the absolute L_inf bounds, and the shadow
decoder's L1 loss on clean vs perturbed model_inputs of held-out faces (the faces the decoder did not train on).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench/bench_advface.py [--inner none ppfr_fd] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedface.config import compose_config, to_container
from fedface.data import load_faces
from fedface.protect import build_protection, needs_key
from fedface.protect.keys import DEMO_KEY

REPO = Path(__file__).resolve().parents[2]


def faces(root: Path, n: int) -> tuple[torch.Tensor, str]:
    try:
        return load_faces("orl", root=root).images.float()[:n, None], "orl"
    except FileNotFoundError:
        return load_faces("synthetic", num_identities=max(2, n // 8), images_per_identity=8, seed=0).images.float()[
            :n, None], "synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inner", nargs="+", default=["none", "ppfr_fd"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--fit-images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("overrides", nargs="*", help="protect.* overrides, e.g. protect.iterations=10")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, source = faces(args.data, args.fit_images + args.batch)
    fit_x, batch = x[:args.fit_images], x[args.fit_images:args.fit_images + args.batch].to(args.device)
    rows = []
    for inner in args.inner:
        cfg = to_container(compose_config(["protect=advface", f"protect.inner={inner}", *args.overrides]).protect)
        p = build_protection(cfg, DEMO_KEY if needs_key(cfg) else None)
        t0 = time.perf_counter()
        p.fit(fit_x)
        fit_s = time.perf_counter() - t0
        p.to(args.device)
        gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        z = p.inner(batch.cpu(), generator=gen()).to(args.device)
        seconds = []
        for _ in range(2):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            y = p(batch, generator=gen())
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - t0)
        with torch.no_grad():
            clean, adv = p.shadow_loss(z, batch).mean().item(), p.shadow_loss(y, batch).mean().item()
        facts = p.describe()
        rows.append({"inner": inner, "data": source, "device": args.device, "threads": args.threads,
                     "batch": args.batch, "iterations": cfg["iterations"], "shadow": cfg["shadow"],
                     "fit_images": len(fit_x), "fit_seconds": round(fit_s, 2),
                     "seconds_per_batch": round(min(seconds), 2), "scale": round(facts["scale"], 4),
                     "step_bound": round(facts["step_bound"], 4), "total_bound": round(facts["total_bound"], 4),
                     "max_abs_delta": round(float((y - z).abs().max()), 4),
                     "shadow_l1_per_pixel_clean": round(clean / p.shadow.size ** 2, 4),
                     "shadow_l1_per_pixel_adv": round(adv / p.shadow.size ** 2, 4)})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| inner | device | threads | batch | PGD iters | s / batch | fit s | L_inf step / total | shadow L1 clean "
          "-> adv |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['inner']} | {r['device']} | {r['threads']} | {r['batch']} | {r['iterations']} | "
              f"{r['seconds_per_batch']} | {r['fit_seconds']} | {r['step_bound']} / {r['total_bound']} | "
              f"{r['shadow_l1_per_pixel_clean']} -> {r['shadow_l1_per_pixel_adv']} |")


if __name__ == "__main__":
    main()
