"""Malicious server III: model inversion (fedface/attacks/inversion.py) and malicious weights (imprint.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fedface.attacks import imprint
from fedface.models.trap import Imprinted, ImprintLayer
from fedface.attacks.inversion import (BNStatistics, FacePrior, InversionConfig, head_scores, invert_centres,
                                       invert_statistics)
from fedface.models import build_backbone, build_head
from fedface.protect import build_protection, input_spec
from fedface.models.spec import InputSpec
from fedface.train.loop import TrainConfig, train_local


def _toy(seed: int = 0) -> nn.Module:
    """A toy face model with BatchNorm on 1 x 32 x 32 inputs, its running statistics set on random batches."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1),
                          nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 16))
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.rand(16, 1, 32, 32) * 2 - 1)
    return model.eval()


def test_inversion_raises_target_class_score():
    model = _toy()
    with torch.no_grad():  # 4 class centres (ArcFace rows): mean embeddings of 4 "identities" of 8 images each
        faces = torch.rand(4, 1, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
        centres = model((faces + 0.3 * torch.randn(4, 8, 1, 32, 32)).clamp(-1, 1).flatten(0, 1)).view(4, 8, -1)
        centres = centres.mean(1)
        centres = centres - centres.mean(0)  # a trained head's rows spread around the origin
    with torch.no_grad():
        start = head_scores(centres, model(torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
                                           * 2 - 1))
    cfg = InversionConfig(steps=80, lr=0.2, bn=1e-4, prior="free", jitter=0, flip=False, scale=1, seed=1)
    out = invert_centres(model, centres, (1, 32, 32), cfg)
    with torch.no_grad():
        end = head_scores(centres, model(out["model_inputs"]))
    own = torch.arange(4)
    assert (end[own, own] > start[own, own] + 0.1).all(), (start.diag(), end.diag())
    assert (end.argmax(1) == own).all()  # every inversion is classified as its target class
    assert out["bn_layers"] == 2 and out["curve"][-1] > out["curve"][0]


def test_inversion_leaves_the_model_untouched_and_restores_mode():
    model = _toy()
    model.train()
    model[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prior = FacePrior((torch.rand(40, 32, 32) * 255).to(torch.uint8), components=8)
    invert_centres(model, torch.randn(2, 16), (1, 32, 32), InversionConfig(steps=3, seed=0), prior=prior)
    invert_statistics(model, 2, (1, 32, 32), InversionConfig(steps=3, prior="free"))
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_masked_space_inversion_through_a_protection():
    """PPFR-FD: the optimised picture goes through the attacker's copy of the protection (differentiable)."""
    cfg = {"name": "ppfr_fd"}
    spec = input_spec(cfg)
    backbone = build_backbone({"name": "tiny"}, spec).eval()
    protection = build_protection(cfg, b"k" * 32).eval()
    centres = torch.randn(2, backbone.embedding_size)
    out = invert_centres(backbone, centres, (1, 112, 112), InversionConfig(steps=15, lr=0.1, bn=0, prior="free"),
                         through=lambda x, g: protection((x + 1) * 127.5, generator=g))
    assert out["inputs"].shape == (2, 1, 112, 112) and out["model_inputs"].shape == (2, *spec.shape)
    assert out["curve"][-1] > out["curve"][0]
    free = invert_centres(backbone, centres, spec.shape, InversionConfig(steps=3, bn=0))  # standardised channels
    x = free["inputs"]
    assert torch.allclose(x.mean(dim=(2, 3)), torch.zeros(2, spec.channels), atol=1e-4)


def test_bn_statistics_loss_zero_at_running_stats():
    bn = nn.BatchNorm2d(3)
    bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    model = nn.Sequential(bn).eval()
    hooks = BNStatistics(model)
    x = torch.randn(64, 3, 8, 8)
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), unbiased=False, keepdim=True)
    model(x * bn.running_var.sqrt()[None, :, None, None] + bn.running_mean[None, :, None, None])
    assert float(hooks.pop()) < 1e-4
    model(torch.randn(8, 3, 8, 8))
    assert float(hooks.pop()) > 0.5
    hooks.close()


