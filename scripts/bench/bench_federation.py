"""Federation benchmarks (run by `make bench`; not a test).

(a) scale: fedface's warm round next to Flower's own floor, at N = 100, 1,000 and 10,000 virtual clients (synthetic
    faces, tiny model, one local step each; 10,000 with 100 sampled a round). The floor is Flower 1.42 running the
    same rounds with a trivial ClientApp that returns the model it receives (same nodes, same message sizes); the
    clients' pure training is ``ClientTask.train`` timed in-process on the sampled clients. Prints seconds per warm
    round, peak memory of each process tree (driver + Ray), and fedface / (floor + training / Ray CPUs); then the
    memory at the largest N over the memory at the smallest.
    Memory is the tree's proportional set size (PSS): a page shared by k processes (the memory-mapped face cache,
    Ray's object store) counts 1/k in each, so the sum is the physical memory the tree holds. The sum of RSS, which
    counts a shared page once per process mapping it, is printed beside it.
(b) overhead: the same client training through Flower+Ray vs a plain in-process loop calling the same
    ``ClientTask.train`` and averaging with numpy; ratios for warm rounds and for the whole run incl. start-up.
usage: python scripts/bench/bench_federation.py [--scale 100 1000 10000] [--overhead-clients 8] [--rounds 3]
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

REPO = Path(__file__).resolve().parents[2]


def tree_memory(proc: psutil.Process) -> np.ndarray:
    """(PSS, RSS) summed over ``proc`` and its descendants, in bytes."""
    total = np.zeros(2)
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            total += (info.pss, info.rss)
        except psutil.Error:
            pass
    return total


def watch(cmd: list[str]) -> np.ndarray:
    """Run ``cmd`` (output discarded); the peak (PSS, RSS) of its process tree. A failure names the command."""
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: Ray's chatter must not fill a pipe and block
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak, ps = np.zeros(2), psutil.Process(proc.pid)
        while proc.poll() is None:
            peak = np.maximum(peak, tree_memory(ps))
            time.sleep(0.5)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd[1:4])} ... failed (exit {proc.returncode}): {err.read()[-2000:]}")
    return peak


def run_simulate(overrides: list[str], run_dir: Path) -> tuple[dict, float, np.ndarray]:
    """`fedface simulate` in a subprocess; returns results, wall seconds and peak (PSS, RSS) of its process tree."""
    t0 = time.perf_counter()
    peak = watch([sys.executable, "-m", "fedface.cli", "simulate", *overrides, f"run.dir={run_dir}"])
    return json.loads((run_dir / "results.json").read_text()), time.perf_counter() - t0, peak


def synthetic(n_clients: int, per_identity: int = 4) -> list[str]:
    return ["data=synthetic", f"data.num_identities={n_clients + 10}", f"data.images_per_identity={per_identity}",
            "data.split.test_identities=10", "data.pairs.per_fold=8", "model=tiny", "train.batch_size=4",
            f"federation.num_clients={n_clients}", "federation.min_train_nodes=1", "run.progress=false"]


#: N -> clients sampled per round (the issue's 10,000-client case samples 100)
SAMPLED = {10000: 100}
RAY_CPUS = 2


def floor_child(n: int, sampled: int, rounds: int, out: Path) -> None:
    """(child process) Flower's own round cost: ``rounds`` rounds of ``sampled`` of ``n`` simulated nodes, each sent
    the tiny model and answering with it untouched; per-round seconds into ``out``."""
    import random

    from flwr.app import Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from fedface.config import compose_config
    from fedface.federation.setup import prepare_federation
    from clients.records import ARRAYS, METRICS, to_record
    from strategies.grid import polled
    from strategies.server_loop import initial_model

    cfg = prepare_federation(compose_config([*synthetic(n), "run.dir=/tmp/unused"]))
    arrays = to_record(initial_model(cfg)[0])
    client, server = ClientApp(), ServerApp()

    @client.train()
    def echo(msg, context):
        return Message(content=RecordDict({ARRAYS: msg.content[ARRAYS], METRICS: MetricRecord({"num-examples": 1})}),
                       reply_to=msg)

    @server.main()
    def main(grid, context):
        grid = polled(grid)  # the same reply polling as fedface's server (strategies/grid.py)
        while len(nodes := list(grid.get_node_ids())) < n:
            time.sleep(0.05)
        secs = []
        for _ in range(rounds):
            t = time.perf_counter()
            msgs = [Message(content=RecordDict({ARRAYS: arrays}), dst_node_id=node, message_type=MessageType.TRAIN)
                    for node in random.sample(nodes, sampled)]
            replies = list(grid.send_and_receive(msgs))
            assert len(replies) == sampled and not any(r.has_error() for r in replies)
            secs.append(time.perf_counter() - t)
        out.write_text(json.dumps(secs))

    run_simulation(server_app=server, client_app=client, num_supernodes=n, backend_config={
        "client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
        "init_args": {"num_cpus": RAY_CPUS, "logging_level": "ERROR", "log_to_driver": False}})


def floor(n: int, sampled: int, rounds: int, tmp: Path) -> tuple[list[float], np.ndarray]:
    out = tmp / f"floor{n}.json"
    peak = watch([sys.executable, __file__, "--floor-child", str(n), str(sampled), str(rounds), str(out)])
    return json.loads(out.read_text()), peak


def pure_training(n: int, sampled: int, probe: int = 40) -> float:
    """Seconds of ``ClientTask.train`` (one local step) for ``sampled`` clients, in-process on one thread: the mean
    over ``probe`` clients (tasks built beforehand, not timed) times ``sampled``."""
    import torch

    from fedface.config import compose_config
    from fedface.federation.client import ClientTask
    from fedface.federation.setup import prepare_federation
    from strategies.server_loop import initial_model, round_lr

    torch.set_num_threads(1)
    cfg = prepare_federation(compose_config([*synthetic(n), "federation.local_steps=1", "run.dir=/tmp/unused"]))
    arrays, _ = initial_model(cfg)
    tasks = [ClientTask(cfg, pid, n, None) for pid in range(min(probe, n))]
    rcfg = {"lr": round_lr(cfg, 1), "schedule": "constant", "epochs": 1}
    tasks[0].train(arrays, 1, rcfg)  # first-call imports (torch._dynamo via the optimizer) are not training
    t = time.perf_counter()
    for task in tasks:
        task.train(arrays, 1, rcfg)
    return (time.perf_counter() - t) / len(tasks) * sampled


def scale(ns: list[int], rounds: int, tmp: Path) -> None:
    memory = {}
    for n in ns:
        sampled = SAMPLED.get(n, n)
        base, peak_floor = floor(n, sampled, rounds, tmp)
        res, wall, peak = run_simulate([*synthetic(n), f"federation.rounds={rounds}", "federation.local_steps=1",
                                        f"federation.fraction_train={sampled / n}", f"federation.eval_every={rounds}",
                                        f"federation.ray.num_cpus={RAY_CPUS}"], tmp / f"scale{n}")
        secs = [r["seconds"] for r in res["rounds"]]
        # the last round also evaluates (eval_every=rounds): warm rounds are the ones between the first and the last
        warm, warm_floor = np.mean(secs[1:-1] or secs[1:]), np.mean(base[1:])
        train = pure_training(n, sampled)
        print(f"(a) N={n:6d}, {sampled} sampled: fedface warm round {warm:.1f} s vs Flower floor {warm_floor:.1f} s "
              f"+ pure training {train:.1f} s / {RAY_CPUS} CPUs -> {warm / (warm_floor + train / RAY_CPUS):.2f}x "
              f"(goal <= 2x); peak memory (PSS) {peak[0] / 2**30:.2f} GiB (floor {peak_floor[0] / 2**30:.2f} GiB; "
              f"sum of RSS {peak[1] / 2**30:.2f} / {peak_floor[1] / 2**30:.2f}); whole run {wall:.0f} s", flush=True)
        memory[n] = peak
    if len(memory) > 1:
        lo, hi = min(memory), max(memory)
        print(f"(a) memory at N={hi} / N={lo}: {memory[hi][0] / memory[lo][0]:.2f}x PSS (goal <= 1.3x), "
              f"{memory[hi][1] / memory[lo][1]:.2f}x sum of RSS", flush=True)


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
          f"{np.mean(plain[1:]):.2f} s -> ratio {np.mean(flower[1:]) / np.mean(plain[1:]):.2f}x (goal <= 1.2x); "
          f"whole run incl. start-up {wall:.1f} s vs {plain_wall:.1f} s -> {wall / plain_wall:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--floor-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--overhead-clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.floor_child:
        n, sampled, rounds, out = args.floor_child
        return floor_child(int(n), int(sampled), int(rounds), Path(out))
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    with tempfile.TemporaryDirectory() as d:
        if args.overhead_clients:
            overhead(args.overhead_clients, args.rounds, Path(d))
        scale(args.scale, args.rounds, Path(d))


if __name__ == "__main__":
    main()
