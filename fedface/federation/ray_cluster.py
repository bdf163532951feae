"""Where a simulation's virtual clients run: a private Ray on this machine, or an existing (multi-node) Ray cluster.

``federation.ray.address`` null starts a private Ray here (``num_cpus`` of it); ``auto`` or ``host:port`` (the GCS
address ``ray start --head`` prints) joins a running cluster, whose nodes then host the ClientApp actors wherever
their CPUs (and ``federation.client_resources``) fit. What a virtual client reads from its environment -- the
federation key, the node policy, the ground-truth folder -- is shipped in the job's ``runtime_env``, since workers of a
cluster started elsewhere do not inherit this process's environment. Data is found on each node as on one machine
(``data.root``, else the node's ``FEDFACE_DATA``, else ``../shared/data`` beside its fedface); the run folder must be
the same path on every node (a shared file system) when clients write ground truth or read the node policy from it.
docs/ray-cluster.md "Running on a Ray cluster".
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from fedface.experiment.ground_truth import ENV_VAR as GROUND_TRUTH_ENV
from fedface.config import known_keys_only
from fedface.federation.policy import ENV_VAR as POLICY_ENV
from fedface.protect.keys import ENV_FILE as KEY_FILE_ENV, ENV_VAR as KEY_ENV

#: what a virtual client reads from its environment and a cluster's workers would not otherwise have
CLIENT_ENV = (KEY_ENV, KEY_FILE_ENV, "FEDFACE_ALLOW_DEMO_KEY", POLICY_ENV, GROUND_TRUTH_ENV)
CONNECT_SECONDS = 5.0  # the reachability probe's timeout: an unreachable cluster is reported, not waited for


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # null: a private Ray on this machine; "auto" / "host:port": join a running cluster
    num_cpus: int | None = None  # private Ray only: the cores it may use (null: all)
    namespace: str | None = None  # the job's Ray namespace (null: an anonymous one)
    runtime_env: dict = field(default_factory=dict)  # merged into the job's runtime_env (working_dir, pip, env_vars)

    @classmethod
    def from_cfg(cls, raw: Mapping[str, Any] | None) -> "RayConfig":
        from omegaconf import DictConfig, OmegaConf

        plain = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else dict(raw or {})
        values = known_keys_only(cls, plain, "federation.ray")
        ray = cls(**values)
        if ray.address is not None and not ray.address.strip():
            raise ValueError("federation.ray.address='' must be null (a private Ray), auto or host:port")
        if ray.address is not None and ray.address.startswith("ray://"):
            raise ValueError(f"federation.ray.address={ray.address!r}: Ray Client addresses are not supported (the "
                             "simulation's server must run inside the cluster); run fedface on a cluster node with "
                             "the GCS address host:port or auto")
        if ray.address is not None and ray.num_cpus is not None:
            raise ValueError(f"federation.ray.num_cpus={ray.num_cpus} applies to a private Ray only; a cluster at "
                             f"federation.ray.address={ray.address!r} has its own resources (set num_cpus=null)")
        if ray.num_cpus is not None and ray.num_cpus < 1:
            raise ValueError(f"federation.ray.num_cpus={ray.num_cpus} must be null or an integer >= 1")
        if not isinstance(ray.runtime_env, dict):
            raise ValueError(f"federation.ray.runtime_env={ray.runtime_env!r} must be a mapping")
        return ray


def cluster_address(ray: RayConfig) -> str | None:
    """The GCS ``host:port`` of the cluster to join (None: start a private Ray); raises one ValueError naming
    ``federation.ray.address`` when nothing answers there -- before any data is loaded or Ray is started."""
    if ray.address is None:
        return None
    address = ray.address
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address  # RAY_ADDRESS, else the local cluster file

        address = canonicalize_bootstrap_address("auto")
        if not address:
            raise ValueError("federation.ray.address='auto': no running Ray cluster found (RAY_ADDRESS is unset and "
                             "no `ray start --head` on this machine); start one or give host:port")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"federation.ray.address={ray.address!r} must be null, auto or host:port")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        raise ValueError(f"federation.ray.address={ray.address!r}: no Ray cluster answers at {address} "
                         f"({err.strerror or err}); start it with `ray start --head --port {port}` or fix the "
                         "address") from None
    return address


def init_args(ray: RayConfig, address: str | None, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``ray.init``'s arguments: the cluster (or private resources), namespace, and a runtime_env carrying
    PYTHONPATH (as Flower's own init does) and the clients' environment variables over the user's runtime_env."""
    runtime_env = dict(ray.runtime_env)
    env_vars = {**{k: env[k] for k in CLIENT_ENV if env.get(k)}, **runtime_env.get("env_vars", {})}
    pythonpath = os.pathsep.join([*sys.path, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env_vars.setdefault("PYTHONPATH", pythonpath)
    runtime_env["env_vars"] = {k: str(v) for k, v in env_vars.items()}
    args: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False,
                            "runtime_env": runtime_env}
    if address is not None:
        args["address"] = address
    elif ray.num_cpus is not None:
        args["num_cpus"] = int(ray.num_cpus)
    if ray.namespace:
        args["namespace"] = ray.namespace
    return args


def connect(ray: RayConfig, address: str | None) -> dict[str, Any]:
    """Start or join Ray for this simulation (Flower's backend then reuses it and shuts it down at the end); returns
    the nodes and resources the clients may use, for results.json."""
    import ray as ray_lib

    if address is None:
        # Ray starts its workers at niceness 15 by default: on a shared machine the simulated clients would then run
        # only when nothing else wants the CPU. Clients are the simulation's work, so they run at normal priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if ray_lib.is_initialized():  # left over from a simulation that stopped before Flower's backend shut it down
        ray_lib.shutdown()
    ray_lib.init(**init_args(ray, address))
    alive = [n for n in ray_lib.nodes() if n.get("Alive") and n.get("Resources")]
    return {"address": address or "private", "nodes": len(alive),
            "cpus": sum(float(n["Resources"].get("CPU", 0)) for n in alive),
            "gpus": sum(float(n["Resources"].get("GPU", 0)) for n in alive)}
