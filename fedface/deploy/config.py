"""The deployment file: where the SuperLink listens, which SuperNodes exist, each node's own folders.

One YAML file describes a federation; every machine holds a copy (it contains addresses and paths, no secret).
The server reads ``superlink`` and ``overrides``; each client machine reads its own entry under ``nodes``.
See ``configs/deploy/loopback.yaml`` and docs/deploy.md.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedface.config import ConfigError, known_keys_only
from fedface.data.sources import REPO_ROOT


@dataclass(frozen=True)
class NodeSpec:
    name: str
    data: str = ""                  # this node's own training faces: one sub-folder per identity (on its machine)
    eval: str = ""                  # optional held-out faces (+ pairs.tsv): a node with it can be the evaluator
    partition: int = 0              # the node's index in the federation: seeds its randomness, names it in logs
    class_offset: int | None = None  # head=shared: the node's first row in the global label space (agreed out of band)
    host: str = "127.0.0.1"         # the machine that runs it; `scripts/deploy up` starts only loopback nodes
    port: int = 9094                # its local ClientApp API port (Flower binds it on 127.0.0.1)
    app_sha256: str = ""            # the only app (FAB) it runs; empty: the hash of its own copy of fedface
                                    # (fedface/deploy/pinned_node.py)
    policy: str = ""                # its privacy-policy YAML (on its machine; fedface/federation/policy.py); empty:
                                    # <workdir>/policies/<name>.yaml, written once from `overrides` (loopback try-out)


@dataclass(frozen=True)
class DeployConfig:
    workdir: Path                   # certificates, keys, Flower homes, logs, pids, results (one folder)
    address: str                    # host:port that SuperNodes dial: the fleet gateway (fedface/deploy/gateway.py)
    bind: str                       # interface the gateway listens on (0.0.0.0 on a real server)
    cert_hosts: tuple[str, ...]     # names/IPs the server certificate is valid for (127.0.0.1 is always added)
    overrides: tuple[str, ...]      # Hydra overrides of the run (the server's config; never a path or a key)
    nodes: tuple[NodeSpec, ...]
    export_shards: bool = False     # try-out: write the simulation's shards of the run's dataset as node folders
    control_port: int = 0           # the SuperLink's own port, on 127.0.0.1 only (operator's `flwr`); 0 = port + 1

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def link_port(self) -> int:
        """Where the SuperLink itself listens (127.0.0.1): every API, for the operator only."""
        return self.control_port or self.port + 1

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ConfigError(f"no node named {name!r} in the deploy file; known: {', '.join(n.name for n in self.nodes)}")


TOP_KEYS = {"workdir", "superlink", "overrides", "nodes", "export_shards"}
LINK_KEYS = {"address", "bind", "cert_hosts", "control_port"}


def load_deploy_config(path: str | Path) -> DeployConfig:
    """Read and check a deploy file; one ConfigError naming the file and key on bad input."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"deploy file {path} does not exist (example: configs/deploy/loopback.yaml)")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"deploy file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"deploy file {path} must be a mapping (keys: {', '.join(sorted(TOP_KEYS))})")
    try:
        return parse_deploy_config(raw, base=path.parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_deploy_config(raw: dict[str, Any], base: Path = REPO_ROOT) -> DeployConfig:
    _only(raw, TOP_KEYS, "")
    link = raw.get("superlink") or {}
    _only(link, LINK_KEYS, "superlink.")
    address = str(link.get("address", ""))
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"superlink.address={address!r} must be HOST:PORT (e.g. 10.0.0.5:9300)")
    nodes = tuple(_node(i, n) for i, n in enumerate(raw.get("nodes") or []))
    if not nodes:
        raise ConfigError("nodes: at least one SuperNode is needed")
    for attr in ("name", "partition"):
        values = [getattr(n, attr) for n in nodes]
        if len(set(values)) != len(values):
            raise ConfigError(f"nodes.*.{attr} must be unique, got {values}")
    shards = bool(raw.get("export_shards", False))
    if not shards and any(not n.data for n in nodes):
        raise ConfigError("nodes.*.data is required (each node's own face folder) unless export_shards is true")
    overrides = _overrides(raw.get("overrides", ""), shards)
    workdir = Path(str(raw.get("workdir", "deploy-work")))
    control = link.get("control_port", 0)
    if not isinstance(control, int) or not 0 <= control < 65536 or control == int(port):
        raise ConfigError(f"superlink.control_port={control!r} must be a free port other than the address's "
                          f"({port}); 0 = port + 1")
    hosts = tuple(dict.fromkeys([*map(str, link.get("cert_hosts") or [host]), "127.0.0.1"]))
    return DeployConfig(workdir if workdir.is_absolute() else (base / workdir).resolve(), address,
                        str(link.get("bind", host)), hosts, overrides, nodes, shards, control)


def _overrides(value: str | list, shards: bool) -> tuple[str, ...]:
    """The run's Hydra overrides. They travel to every node inside the run config, so no path; and the server must
    know the label-space size without reading a dataset itself (simulation's way) unless the try-out exports one."""
    overrides = tuple(shlex.split(value) if isinstance(value, str) else map(str, value))
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+") in ("data.path", "data.root"):
            raise ConfigError(f"overrides: {o!r} would send a path to the nodes; each node names its own folder "
                              "in nodes.*.data")
    if not shards and not any(o.startswith("federation.num_classes=") for o in overrides):
        raise ConfigError("overrides: set federation.num_classes (the global label-space size the nodes agreed on; "
                          "any value >= 1 with federation.head=local) so that the server reads no face data")
    return overrides


def _only(raw: dict[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]}; known: {', '.join(sorted(known))}")


def _node(i: int, raw: dict[str, Any]) -> NodeSpec:
    raw = {"name": f"node-{i}", "partition": i, **raw}
    try:
        spec = NodeSpec(**known_keys_only(NodeSpec, raw, f"nodes[{i}]"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not 0 < int(spec.port) < 65536:
        raise ConfigError(f"nodes[{i}].port={spec.port} is not a port number")
    return spec

