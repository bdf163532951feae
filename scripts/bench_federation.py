"""Federation benchmarks (run by `make bench`; not a test).

(a) scale: one Flower+Ray simulation with N = 100 and N = 1000 virtual clients (synthetic faces, tiny model, one
    local step each); prints seconds per round and peak memory of the whole process tree (driver + Ray).
(b) overhead: the same client training through Flower+Ray vs a plain in-process loop calling the same
    ``ClientTask.train`` and averaging with numpy; ratios for warm rounds and for the whole run incl. start-up.
usage: python scripts/bench_federation.py [--scale 100 1000] [--overhead-clients 8] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_simulate(overrides: list[str], run_dir: Path) -> tuple[dict, float, int]:
    """`fedface simulate` in a subprocess; returns results, wall seconds and peak RSS of its process tree."""
    cmd = [sys.executable, "-m", "fedface.cli", "simulate", *overrides, f"run.dir={run_dir}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, ps = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    results = json.loads((run_dir / "results.json").read_text())
    return results, wall, peak


def synthetic(n_clients: int, per_identity: int = 4) -> list[str]:
    return ["data=synthetic", f"data.num_identities={n_clients + 10}", f"data.images_per_identity={per_identity}",
            "data.split.test_identities=10", "data.pairs.per_fold=8", "model=tiny", "train.batch_size=4",
            f"federation.num_clients={n_clients}", "federation.min_train_nodes=1", "run.progress=false"]


def scale(ns: list[int], rounds: int, tmp: Path) -> None:
    for n in ns:
        res, wall, peak = run_simulate([*synthetic(n), f"federation.rounds={rounds}", "federation.local_steps=1",
                                        f"federation.eval_every={rounds}"], tmp / f"scale{n}")
        secs = [r["seconds"] for r in res["rounds"]]
        print(f"(a) N={n:5d} clients: {rounds} rounds in {wall:.0f} s; s/round first {secs[0]:.1f}, warm "
              f"{np.mean(secs[1:]):.1f}; replies/round {res['rounds'][-1]['received']}; peak memory "
              f"{peak / 2**30:.2f} GiB (driver + Ray)", flush=True)


def plain_loop(overrides: list[str], rounds: int) -> tuple[list[float], float]:
    """The same clients trained in-process, sequentially, FedAvg in numpy (no Flower, no Ray)."""
    import torch

    from fedface.config import compose_config
    from fedface.federation.client import ClientTask
    from fedface.federation.setup import prepare_federation
    from strategies.server_loop import initial_model, round_lr

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = prepare_federation(compose_config([*overrides, "run.dir=/tmp/unused"]))
    n = int(cfg["federation"]["num_clients"])
    tasks = [ClientTask(cfg, pid, n, None) for pid in range(n)]
    arrays, _ = initial_model(cfg)
    secs = []
    for rnd in range(1, rounds + 1):
        t = time.perf_counter()
        rcfg = {"lr": round_lr(cfg, rnd), "schedule": "constant", "epochs": int(cfg["federation"]["local_epochs"])}
        replies = [task.train(arrays, rnd, rcfg) for task in tasks]
        weights = np.array([r.metrics["num-examples"] for r in replies], float)
        weights /= weights.sum()
        arrays = {k: sum(w * r.arrays[k] for w, r in zip(weights, replies)) for k in arrays}
        tasks[0].evaluate(arrays)
        secs.append(time.perf_counter() - t)
    return secs, time.perf_counter() - t0


def overhead(n: int, rounds: int, tmp: Path) -> None:
    overrides = [*synthetic(n, per_identity=8), f"federation.rounds={rounds}", "federation.local_epochs=1"]
    # one CPU for Ray's workers too: the plain loop trains the same clients one after another on one thread
    res, wall, _ = run_simulate([*overrides, "federation.ray.num_cpus=1"], tmp / "overhead")
    flower = [r["seconds"] for r in res["rounds"]]
    plain, plain_wall = plain_loop(overrides, rounds)
    print(f"(b) {n} clients x {rounds} rounds: Flower+Ray warm round {np.mean(flower[1:]):.2f} s vs plain loop "
          f"{np.mean(plain[1:]):.2f} s -> ratio {np.mean(flower[1:]) / np.mean(plain[1:]):.2f}x (goal <= 1.3x); "
          f"whole run incl. start-up {wall:.1f} s vs {plain_wall:.1f} s -> {wall / plain_wall:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--overhead-clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    with tempfile.TemporaryDirectory() as d:
        overhead(args.overhead_clients, args.rounds, Path(d))
        scale(args.scale, args.rounds, Path(d))


if __name__ == "__main__":
    main()
