"""Central DP with Flower's wrappers (federation.dp=server_fixed|client_fixed): clipping, noise, labels, composition."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from clients.client_app import app as client_app
from fedface.config import compose_config
from fedface.federation.central_dp import PRIVACY_AGAINST_SERVER, CentralDP, central_dp, update_norm
from fedface.federation.setup import prepare_federation
from strategies.central_dp import build_central_dp
from clients.records import ARRAYS, CONFIG, METRICS, from_record, to_record
from strategies.server_loop import run_federation
from tests.local_grid import LocalGrid

KEY_HEX = "a1" * 32
SMALL = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
         "data.pairs.per_fold=6", "model=tiny", "train.batch_size=16", "federation.num_clients=3",
         "federation.rounds=2", "federation.min_train_nodes=1"]


class RecordingGrid(LocalGrid):
    """LocalGrid that also keeps every instruction the server sent (to measure each reply's update)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.instructions: list[Message] = []

    def push_messages(self, messages):
        messages = list(messages)
        self.instructions += [copy.deepcopy(m) for m in messages]
        return super().push_messages(messages)


def _run(tmp_path, extra, nodes=3, node_config=None):
    cfg = prepare_federation(compose_config([*SMALL, f"federation.num_clients={nodes}", f"run.dir={tmp_path}",
                                             *extra]))
    grid = RecordingGrid(client_app, nodes, node_config)
    return run_federation(grid, cfg, tmp_path), grid


def _train_pairs(grid: RecordingGrid) -> list[tuple[dict, dict]]:
    """(arrays sent, arrays returned) of every train message, paired by node and round."""
    sent = {(m.metadata.dst_node_id, int(m.content[CONFIG]["server-round"])): from_record(m.content[ARRAYS])
            for m in grid.instructions if m.metadata.message_type == MessageType.TRAIN}
    out = []
    for i, m in zip([m for m in grid.instructions if m.metadata.message_type == MessageType.TRAIN],
                    [r for r in grid.sent if r.metadata.message_type == MessageType.TRAIN]):
        out.append((sent[(i.metadata.dst_node_id, int(i.content[CONFIG]["server-round"]))],
                    from_record(m.content[ARRAYS])))
    return out


# ------------------------------------------------------------------------------------------ the wrapper alone
def _replies(current: dict[str, np.ndarray], updates: list[dict[str, np.ndarray]]) -> list[Message]:
    """Real flwr reply messages (as a ClientApp would return them) carrying ``current + update``."""
    LocalGrid(None, 1)  # sets Flower's TaskIdentity so Message() can be built outside a runtime
    out = []
    for node, up in enumerate(updates):
        ins = Message(RecordDict({ARRAYS: to_record(current), CONFIG: ConfigRecord({})}), dst_node_id=1000 + node,
                      message_type=MessageType.TRAIN)
        ins.metadata.__dict__["_message_id"] = f"i{node}"
        content = RecordDict({ARRAYS: to_record({k: current[k] + up[k] for k in current}),
                              METRICS: MetricRecord({"num-examples": 10 * (node + 1), "train_loss": 1.0})})
        out.append(Message(content, reply_to=ins))
    return out


def _server_fixed(z: float, c: float, m: int, seed: int = 0):
    dp = build_central_dp(CentralDP("server_fixed", z, c, m), seed, fraction_train=1.0, min_train_nodes=1,
                          min_available_nodes=1)
    return dp


def test_server_fixed_clips_each_update_then_adds_noise_of_std_z_c_over_m():
    rng = np.random.default_rng(0)
    current = {"w": rng.normal(size=40_000).astype(np.float32), "bn.running_var": np.ones(8, np.float32)}
    updates = []
    for scale in (10.0, 0.3, 3.0):  # one update inside the bound, two far outside
        u = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in current.items()}
        n = update_norm({k: current[k] + u[k] for k in u}, current)
        updates.append({k: (v * scale / n).astype(np.float32) for k, v in u.items()})
    z, c, m = 2.0, 1.0, 3
    # the clipped updates, averaged uniformly (not by num-examples): what DP-FedAvg releases before noise
    clipped = [{k: v * min(1.0, c / update_norm({k: current[k] + v for k, v in u.items()}, current))
                for k, v in u.items()} for u in updates]
    plain = {k: current[k] + np.mean([u[k] for u in clipped], axis=0) for k in current}

    dp = _server_fixed(0.0, c, m)  # z = 0: the release is exactly the mean of the clipped updates
    dp.configure_train(1, to_record(current), ConfigRecord({}), LocalGrid(None, 3))
    no_noise, _ = dp.aggregate_train(1, _replies(current, updates))
    np.testing.assert_allclose(from_record(no_noise)["w"], plain["w"], atol=1e-5)

    dp = _server_fixed(z, c, m)
    dp.configure_train(1, to_record(current), ConfigRecord({}), LocalGrid(None, 3))
    noisy, metrics = dp.aggregate_train(1, _replies(current, updates))
    noise = from_record(noisy)["w"] - plain["w"]
    assert dp.last["noise_std"] == pytest.approx(z * c / m)
    assert abs(noise.mean()) < 0.02 and noise.std() == pytest.approx(z * c / m, rel=0.02)
    assert (from_record(noisy)["bn.running_var"] > 0).all()  # clamped after the noise (post-processing)
    assert "dp-uniform-weight" not in metrics and metrics["train_loss"] == pytest.approx(1.0)

    again = _server_fixed(z, c, m)  # one seed -> one noise draw
    again.configure_train(1, to_record(current), ConfigRecord({}), LocalGrid(None, 3))
    np.testing.assert_array_equal(from_record(again.aggregate_train(1, _replies(current, updates))[0])["w"],
                                  from_record(noisy)["w"])