def test_imprint_recovers_inputs_exactly_on_a_constructed_case():
    """Robbing the fed: one input per bin -> the gradient ratio is the input itself."""
    shape = (1, 8, 8)
    torch.manual_seed(0)
    x = torch.randn(4, *shape)
    w = torch.zeros(64)
    w[0] = 1.0  # measurement = the first pixel; construct inputs with distinct, well separated values
    x[:, 0, 0, 0] = torch.tensor([-3.0, -1.0, 1.0, 3.0])
    trap = ImprintLayer(shape, w, torch.tensor([-10.0, -2.0, 0.0, 2.0]), torch.randn(64))
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    model = nn.Sequential(trap, body)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    cands, bins = imprint.recover(trap.weight.grad, trap.bias.grad, shape)
    assert bins == [0, 1, 2, 3]
    assert torch.allclose(cands, x, atol=1e-5)
    assert imprint.recovery_rate(cands, x)["rate"] == 1.0


def test_imprint_through_an_honest_client_update():
    """The client's own train_local (one SGD step, momentum, weight decay, clipping) on trap + backbone: the server
    reads its (augmented, standardised) inputs from the update alone."""
    shape = (1, 112, 112)
    torch.manual_seed(0)
    backbone = build_backbone({"name": "tiny"}, InputSpec(*shape))
    aux = torch.rand(300, *shape) * 2 - 1
    trap = imprint.build_trap(shape, aux, bins=128, seed=0)
    model = imprint.malicious_model(backbone, trap, malicious_weights=True)
    head = build_head({}, model.embedding_size, 4)
    sent = {k: v.clone() for k, v in model.trap.state_dict().items()}
    cfg = TrainConfig(steps=1, batch_size=4, lr=0.1, shift=0)  # shifts pad with black: off the aux statistics
    record: list = []
    images = (torch.rand(4, 112, 112) * 255).to(torch.uint8)
    train_local(model, head, build_protection("none"), images, torch.arange(4), cfg, torch.Generator().manual_seed(3),
                record=record)
    gw, gb = imprint.trap_gradients(sent, model.trap.state_dict(), cfg.lr, cfg.weight_decay)
    cands, _ = imprint.recover(gw, gb, shape)
    rate = imprint.recovery_rate(cands, record[0].model_input)
    assert rate["rate"] == 1.0, rate


def test_honest_clients_unaffected_unless_malicious_weights():
    backbone = build_backbone({"name": "tiny"}, InputSpec(1, 112, 112))
    trap = imprint.build_trap((1, 112, 112), torch.rand(50, 1, 112, 112), bins=8)
    assert imprint.malicious_model(backbone, trap, malicious_weights=False) is backbone
    sent = imprint.malicious_model(backbone, trap, malicious_weights=True)
    assert sent is not backbone and isinstance(sent, Imprinted)
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(),
                                                 sent.backbone.state_dict().values()))
    with pytest.raises(ValueError, match="trap"):
        imprint.malicious_model(backbone, None, malicious_weights=True)


