"""Malicious server I: label inference, the differentiable replay, exact replay from the seed, the wrapper strategy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.client_app import app as client_app
from conftest import needs_data
from fedface.experiment.ground_truth import ENV_VAR as GT_ENV
from fedface.attacks.gradient import InversionConfig, Plan, infer_labels, invert, idlg_label
from fedface.attacks.replay import LossModel, Optimiser, Step, state_of, trainable_names, unroll
from fedface.config import compose_config
from fedface.federation.checkpoint import load_checkpoint
from fedface.federation.client import ClientTask, client_seed
from fedface.federation.params import federated_state, load_federated_state
from fedface.federation.setup import prepare_federation
from fedface.mixup import build_mixer
from fedface.models import build_backbone, build_head
from fedface.models.convnet import ConvNet
from fedface.protect import build_protection
from fedface.train import TrainConfig, train_local
from strategies.server_loop import run_federation
from tests.local_grid import LocalGrid

TINY = {"name": "tiny", "width": 1.0, "embedding_size": 64, "stem": "auto", "dropout": 0.0,
        "head": {"s": 64.0, "m": 0.5, "easy_margin": False}}
SMALL = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
         "data.pairs.per_fold=6", "model=tiny", "train.batch_size=4", "federation.num_clients=3",
         "federation.rounds=2", "federation.min_train_nodes=1", "federation.local_steps=2",
         "federation.head=shared"]
ATTACK = ["attack=gradient", "attack.gradient.iterations=5", "attack.max_clients=1"]


def _model(protect: str = "none", classes: int = 6):
    torch.manual_seed(0)
    protection = build_protection({"name": protect, **({"keep": 36, "drop_dc": True} if protect == "fr_fd" else {})},
                                  None)
    backbone = build_backbone(TINY, protection.output_spec(112, 112))
    return protection, backbone, build_head(TINY, backbone.embedding_size, classes)


@pytest.mark.parametrize("seed", range(5))
def test_label_inference_finds_the_batch_classes_of_an_arcface_head(seed):
    """Constructed case: scale s = 8, where an untrained head spreads its softmax (absent rows get small pushes).
    At s = 64 an untrained head's softmax peaks on arbitrary classes and the rule loses precision (docs/attacks.md)."""
    protection, backbone, _ = _model()
    head = build_head({**TINY, "head": {"s": 8.0, "m": 0.5}}, backbone.embedding_size, 20)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (4, 112, 112), dtype=torch.uint8, generator=gen)
    classes = torch.randperm(20, generator=gen)[:2]
    before = head.weight.detach().clone()
    train_local(backbone, head, protection, images, classes.repeat(2), TrainConfig(steps=1, batch_size=4, lr=0.1),
                torch.Generator().manual_seed(0))
    assert infer_labels(before, head.weight.detach(), max_labels=4) == sorted(classes.tolist())


def test_idlg_label_rule_on_a_softmax_classifier():
    torch.manual_seed(0)
    net = ConvNet(num_classes=10)
    start = state_of(net)
    x = torch.rand(1, 1, 112, 112) * 2 - 1
    after = unroll(net, start, [Step(x, torch.tensor([6]), None, 0.1)], Optimiser(0, 0, 0), create_graph=False)
    assert idlg_label(after["fc.bias"] - start["fc.bias"]) == [6]
    # four samples of distinct classes, four local steps (the fixture's FedAvg case)
    x, y = torch.rand(4, 1, 112, 112) * 2 - 1, torch.tensor([8, 1, 6, 3])
    after = unroll(net, start, [Step(x, y, None, 0.1)] * 4, Optimiser(0, 0, 0), create_graph=False)
    assert idlg_label(after["fc.bias"] - start["fc.bias"], count=4) == [1, 3, 6, 8]