def test_one_update_is_clipped_to_the_norm():
    current = {"w": np.zeros(1000, np.float32)}
    dp = _server_fixed(0.0, 0.5, 1)
    dp.configure_train(1, to_record(current), ConfigRecord({}), LocalGrid(None, 1))
    out, _ = dp.aggregate_train(1, _replies(current, [{"w": np.full(1000, 0.1, np.float32)}]))
    assert update_norm(from_record(out), current) == pytest.approx(0.5, rel=1e-5)


# --------------------------------------------------------------------------------------- config and labels
def test_bad_dp_values_fail_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"federation.dp='foo'; known: none, server_fixed, client_fixed"):
        prepare_federation(compose_config([*SMALL, "federation.dp=foo", f"run.dir={tmp_path}"]))
    with pytest.raises(ValueError, match="federation.dp_params.clipping_norm"):
        prepare_federation(compose_config([*SMALL, "federation.dp=server_fixed", "federation.dp_params.clipping_norm=0",
                                           f"run.dir={tmp_path}"]))
    fed = {"dp": "client_fixed", "num_clients": 8, "fraction_train": 0.5, "min_train_nodes": 2,
           "dp_params": {"noise_multiplier": 1.0, "clipping_norm": 2.0, "num_sampled_clients": None}}
    assert central_dp(fed).num_sampled_clients == 4 and central_dp(fed).noise_std == pytest.approx(0.5)


# ------------------------------------------------------------------------------------- federations end to end
def test_server_fixed_federation_end_to_end_with_labels_and_noise_std(tmp_path):
    res, grid = _run(tmp_path, ["federation.dp=server_fixed", "federation.dp_params.noise_multiplier=0.5",
                                "federation.dp_params.clipping_norm=0.05"])
    assert res["status"] == "done" and [r["round"] for r in res["rounds"]] == [1, 2]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["privacy_against_server"] == PRIVACY_AGAINST_SERVER
    assert saved["central_dp"]["mode"] == "server_fixed" and saved["central_dp"]["num_sampled_clients"] == 3
    for r in saved["rounds"]:
        assert r["central_dp"]["noise_std"] == pytest.approx(0.5 * 0.05 / 3) and 0.0 <= r["accuracy"] <= 1.0
    pairs = _train_pairs(grid)
    # the server receives every update unclipped (it clips them itself): what the attacker sees
    assert max(update_norm(ret, sent) for sent, ret in pairs) > 0.05
    # only float arrays travel under central DP (integer BatchNorm counters stay on the clients)
    assert all(np.issubdtype(v.dtype, np.floating) for sent, ret in pairs for v in [*sent.values(), *ret.values()])
    assert not any(k.endswith("num_batches_tracked") for k in pairs[0][1])


