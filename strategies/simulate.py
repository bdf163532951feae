"""`fedface simulate`: the same ClientApp/ServerApp on Flower's simulation engine (Ray backend), in-process."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig

from fedface.experiment.ground_truth import ENV_VAR as GROUND_TRUTH_ENV
from fedface.experiment.keys import simulation_key
from fedface.federation.policy import ENV_VAR as POLICY_ENV, write_policy
from fedface.federation.ray_cluster import RayConfig, cluster_address, connect
from fedface.federation.setup import prepare_federation
from fedface.io import atomic_write_json
from fedface.runs import RunDir
from strategies.engine import fast_engine
from strategies.grid import polled
from strategies.server_loop import run_federation

log = logging.getLogger(__name__)


def server_app_for(cfg: dict[str, Any], run_dir: Path) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(polled(grid), cfg, run_dir)

    return app


def backend_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Flower's backend config: what one virtual client reserves (Ray itself is started by ``ray_cluster.connect``)."""
    import torch

    res = cfg["federation"]["client_resources"]
    gpus = float(res["num_gpus"]) if torch.cuda.is_available() else 0.0
    return {"client_resources": {"num_cpus": float(res["num_cpus"]), "num_gpus": gpus}}


def simulate(cfg: DictConfig) -> dict[str, Any]:
    from flwr.simulation import run_simulation

    from clients.client_app import app as client_app

    ray = RayConfig.from_cfg(cfg.federation.get("ray"))
    address = cluster_address(ray)  # an unreachable cluster is one line here, before any data is read
    plain = prepare_federation(cfg)
    run = RunDir(cfg.run.dir, cfg)
    # the simulated nodes' privacy policy: federation.node_policy, else the experimenter's own config (one file for
    # all nodes); the run config the server sends them only requests (fedface.federation.policy)
    os.environ[POLICY_ENV] = str(plain["federation"].get("node_policy")
                                 or write_policy(plain, run.layout.node_policy))
    if plain["attack"]["name"] != "none" and plain["attack"].get("ground_truth", True):
        # attack experiments: simulated clients record what entered their model, for scoring (never sent)
        os.environ[GROUND_TRUTH_ENV] = str(run.layout.ground_truth)
    flwr_log = logging.getLogger("flwr")
    flwr_log.setLevel(logging.WARNING)
    flwr_log.propagate = False  # flwr prints its records with its own handler; the root's would print them twice
    # the key is set before connect: a cluster's workers get the clients' env from it
    with simulation_key(plain["protect"]), fast_engine():
        cluster = connect(ray, address)
        log.info("simulation: %d virtual clients on Ray (%s): %d node(s), %g CPUs", plain["federation"]["num_clients"],
                 cluster["address"], cluster["nodes"], cluster["cpus"])
        run_simulation(server_app=server_app_for(plain, run.path), client_app=client_app,
                       num_supernodes=int(plain["federation"]["num_clients"]), backend_config=backend_config(plain))
    results_file = run.layout.results
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if results.get("status") != "done":
        results = {**results, "status": "failed", "error": "the ServerApp stopped before the last round (see log)"}
    results["ray"] = cluster  # where the clients ran: private Ray or the cluster, its nodes and CPUs
    atomic_write_json(results_file, results)
    return results