# --------------------------------------------------------------------------- end to end (slow, bounded)
FAST = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
        "data.pairs.per_fold=6", "data.aux=lfwa", "model=tiny", "train.epochs=1", "train.batch_size=16",
        "run.progress=false", "threads=1"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_invert_and_imprint_commands_end_to_end(tmp_path):
    """`fedface invert` on a finished (tiny, synthetic) run: rows scored, the model untouched, results labelled
    honest; `fedface imprint` labels its results malicious_weights and does nothing when the mode is off."""
    from conftest import data_root
    if data_root() is None or not (data_root() / "lfwa").is_dir():
        pytest.skip("LFW-a (the attacker's auxiliary faces) not found")
    import json

    from fedface.cli import main

    target = tmp_path / "target"
    assert main(["train", *FAST, f"run.dir={target}"]) == 0
    small = [f"attack.target={target}", "attack.identities=2", "attack.inversion.steps=3", "attack.decoder=null",
             "attack.cache=null", "run.progress=false", "threads=1"]
    assert main(["invert", *small, f"run.dir={tmp_path / 'inv'}"]) == 0
    res = json.loads((tmp_path / "inv" / "results.json").read_text())
    assert res["status"] == "done" and res["model_unchanged"] and res["malicious_weights"] is False
    attacks = {r["attack"] for r in res["rows"]}
    assert {"mean face (floor)", "class-centre", "BN statistics only"} <= attacks
    assert (tmp_path / "inv" / "grids").is_dir()
    gan = ["attack.inversion.prior=gan", "attack.inversion.gan.steps=3", "attack.inversion.gan.size=16",
           "attack.inversion.gan.width=4", f"attack.cache={tmp_path / 'cache'}"]
    assert main(["invert", *[o for o in small if not o.startswith("attack.cache=")], *gan,
                 "attack.backbone_only=false", f"run.dir={tmp_path / 'gan'}"]) == 0
    res = json.loads((tmp_path / "gan" / "results.json").read_text())
    assert res["prior"]["kind"] == "gan" and res["prior"]["steps"] == 3 and not res["prior"]["cached"]
    (centre,) = [r for r in res["rows"] if r["attack"] == "class-centre"]
    assert centre["prior"] == "gan" and "identity" in centre
    assert len(list((tmp_path / "cache").glob("gan-prior-*.safetensors"))) == 1
    assert main(["imprint", *small, "attack.imprint.clients=1", "attack.imprint.batch_size=4",
                 f"run.dir={tmp_path / 'imp'}"]) == 0
    imp = json.loads((tmp_path / "imp" / "results.json").read_text())
    assert imp["malicious_weights"] is True and imp["rows"] and imp["rows"][0]["batch"] == 4
    assert main(["imprint", *small, "attack.imprint.malicious_weights=false", f"run.dir={tmp_path / 'off'}"]) == 0
    off = json.loads((tmp_path / "off" / "results.json").read_text())
    assert off["malicious_weights"] is False and not off["rows"] and "skipped" in off
    from fedface.report.schema import IMPRINT, INVERT, describe, validate

    doc = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    for result, schema in ((res, INVERT), (imp, IMPRINT), (off, IMPRINT)):  # as the commands validated them
        validate(result, schema)
        assert describe(schema) in doc


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_invert_through_advface_on_a_groupnorm_backbone(tmp_path):
    """Backbone-only inversion through the attacker's own AdvFace copy (its shadow decoder fitted on the aux faces,
    under the no_grad of masking them) on the GroupNorm backbone that DP-SGD's comparison grid uses."""
    from conftest import data_root
    if data_root() is None or not (data_root() / "lfwa").is_dir():
        pytest.skip("LFW-a (the attacker's auxiliary faces) not found")
    import json

    from fedface.cli import main

    adv = ["protect=advface", "protect.iterations=2", "protect.shadow.steps=20", "protect.shadow.width=4",
           "model.norm=group"]
    target = tmp_path / "target"
    assert main(["train", *FAST, *adv, f"run.dir={target}"]) == 0
    assert main(["invert", f"attack.target={target}", "attack.identities=2", "attack.inversion.steps=3",
                 "attack.decoder=null", "attack.cache=null", "attack.threats=[{}]", "run.progress=false", "threads=1",
                 f"run.dir={tmp_path / 'inv'}"]) == 0
    res = json.loads((tmp_path / "inv" / "results.json").read_text())
    scored = {r["attack"] for r in res["rows"] if "skipped" not in r}
    assert res["status"] == "done" and res["model_unchanged"]
    assert {"BN statistics only", "aux-embedding inversion"} <= {a.split(" (")[0] for a in scored}


