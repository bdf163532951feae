"""Deployed vs simulated: the same run (a deploy file's overrides, one node per client, one fixed key), once through
`scripts/deploy up` (TLS SuperLink + authenticated SuperNodes on loopback) and once through `fedface simulate`.
Prints wall time of each (whole command: start-up included), the time of the rounds alone (results.json), both
ratios, the per-round accuracy of both, and the load average (a shared machine: other jobs slow both runs).

usage: python scripts/bench/bench_deploy.py [deploy file] [out.json]     (default configs/deploy/loopback.yaml)
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fedface.deploy.config import load_deploy_config  # noqa: E402
from fedface.deploy.launch import run_overrides  # noqa: E402
from fedface.io import atomic_write_json  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=REPO, check=True)
    return time.perf_counter() - t0


def main() -> None:
    deploy_file = sys.argv[1] if len(sys.argv) > 1 else "configs/deploy/loopback.yaml"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    cfg = load_deploy_config(deploy_file)
    load_before = os.getloadavg()
    env = {**os.environ, "FEDFACE_KEY": os.environ.get("FEDFACE_KEY") or secrets.token_hex(32),
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    deploy_dir, sim_dir = cfg.workdir / "bench-deploy", cfg.workdir / "bench-sim"
    for folder in (deploy_dir, sim_dir):  # the bench's own scratch runs: a re-run measures afresh
        shutil.rmtree(folder, ignore_errors=True)
    t_deploy = timed([sys.executable, "-m", "fedface.deploy.cli", "up", "--config", deploy_file, "--run-dir",
                      str(deploy_dir)],
                     env)
    t_sim = timed([sys.executable, "-m", "fedface.cli", "simulate", *run_overrides(cfg), f"run.dir={sim_dir}"], env)
    rows = {}
    for name, folder in (("deploy", deploy_dir), ("simulate", sim_dir)):
        res = json.loads((folder / "results.json").read_text())
        rows[name] = [{"round": r["round"], "accuracy": r.get("accuracy"), "train_loss": r.get("train_loss"),
                       "seconds": r["seconds"], "exchange_seconds": r.get("exchange_seconds", {}),
                       "client_seconds": r.get("client_seconds"),
                       "client_process_seconds": r.get("client_process_seconds"),
                       "client_startup_seconds": r.get("client_startup_seconds")} for r in res["rounds"]]
    rounds_s = {name: sum(r["seconds"] for r in rows[name]) for name in rows}
    summary = {"deploy_file": deploy_file, "overrides": run_overrides(cfg), "deploy_seconds": t_deploy,
               "simulate_seconds": t_sim, "ratio": t_deploy / t_sim, "deploy_rounds_seconds": rounds_s["deploy"],
               "simulate_rounds_seconds": rounds_s["simulate"],
               "rounds_ratio": rounds_s["deploy"] / rounds_s["simulate"],
               "load_average_before_after": [load_before[0], os.getloadavg()[0]], "cpus": os.cpu_count(),
               "rounds": rows}
    for name in rows:
        accs = " ".join(f"{100 * r['accuracy']:.2f}" for r in rows[name])
        print(f"{name:9s} {summary[f'{name}_seconds']:7.1f} s (rounds {rounds_s[name]:6.1f} s)   accuracy per round: "
              f"{accs}")
    for name in rows:  # where a round's time goes: the clients' own training vs the two message exchanges
        parts = [(r["exchange_seconds"].get("train", 0.0), r["client_seconds"] or 0.0,
                  r["client_process_seconds"] or 0.0, r["client_startup_seconds"] or 0.0,
                  r["exchange_seconds"].get("evaluate", 0.0)) for r in rows[name]]
        train, client, process, startup, evaluate = (sum(p[i] for p in parts) / len(parts) for i in range(5))
        # simulation: long-lived workers, whose age says nothing about a round
        age = f", its process {process:5.1f} s old, {startup:4.1f} s of it to load the app" if name == "deploy" else ""
        print(f"{name:9s} per round: train exchange {train:5.1f} s (slowest client's training {client:4.1f} s{age}), "
              f"evaluate exchange {evaluate:5.1f} s")
    load = summary["load_average_before_after"]
    print(f"deploy / simulate: {summary['ratio']:.2f}x whole command, {summary['rounds_ratio']:.2f}x rounds alone "
          f"(load average {load[0]:.1f} -> {load[1]:.1f} on {os.cpu_count()} CPUs)")
    if out:
        atomic_write_json(out, summary)


if __name__ == "__main__":
    main()
