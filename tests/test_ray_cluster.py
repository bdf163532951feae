"""Simulating on an existing Ray cluster (fedface/federation/ray_cluster.py; docs/ray-cluster.md)."""
from __future__ import annotations

import json
import socket

import pytest

from fedface.federation.ray_cluster import RayConfig, cluster_address, init_args
from tests.conftest import needs_data


def test_a_clusters_workers_get_what_the_clients_read_and_nothing_node_local():
    env = {"FEDFACE_KEY": "ab" * 32, "FEDFACE_POLICY": "/runs/x/node-policy.yaml", "FEDFACE_DATA": "/driver/data",
           "FEDFACE_CACHE": "/driver/cache", "HOME": "/root", "PYTHONPATH": "/extra"}
    user = RayConfig.from_cfg({"address": "10.0.0.5:6379", "namespace": "lab",
                               "runtime_env": {"working_dir": "/code", "env_vars": {"FEDFACE_POLICY": "/mine.yaml"}}})
    args = init_args(user, "10.0.0.5:6379", env)
    shipped = args["runtime_env"]["env_vars"]
    assert args["address"] == "10.0.0.5:6379" and args["namespace"] == "lab" and "num_cpus" not in args
    assert args["runtime_env"]["working_dir"] == "/code"
    assert shipped["FEDFACE_KEY"] == "ab" * 32  # the simulated clients' key: workers started elsewhere lack it
    assert shipped["FEDFACE_POLICY"] == "/mine.yaml"  # the user's runtime_env wins over ours
    # where data and caches live is each node's own business: a driver path would be wrong on another machine
    assert "FEDFACE_DATA" not in shipped and "FEDFACE_CACHE" not in shipped and "HOME" not in shipped
    assert shipped["PYTHONPATH"].endswith("/extra")
    private = init_args(RayConfig.from_cfg({"num_cpus": 2}), None, {})
    assert private["num_cpus"] == 2 and "address" not in private


def test_an_address_is_probed_before_anything_starts():
    with socket.socket() as listener:  # something answering: accepted, and returned as the address to join
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert cluster_address(RayConfig.from_cfg({"address": f"127.0.0.1:{port}"})) == f"127.0.0.1:{port}"
    with pytest.raises(ValueError, match=rf"federation.ray.address='127.0.0.1:{port}': no Ray cluster answers"):
        cluster_address(RayConfig.from_cfg({"address": f"127.0.0.1:{port}"}))
    assert cluster_address(RayConfig.from_cfg({})) is None


def _simulate(run_dir, extra):
    from fedface.cli import main

    assert main(["simulate", "data=orl", "model=tiny", "train.batch_size=16", "federation.num_clients=4",
                 "federation.rounds=1", "federation.local_steps=4", "federation.min_train_nodes=4",
                 f"run.dir={run_dir}", *extra]) == 0
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_data("orl_faces")
def test_clients_of_one_run_execute_on_both_nodes_of_a_cluster(tmp_path):
    """Two Ray nodes on loopback (ray.cluster_utils.Cluster: one CPU each, each with its own FEDFACE_CACHE); the
    clients decode ORL into the cache of whichever node runs them, so both caches filling proves both nodes ran
    clients of this run. The same run on a private Ray reaches the same accuracy."""
    from ray.cluster_utils import Cluster

    caches = {name: tmp_path / f"cache-{name}" for name in ("head", "worker")}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "env_vars": {
        "FEDFACE_CACHE": str(caches["head"])}})
    try:
        cluster.add_node(num_cpus=1, env_vars={"FEDFACE_CACHE": str(caches["worker"])})
        cluster.wait_for_nodes()
        on_cluster = _simulate(tmp_path / "cluster", [f"federation.ray.address={cluster.address}"])
    finally:
        cluster.shutdown()
    assert on_cluster["status"] == "done" and on_cluster["ray"]["nodes"] == 2 and on_cluster["ray"]["cpus"] == 2
    assert all(any(c.glob("faces-*.npy")) for c in caches.values()), "a node ran none of the clients"
    alone = _simulate(tmp_path / "private", ["federation.ray.num_cpus=2"])
    assert alone["ray"]["address"] == "private" and on_cluster["rounds"][0]["received"] == 4
    assert on_cluster["rounds"][0]["accuracy"] == pytest.approx(alone["rounds"][0]["accuracy"], abs=0.005)


@needs_data("orl_faces")
def test_a_node_without_the_data_is_named_with_the_path_before_round_one(tmp_path):
    """A cluster node without the data root (its FEDFACE_DATA / data-root points nowhere): the pre-flight stops the
    run naming the node and the missing path, before any round."""
    from clients.client_app import app as client_app
    from fedface.config import compose_config
    from fedface.federation.setup import prepare_federation
    from strategies.server_loop import run_federation
    from tests.local_grid import LocalGrid

    cfg = prepare_federation(compose_config(["data=orl", "model=tiny", "federation.num_clients=2",
                                             "federation.rounds=1", f"run.dir={tmp_path}"]))
    with pytest.raises(RuntimeError, match=r"node \d+: FileNotFoundError: face data root /nowhere/faces does not"):
        run_federation(LocalGrid(client_app, 2, {"data-root": "/nowhere/faces"}), cfg, tmp_path)
    assert not (tmp_path / "checkpoint").exists()
