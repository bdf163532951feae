"""The Flower federation, Ray-free (tests/local_grid.py delivers messages in-process, deep-copied like the wire)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.client_app import app as client_app
from fedface.config import compose_config
from fedface.federation.checkpoint import load_checkpoint
from fedface.federation.setup import prepare_federation
from fedface.freq import bdct
from fedface.freq.ppfr import _SHUFFLE1_CONTEXT, shuffle1_permutation
from clients.records import from_record
from strategies.server_loop import run_federation
from tests.local_grid import LocalGrid

KEY_HEX = "a1" * 32
SMALL = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
         "data.pairs.per_fold=6", "model=tiny", "train.batch_size=16", "federation.num_clients=3",
         "federation.rounds=2", "federation.min_train_nodes=1"]


def _run(tmp_path: Path, extra: list[str], grid: LocalGrid | None = None, nodes: int = 3,
         node_config: dict | None = None):
    cfg = prepare_federation(compose_config([*SMALL, f"federation.num_clients={nodes}", f"run.dir={tmp_path}",
                                             *extra]))
    grid = grid or LocalGrid(client_app, nodes, node_config)
    return run_federation(grid, cfg, tmp_path), grid


def test_three_clients_two_rounds_end_to_end(tmp_path):
    res, grid = _run(tmp_path, ["federation.head=shared"])
    assert res["status"] == "done" and [r["round"] for r in res["rounds"]] == [1, 2]
    for r in res["rounds"]:
        assert r["received"] == 3 and r["failed"] == [] and 0.0 <= r["accuracy"] <= 1.0
        assert r["bytes_sent"] > 0 and r["bytes_received"] > 0
        assert r["loss_over_degenerate"] > 0 and -1 <= r["head_row_cosine"] <= 1
        # where the round's time went: the exchange holds the slowest client's training, and evaluation has its own
        assert r["exchange_seconds"]["train"] >= r["client_seconds"] > 0 and r["exchange_seconds"]["evaluate"] > 0
        assert r["client_process_seconds"] >= r["client_seconds"]  # the process also imported and built the task
        assert 0 < r["client_startup_seconds"] < r["client_process_seconds"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["collapse"]["loss_over_degenerate"] == res["rounds"][-1]["loss_over_degenerate"]
    assert isinstance(saved["collapse"]["collapsed"], bool) and "stalled_rounds" in saved["collapse"]
    assert saved["rounds"][-1]["accuracy"] == res["rounds"][-1]["accuracy"]
    assert (tmp_path / "checkpoint" / "state.json").exists() and any((tmp_path / "tensorboard").iterdir())
    from fedface.report.schema import SIMULATE, describe, validate

    validate(saved, SIMULATE)  # the documented shape (the run validated it too), in docs/results-schema.md
    assert describe(SIMULATE) in (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    assert saved["rounds"][0]["k_counts"] == []  # without MixUp: an empty histogram, not a number
    with pytest.raises(ValueError, match=r"results.rounds\[1\].bytes_received: missing"):
        validate({**saved, "rounds": [saved["rounds"][0], {k: v for k, v in saved["rounds"][1].items()
                                                          if k != "bytes_received"}]}, SIMULATE)


def test_head_local_sends_only_the_backbone_and_keeps_the_head_on_the_node(tmp_path):
    res, grid = _run(tmp_path, ["federation.head=local", "federation.bn=local"])
    replies = [m for m in grid.sent if m.metadata.message_type == "train"]
    keys = set(replies[0].content["arrays"].keys())
    assert keys and all(k.startswith("backbone.") for k in keys)
    assert not any("bn" in k or "running_" in k for k in keys if "features" in k or "running" in k)
    assert all("local" in ctx.state.array_records for ctx in grid.contexts.values())
    assert any(k.startswith("head.") for k in grid.contexts[1000].state["local"].keys())


def test_a_failing_client_does_not_fail_the_round(tmp_path):
    res, _ = _run(tmp_path, ["federation.failure_prob=0.5", "federation.rounds=3"], nodes=4)
    failures = sum(len(r["failed"]) for r in res["rounds"])
    assert res["status"] == "done" and failures >= 1
    assert all(r["received"] + len(r["failed"]) == 4 for r in res["rounds"])
    assert any("injected failure" in f["reason"] for r in res["rounds"] for f in r["failed"])


def test_resume_continues_at_the_next_round_with_identical_weights(tmp_path):
    common = ["federation.head=shared", "protect=ppfr_fd", "mixup=adaptive", "mixup.k_max=3"]
    node = {"shuffle-key": KEY_HEX}
    full, _ = _run(tmp_path / "full", [*common], node_config=node)
    grid = LocalGrid(client_app, 3, node)  # the nodes keep running while the server restarts
    _run(tmp_path / "cut", [*common, "federation.rounds=1"], grid=grid)
    before = len(grid.sent)
    resumed, _ = _run(tmp_path / "cut", [*common, "federation.resume=true"], grid=grid)
    assert [r["round"] for r in resumed["rounds"]] == [1, 2] and resumed["resumed_after_round"] == 1
    trained = [m for m in grid.sent[before:] if m.metadata.message_type == "train"]
    assert len(trained) == 3  # round 2 only: a resume that started over would train 6 replies
    a = load_checkpoint(tmp_path / "full" / "checkpoint")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint")
    assert a[0] == b[0] == 2
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k], err_msg=k)


def test_adaptive_policy_is_hosted_and_stepped_by_the_server(tmp_path):
    node = {"shuffle-key": KEY_HEX}
    res, grid = _run(tmp_path, ["protect=ppfr_fd", "mixup=adaptive", "mixup.k_max=4", "federation.rounds=3"],
                     node_config=node)
    assert all(sum(r["k_counts"]) > 0 and len(r["k_counts"]) == 3 for r in res["rounds"])
    assert res["rounds"][-1]["policy_baseline"] is not None
    policy_msgs = [m for m in grid.sent if "policy-update" in m.content]
    assert len(policy_msgs) == 9  # every client, every round, sent its REINFORCE sum


def _needles(grid: LocalGrid, cfg_dir: Path) -> list[bytes]:
    """Byte patterns that must never appear in a client's message: the key, and for every client image its raw
    pixels, standardised pixels and unmasked BDCT coefficients (first 16 values, as stored on the wire)."""
    from fedface.data.sources import load_configured

    cfg = json.loads(json.dumps(prepare_federation(compose_config([*SMALL, f"run.dir={cfg_dir}"]))))
    data = load_configured(cfg["data"])
    x = data.images.float().unsqueeze(1)
    # a run of a row through the middle of the face (columns 48..80): training shifts it by at most 4 pixels and
    # flips it, so the run stays contiguous in the shifted image and reversed in the flipped one
    mid = slice(112 * 40 + 48, 112 * 40 + 80)
    reps = [data.images.numpy().reshape(len(x), -1)[:, mid],
            (x / 255).numpy().reshape(len(x), -1)[:, mid][:, :16],
            ((x - 127.5) / 127.5).numpy().reshape(len(x), -1)[:, mid][:, :16],
            bdct(x / 255).numpy().reshape(len(x), -1)[:, 200:216],
            bdct((x - 127.5) / 127.5).numpy().reshape(len(x), -1)[:, 200:216]]
    key = bytes.fromhex(KEY_HEX)
    permutation = shuffle1_permutation(key, 35)  # Shuffle1's channel order (PPFR-FD keeps 35 AC channels)
    seed = hmac.new(key, _SHUFFLE1_CONTEXT, hashlib.sha256).digest()
    needles = [key, KEY_HEX.encode(), KEY_HEX.upper().encode(), repr(key).encode(), base64.b64encode(key),
               base64.urlsafe_b64encode(key), base64.b64encode(KEY_HEX.encode()), seed, seed.hex().encode(),
               str(int.from_bytes(seed, "big")).encode(), permutation.numpy().tobytes(),
               permutation.numpy().astype(np.int32).tobytes(), str(permutation.tolist()[:12])[1:-1].encode()]
    for rep in reps:
        for row in rep:
            for r in (row, row[::-1]):  # as trained: flipped or not
                needles += [np.ascontiguousarray(r).tobytes(), np.ascontiguousarray(r, dtype=np.float64).tobytes()]
    return needles


def _wire_bytes(message) -> list[bytes]:
    out = []
    for record in message.content.array_records.values():
        out += [np.ascontiguousarray(a).tobytes() for a in from_record(record).values()]
    for record in (*message.content.config_records.values(), *message.content.metric_records.values()):
        for v in record.values():  # lists item by item (SecAgg+ sends its keys, shares and masked vectors as bytes)
            out += [x if isinstance(x, bytes) else str(x).encode() for x in (v if isinstance(v, list) else [v])]
    return out


@pytest.mark.parametrize("secagg", [False, True])
def test_no_raw_image_unmasked_tensor_or_key_in_any_client_message(tmp_path, secagg):
    node = {"shuffle-key": KEY_HEX}
    res, grid = _run(tmp_path, ["protect=ppfr_fd", "mixup=adaptive", "mixup.k_max=3", "federation.head=shared",
                                *(["federation.secagg=true", "federation.min_train_nodes=2"] if secagg else [])],
                     node_config=node)
    assert res["status"] == "done" and len(grid.sent) >= 6
    needles = _needles(grid, tmp_path / "probe")
    # the probe must be able to fail: a message carrying one image's raw pixels is caught
    from fedface.data.sources import load_configured

    faces = load_configured(json.loads(json.dumps(res["config"]["data"]))).images
    leaky = [faces[0].numpy().tobytes(), faces[1].flip(-1).numpy().tobytes(),  # as stored, flipped, shifted
             torch.roll(faces[2], (3, -2), (0, 1)).numpy().tobytes(), repr(bytes.fromhex(KEY_HEX)).encode(),
             base64.b64encode(bytes.fromhex(KEY_HEX)), shuffle1_permutation(bytes.fromhex(KEY_HEX), 35).numpy().tobytes()]
    assert all(any(n in blob for n in needles) for blob in leaky)
    for message in grid.sent:
        for blob in _wire_bytes(message):
            for n in needles:
                assert n not in blob, f"client message {message.metadata.message_type} leaks a pattern"


def test_the_server_never_sees_the_key(tmp_path):
    node = {"shuffle-key": KEY_HEX}
    res, grid = _run(tmp_path, ["protect=ppfr_fd"], node_config=node)
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for needle in (bytes.fromhex(KEY_HEX), KEY_HEX.encode()):
        assert needle not in written
        assert needle not in json.dumps(res).encode()


def test_bad_federation_config_fails_before_any_round(tmp_path):
    with pytest.raises(ValueError, match="federation.num_clients=20 exceeds"):
        prepare_federation(compose_config([*SMALL, "federation.num_clients=20", f"run.dir={tmp_path}"]))
    with pytest.raises(ValueError, match="fraction_train"):
        prepare_federation(compose_config([*SMALL, "federation.fraction_train=0.1", f"run.dir={tmp_path}"]))
    with pytest.raises(ValueError, match="federation.head"):
        prepare_federation(compose_config([*SMALL, "federation.head=global", f"run.dir={tmp_path}"]))


def test_public_pretraining_before_round_one(tmp_path):
    res, _ = _run(tmp_path, ["data.split.public_identities=3", "federation.pretrain.epochs=2"])
    assert res["pretrain"]["identities"] == 3 and res["pretrain"]["images"] == 18
    assert np.isfinite(res["pretrain"]["loss"]) and res["status"] == "done"
    with pytest.raises(ValueError, match="data.split.public_identities"):
        _run(tmp_path / "none", ["federation.pretrain.epochs=2"])


@pytest.mark.slow
def test_simulate_on_ray_end_to_end(tmp_path):
    """The real simulation engine (Ray actors): fedface simulate, 3 clients, 2 rounds, masking + adaptive MixUp."""
    from fedface.cli import main

    run_dir = tmp_path / "sim"
    assert main(["simulate", *SMALL, "protect=ppfr_fd", "mixup=adaptive", "mixup.k_max=3",
                 f"run.dir={run_dir}"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "done" and len(res["rounds"]) == 2
    assert all(r["received"] == 3 and 0.0 <= r["accuracy"] <= 1.0 for r in res["rounds"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_mid_run_then_resume_finishes_the_run(tmp_path):
    """`fedface simulate` killed with SIGKILL after round 2 (Ray and all), its newest checkpoint then truncated as a
    crash mid-write would leave it; `federation.resume=true` picks the run up after round 1 and finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "sim"
    args = [sys.executable, "-m", "fedface.cli", "simulate", *SMALL, "federation.rounds=4", f"run.dir={run_dir}"]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            f = run_dir / "results.json"
            if f.exists() and len(json.loads(f.read_text()).get("rounds", [])) >= 2:
                break
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(json.loads((run_dir / "results.json").read_text())["rounds"])
    assert 2 <= done < 4, "the run was not cut mid-way"
    latest = sorted((run_dir / "checkpoint").glob("round-*"))[-1] / "global.safetensors"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    resumed = subprocess.run([*args, "federation.resume=true"], capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "done" and res["resumed_after_round"] == done - 1
    assert [r["round"] for r in res["rounds"]] == [1, 2, 3, 4]


def test_preflight_stops_a_node_without_its_key_before_round_one(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDFACE_KEY", raising=False)
    monkeypatch.delenv("FEDFACE_ALLOW_DEMO_KEY", raising=False)
    with pytest.raises(RuntimeError, match="(?s)pre-flight.*FEDFACE_KEY"):
        _run(tmp_path, ["protect=ppfr_fd"])  # no node has shuffle-key or FEDFACE_KEY
    assert not (tmp_path / "results.json").exists() or json.loads((tmp_path / "results.json").read_text())["rounds"] == []
    bad = LocalGrid(client_app, 3, {"shuffle-key": "too-short"})
    with pytest.raises(RuntimeError, match="shuffle-key"):
        _run(tmp_path / "short", ["protect=ppfr_fd"], grid=bad)


def test_plateau_rule_stops_only_after_patience_evaluations_without_gain():
    from strategies.server_loop import plateaued

    rule = {"patience": 2, "min_delta": 0.01}
    hist = [{"accuracy": a} for a in (0.5, 0.6, 0.605, 0.608)]
    assert plateaued(hist, rule)                              # 0.605, 0.608 < 0.6 + 0.01
    assert not plateaued(hist[:3], rule)                      # only one evaluation after the best
    assert not plateaued([*hist[:3], {"accuracy": 0.62}], rule)
    assert not plateaued(hist, {"patience": None})
    assert not plateaued([{"accuracy": None}, *hist[:2]], rule)  # rounds without evaluation do not count


def test_a_plateaued_run_stops_before_its_last_round(tmp_path):
    res, _ = _run(tmp_path, ["federation.rounds=6", "federation.plateau.patience=1", "federation.plateau.min_delta=1.0"])
    assert res["status"] == "done" and len(res["rounds"]) == 2 and "plateaued" in res["stopped"]


def test_resume_falls_back_past_a_truncated_checkpoint_and_refuses_another_config(tmp_path, caplog):
    run = tmp_path / "run"
    _run(run, ["federation.rounds=2"])
    latest = run / "checkpoint" / "round-00002" / "global.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])  # kill -9 mid-copy, a full disk: the newest round is unreadable
    with pytest.raises(ValueError, match="train.lr"):
        _run(run, ["federation.rounds=3", "federation.resume=true", "train.lr=0.5"])
    res, grid = _run(run, ["federation.rounds=3", "federation.resume=true"])
    assert "falling back" in caplog.text and res["resumed_after_round"] == 1
    assert [r["round"] for r in res["rounds"]] == [1, 2, 3] and res["status"] == "done"


def test_a_run_in_which_every_round_failed_ends_failed(tmp_path):
    res, _ = _run(tmp_path, ["federation.failure_prob=1.0", "federation.rounds=2"])
    assert res["status"] == "failed" and "no client reply" in res["error"]
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def _tamper(how: str):
    """A rogue client: the honest ClientApp's train reply, then broken the way ``how`` says."""
    from flwr.app import Array, MetricRecord

    def app(msg, ctx):
        reply = client_app(msg, ctx)
        if ctx.node_id != 1000 or msg.metadata.message_type != "train":
            return reply
        arrays, metrics = reply.content["arrays"], reply.content["metrics"]
        name = next(k for k in arrays.keys() if arrays[k].numpy().ndim == 4)
        if how == "no-metrics":
            del reply.content["metrics"]
        elif how == "shape":
            arrays[name] = Array(np.zeros((1, *arrays[name].numpy().shape[1:]), arrays[name].numpy().dtype))
        elif how == "nan":
            w = arrays[name].numpy().copy()
            w.flat[0] = np.nan
            arrays[name] = Array(w)
        elif how == "examples":
            reply.content["metrics"] = MetricRecord({**dict(metrics), "num-examples": 10 ** 12})
        return reply

    return app


@pytest.mark.parametrize("how,reason", [("no-metrics", "needs the records"), ("shape", "is float32[1"),
                                        ("nan", "non-finite"), ("examples", "exceeds")])
def test_rogue_replies_are_rejected_and_the_honest_ones_aggregated(tmp_path, how, reason):
    grid = LocalGrid(_tamper(how), 3)
    res, _ = _run(tmp_path, ["federation.head=shared"], grid=grid)
    assert res["status"] == "done"
    for r in res["rounds"]:
        assert r["received"] == 2 and [f["node"] for f in r["failed"]] == [1000]
        assert "rejected reply" in r["failed"][0]["reason"] and reason in r["failed"][0]["reason"]
    final = load_checkpoint(tmp_path / "checkpoint")[1]
    honest = [m for m in grid.sent if m.metadata.message_type == "train" and m.metadata.src_node_id != 1000]
    for name, ref in from_record(honest[0].content["arrays"]).items():
        assert final[name].shape == ref.shape and np.isfinite(final[name]).all(), name


HONEST = ["protect=ppfr_fd", "mixup=adaptive", "mixup.k_max=3", "federation.head=shared"]


@pytest.mark.parametrize("weaker,reason", [
    ([*HONEST, "protect=none"], "protect=none"),
    ([*HONEST, "protect.steps.shuffle1=false"], "steps.shuffle1=False"),
    ([*HONEST, "protect.steps.shuffle2=false"], "steps.shuffle2=False"),
    (["protect=ppfr_fd", "federation.head=shared", "mixup=none"], "requires k >= 2"),
    ([*HONEST, "protect.keep=60"], "keep=60"),
])
def test_a_server_cannot_weaken_a_nodes_protection(tmp_path, weaker, reason):
    """The nodes' policy is the experimenter's honest config; the server's run config asks for less. Every node
    refuses at pre-flight (the run stops before round 1) and again if the server skips pre-flight and sends a
    train message: no reply carries anything but the refusal, so no raw pixel can leave."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from clients.records import CONFIG, RUN_CONFIG

    honest = prepare_federation(compose_config([*SMALL, f"run.dir={tmp_path}", *HONEST]))
    grid = LocalGrid(client_app, 3, {"shuffle-key": KEY_HEX}, policy=honest)
    with pytest.raises(RuntimeError, match=f"(?s)pre-flight.*refused by the node's privacy policy.*{reason}"):
        _run(tmp_path, weaker, grid=grid)
    weak = prepare_federation(compose_config([*SMALL, f"run.dir={tmp_path}", *weaker]))
    train = Message(content=RecordDict({CONFIG: ConfigRecord({RUN_CONFIG: json.dumps(weak), "server-round": 1})}),
                    dst_node_id=1000, message_type=MessageType.TRAIN)
    [reply] = grid.send_and_receive([train])
    assert reply.has_error() and "refused by the node's privacy policy" in reply.error.reason
    assert grid.sent and all(m.has_error() for m in grid.sent)  # refusals only: no arrays, no metrics


def test_a_nodes_minimums_bind_the_run_and_every_round(tmp_path):
    """A gradient-inversion server wants one local step of a small batch (docs/attacks.md). A node's policy sets
    min_batch_size and min_local_steps: a run asking for less stops at pre-flight; a server that passes pre-flight
    and then sends a round config of fewer steps gets only refusals; a run that meets them trains."""
    import yaml

    from fedface.federation.policy import policy_of_run

    honest = prepare_federation(compose_config([*SMALL, f"run.dir={tmp_path}", *HONEST]))
    policy = tmp_path / "policy.yaml"  # shards of 18, 18 and 12 images, batch 16, last partial batch dropped: 1 step per epoch
    policy.write_text(yaml.safe_dump({**policy_of_run(honest), "min_batch_size": 8, "min_local_steps": 3}))
    node = {"shuffle-key": KEY_HEX, "privacy-policy": str(policy)}
    short = [(["train.batch_size=4"], "train.batch_size=4, this node's policy requires >= 8"),
             (["federation.local_steps=2"], "local_steps=2, this node's policy requires >= 3")]
    for i, (extra, reason) in enumerate(short):
        with pytest.raises(RuntimeError, match=f"(?s)pre-flight.*refused by the node's privacy policy.*{reason}"):
            _run(tmp_path / f"short-{i}", [*HONEST, *extra], grid=LocalGrid(client_app, 3, node))
    grid = LocalGrid(client_app, 3, node)
    res, _ = _run(tmp_path / "one-epoch", HONEST, grid=grid)  # passes pre-flight: the steps come per round
    assert res["status"] == "failed"
    reasons = [f["reason"] for r in res["rounds"] for f in r["failed"]]
    assert len(reasons) == 3 * len(res["rounds"]) and all("this node's policy requires >= 3" in r for r in reasons)
    assert all("asks for 1 local step(s)" in r for r in reasons)  # counted as the node trains (planned_steps)
    assert not any(m.metadata.message_type == "train" and not m.has_error() for m in grid.sent)
    res, _ = _run(tmp_path / "epochs", [*HONEST, "federation.local_epochs=3"], grid=LocalGrid(client_app, 3, node))
    assert res["status"] == "done" and all(r["received"] == 3 for r in res["rounds"])
    assert res["preflight"]["policies"]["1000"]["policy-min-steps"] == 3


def test_node_policy_minimums_and_file_errors(tmp_path):
    from fedface.federation.policy import NodePolicy, PolicyRefusal, policy_of_run

    cfg = prepare_federation(compose_config([*SMALL, f"run.dir={tmp_path}", *HONEST]))
    strict = NodePolicy.from_mapping({**policy_of_run(cfg), "require_secagg": True}, "test")
    assert "requires SecAgg+" in strict.refusal(cfg)
    trap = {**cfg, "model": {**cfg["model"], "imprint": {"bins": 8}}}
    assert "trap module" in NodePolicy.from_mapping(policy_of_run(cfg), "test").refusal(trap)
    assert NodePolicy.from_mapping(policy_of_run(cfg), "test").refusal(cfg) is None
    preset = NodePolicy.from_mapping({"protect": "ppfr_fd", "overrides": ["protect.keep=24"]}, "file")
    assert preset.protect["keep"] == 24 and preset.protect["name"] == "ppfr_fd"
    with pytest.raises(ValueError, match="unknown privacy-policy key.*protekt"):
        NodePolicy.from_mapping({"protekt": "none"}, "file")
    with pytest.raises(ValueError, match="mixup_min_k"):
        NodePolicy.from_mapping({"protect": "none", "mixup_min_k": "two"}, "file")
    for key in ("min_batch_size", "min_local_steps"):
        with pytest.raises(ValueError, match=f"{key}=0 must be an integer >= 1"):
            NodePolicy.from_mapping({"protect": "none", key: 0}, "file")
    with pytest.raises(PolicyRefusal, match="no privacy policy"):
        NodePolicy.load({}, env={})
    from fedface.federation.policy import main as write_policy_cli  # `make flwr-run`'s nodes get theirs this way

    drafted = tmp_path / "drafted.yaml"
    assert write_policy_cli([str(drafted), "protect=ppfr_fd", "mixup=fixed", "mixup.k=3"]) == 0
    loaded = NodePolicy.load({"privacy-policy": str(drafted)}, env={})
    assert loaded.mixup_min_k == 3 and loaded.protect["name"] == "ppfr_fd" and not loaded.allow_trap
    bad = tmp_path / "policy.yaml"
    bad.write_text("protect: [unclosed")
    with pytest.raises(ValueError, match="policy.yaml.*does not read"):
        NodePolicy.load({"privacy-policy": str(bad)}, env={})


def test_nodes_with_different_keys_stop_before_round_one(tmp_path):
    grid = LocalGrid(client_app, 3, {"shuffle-key": KEY_HEX})
    grid.contexts[1002].node_config["shuffle-key"] = "b2" * 32
    with pytest.raises(RuntimeError, match="(?s)pre-flight.*different federation keys: 1002 differ from 1000, 1001"):
        _run(tmp_path, ["protect=ppfr_fd"], grid=grid)
    assert not any(m.metadata.message_type == "train" for m in grid.sent)
    same = LocalGrid(client_app, 3, {"shuffle-key": KEY_HEX})
    res, _ = _run(tmp_path / "same", ["protect=ppfr_fd", "federation.rounds=1"], grid=same)
    assert res["preflight"]["keys_match"] and res["preflight"]["policies"]["1000"]["policy-protect"] == "ppfr_fd"
    assert KEY_HEX not in json.dumps(res)


def test_a_clientapp_process_does_not_import_sklearn():
    """Deployed, Flower 1.42 starts one ClientApp process per message: its imports are paid on every message.
    sklearn alone was 1.6 s of 4.4 s (docs/scale.md "Deployed rounds"); only verification needs it, lazily."""
    import subprocess
    import sys

    code = "import sys, clients.client_app; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stdout


def test_a_resume_under_another_key_is_refused(tmp_path):
    """Resumed rounds under another key would train on another Shuffle1 permutation than the checkpointed ones: the
    checkpoint keeps the first pre-flight's nonce and key fingerprint, and a resume re-asks under that nonce."""
    run = tmp_path / "run"
    _run(run, ["protect=ppfr_fd", "federation.rounds=1"], grid=LocalGrid(client_app, 3, {"shuffle-key": KEY_HEX}))
    other = LocalGrid(client_app, 3, {"shuffle-key": "b2" * 32})
    with pytest.raises(ValueError, match="another federation key"):
        _run(run, ["protect=ppfr_fd", "federation.rounds=2", "federation.resume=true"], grid=other)
    assert not any(m.metadata.message_type == "train" for m in other.sent)
    res, _ = _run(run, ["protect=ppfr_fd", "federation.rounds=2", "federation.resume=true"],
                  grid=LocalGrid(client_app, 3, {"shuffle-key": KEY_HEX}))
    assert res["resumed_after_round"] == 1 and [r["round"] for r in res["rounds"]] == [1, 2]
    assert KEY_HEX not in (run / "checkpoint" / "round-00002" / "state.json").read_text()