# --------------------------------------------------------------------------- inside the federation
FED = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
       "data.pairs.per_fold=6", "model=tiny", "train.batch_size=4", "federation.num_clients=3",
       "federation.rounds=2", "federation.min_train_nodes=1", "federation.local_steps=2", "federation.head=shared"]


def _federate(tmp_path, extra):
    from clients.client_app import app as client_app
    from fedface.config import compose_config
    from fedface.federation.setup import prepare_federation
    from strategies.server_loop import run_federation
    from tests.local_grid import LocalGrid

    cfg = prepare_federation(compose_config([*FED, f"run.dir={tmp_path}", *extra]))
    return run_federation(LocalGrid(client_app, 3), cfg, tmp_path)


def test_federated_inversion_is_recorded_and_never_alters_the_aggregated_model(tmp_path):
    import numpy as np

    from fedface.federation.checkpoint import load_checkpoint

    _federate(tmp_path / "honest", [])
    res = _federate(tmp_path / "malicious", ["attack=inversion", "attack.inversion.steps=3", "attack.identities=2",
                                             "attack.max_clients=1"])
    a = load_checkpoint(tmp_path / "honest" / "checkpoint")[1]
    b = load_checkpoint(tmp_path / "malicious" / "checkpoint")[1]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    (attack,) = res["rounds"][0]["attacks"]
    assert attack["attack"] == "inversion" and len(attack["rows"]) == 2 and "skipped" not in attack
    assert attack["malicious_weights"] is False and "attacks" not in res["rounds"][1]
    folder = tmp_path / "malicious" / "attacks" / "round-1" / f"node-{attack['node']}"
    assert {p.name for p in folder.iterdir()} == {"inversion.json", "inversion.safetensors"}


# --------------------------------------------------------------------------- malicious weights inside the federation
def _federate_grid(tmp_path, extra, monkeypatch):
    from clients.client_app import app as client_app
    from fedface.experiment.ground_truth import ENV_VAR as GROUND_TRUTH_ENV
    from fedface.config import compose_config
    from fedface.federation.setup import prepare_federation
    from fedface.runs import RunDir, RunLayout
    from strategies.server_loop import run_federation
    from tests.local_grid import LocalGrid

    monkeypatch.setenv(GROUND_TRUTH_ENV, str(RunLayout(tmp_path).ground_truth))  # what `fedface simulate` does
    monkeypatch.setenv("FEDFACE_KEY", "ab" * 32)  # the clients' federation key (the server never reads it)
    composed = compose_config([*FED, "data.aux=lfwa", f"run.dir={tmp_path}", *extra])
    RunDir(tmp_path, composed)  # config.yaml, as `fedface simulate` writes it
    cfg = prepare_federation(composed)
    grid = LocalGrid(client_app, 3)
    return run_federation(grid, cfg, tmp_path), grid