@pytest.mark.parametrize("mixup", ["none", "fixed"])
def test_unroll_reproduces_the_clients_training_on_the_same_model_inputs(mixup):
    protection, backbone, head = _model("fr_fd")
    model = LossModel(backbone, head)
    start = state_of(model)
    mixer = build_mixer({"name": mixup, "k": 2}, protection.output_spec(112, 112), 4) if mixup != "none" else None
    cfg = TrainConfig(steps=3, batch_size=4, lr=0.05, schedule="constant")
    record = []
    train_local(backbone, head, protection, torch.randint(0, 256, (12, 112, 112), dtype=torch.uint8),
                torch.arange(12) % 6, cfg, torch.Generator().manual_seed(1), mixer=mixer, record=record)
    steps = [Step(r.mixed if r.mixed is not None else r.model_input,
                  r.mix_labels if r.mix_labels is not None else r.labels, r.mix_weights, r.lr) for r in record]
    replayed = unroll(LossModel(*_model("fr_fd")[1:]), start, steps, Optimiser.of(cfg), create_graph=False)
    trained = state_of(model)
    # float32 reassociation leaves up to ~5e-5 (BN over a batch of 4); a replay 1% off in lr is 1e-3 away
    assert all(torch.allclose(replayed[k].float(), trained[k].float(), atol=2e-4) for k in trained)
    assert not torch.allclose(trained["head.weight"], start["head.weight"])  # training did move the weights


def test_replay_from_true_data_and_the_clients_seed_gives_the_returned_weights_exactly():
    cfg = prepare_federation(compose_config(SMALL))
    task = ClientTask(cfg, 1, 3, None)
    sent = federated_state(task.backbone, task.head)
    reply = task.train(sent, server_round=2, round_cfg={"lr": 0.07, "schedule": "constant", "steps": 2})
    # the attacker's replay: a fresh model, the sent weights, the configured hyper-parameters, the client's seed
    backbone = build_backbone(cfg["model"], task.protection.output_spec(112, 112))
    head = build_head(cfg["model"], backbone.embedding_size, int(cfg["federation"]["num_classes"]))
    load_federated_state(backbone, head, sent)
    tcfg = TrainConfig(**{**TrainConfig.from_cfg(cfg["train"]).__dict__, "lr": 0.07, "schedule": "constant",
                          "steps": 2})
    train_local(backbone, head, build_protection(cfg["protect"], None), task.images, task.labels, tcfg,
                torch.Generator().manual_seed(client_seed(int(cfg["seed"]), 2, 1)))
    replayed = federated_state(backbone, head)
    assert replayed.keys() == reply.arrays.keys()
    assert all(np.array_equal(replayed[k], reply.arrays[k]) for k in replayed)


def test_gradient_inversion_recovers_a_single_image_of_a_small_convnet():
    """DLG's setting in miniature (the full fixture is scripts/diagnostics/attack_fixture.py): LeNet with DLG's uniform init,
    one 16 x 16 image, L2 matching by L-BFGS."""
    torch.manual_seed(0)
    net = ConvNet(size=16, num_classes=4, width=12)
    for p in net.parameters():
        torch.nn.init.uniform_(p, -0.5, 0.5)
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    start, opt = state_of(net), Optimiser(0, 0, 0)
    after = unroll(net, start, [Step(x, torch.tensor([2]), None, 0.1)], opt, create_graph=False)
    target = {n: after[n] - start[n] for n in trainable_names(net)}
    plan = Plan([torch.arange(1)], [0.1], hard=torch.tensor(idlg_label(target["fc.bias"])))
    rec = invert(net, start, target, plan, (1, 16, 16), opt,
                 InversionConfig(method="dlg", optimizer="lbfgs", iterations=40, max_seconds=120),
                 project=lambda v: v.clamp(-1, 1))
    psnr = 10 * torch.log10(4 / (rec.x - x).square().mean())
    assert psnr > 25, f"PSNR {psnr:.1f} dB"


def test_an_attack_stops_at_max_seconds_and_reports_a_partial_result():
    protection, backbone, head = _model()
    model = LossModel(backbone, head)
    start = state_of(model)
    x = torch.rand(4, 1, 112, 112) * 2 - 1
    steps = [Step(x, torch.tensor([0, 1, 2, 3]), None, 0.1)]
    after = unroll(model, start, steps, Optimiser(), create_graph=False)
    target = {n: after[n] - start[n] for n in trainable_names(model)}
    rec = invert(model, start, target, Plan([torch.arange(4)], [0.1], hard=torch.tensor([0, 1, 2, 3])),
                 (1, 112, 112), Optimiser(), InversionConfig(iterations=10_000, max_seconds=0.5))
    assert rec.stopped == "max_seconds" and 1 <= rec.iterations < 10_000 and rec.x.shape == x.shape


