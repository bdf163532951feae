"""Deployment steps over Flower's own deployment engine: certificates, SuperLink, node registration, SuperNodes,
``flwr run``, stop. Each step checks its inputs first and fails with a DeployError/CertificateError naming what to
fix; ``up`` (the one-machine try-out) stops whatever it started when any step fails.

Secrets: the federation key (``FEDFACE_KEY``) is passed to SuperNode processes only -- stripped from the SuperLink's
and the ``flwr`` CLI's environment; the CA key and node private keys never travel (the SuperLink gets public keys).
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedface.config import compose_config, to_container
from fedface.data.sources import REPO_ROOT
from fedface.deploy.certs import (CA_CERT, SERVER_CERT, SERVER_KEY, CertificateError, check_server_cert, load_cert,
                                  make_ca, make_node_key, make_server_cert)
from fedface.deploy.config import DeployConfig, NodeSpec
from fedface.deploy.pinned_node import app_hash
from fedface.deploy.procs import DeployError, Processes, check_link, check_port_free
from fedface.deploy.shards import export_shards
from fedface.federation.node_data import DATA_KEY, EVAL_KEY, OFFSET_KEY
from fedface.federation.policy import NODE_KEY as POLICY_KEY, write_policy
from fedface.runs import RunLayout
from fedface.io import atomic_write_text
from fedface.protect.keys import ENV_VAR as KEY_ENV

CONNECTION = "fedface"          # the SuperLink connection name in the deployment's Flower home
LINK = "superlink"              # process names in pids.json: "superlink", "gateway", "supernode-<node>"
GATEWAY = "gateway"
LOCAL = "127.0.0.1"             # the SuperLink's own address: reachable from the server machine only
ACCEPTED = "SuperNode ID:"      # what flower-supernode logs once the SuperLink accepted (activated) it


def certs_dir(cfg: DeployConfig) -> Path:
    return cfg.workdir / "certs"


def key_path(cfg: DeployConfig, node: str) -> Path:
    return cfg.workdir / "keys" / node


def pub_path(cfg: DeployConfig, node: str) -> Path:
    return cfg.workdir / "keys" / f"{node}.pub"


def make_certs(cfg: DeployConfig, renew: bool = False) -> list[Path]:
    """CA (kept if present), the SuperLink certificate for ``cert_hosts`` (re-issued with ``renew``), and an auth key
    pair for each loopback node (kept if present; a remote node makes its own with ``keygen``, so no private key
    travels). Returns the files written."""
    folder = certs_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if not (folder / CA_CERT).is_file():
        make_ca(folder)
        written.append(folder / CA_CERT)
    if renew or not (folder / SERVER_CERT).is_file():
        make_server_cert(folder, list(cfg.cert_hosts))
        written += [folder / SERVER_CERT, folder / SERVER_KEY]
    for node in cfg.nodes:
        if is_loopback(node) and not key_path(cfg, node.name).is_file():  # a remote node makes its own (keygen)
            written.append(keygen(cfg, node))
    return written


def is_loopback(node: NodeSpec) -> bool:
    return node.host in ("127.0.0.1", "localhost", "::1")


def keygen(cfg: DeployConfig, node: NodeSpec) -> Path:
    """The node's authentication key pair, made on the node: the private key stays there (mode 600), only
    ``<node>.pub`` (returned) goes to the operator for ``register``."""
    path = key_path(cfg, node.name)
    if path.is_file():
        raise DeployError(f"node {node.name} already has a key {path}: delete it first to replace it (and register "
                          "the new .pub)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_node_key(path)


def _tool(name: str) -> str:
    """Flower's console scripts next to this Python (the venv), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def flower_env(cfg: DeployConfig, home: str, keep_key: bool = False) -> dict[str, str]:
    """Environment of a Flower process: its own Flower home under the workdir, no telemetry or update check, no
    runtime dependency installation (uv would pull a CUDA torch), and the federation key only where it belongs."""
    env = {k: v for k, v in os.environ.items() if keep_key or k != KEY_ENV}
    env.update(FLWR_HOME=str(cfg.workdir / "flwr" / home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def write_cli_connection(cfg: DeployConfig) -> dict[str, str]:
    """The ``flwr`` CLI's connection to this SuperLink (TLS, our CA), in the deployment's own Flower home."""
    env = flower_env(cfg, "cli")
    ca = (certs_dir(cfg) / CA_CERT).resolve()
    atomic_write_text(Path(env["FLWR_HOME"]) / "config.toml",
                      f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                      f'address = "{LOCAL}:{cfg.link_port}"\nroot-certificates = "{ca}"\n')
    return env


def flwr_cli(cfg: DeployConfig, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([_tool("flwr"), *args], env=write_cli_connection(cfg), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        raise DeployError(f"`flwr {args[0]}` did not finish within {timeout:.0f} s (--timeout); a started run goes "
                          "on at the SuperLink until `scripts/deploy stop`") from None


def start_superlink(cfg: DeployConfig, procs: Processes, timeout: float = 60.0) -> None:
    """Check certificates and ports, start the SuperLink (TLS + SuperNode authentication) on 127.0.0.1 and the fleet
    gateway on the public address (``fedface.deploy.gateway``: only the Fleet API passes), wait until both listen,
    then register every node public key found in ``<workdir>/keys``."""
    folder = certs_dir(cfg)
    check_server_cert(folder, cfg.host)
    check_server_cert(folder, LOCAL)
    check_port_free(cfg.bind, cfg.port)
    check_port_free(LOCAL, cfg.link_port)
    argv = [_tool("flower-superlink"), "--ssl-ca-certfile", str(folder / CA_CERT),
            "--ssl-certfile", str(folder / SERVER_CERT), "--ssl-keyfile", str(folder / SERVER_KEY),
            "--enable-supernode-auth", "--host", LOCAL, "--port", str(cfg.link_port),
            "--disable-runtime-dependency-installation"]
    procs.start(LINK, argv, flower_env(cfg, LINK))
    procs.wait_listening(LINK, LOCAL, cfg.link_port, timeout)
    procs.start(GATEWAY, [sys.executable, "-m", "fedface.deploy.gateway", cfg.bind, str(cfg.port), LOCAL,
                          str(cfg.link_port), str(folder / SERVER_CERT), str(folder / SERVER_KEY),
                          str(folder / CA_CERT)], flower_env(cfg, GATEWAY))
    procs.wait_listening(GATEWAY, cfg.host if cfg.bind in ("0.0.0.0", "::") else cfg.bind, cfg.port, timeout)
    for node in cfg.nodes:
        if pub_path(cfg, node.name).is_file():
            register_node(cfg, pub_path(cfg, node.name))


def register_node(cfg: DeployConfig, public_key: Path) -> None:
    """``flwr supernode register``: the SuperLink will accept a SuperNode holding the matching private key."""
    res = flwr_cli(cfg, ["supernode", "register", str(public_key.resolve()), CONNECTION], timeout=60)
    if res.returncode != 0 and "already" not in (res.stdout + res.stderr).lower():
        raise DeployError(f"registering {public_key} failed (exit {res.returncode}): "
                          f"{(res.stderr or res.stdout).strip()[-500:]}")


def policy_path(cfg: DeployConfig, node: NodeSpec) -> Path:
    return Path(node.policy) if node.policy else cfg.workdir / "policies" / f"{node.name}.yaml"


def ensure_policy(cfg: DeployConfig, node: NodeSpec) -> Path:
    """The node's privacy policy. A path in the deploy file must exist (the node's owner wrote it); without one, the
    try-out writes ``<workdir>/policies/<name>.yaml`` from the run's overrides once and never rewrites it -- so a
    later change of the server's overrides is refused by the nodes instead of silently followed."""
    path = policy_path(cfg, node)
    if node.policy and not path.is_file():
        raise DeployError(f"node {node.name}: nodes.policy file {path} does not exist (docs/deploy.md, \"Node privacy "
                          "policy\")")
    if not path.is_file():
        write_policy(to_container(compose_config(run_overrides(cfg))), path)
    return path


def node_config(node: NodeSpec, policy: Path | None = None) -> str:
    """The node's ``--node-config``: its own folders, index and privacy policy (read on the node only, never
    sent)."""
    items: dict[str, Any] = {"partition-id": node.partition, DATA_KEY: str(Path(node.data).resolve())}
    if policy is not None:
        items[POLICY_KEY] = str(Path(policy).resolve())
    if node.eval:
        items[EVAL_KEY] = str(Path(node.eval).resolve())
    if node.class_offset is not None:
        items[OFFSET_KEY] = node.class_offset
    return " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in items.items())


def check_node(cfg: DeployConfig, node: NodeSpec) -> None:
    """What a SuperNode needs before it starts: the CA certificate, its private key, its data folder, a free local
    port, and a reachable SuperLink whose certificate the CA signed."""
    ca = certs_dir(cfg) / CA_CERT
    load_cert(ca, "the CA certificate")
    if not node.data:
        raise DeployError(f"node {node.name} has no data folder: set nodes.*.data (or export_shards: true)")
    if not key_path(cfg, node.name).is_file():
        raise CertificateError(f"node {node.name}'s private key {key_path(cfg, node.name)} is missing: create it "
                               "with `scripts/deploy certs` and register its .pub on the SuperLink")
    for what, folder in (("data", node.data), ("eval", node.eval)):
        if folder and not Path(folder).is_dir():
            raise DeployError(f"node {node.name}: nodes.{what} folder {folder} does not exist")
    check_port_free("127.0.0.1", node.port)
    check_link(cfg.host, cfg.port, ca)


def start_supernode(cfg: DeployConfig, procs: Processes, node: NodeSpec, key: str | None = None) -> str:
    """Start one authenticated SuperNode (after ``check_node``); returns its process name for ``wait_accepted``."""
    check_node(cfg, node)
    pin = node.app_sha256 or app_hash(REPO_ROOT)  # the node runs only this app (fedface.deploy.pinned_node)
    argv = [sys.executable, "-m", "fedface.deploy.pinned_node", pin, "--", "--superlink", cfg.address,
            "--root-certificates",
            str(certs_dir(cfg) / CA_CERT), "--auth-supernode-private-key", str(key_path(cfg, node.name)),
            "--host", "127.0.0.1", "--port", str(node.port), "--node-config",
            node_config(node, ensure_policy(cfg, node))]
    env = flower_env(cfg, f"node-{node.name}", keep_key=True)
    if key:
        env[KEY_ENV] = key
    procs.start(f"supernode-{node.name}", argv, env)
    return f"supernode-{node.name}"


def wait_accepted(procs: Processes, names: list[str], timeout: float = 60.0) -> None:
    """Until the SuperLink has accepted each SuperNode (it logs the node id Flower assigned); a refused one exits
    (Flower's exit 305) and is reported with the reason and its log."""
    pending, deadline = list(names), time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            if ACCEPTED in procs.tail(name, 50):
                pending.remove(name)
            elif not procs.alive(name):
                tail = procs.tail(name)
                procs.stop(name)
                raise DeployError(f"{name} stopped at start-up{_refusal_reason(tail)}; last lines of "
                                  f"{procs.log(name)}:\n{tail}")
        time.sleep(0.3)
    if pending:
        raise DeployError(f"{', '.join(pending)} not accepted within {timeout:.0f} s; see {procs.log(pending[0])}")


def _refusal_reason(log_tail: str) -> str:
    if "code: 2004" in log_tail or "code: 2001" in log_tail:
        return (": the SuperLink refused its key (not registered): register its .pub with `scripts/deploy "
                "register` on the server machine")
    return ""


def run_overrides(cfg: DeployConfig, extra: list[str] = ()) -> list[str]:
    """The server's Hydra overrides: the deploy file's, with ``federation.num_clients`` = the number of nodes."""
    return [*cfg.overrides, f"federation.num_clients={len(cfg.nodes)}", *extra]


def flwr_run(cfg: DeployConfig, run_dir: Path, overrides: list[str], timeout: float) -> dict[str, Any]:
    """``flwr run . fedface --stream`` against the TLS SuperLink (its own 127.0.0.1 port: the Control API is not
    reachable through the gateway); returns the run's results.json."""
    check_link(LOCAL, cfg.link_port, certs_dir(cfg) / CA_CERT)
    compose_config(overrides)  # a bad override fails here, not inside the ServerApp
    run_dir = run_dir.resolve()
    run_config = f'overrides="{shlex.join(overrides)}" run-dir="{run_dir}"'
    res = flwr_cli(cfg, ["run", str(REPO_ROOT), CONNECTION, "--stream", "-c", run_config], timeout=timeout)
    (cfg.workdir / "logs").mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.workdir / "logs" / "flwr-run.log", res.stdout + res.stderr)
    results = RunLayout(run_dir).results
    if res.returncode != 0 or not results.is_file():
        raise DeployError(f"`flwr run` failed (exit {res.returncode}); see {cfg.workdir / 'logs' / 'flwr-run.log'}:"
                          f"\n{(res.stdout + res.stderr).strip()[-1500:]}")
    return json.loads(results.read_text())


def loopback_nodes(cfg: DeployConfig) -> DeployConfig:
    """``export_shards``: write the simulation's shards of the run's dataset as node folders (docstring of
    fedface.deploy.shards) and point each node at its own; the server learns only the label-space size."""
    sim = to_container(compose_config(run_overrides(cfg)))
    info = export_shards(sim, cfg.workdir / "data")
    nodes = tuple(replace(n, data=s["data"], class_offset=s["class_offset"], eval=n.eval or
                          (info["eval"] if i == 0 else "")) for i, (n, s) in enumerate(zip(cfg.nodes, info["nodes"])))
    return replace(cfg, nodes=nodes, overrides=(*cfg.overrides, f"federation.num_classes={info['num_classes']}"))


def up(cfg: DeployConfig, run_dir: Path, timeout: float = 1800.0) -> dict[str, Any]:
    """The one-machine try-out: certificates, SuperLink, every loopback SuperNode, ``flwr run``; every process it
    started is stopped by PID at the end, on failure too. (With ``export_shards``, pass ``loopback_nodes(cfg)``.)"""
    make_certs(cfg)
    key = os.environ.get(KEY_ENV) or secrets.token_hex(32)  # loopback nodes share one key; the link never sees it
    procs = Processes(cfg.workdir)
    try:
        start_superlink(cfg, procs)
        wait_accepted(procs, [start_supernode(cfg, procs, n, key) for n in cfg.nodes if is_loopback(n)])
        return flwr_run(cfg, run_dir, run_overrides(cfg), timeout)
    finally:
        procs.stop_all()
