"""Where a simulated round's time goes, Ray-free (docs/scale.md): cProfile of ``run_federation`` with the real
ClientApp behind ``tests/local_grid.py`` (in-process delivery, deep-copied like the wire).

usage: python scripts/bench/profile_round.py [--clients 200] [--rounds 2] [--top 30]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_federation, its neighbour


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    import torch
    import torch._dynamo  # noqa: F401 -- the optimizer's one-time import, kept out of the profile

    from bench_federation import synthetic
    from clients.client_app import app as client_app
    from fedface.config import compose_config
    from fedface.federation.setup import prepare_federation
    from strategies.server_loop import run_federation
    from tests.local_grid import LocalGrid

    torch.set_num_threads(1)
    run_dir = Path(tempfile.mkdtemp(prefix="fedface-profile-"))
    cfg = prepare_federation(compose_config([*synthetic(args.clients), "federation.local_steps=1",
                                             f"federation.rounds={args.rounds}", f"federation.eval_every={args.rounds}",
                                             f"run.dir={run_dir}"]))
    profile, t0 = cProfile.Profile(), time.perf_counter()
    profile.enable()
    results = run_federation(LocalGrid(client_app, args.clients), cfg, run_dir)
    profile.disable()
    print(f"{args.clients} clients x {args.rounds} rounds: {time.perf_counter() - t0:.1f} s; seconds per round "
          f"{[round(r['seconds'], 1) for r in results['rounds']]}")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(
        r"fedface/|strategies/|clients/|flwr/.*(aggregate|array\.py)", args.top)


if __name__ == "__main__":
    main()