def _run(tmp_path: Path, extra: list[str], monkeypatch) -> dict:
    monkeypatch.setenv(GT_ENV, str(tmp_path / "ground_truth"))
    cfg = prepare_federation(compose_config([*SMALL, f"run.dir={tmp_path}", *extra]))
    return run_federation(LocalGrid(client_app, 3), cfg, tmp_path)


def test_attacks_are_recorded_and_never_alter_the_aggregated_model(tmp_path, monkeypatch):
    honest = _run(tmp_path / "honest", [], monkeypatch)
    malicious = _run(tmp_path / "malicious", ATTACK, monkeypatch)
    a = load_checkpoint(tmp_path / "honest" / "checkpoint")[1]
    b = load_checkpoint(tmp_path / "malicious" / "checkpoint")[1]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert [r["accuracy"] for r in honest["rounds"]] == [r["accuracy"] for r in malicious["rounds"]]
    attacks = malicious["rounds"][0]["attacks"]
    assert {a["threat"] for a in attacks} == {"server", "knows_key"} and "attacks" not in malicious["rounds"][1]
    for a in attacks:
        assert a["iterations"] == 5 and 0 <= a["scores"]["labels"]["precision"] <= 1
        assert np.isfinite(a["scores"]["masked"]["psnr"])
    # protect=none: the recovered pictures are judged by identity too (the attack's own labels name the person)
    identity = attacks[0]["scores"]["identity"]
    assert identity["pairing"] == "the attack's own labels"
    assert "top1" in identity or "cos_unavailable" in identity
    assert "srra" in identity or "srra_unavailable" in identity
    # the same judge on the attacked faces themselves: what a perfect reconstruction would score (no PCA prior here)
    ceiling = attacks[0]["scores"]["ceiling"]
    assert set(ceiling) == {"truth"} and set(ceiling["truth"]) == set(identity) - {"pairing"}
    if "cos" in identity:  # the true faces are in the gallery: closer to their person than 5 iterations' noise
        assert ceiling["truth"]["cos"] > identity["cos"]
    folder = tmp_path / "malicious" / "attacks" / "round-1" / f"node-{attacks[0]['node']}"
    assert {p.name for p in folder.iterdir()} == {f"{t}.{e}" for t in ("server", "knows_key")
                                                  for e in ("json", "png", "safetensors")}  # no temp files left
    assert json.loads((folder / "server.json").read_text())["threat"] == "server"


def test_an_attack_lacking_what_it_needs_is_skipped_and_the_federation_goes_on(tmp_path, monkeypatch):
    monkeypatch.delenv(GT_ENV, raising=False)
    cfg = prepare_federation(compose_config([*SMALL, f"run.dir={tmp_path}", *ATTACK,
                                             "attack.threats=[{knows_seed: true}]", "federation.rounds=1"]))
    res = run_federation(LocalGrid(client_app, 3), cfg, tmp_path)
    assert res["status"] == "done"
    (attack,) = res["rounds"][0]["attacks"]
    assert "knows_seed" in attack["skipped"] and "ground truth" in attack["skipped"]


def test_an_unknown_attack_key_fails_before_any_round(tmp_path):
    with pytest.raises(ValueError, match="attack.gradient.iters"):
        prepare_federation(compose_config([*SMALL, "attack=gradient", "+attack.gradient.iters=3"]))


def test_a_local_head_is_optimised_jointly(tmp_path, monkeypatch):
    res = _run(tmp_path, [*ATTACK, "federation.head=local", "federation.rounds=1",
                          "attack.threats=[{}]"], monkeypatch)
    (attack,) = res["rounds"][0]["attacks"]
    assert attack["labels"] == "stand-in head" and attack["unknown_tensors"] >= 1 and "scores" in attack


def test_the_colluding_clients_key_gives_the_clients_shuffle1(monkeypatch):
    """``knows_key``: the white-box inversion must use the clients' Shuffle1. The clients parse FEDFACE_KEY's 64 hex
    digits as 32 bytes; the scorer once took the 64 characters, i.e. another permutation."""
    from fedface.experiment.keys import colluders_key
    from fedface.freq import shuffle1_permutation
    from fedface.protect.keys import load_key

    monkeypatch.setenv("FEDFACE_KEY", "3c" * 32)
    clients = shuffle1_permutation(load_key(None), 35)
    assert torch.equal(shuffle1_permutation(colluders_key("ppfr_fd", knows_key=True), 35), clients)
    assert colluders_key("ppfr_fd", knows_key=False) is None


