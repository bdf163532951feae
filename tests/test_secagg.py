"""SecAgg+ (federation.secagg=true): the aggregate equals FedAvg within quantisation, the server never holds one
client's update, the policy update is summed through SecAgg+ too, and impossible configs are refused."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from flwr.app import MessageType

from clients.client_app import app as client_app
from fedface.config import compose_config
from fedface.federation.checkpoint import load_checkpoint
from fedface.federation.client import ClientTask
from fedface.federation.secagg import PER_CLIENT_UNAVAILABLE, SERVER_RECEIVED, secagg_settings
from fedface.federation.setup import prepare_federation
from fedface.mixup import merge_updates
from clients.records import METRICS, POLICY_UPDATE, SECAGG_CLIPPED
from strategies.secagg import SecAggRound
from strategies.strategy import FedFaceAvg
from strategies.server_loop import run_federation
from tests.local_grid import LocalGrid

torch.set_num_threads(1)
KEY_HEX = "a1" * 32
SMALL = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
         "data.pairs.per_fold=6", "model=tiny", "train.batch_size=16", "federation.num_clients=3",
         "federation.rounds=1", "federation.min_train_nodes=2"]
MASKED = ["protect=ppfr_fd", "mixup=adaptive", "mixup.k_max=3"]


def _run(tmp_path, extra, nodes=3):
    cfg = prepare_federation(compose_config([*SMALL, f"federation.num_clients={nodes}", f"run.dir={tmp_path}",
                                             *extra]))
    grid = LocalGrid(client_app, nodes, {"shuffle-key": KEY_HEX})
    return run_federation(grid, cfg, tmp_path), grid


def test_secagg_aggregate_equals_plain_fedavg_within_quantisation(tmp_path):
    plain, _ = _run(tmp_path / "plain", [])
    secure, _ = _run(tmp_path / "secagg", ["federation.secagg=true"])
    a, b = load_checkpoint(tmp_path / "plain" / "checkpoint")[1], load_checkpoint(tmp_path / "secagg" / "checkpoint")[1]
    facts = secure["rounds"][0]["secagg"]
    assert facts["clipped"] == 0 and facts["quantisation_bound"] < 1e-5
    assert set(b) == {k for k in a if not k.endswith("num_batches_tracked")}  # integer buffers stay on the clients
    worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in b)
    # every entry within the quantisation bound (plus float32 rounding of the stored arrays)
    assert worst <= facts["quantisation_bound"] + 1e-6, worst
    assert secure["rounds"][0]["train_loss"] == pytest.approx(plain["rounds"][0]["train_loss"], abs=1e-3)
    assert secure["secagg"]["per_client_attacks"] == PER_CLIENT_UNAVAILABLE == secure["per_client_attacks"]


def test_the_server_never_receives_an_individual_update(tmp_path, monkeypatch):
    means = []
    original = SecAggRound.aggregate_fit

    def spy(self, server_round, results, failures):
        means.append([r.parameters.tensors for _, r in results])
        return original(self, server_round, results, failures)

    def no_replies(*_):
        raise AssertionError("a SecAgg+ round must not hand replies to FedFaceAvg.aggregate_train")

    monkeypatch.setattr(SecAggRound, "aggregate_fit", spy)
    monkeypatch.setattr(FedFaceAvg, "aggregate_train", no_replies)
    res, grid = _run(tmp_path, ["federation.secagg=true", "federation.rounds=2", *MASKED])
    assert res["status"] == "done" and len(means) == 2
    assert all(r["secagg"]["server_received"] == SERVER_RECEIVED and len(r["secagg"]["members"]) == 3
               for r in res["rounds"])
    for results in means:  # every legacy result carries the one unmasked mean (secaggplus_workflow.py:652-656)
        assert len(results) == 3 and all(t == results[0] for t in results)
    train = [m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    assert len(train) == 2 * 3 * 4  # 2 rounds x 3 nodes x 4 SecAgg+ stages
    for reply in train:  # what reached the server: no array, no policy update, no per-client metrics
        assert all(len(rec) == 0 for rec in reply.content.array_records.values())
        assert POLICY_UPDATE not in reply.content and METRICS not in reply.content
        if "fitres.metrics" in reply.content.config_records:
            assert set(reply.content.config_records["fitres.metrics"]) == {SECAGG_CLIPPED}


def test_policy_gradient_sum_through_secagg_equals_the_sum_of_client_updates(tmp_path, monkeypatch):
    updates, secure = [], []
    train = ClientTask.train

    def record(self, arrays, server_round, *args, **kwargs):
        reply = train(self, arrays, server_round, *args, **kwargs)
        updates.append((server_round, copy.deepcopy(reply.policy_update)))
        return reply

    import strategies.strategy as strategy_module

    step = strategy_module.server_step

    def capture(policy, optimizer, ups, baseline, momentum):
        secure.append(copy.deepcopy(list(ups)))
        return step(policy, optimizer, ups, baseline, momentum)

    monkeypatch.setattr(ClientTask, "train", record)
    monkeypatch.setattr(strategy_module, "server_step", capture)
    res, _ = _run(tmp_path, ["federation.secagg=true", "federation.rounds=2", *MASKED])
    assert len(secure) == 2 and all(len(s) == 1 for s in secure)  # one summed update per round, nothing per client
    for rnd, (got,) in zip((1, 2), secure):
        want = merge_updates([u for r, u in updates if r == rnd])
        total = res["rounds"][rnd - 1]["secagg"]
        bound = total["quantisation_bound"] * total["total_examples"]  # error of a sum = N x error of the mean
        assert got.steps == want.steps and got.k_counts == want.k_counts
        assert got.reward_sum == pytest.approx(want.reward_sum, abs=16 * bound + 1e-6)
        for g, w in zip(got.grads, want.grads):
            assert float((g.double() - w.double()).abs().max()) <= bound + 1e-5
    assert any(float(g.abs().max()) > 0 for g in secure[1][0].grads)  # round 2 has a baseline: a real gradient


def test_a_client_dropping_out_is_unmasked_from_the_others_shares(tmp_path):
    """flwr's SecAgg+ recovers a dropped client's pairwise masks from its neighbours' shares; too many drops halt
    the round and the global model is kept (seeded injected failures: round 2 loses two nodes, round 3 one)."""
    res, _ = _run(tmp_path, ["federation.secagg=true", "federation.failure_prob=0.4", "federation.rounds=3"])
    r1, r2, r3 = res["rounds"]
    assert r1["received"] == 3 and not r1["failed"]
    assert r2["received"] == 0 and "halted" in r2["secagg"] and r2["train_loss"] is None
    assert r3["received"] == 2 and len(r3["failed"]) == 1 and "InjectedFailure" in r3["failed"][0]["reason"]
    assert r3["secagg"]["total_examples"] < r1["secagg"]["total_examples"]


def test_bad_secagg_configs_fail_naming_the_key(tmp_path):
    def prepare(*extra):
        return prepare_federation(compose_config([*SMALL, f"run.dir={tmp_path}", "federation.secagg=true", *extra]))

    with pytest.raises(ValueError, match="federation.min_train_nodes=1"):
        prepare("federation.min_train_nodes=1")
    with pytest.raises(ValueError, match="federation.dp=server_fixed"):
        prepare("federation.dp=server_fixed")
    with pytest.raises(ValueError, match="federation.secagg_params: unknown foo"):
        prepare("+federation.secagg_params.foo=1")
    with pytest.raises(ValueError, match="federation.secagg_params.modulus_range"):
        prepare("federation.secagg_params.modulus_range=1000")
    with pytest.raises(ValueError, match="attack=imprint"):
        prepare("attack=imprint")
    with pytest.raises(ValueError, match="federation.secagg_params.max_weight=2 is below the largest shard"):
        _run(tmp_path, ["federation.secagg=true", "federation.secagg_params.max_weight=2"])


# ------------------------------------------------------------------------------ the malicious server on the aggregate
ATTACK = ["attack.max_clients=1", "attack.threats=[{}]", "federation.local_steps=2",
          "train.batch_size=4", "federation.head=shared", "federation.secagg=true"]


def test_malicious_server_attacks_the_aggregate_and_records_per_client_attacks_unavailable(tmp_path, monkeypatch):
    from fedface.experiment.ground_truth import ENV_VAR

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "ground_truth"))  # the clients record what they trained on
    res, _ = _run(tmp_path, ["attack=gradient", "attack.gradient.iterations=5", *ATTACK, *MASKED, "federation.rounds=2",
                             "attack.max_rounds=2"])
    attacks = res["rounds"][1]["attacks"]  # round 2: the policy update is non-zero (a baseline exists)
    assert attacks[0]["skipped"] == PER_CLIENT_UNAVAILABLE and attacks[0]["target"] == "each client"
    on_sum = [a for a in attacks if a["node"] == "aggregate"]
    assert {a["attack"] for a in on_sum} == {"gradient", "policy"}
    nodes = sorted(LocalGrid(None, 3).contexts)
    for a in on_sum:
        assert a["members"] == nodes and "skipped" not in a, a
        assert "masked" in a["scores"]  # scored against the union of the members' recorded inputs
    assert (tmp_path / "attacks" / "round-2" / "node-aggregate" / "server.json").exists()


def test_gradient_attack_on_an_aggregate_above_the_memory_bound_is_skipped_saying_why(tmp_path, monkeypatch):
    from fedface.experiment.ground_truth import ENV_VAR

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "ground_truth"))
    res, _ = _run(tmp_path, ["attack=gradient", "attack.gradient.iterations=5", "attack.gradient.max_inputs=4",
                             *ATTACK, "mixup=none"])
    (grad,) = [a for a in res["rounds"][0]["attacks"] if a["node"] == "aggregate"]
    assert "above attack.gradient.max_inputs=4" in grad["skipped"] and "scores" not in grad


def test_model_inversion_of_the_aggregated_head_under_secagg(tmp_path):
    res, _ = _run(tmp_path, ["attack=inversion", *ATTACK, "attack.identities=2", "attack.inversion.steps=3"])
    attacks = res["rounds"][0]["attacks"]
    assert attacks[0]["skipped"] == PER_CLIENT_UNAVAILABLE
    (inv,) = [a for a in attacks if a["node"] == "aggregate"]
    assert inv["attack"] == "inversion" and len(inv["rows"]) == 2 and "centre_cos_mean" in inv


# ------------------------------------------------------------------------------------------------- compare grid
def test_compare_grid_runs_secagg_cells_labelled_on_every_table(tmp_path, monkeypatch):
    from fedface import compare
    from fedface.federation.secagg import THREAT_NOTE
    from fedface.report.schema import validate

    seen = []

    def execute(cell):  # stand-in for the cell's federation: records what each cell was configured with
        fed = cell["federation"]
        seen.append((cell["protection"], fed["federation"]["secagg"], fed["mixup"]["name"]))
        secagg_settings(fed["federation"])  # the demo federation (2 clients) is one SecAgg+ accepts
        rounds = [{"round": 1, "accuracy": 0.6, "train_loss": 1.0, "bytes_sent": 1000, "bytes_received": 1000,
                   "attacks": [{"attack": "gradient", "threat": "server", "skipped": None, "node": "aggregate",
                                "scores": {"masked": {"psnr": 20.0, "ssim": 0.5}}}]}]
        return {"rounds": rounds, "status": "done"}, None

    monkeypatch.setattr(compare, "_execute", execute)
    assert compare.PROTECTIONS_LATER == {}
    res = compare.run_compare(["experiment=demo", *SMALL, "federation.num_clients=2", "train.batch_size=4",
                               "compare.protections=[none,secagg,ppfr_fd+adamixup+secagg]",
                               "compare.attacks=[gradient]", f"compare.out={tmp_path / 'out'}"])
    validate(res)
    assert sorted(seen) == [("none", False, "none"), ("ppfr_fd+adamixup+secagg", True, "adaptive"),
                            ("secagg", True, "none")]
    notes = {s["protection"]: s.get("threat_note") for s in res["summary"]}
    assert notes == {"none": None, "secagg": THREAT_NOTE, "ppfr_fd+adamixup+secagg": THREAT_NOTE}
    text = (tmp_path / "out" / "table.md").read_text()
    assert f"secagg ({THREAT_NOTE})" in text and f"ppfr_fd+adamixup+secagg ({THREAT_NOTE})" in text
