import json
import math

import pytest
import torch
from test_cli import FAST

from fedface.cli import main
from fedface.data import load_faces
from fedface.mixup import PolicyNet, build_mixer, mix_weights, mixup, policy_optimizer, server_step
from fedface.models import build_backbone, build_head, count_parameters
from fedface.models.arcface import soft_targets
from fedface.protect import build_protection
from fedface.models.spec import InputSpec
from fedface.protect.keys import DEMO_KEY
from fedface.train import TrainConfig, train_local

FREQ = InputSpec(34, 14, 14)  # ppfr_fd's model_input
ADAPTIVE = {"name": "adaptive", "k_min": 2, "k_max": 4, "policy_width": 4}


def _batch(seed: int, b: int = 16) -> torch.Tensor:
    return torch.randn(b, *FREQ.shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("how", ["abs_normal", "dirichlet"])
@pytest.mark.parametrize("k", [2, 3, 6])
def test_weights_sum_to_one_and_stay_below_the_bound(k, how):
    w = mix_weights(512, k, 0.55, torch.Generator().manual_seed(k), torch.device("cpu"), how)
    assert w.shape == (512, k) and (w > 0).all() and w.amax().item() <= 0.55
    assert torch.allclose(w.sum(dim=1), torch.ones(512))


def test_labels_are_those_of_the_samples_actually_mixed():
    b, k = 12, 3
    x = torch.eye(b).view(b, b, 1, 1)  # sample i is the unit vector e_i: the mix shows who went in with what weight
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    mixed, y, c, _ = mixup(x, labels, k, torch.Generator().manual_seed(0))
    assert y.shape == c.shape == (b, k) and y.dtype == torch.long
    assert torch.equal(y[:, 0], labels)  # column 0 is the batch itself
    contributions = mixed.view(b, b)  # row i: weight of every batch sample in mixed sample i
    assert torch.allclose(contributions.sum(dim=1), torch.ones(b))
    assert torch.allclose(soft_targets(y, c, 5), contributions @ torch.nn.functional.one_hot(labels, 5).float())


def test_fixed_k_is_respected():
    mixer = build_mixer({"name": "fixed", "k": 3}, FREQ, 16)
    mixed, y, c, _ = mixer.mix(_batch(0), torch.arange(16), torch.Generator().manual_seed(0))
    assert mixed.shape == (16, *FREQ.shape) and y.shape == c.shape == (16, 3)
    assert mixer.k_counts == [1] and mixer.describe()["k"] == [3]


def test_same_seed_same_mix():
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)  # the policy's initial weights
        mixer = build_mixer(ADAPTIVE, FREQ, 16)
        outs.append(mixer.mix(_batch(0), torch.arange(16), torch.Generator().manual_seed(seed)))
    assert all(torch.equal(a, b) for a, b in zip(outs[0], outs[1]))
    assert not torch.equal(outs[0][2], outs[2][2])


@pytest.mark.parametrize("spec", [FREQ, InputSpec(1, 112, 112)])
def test_policy_pmf_and_size(spec):
    policy = PolicyNet(spec, 5)
    pmf = policy(torch.randn(4, *spec.shape)).exp()
    assert pmf.shape == (5,) and pmf.sum().item() == pytest.approx(1.0)
    assert count_parameters(policy) < 0.1 * count_parameters(build_backbone({"name": "fedface_net"}, spec))


@pytest.mark.parametrize("r", [3.0, -1.0])
def test_reinforce_moves_the_drawn_k_with_the_sign_of_its_advantage(r):
    torch.manual_seed(0)
    mixer = build_mixer(ADAPTIVE, FREQ, 16)
    mixer.baseline = 1.0
    x = _batch(0)
    before = mixer.policy(x).exp().detach()
    mixer.mix(x, torch.arange(16), torch.Generator().manual_seed(0))
    k = mixer.k_counts.index(1)
    mixer.observe(r)  # advantage r - b: +2 (the policy maximises the FR loss) or -2
    after = mixer.policy(x).exp().detach()
    assert mixer.policy_steps == 1 and mixer.baseline == pytest.approx(0.9 * 1.0 + 0.1 * r)
    assert (after[k] > before[k]) == (r > 1.0)