def test_ground_truth_reaches_only_the_threats_that_grant_it(tmp_path, monkeypatch):
    """The scorer reads the clients' recorded steps; the attack itself gets them only under knows_labels/knows_seed
    (labelled upper bounds), never as the plain server or the colluding-key variant."""
    import fedface.experiment.scoring as scoring

    seen = {}
    real = scoring.attack_update

    def spy(obs, run_cfg, icfg, threat, structure=None, generative=None):
        seen[threat.label] = structure is not None
        return real(obs, run_cfg, icfg, threat, structure, generative)

    monkeypatch.setattr(scoring, "attack_update", spy)
    res = _run(tmp_path, [*ATTACK, "federation.rounds=1",
                          "attack.threats=[{}, {knows_key: true}, {knows_labels: true}]"], monkeypatch)
    assert res["status"] == "done"
    assert seen == {"server": False, "knows_key": False, "knows_labels": True}


def test_clients_train_from_the_weights_the_server_sends(tmp_path, monkeypatch):
    """With train.lr=0 a client's returned weights are exactly the ones it was sent: a client that trained from its
    own initialisation (ignoring the server's model) would return others."""
    from strategies.server_loop import initial_model

    res = _run(tmp_path, ["train.lr=0", "federation.rounds=1", "federation.head=shared"], monkeypatch)
    cfg = prepare_federation(compose_config([*SMALL, f"run.dir={tmp_path}", "train.lr=0", "federation.rounds=1",
                                             "federation.head=shared"]))
    sent, _ = initial_model(cfg)
    final = load_checkpoint(tmp_path / "checkpoint")[1]
    weights = [k for k in sent if k.endswith(".weight") and sent[k].ndim >= 2]
    assert res["status"] == "done" and weights
    for k in weights:  # FedAvg of three equal float32 copies, in float64: equal to rounding
        np.testing.assert_allclose(final[k], sent[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_ggl_recovers_a_face_its_prior_has_seen():
    """Generative gradient leakage (GGL): search the latent of a face generator learned on the attacker's aux faces.
    A face of the prior's own training set, batch 1, no protection (a GroupNorm trunk: a batch of one trains), one
    SGD step, known label: the generated face reaches >= 20 dB."""
    from fedface.attacks.gradient import Generative
    from fedface.attacks.inversion import FacePrior
    from fedface.data.synthetic import synthetic_faces

    aux = synthetic_faces(num_identities=16, images_per_identity=4, seed=3).images  # (64, 112, 112) uint8
    prior = FacePrior(aux, components=32, seed=0)
    face = aux[5:6, None].float() / 127.5 - 1  # the client's picture, standardised as protect=none does
    torch.manual_seed(0)
    backbone = build_backbone({**TINY, "norm": "group"}, build_protection("none").output_spec(112, 112))
    model = LossModel(backbone, build_head(TINY, backbone.embedding_size, 6))
    start, opt = state_of(model), Optimiser(0, 0, 0)
    after = unroll(model, start, [Step(face, torch.tensor([2]), None, 0.1)], opt, create_graph=False)
    target = {n: after[n] - start[n] for n in trainable_names(model)}
    generative = Generative(prior.decode, prior.components, lambda faces: faces)
    rec = invert(model, start, target, Plan([torch.arange(1)], [0.1], hard=torch.tensor([2])), (1, 112, 112), opt,
                 InversionConfig(iterations=100, lr=0.1, latent_weight=1e-3, max_seconds=120), generative=generative)
    psnr = 10 * torch.log10(255.0 ** 2 / (rec.pictures - (face + 1) * 127.5).square().mean())
    assert psnr >= 20, f"PSNR {psnr:.1f} dB"
    assert torch.allclose(rec.x, prior.decode(rec.latent))  # the model input is the generated face itself


def test_the_pca_priors_fit_is_the_best_picture_it_can_draw():
    """``FacePrior.fit``: a face the prior can draw comes back exactly; any other face is fitted at least as well as
    by the mean face (the identity ceiling of GGL with this prior, ``scoring.identity_ceilings``)."""
    from fedface.attacks.inversion import FacePrior
    from fedface.data.synthetic import synthetic_faces

    aux = synthetic_faces(num_identities=16, images_per_identity=4, seed=3).images
    prior = FacePrior(aux, components=16, seed=0)
    z = 0.1 * torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(prior.fit(prior.decode(z)), z, atol=1e-4)
    other = synthetic_faces(num_identities=4, images_per_identity=2, seed=9).images[:, None].float() / 127.5 - 1
    fitted = prior.decode(prior.fit(other))
    mean = prior.decode(torch.zeros(len(other), 16))
    assert (fitted - other).square().mean() < (mean - other).square().mean()


def test_a_gan_prior_that_was_never_trained_is_one_line_naming_the_cache(tmp_path):
    from fedface.attacks.gradient import generative_prior
    from fedface.experiment.generators import attack_gan_prior

    aux = torch.zeros(8, 112, 112, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"attack.cache=.*`fedface prior`"):
        attack_gan_prior(aux, {}, str(tmp_path))
    with pytest.raises(ValueError, match="needs the trained GAN prior"):  # the attack itself reads no disk
        generative_prior(InversionConfig(prior="gan"), aux, build_protection("none"), 0)


@pytest.mark.parametrize("threat", [{}, {"knows_key": True}])
def test_the_attackers_generator_masks_with_the_key_its_threat_grants(monkeypatch, threat):
    """GGL passes each generated face through the attacker's copy of the protection: its own key as the plain
    server, the clients' one only under knows_key."""
    from fedface.attacks.threat import ThreatModel
    from fedface.experiment import scoring
    from fedface.protect.keys import load_key

    monkeypatch.setenv("FEDFACE_KEY", "5a" * 32)
    faces = torch.rand(3, 112, 112) * 255
    monkeypatch.setattr(scoring, "attacker_aux", lambda *a: faces[:, None])
    run_cfg = {"data": {"name": "synthetic"}, "seed": 0, "protect": {"name": "ppfr_fd"}}
    generative, facts = scoring._generative(InversionConfig(prior="pca", components=2), run_cfg,
                                            ThreatModel(**threat), None)
    clients = build_protection("ppfr_fd", load_key(None))
    same = torch.equal(generative.to_input(faces[:1, None] / 127.5 - 1),
                       clients(faces[:1, None], generator=torch.Generator().manual_seed(0)))
    assert facts["prior"] == "pca" and same == bool(threat)


@needs_data("lfwa")
def test_fedface_prior_trains_the_gan_prior_the_attack_then_reads(tmp_path, capsys):
    """`fedface prior` trains GGL's GAN prior on the attacker's aux faces into attack.cache; the attack finds it
    (and never trains one itself)."""
    from fedface.attacks.gradient import generative_prior
    from fedface.cli import main
    from fedface.config import to_container
    from fedface.experiment.generators import attack_gan_prior
    from fedface.experiment.scoring import attacker_aux

    gan = [f"attack.gradient.gan.{k}={v}" for k, v in {"latent": 8, "size": 16, "width": 4, "steps": 2,
                                                         "batch_size": 4}.items()]
    args = ["data=orl", "attack.gradient.prior=gan", *gan, f"attack.cache={tmp_path}"]
    assert main(["prior", *args]) == 0 and "GAN prior (trained: 2 steps" in capsys.readouterr().out
    cfg = compose_config(["attack=gradient", *args])
    aux = attacker_aux(to_container(cfg.data), int(cfg.seed))[:, 0]
    icfg = InversionConfig.from_cfg(to_container(cfg.attack.gradient))
    gan, trained = attack_gan_prior(aux, icfg.gan, str(tmp_path))
    generative, facts = generative_prior(icfg, aux, build_protection("none"), 0, gan)
    assert facts["prior"] == "gan" and generative.dim == 8 and trained["steps"] == 2
    assert generative.decode(torch.zeros(2, 8)).shape == (2, 1, 112, 112)
    assert main(["prior", "data=orl", "attack.gradient.prior=pca"]) == 2  # nothing to train: one line, exit 2
