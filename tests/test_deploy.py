"""Real deployment (fedface/deploy): certificates, the deploy file, bad-input errors, per-node folders, and (slow) a
TLS SuperLink with authenticated SuperNodes on 127.0.0.1. Every process a test starts is ended by PID."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from clients.client_app import app as client_app
from fedface.config import ConfigError, compose_config, to_container
from fedface.deploy import launch
from fedface.deploy.certs import (CA_CERT, SERVER_CERT, SERVER_KEY, CertificateError, check_server_cert, make_ca,
                                  make_node_key, make_server_cert)
from fedface.deploy.config import NodeSpec, load_deploy_config, parse_deploy_config
from fedface.deploy.procs import DeployError, Processes, check_link, free_port
from fedface.deploy.shards import export_shards
from fedface.federation.node_data import NodeFolders
from fedface.federation.setup import prepare_federation
from strategies.server_loop import run_federation
from tests.local_grid import LocalGrid

KEY_HEX = "c3" * 32
SMALL = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
         "data.pairs.per_fold=6", "model=tiny", "train.batch_size=16", "federation.rounds=2",
         "federation.min_train_nodes=2", "protect=ppfr_fd"]


def _cfg(tmp_path: Path, nodes: int = 2, **extra):
    raw = {"workdir": str(tmp_path / "work"),
           "superlink": {"address": f"127.0.0.1:{free_port()}", "control_port": free_port()},
           "overrides": " ".join(SMALL), "export_shards": True,
           "nodes": [{"name": f"node-{i}", "data": str(tmp_path), "port": free_port()} for i in range(nodes)],
           **extra}
    return parse_deploy_config(raw)


def test_gateway_lets_only_fleet_paths_through():
    from fedface.deploy.gateway import allowed

    assert allowed("/v1/fleet/pull-messages") and allowed("/v1/fleet/push-object?x=1")
    for path in ("/v1/control/start-run", "/v1/control/register-node", "/docs", "/openapi.json", "/health",
                 "/v1/fleet/../control/start-run", "/v1/fleet/%2E%2E%2Fcontrol/start-run", "/v1/fleet//x",
                 "/v1/fleet/%2e%2e/control/start-run", "/v1/fleet/..",
                 "/v1/fleetx/pull", "/V1/FLEET/pull-messages"):
        assert not allowed(path), path


def test_a_pinned_node_hashes_the_app_as_flwr_builds_it(tmp_path):
    from fedface.data.sources import REPO_ROOT
    from fedface.deploy.pinned_node import app_hash, main

    assert app_hash(REPO_ROOT) == app_hash(REPO_ROOT) and len(app_hash(REPO_ROOT)) == 64  # deterministic FAB
    assert main(["not-a-hash", "--"]) == 2 and main([app_hash(REPO_ROOT)]) == 2


# ---- certificates and keys -------------------------------------------------------------------------------------

def test_remote_nodes_make_their_own_key_pair(tmp_path):
    raw = {"workdir": str(tmp_path / "work"), "superlink": {"address": "10.0.0.5:9300"}, "overrides": " ".join(SMALL),
           "export_shards": True, "nodes": [{"name": "far", "host": "10.0.1.10"}, {"name": "near"}]}
    cfg = parse_deploy_config(raw)
    written = {p.name for p in launch.make_certs(cfg)}
    assert "near.pub" in written and not launch.key_path(cfg, "far").exists()  # no private key made for a remote node
    public = launch.keygen(cfg, cfg.node("far"))  # run on the node
    assert public.name == "far.pub" and launch.key_path(cfg, "far").stat().st_mode & 0o777 == 0o600
    with pytest.raises(DeployError, match="already has a key"):
        launch.keygen(cfg, cfg.node("far"))


def test_certs_are_valid_and_node_keys_are_flower_compatible(tmp_path):
    cfg = _cfg(tmp_path)
    written = launch.make_certs(cfg)
    folder = launch.certs_dir(cfg)
    assert {p.name for p in written} >= {CA_CERT, SERVER_CERT, SERVER_KEY, "node-0.pub", "node-1.pub"}
    check_server_cert(folder, "127.0.0.1")
    key = load_ssh_private_key(launch.key_path(cfg, "node-0").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"  # Flower: NIST EC only
    pub = load_ssh_public_key(launch.pub_path(cfg, "node-0").read_bytes())
    assert pub.public_numbers() == key.public_key().public_numbers()
    assert oct(launch.key_path(cfg, "node-0").stat().st_mode & 0o777) == "0o600"
    assert launch.make_certs(cfg) == []  # kept on a rerun: registered keys stay valid


def test_missing_certificate_names_the_file(tmp_path):
    cfg = _cfg(tmp_path)
    launch.make_certs(cfg)
    (launch.certs_dir(cfg) / SERVER_CERT).unlink()
    with pytest.raises(CertificateError, match=r"server\.pem is missing.*scripts/deploy certs"):
        check_server_cert(launch.certs_dir(cfg), "127.0.0.1")


def test_superlink_with_a_missing_certificate_starts_nothing(tmp_path):
    cfg = _cfg(tmp_path)
    launch.make_certs(cfg)
    (launch.certs_dir(cfg) / SERVER_KEY).unlink()
    procs = Processes(cfg.workdir)
    with pytest.raises(CertificateError, match=r"server\.key is missing"):
        launch.start_superlink(cfg, procs)
    assert procs.started == {}


def test_expired_certificate_is_refused(tmp_path):
    make_ca(tmp_path)
    make_server_cert(tmp_path, ["127.0.0.1"], days=1,
                     not_before=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    with pytest.raises(CertificateError, match=r"server\.pem expired on .*--renew"):
        check_server_cert(tmp_path, "127.0.0.1")


def test_certificate_from_another_ca_is_refused(tmp_path):
    make_ca(tmp_path)
    make_server_cert(tmp_path, ["127.0.0.1"])
    make_ca(tmp_path / "other")
    (tmp_path / CA_CERT).write_bytes((tmp_path / "other" / CA_CERT).read_bytes())
    with pytest.raises(CertificateError, match="wrong CA"):
        check_server_cert(tmp_path, "127.0.0.1")


def test_certificate_must_name_the_address_nodes_dial(tmp_path):
    make_ca(tmp_path)
    make_server_cert(tmp_path, ["127.0.0.1"])
    with pytest.raises(CertificateError, match=r"names \['127.0.0.1'\], not 10.1.2.3"):
        check_server_cert(tmp_path, "10.1.2.3")


# ---- network checks: port in use, unreachable link, wrong CA at the handshake ----------------------------------

def test_port_in_use_fails_before_any_process_starts(tmp_path):
    cfg = _cfg(tmp_path)
    launch.make_certs(cfg)
    procs = Processes(cfg.workdir)
    with socket.socket() as held:
        held.bind(("127.0.0.1", cfg.port))
        held.listen()
        with pytest.raises(DeployError, match=f"port {cfg.port} on 127.0.0.1 is in use"):
            launch.start_superlink(cfg, procs)
    assert procs.started == {}


def test_unreachable_superlink_names_the_address(tmp_path):
    cfg = _cfg(tmp_path)
    launch.make_certs(cfg)
    procs = Processes(cfg.workdir)
    with pytest.raises(DeployError, match=f"cannot reach the SuperLink at 127.0.0.1:{cfg.port}.*firewall"):
        launch.start_supernode(cfg, procs, cfg.nodes[0])
    assert procs.started == {}


def _tls_server(folder: Path) -> tuple[socket.socket, threading.Thread]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(folder / SERVER_CERT, folder / SERVER_KEY)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve():
        conn, _ = srv.accept()
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


@pytest.mark.parametrize("same_ca", [True, False])
def test_link_check_verifies_the_superlink_certificate_against_the_ca(tmp_path, same_ca):
    make_ca(tmp_path)
    make_server_cert(tmp_path, ["127.0.0.1"])
    make_ca(tmp_path / "other")
    srv, t = _tls_server(tmp_path)
    ca = tmp_path / CA_CERT if same_ca else tmp_path / "other" / CA_CERT
    try:
        if same_ca:
            check_link("127.0.0.1", srv.getsockname()[1], ca)
        else:
            with pytest.raises(DeployError, match="fails verification against .*wrong CA"):
                check_link("127.0.0.1", srv.getsockname()[1], ca)
    finally:
        t.join(5)
        srv.close()


def test_missing_node_key_is_named(tmp_path):
    cfg = _cfg(tmp_path)
    launch.make_certs(cfg)
    launch.key_path(cfg, "node-1").unlink()
    with pytest.raises(CertificateError, match="node node-1's private key .* is missing"):
        launch.check_node(cfg, cfg.nodes[1])


def test_a_node_without_a_data_folder_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    launch.make_certs(cfg)
    with pytest.raises(DeployError, match="node lost has no data folder"):
        launch.check_node(cfg, NodeSpec("lost"))


def test_a_missing_flower_executable_is_named(tmp_path):
    procs = Processes(tmp_path)
    with pytest.raises(DeployError, match="flower-superlink not found: install"):
        procs.start("superlink", [str(tmp_path / "flower-superlink")], dict(os.environ))
    assert procs.started == {}


def test_a_failed_start_leaves_no_process(tmp_path):
    procs = Processes(tmp_path)
    procs.start("sleeper", ["sleep", "60"], dict(os.environ))
    pid = procs.started["sleeper"]
    with pytest.raises(DeployError, match="did not listen"):
        procs.wait_listening("sleeper", "127.0.0.1", free_port(), timeout=0.5)
    procs.stop_all()
    assert procs.started == {} and json.loads((tmp_path / "pids.json").read_text()) == {}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# ---- the deploy file -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown key colour"),
    ({"superlink": {"address": "127.0.0.1"}}, "must be HOST:PORT"),
    ({"superlink": {"address": "h:1", "tls": False}}, "unknown key superlink.tls"),
    ({"nodes": []}, "at least one SuperNode"),
    ({"nodes": [{"name": "a"}, {"name": "a", "partition": 1}]}, "nodes.*.name must be unique"),
    ({"nodes": [{"name": "a", "gpu": 1}]}, r"nodes\[0\].gpu"),
    ({"export_shards": False}, "nodes.*.data is required"),
    ({"overrides": "data=folder data.path=/faces"}, "would send a path"),
    ({"export_shards": False, "nodes": [{"name": "a", "data": "/d"}]}, "set federation.num_classes"),
])
def test_bad_deploy_file_names_the_key(tmp_path, change, message):
    raw = {"superlink": {"address": "127.0.0.1:9300"}, "export_shards": True, "nodes": [{"name": "a"}], **change}
    with pytest.raises(ConfigError, match=message):
        parse_deploy_config(raw, base=tmp_path)


def test_unreadable_deploy_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="deploy file .*nope.yaml does not exist"):
        load_deploy_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("nodes: [\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_deploy_config(tmp_path / "bad.yaml")
    assert load_deploy_config(Path(__file__).parents[1] / "configs/deploy/loopback.yaml").export_shards


def test_secrets_stay_out_of_the_link_and_the_node_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFACE_KEY", KEY_HEX)
    cfg = _cfg(tmp_path)
    assert "FEDFACE_KEY" not in launch.flower_env(cfg, launch.LINK)
    assert launch.flower_env(cfg, "node-x", keep_key=True)["FEDFACE_KEY"] == KEY_HEX
    node = parse_deploy_config({"superlink": {"address": "h:1"}, "overrides": "federation.num_classes=8", "nodes": [
        {"name": "a", "data": "/d/a", "eval": "/d/e", "class_offset": 7, "partition": 3}]}).nodes[0]
    assert launch.node_config(node) == 'partition-id=3 data-path="/d/a" eval-path="/d/e" class-offset=7'


# ---- per-node folders: deployment trains on exactly what simulation trains on -----------------------------------

def _federate(tmp_path: Path, overrides: list[str], folders: dict | None) -> dict:
    cfg = prepare_federation(compose_config([*overrides, f"run.dir={tmp_path}"]))
    grid = LocalGrid(client_app, 3, {"shuffle-key": KEY_HEX})
    for i, ctx in enumerate(sorted(grid.contexts)):
        if folders is not None:  # a deployed node: its own folders, no partition count, no dataset path
            grid.contexts[ctx].node_config = {"partition-id": i, "shuffle-key": KEY_HEX, **folders[i]}
    return run_federation(grid, cfg, tmp_path)


def test_own_folders_reproduce_the_simulation_exactly(tmp_path):
    overrides = [*SMALL, "federation.num_clients=3"]
    info = export_shards(to_container(compose_config(overrides)), tmp_path / "data")
    folders = {i: {"data-path": n["data"], **({"eval-path": info["eval"]} if i == 0 else {})}
               for i, n in enumerate(info["nodes"])}
    sim = _federate(tmp_path / "sim", overrides, None)
    dep = _federate(tmp_path / "dep", [*overrides, f"federation.num_classes={info['num_classes']}"], folders)
    assert dep["preflight"]["evaluators"] == 1 and sim["preflight"]["evaluators"] == 3
    for s, d in zip(sim["rounds"], dep["rounds"], strict=True):
        assert d["received"] == 3 and d["accuracy"] == s["accuracy"] and d["train_loss"] == s["train_loss"]
    assert info["num_classes"] == 8 and [n["class_offset"] for n in info["nodes"]] == [0, 3, 6]


def test_shared_head_rows_come_from_the_node_class_offset(tmp_path):
    overrides = [*SMALL, "federation.num_clients=2", "federation.head=shared"]
    info = export_shards(to_container(compose_config(overrides)), tmp_path / "data")
    cfg = to_container(compose_config([*overrides, f"federation.num_classes={info['num_classes']}"]))
    from fedface.federation.client import ClientTask

    task = ClientTask(cfg, 1, 1, bytes.fromhex(KEY_HEX), folders=NodeFolders(Path(info["nodes"][1]["data"]),
                                                                              class_offset=4))
    assert int(task.labels.min()) == 4 and task.head.weight.shape[0] == info["num_classes"]
    with pytest.raises(ValueError, match="class-offset`=7 .* do not fit federation.num_classes=8"):
        ClientTask(cfg, 1, 1, bytes.fromhex(KEY_HEX), folders=NodeFolders(Path(info["nodes"][1]["data"]),
                                                                           class_offset=7))
    with pytest.raises(ValueError, match="FEDFACE_CLASS_OFFSET"):
        ClientTask(cfg, 1, 1, bytes.fromhex(KEY_HEX), folders=NodeFolders(Path(info["nodes"][1]["data"])))


def test_a_missing_node_folder_error_names_the_key_not_the_path(tmp_path):
    cfg = to_container(compose_config([*SMALL, "federation.num_clients=2", "federation.num_classes=8"]))
    from fedface.federation.client import ClientTask

    with pytest.raises(ValueError, match="node config `data-path` names no readable face folder") as err:
        ClientTask(cfg, 0, 1, bytes.fromhex(KEY_HEX), folders=NodeFolders(tmp_path / "secret-place"))
    assert "secret-place" not in str(err.value)  # a node's error text travels to the server


# ---- end to end: TLS SuperLink + authenticated SuperNodes on 127.0.0.1 ---------------------------------------------

def _wait_round(run_dir: Path, rnd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = run_dir / "results.json"
        if f.is_file() and len(json.loads(f.read_text()).get("rounds", [])) >= rnd:
            return
        time.sleep(1.0)
    raise AssertionError(f"round {rnd} not recorded within {timeout} s")


def _outsider_requests(cfg) -> dict[str, int]:
    """What the public address answers to Control API calls (register a node's key, start a run, list nodes) and
    Flower's API docs, over TLS with the CA certificate -- all an outsider needs to try."""
    import http.client

    ctx = ssl.create_default_context(cafile=str(launch.certs_dir(cfg) / CA_CERT))
    out = {}
    for path in ("/v1/control/register-node", "/v1/control/start-run", "/v1/control/list-nodes", "/docs",
                 "/v1/fleet/../control/start-run", "/v1/fleet/%2e%2e/control/start-run"):
        conn = http.client.HTTPSConnection(cfg.host, cfg.port, context=ctx, timeout=30)
        conn.request("POST", path, body=b"\x00", headers={"Content-Type": "application/protobuf"})
        out[path] = conn.getresponse().status
        conn.close()
    return out


FOREIGN_APP = {
    "pyproject.toml": """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "foreign"
version = "1.0.0"

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "outsider"

[tool.flwr.app.components]
serverapp = "foreign_app:server"
clientapp = "foreign_app:client"

[tool.flwr.app.config]
marker = ""
""",
    "foreign_app.py": """import json, os
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

client = ClientApp()
server = ServerApp()


@client.query()
def steal(msg, context):  # what a foreign app would do on a node: read its key and data paths
    with open(context.run_config["marker"] + "-ran", "w") as f:
        f.write(json.dumps(dict(context.node_config)) + os.environ.get("FEDFACE_KEY", ""))
    return Message(RecordDict({"c": ConfigRecord({})}), reply_to=msg)


@server.main()
def main(grid, context):
    nodes = list(grid.get_node_ids())
    msgs = [Message(RecordDict({"c": ConfigRecord({})}), dst_node_id=n, message_type="query") for n in nodes]
    replies = list(grid.send_and_receive(msgs, timeout=60))
    with open(context.run_config["marker"] + "-server.json", "w") as f:
        json.dump([r.error.reason if r.has_error() else "ran" for r in replies], f)
""",
}


def _run_foreign_app(cfg, tmp_path: Path) -> list[str]:
    """``flwr run`` of an app that is not fedface, on the deployment's nodes; returns what its server saw."""
    app = tmp_path / "foreign"
    app.mkdir()
    for name, text in FOREIGN_APP.items():
        (app / name).write_text(text)
    marker = tmp_path / "foreign"
    launch.flwr_cli(cfg, ["run", str(app), launch.CONNECTION, "--stream", "-c", f'marker="{marker}"'], timeout=240)
    seen = tmp_path / "foreign-server.json"
    return json.loads(seen.read_text()) if seen.exists() else []


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_tls_superlink_with_authenticated_supernodes_on_loopback(tmp_path, monkeypatch):
    """3 registered SuperNodes + 1 with an unknown key (refused); 2 rounds of a masked (ppfr_fd) federation; one
    node is killed after round 1 and round 2 still aggregates the 2 that remain (min_train_nodes=2). An outsider with
    ca.crt reaches no Control API call through the public address; a foreign app started by the operator runs on no
    node (they are pinned to the fedface app)."""
    monkeypatch.setenv("FEDFACE_KEY", KEY_HEX)
    cfg = launch.loopback_nodes(_cfg(tmp_path, nodes=3))
    launch.make_certs(cfg)
    run_dir = tmp_path / "run"
    procs = Processes(cfg.workdir)
    result: dict = {}
    pids: list[int] = []
    try:
        launch.start_superlink(cfg, procs)
        rogue = NodeSpec("rogue", data=cfg.nodes[0].data, port=free_port())
        make_node_key(launch.key_path(cfg, "rogue"))  # a key the SuperLink never registered
        with pytest.raises(DeployError, match="refused its key"):
            launch.wait_accepted(procs, [launch.start_supernode(cfg, procs, rogue)])
        assert not procs.alive("supernode-rogue")
        launch.wait_accepted(procs, [launch.start_supernode(cfg, procs, n, KEY_HEX) for n in cfg.nodes])
        pids = list(procs.started.values())
        outsider = _outsider_requests(cfg)  # holding only ca.crt, from a participant's side of the network
        runner = threading.Thread(target=lambda: result.update(launch.flwr_run(
            cfg, run_dir, launch.run_overrides(cfg), timeout=400)), daemon=True)
        t0 = time.monotonic()
        runner.start()
        _wait_round(run_dir, 1, timeout=300)
        procs.stop("supernode-node-2")  # a node drops mid-run
        runner.join(timeout=max(1.0, 420 - (time.monotonic() - t0)))
        assert not runner.is_alive(), "flwr run did not finish"
        foreign = _run_foreign_app(cfg, tmp_path)  # the operator starts another app: the pinned nodes refuse it
    finally:
        procs.stop_all()
    assert outsider == {path: 403 for path in outsider}, outsider  # the Control API never answers an outsider
    assert not (tmp_path / "foreign-ran").exists()  # the foreign ClientApp ran on no node
    assert foreign and all("could not be verified" in reason for reason in foreign), foreign
    assert result["status"] == "done" and result["preflight"]["nodes"] == 3
    r1, r2 = result["rounds"]
    print(f"round 2: sampled {r2['sampled']}, received {r2['received']}, failed {r2['failed']}")
    assert r1["received"] == 3 and r1["failed"] == []
    assert r2["received"] == 2 and r2["received"] + len(r2["failed"]) == r2["sampled"]
    assert all("Node Unavailable" in f["reason"] for f in r2["failed"])  # Flower's heartbeat timeout
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in (r1, r2))
    # the key never reached the server side: not in its results, logs or the CLI's output
    for f in [*run_dir.rglob("*.json"), *(cfg.workdir / "logs").glob("*.log")]:
        if "supernode" not in f.name:
            assert KEY_HEX not in f.read_text(errors="replace"), f
    assert procs.started == {} and len(pids) == 5  # SuperLink, gateway, 3 SuperNodes, each with its children
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