@pytest.mark.parametrize("protect", ["none", "ppfr_fd"])
def test_imprint_in_the_federation_traps_one_node_and_is_labelled(tmp_path, monkeypatch, protect):
    """attack=imprint: one node gets trap + one-step round in round 1 and its inputs come back (> 30 dB for
    protect=none; masked tensors for ppfr_fd); the run is labelled malicious_weights and names the trapped node; the
    other nodes compute exactly what they compute in an honest run; no trap in round 2."""
    from conftest import data_root
    if data_root() is None or not (data_root() / "lfwa").is_dir():
        pytest.skip("LFW-a (the server's auxiliary faces for the trap's thresholds) not found")
    import numpy as np

    from clients.records import ARRAYS

    over = [f"protect={protect}", "federation.head=local"]
    honest, hgrid = _federate_grid(tmp_path / "honest", over, monkeypatch)
    res, grid = _federate_grid(tmp_path / "trap", [*over, "attack=imprint"], monkeypatch)
    assert res["status"] == "done" and res["malicious_weights"] is True and honest["malicious_weights"] is False
    r1, r2 = res["rounds"][0], res["rounds"][1]
    (attack,) = r1["attacks"]
    assert r1["trap_node"] == attack["node"] and attack["malicious_weights"] and attack["aggregated"] is False
    assert "attacks" not in r2 and "trap_node" not in r2
    assert attack["batch"] == 4 and attack["candidates"] >= 1
    # docs/attacks.md "Malicious weights": 4 of 4 raw inputs; 2 of 4 masked tensors (per-image normalised PPFR-FD inputs
    # collide in the trap's bins more often)
    assert attack["recovered"] == (4 if protect == "none" else 2), attack
    assert "MASKED" in attack["space"] if protect == "ppfr_fd" else "MASKED" not in attack["space"]
    assert (tmp_path / "trap" / "attacks" / "round-1" / f"node-{attack['node']}" / "imprint.json").exists()
    # round 1 train replies (the first 3 replies with arrays): the untrapped nodes' equal the honest run's
    replies_h = [m for m in hgrid.sent if ARRAYS in m.content][:3]
    replies_t = [m for m in grid.sent if ARRAYS in m.content][:3]
    by_h = {m.metadata.src_node_id: m.content[ARRAYS] for m in replies_h}
    by_t = {m.metadata.src_node_id: m.content[ARRAYS] for m in replies_t}
    assert set(by_h) == set(by_t)
    for node in by_h:
        if node == attack["node"]:
            assert any(k.startswith("backbone.trap.") for k in by_t[node].keys())
            continue
        assert set(by_h[node].keys()) == set(by_t[node].keys())
        assert all(np.array_equal(by_h[node][k].numpy(), by_t[node][k].numpy()) for k in by_h[node].keys())
    assert not any(k.startswith("backbone.trap.") for m in [m for m in grid.sent if ARRAYS in m.content][3:]
                   for k in m.content[ARRAYS].keys())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_in_federation_inversions_are_checked_against_labels_and_scored_by_identity(tmp_path, monkeypatch):
    """attack=inversion with ground truth: each attacked reply's picked rows are checked against the classes the
    client trained on (row_precision), and `fedface invert` on the finished run scores every recorded inversion as
    a guess for its row's identity, with its own grid."""
    from conftest import data_root
    if data_root() is None or not (data_root() / "lfwa").is_dir():
        pytest.skip("LFW-a (the attacker's auxiliary faces) not found")
    import json

    from fedface.cli import main

    res, _ = _federate_grid(tmp_path / "run", ["attack=inversion", "attack.inversion.steps=3", "attack.identities=2",
                                               "attack.max_clients=2"], monkeypatch)
    attacks = res["rounds"][0]["attacks"]
    assert len(attacks) == 2
    shards = [set(a["own_classes"]) for a in attacks]
    assert shards[0] and shards[1] and not shards[0] & shards[1]  # identity shards are disjoint
    for a in attacks:
        assert a["row_is_own"] == [r in a["own_classes"] for r in a["rows"]]
        assert a["row_precision"] == sum(a["row_is_own"]) / 2
    assert main(["invert", f"attack.target={tmp_path / 'run'}", "attack.identities=2", "attack.inversion.steps=3",
                 "attack.decoder=null", "attack.cache=null", "attack.backbone_only=false", "run.progress=false",
                 "threads=1", f"run.dir={tmp_path / 'inv'}"]) == 0
    inv = json.loads((tmp_path / "inv" / "results.json").read_text())
    (row,) = [r for r in inv["rows"] if r["attack"] == "in-federation replies, round 1"]
    assert row["rows"] == [c for a in attacks for c in a["rows"]]
    assert row["nodes"] == sorted(a["node"] for a in attacks)
    assert row["row_precision"] == sum(a["row_precision"] for a in attacks) / 2
    assert "identity" in row and ("cos" in row["identity"] or "cos_unavailable" in row["identity"])
    assert (tmp_path / "inv" / "grids" / "none-in-federation-round-1.png").exists()