def test_client_server_split_equals_centralized_accumulation():
    torch.manual_seed(0)
    central = build_mixer({**ADAPTIVE, "policy_every": 4}, FREQ, 16)
    state = {k: v.clone() for k, v in central.policy.state_dict().items()}
    clients = [build_mixer(ADAPTIVE, FREQ, 16, apply_updates=False) for _ in range(2)]
    for mixer in (central, *clients):
        mixer.policy.load_state_dict(state)
        mixer.baseline = 2.0  # the server's baseline, sent with the weights
    steps = [(_batch(t), torch.Generator().manual_seed(t), 1.0 + t) for t in range(4)]
    for t, (x, g, r) in enumerate(steps):
        for mixer, gen in ((central, g), (clients[t // 2], torch.Generator().manual_seed(t))):
            mixer.mix(x, torch.arange(16), gen)
            mixer.observe(r)
    updates = [c.take_update() for c in clients]
    assert [u.steps for u in updates] == [2, 2] and sum(sum(u.k_counts) for u in updates) == 4
    server = PolicyNet(FREQ, 3, 4)
    server.load_state_dict(state)
    baseline = server_step(server, policy_optimizer(server, 1e-3), updates, 2.0, 0.9)
    assert central.policy_steps == 1 and baseline == pytest.approx(central.baseline)
    for a, b in zip(server.parameters(), central.policy.parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(server.parameters(), PolicyNet(FREQ, 3, 4).parameters()))


@pytest.mark.parametrize("cfg,needle", [
    ({"name": "adaptive", "k_min": 1}, "mixup.k_min=1 must be >= 2"),
    ({"name": "adaptive", "k_min": 4, "k_max": 3}, "mixup.k_max=3 must be >= mixup.k_min=4"),
    ({"name": "adaptive", "k_max": 20}, "mixup.k_max=20 must be <= train.batch_size=16"),
    ({"name": "fixed", "k": 1}, "mixup.k=1 must be >= 2"),
    ({"name": "fixed", "k": 2, "max_weight": 0.5}, "mixup.max_weight=0.5"),
    ({"name": "fixed", "kk": 2}, "mixup.kk"),
    ({"name": "mix"}, "mixup.name='mix'"),
])
def test_bad_config_names_the_key(cfg, needle):
    with pytest.raises(ValueError, match=needle):
        build_mixer(cfg, FREQ, 16)


def _tiny(protection, d):
    spec = protection.output_spec(112, 112)
    net = build_backbone({"name": "tiny"}, spec)
    return net, build_head({"head": {"s": 16.0, "m": 0.2}}, net.embedding_size, d.num_identities), spec


def test_train_local_with_adaptive_mixer_returns_the_k_histogram():
    torch.manual_seed(0)
    d = load_faces("synthetic", num_identities=8, images_per_identity=6)
    prot = build_protection("ppfr_fd", key=DEMO_KEY)
    net, head, spec = _tiny(prot, d)
    cfg = TrainConfig(epochs=1, batch_size=16)
    mixer = build_mixer(ADAPTIVE, spec, cfg.batch_size)
    res = train_local(net, head, prot, d.images, d.labels, cfg, torch.Generator().manual_seed(0), mixer=mixer)
    assert set(res.k_histogram) == {2, 3, 4} and sum(res.k_histogram.values()) == res.steps == 3
    assert mixer.policy_steps == 3 and mixer.baseline is not None and res.policy_update.steps == 0
    client = build_mixer(ADAPTIVE, spec, cfg.batch_size, apply_updates=False)
    res = train_local(net, head, prot, d.images, d.labels, cfg, torch.Generator().manual_seed(1), mixer=client)
    assert res.policy_update.steps == 3 and res.policy_update.k_counts == list(res.k_histogram.values())


def test_mixup_on_a_mixing_protection_is_refused():
    d = load_faces("synthetic", num_identities=8, images_per_identity=6)
    prot = build_protection("instahide")
    net, head, spec = _tiny(prot, d)
    with pytest.raises(ValueError, match="mixup=fixed on protect=instahide"):
        train_local(net, head, prot, d.images, d.labels, TrainConfig(steps=1, batch_size=16),
                    torch.Generator().manual_seed(0), mixer=build_mixer({"name": "fixed"}, spec, 16))


def test_cli_writes_the_mixup_facts(tmp_path):
    assert main(["train", *FAST, "protect=ppfr_fd", "mixup=adaptive", "mixup.k_max=4", "run.save_model=false",
                 f"run.dir={tmp_path}"]) == 0
    facts = json.loads((tmp_path / "results.json").read_text())["mixup"]
    assert facts["name"] == "adaptive" and facts["k"] == [2, 3, 4]
    assert sum(facts["k_proportion"]) == pytest.approx(1.0) and sum(facts["final_pmf"]) == pytest.approx(1.0)
    assert facts["policy_updates"] == 3 and facts["policy_parameters"] > 0


def test_target_entropy_is_the_soft_targets_entropy():
    from fedface.mixup.reward import target_entropy

    half = torch.full((4, 2), 0.5)
    assert target_entropy(torch.tensor([[0, 1]] * 4), half, 10) == pytest.approx(math.log(2), abs=1e-6)
    assert target_entropy(torch.tensor([[3, 3]] * 4), half, 10) == pytest.approx(0.0, abs=1e-6)  # merged label


def test_the_reference_floor_is_the_loss_of_an_embedding_orthogonal_to_every_centre():
    from fedface.models.arcface import ArcFace, soft_targets
    from fedface.mixup.reward import uninformed_loss

    head = ArcFace(8, 40, s=32.0, m=0.5)
    emb = torch.randn(6, 8)
    with torch.no_grad():  # every centre orthogonal to every embedding: centres in dims 0-3, embeddings in 4-7
        head.weight[:, 4:] = 0
        emb[:, :4] = 0
    labels, weights = torch.stack([torch.randperm(40)[:3] for _ in range(6)]), torch.full((6, 3), 1 / 3)
    loss = torch.nn.functional.cross_entropy(head(emb, labels, weights), soft_targets(labels, weights, 40))
    assert uninformed_loss(head, labels, weights) == pytest.approx(loss.item(), abs=1e-5)


@pytest.mark.parametrize("offset", ["reference", "entropy", "none"])
def test_a_reward_equal_for_every_k_leaves_the_policy_where_it_is(offset):
    """The loss a k-mix costs whatever FRNet reads (the offset's floor: the entropy of the soft target, or the loss
    of an uninformed embedding) plus a constant is no signal. Less that floor the reward is the same for every k and
    the policy stays uniform; with the literal loss (``none``) it drifts."""
    from fedface.models.arcface import ArcFace
    from fedface.mixup.reward import reward, reward_floor

    torch.manual_seed(0)
    mixer = build_mixer({**ADAPTIVE, "policy_lr": 0.1, "reward_offset": offset, "reward_weights": [1.0, 0.0]},
                        FREQ, 16)
    head, gen, x = ArcFace(8, 40, s=32.0), torch.Generator().manual_seed(0), _batch(0, b=8)
    for _ in range(40):
        mixed, y, c, _ = mixer.mix(x, torch.randperm(40)[:8], gen)
        floor = reward_floor("reference" if offset == "none" else offset, head, y, c)
        mixer.observe(reward(None, head, mixed, y, c, floor + 3.0, 0.1, (1.0, 0.0), offset))
    pmf = mixer.policy(x).exp().detach()
    if offset == "none":  # the floor's k-dependence and its batch-to-batch noise move the policy
        assert pmf.max() - pmf.min() > 0.5
    else:  # every reward is exactly 3: zero advantage from the first step on
        assert torch.allclose(pmf, torch.full_like(pmf, 1 / 3), atol=1e-4)


def test_renormalized_blends_have_a_test_faces_statistics():
    """mixup.renormalize: a blend of k per-image-normalised inputs has variance ~sum c^2 (0.5 at k=2); standardised
    again it has mean 0 and variance 1 per image, like the single faces the model is tested on."""
    from fedface.mixup.mix import mixup

    x = torch.randn(16, 4, 6, 6)
    x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True)
    raw, _, c, _ = mixup(x, torch.arange(16), 2, torch.Generator().manual_seed(0))
    renorm, _, c2, _ = mixup(x, torch.arange(16), 2, torch.Generator().manual_seed(0), renormalize=True)
    assert torch.equal(c, c2) and raw.var((1, 2, 3)).mean() < 0.8
    assert torch.allclose(renorm.mean((1, 2, 3)), torch.zeros(16), atol=1e-5)
    assert torch.allclose(renorm.var((1, 2, 3)), torch.ones(16), atol=1e-4)