def test_client_fixed_clients_clip_with_adaptive_mixup_and_the_server_adds_noise(tmp_path):
    res, grid = _run(tmp_path, ["federation.dp=client_fixed", "federation.dp_params.clipping_norm=0.05",
                                "federation.dp_params.noise_multiplier=1.0", "protect=ppfr_fd", "mixup=adaptive",
                                "mixup.k_max=3"], node_config={"shuffle-key": KEY_HEX})
    assert res["status"] == "done" and res["privacy_against_server"] == PRIVACY_AGAINST_SERVER
    pairs = _train_pairs(grid)
    assert len(pairs) == 6
    for sent, ret in pairs:  # flwr's fixedclipping_mod ran on every node: each update within the norm
        assert update_norm(ret, sent) <= 0.05 * (1 + 1e-4)
    replies = [m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    assert all("policy-update" in m.content for m in replies)  # the policy update still reaches the server
    assert all(r["central_dp"]["noise_std"] == pytest.approx(0.05 / 3) for r in res["rounds"])
    assert res["rounds"][-1]["policy_baseline"] is not None
    # the server added the noise: round 2's global model = uniform mean of round 1's clipped replies + N(0, std^2)
    round1, round2_global = [ret for _, ret in pairs[:3]], pairs[3][0]
    noise = np.concatenate([(round2_global[k] - np.mean([r[k] for r in round1], axis=0)).ravel()
                            for k in round2_global if not k.endswith("running_var")])
    assert noise.std() == pytest.approx(0.05 / 3, rel=0.1) and abs(noise.mean()) < 0.005


def test_attacks_see_the_same_replies_with_and_without_central_dp(tmp_path):
    """The malicious server attacks each reply before clipping and noise: round 1's attack is identical."""
    attack = ["attack=gradient", "attack.gradient.iterations=5", "attack.max_clients=1", "attack.threats=[{}]",
              "federation.local_steps=2", "federation.rounds=1", "train.batch_size=4", "federation.head=shared"]
    plain, _ = _run(tmp_path / "plain", attack)
    dp, _ = _run(tmp_path / "dp", [*attack, "federation.dp=server_fixed"])
    a, b = plain["rounds"][0]["attacks"], dp["rounds"][0]["attacks"]
    assert len(a) == len(b) >= 1 and dp["privacy_against_server"] == PRIVACY_AGAINST_SERVER
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}


# ------------------------------------------------------------------------------------------ compare grids
def test_compare_grid_runs_central_dp_cells_and_labels_every_table(tmp_path, monkeypatch):
    from fedface import compare
    from fedface.report.schema import validate

    seen = []

    def execute(cell):  # stand-in for the cell's federation (no Ray); records which federation.dp each cell got
        seen.append((cell["protection"], cell["federation"]["federation"]["dp"]))
        rounds = [{"round": 1, "accuracy": 0.6, "train_loss": 1.0, "bytes_sent": 1000, "bytes_received": 1000,
                   "attacks": [{"attack": "gradient", "threat": "server", "skipped": None,
                                "scores": {"masked": {"psnr": 30.0, "ssim": 0.9}}}]}]
        return {"rounds": rounds, "status": "done"}, None

    monkeypatch.setattr(compare, "_execute", execute)
    args = ["experiment=demo", *SMALL, "federation.num_clients=2", "federation.rounds=1", "train.batch_size=4",
            "compare.protections=[none,central_dp,central_dp_client]", "compare.attacks=[gradient]",
            f"compare.out={tmp_path / 'out'}"]
    res = compare.run_compare(args)
    validate(res)
    assert sorted(seen) == [("central_dp", "server_fixed"), ("central_dp_client", "client_fixed"), ("none", "none")]
    notes = {s["protection"]: s.get("threat_note") for s in res["summary"]}
    assert notes == {"none": None, "central_dp": "no protection against the server",
                     "central_dp_client": "no protection against the server"}
    assert all(r.get("threat_note") for r in res["records"] if r["protection"] != "none")
    for name in ("table.md", "report.html"):
        text = (tmp_path / "out" / name).read_text()
        assert "central_dp (no protection against the server)" in text
        assert "central_dp_client (no protection against the server)" in text
