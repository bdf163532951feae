import math

import pytest
import torch

from fedface.models import ArcFace, build_backbone, build_head
from fedface.models.spec import InputSpec


def _head_with(centres, s=64.0, m=0.5, **kw):
    head = ArcFace(2, len(centres), s=s, m=m, **kw)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(centres))
    return head


def test_arcface_logits_match_hand_computation():
    # embedding along x; centre 0 at angle 0.3 rad, centre 1 at pi/2
    head = _head_with([[math.cos(0.3), math.sin(0.3)], [0.0, 3.0]])  # norms do not matter: both are normalised
    emb = torch.tensor([[2.0, 0.0]])
    logits = head(emb, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(0.3 + 0.5), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(0.0, abs=1e-4)
    logits = head(emb, torch.tensor([1]))
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(0.3), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(64 * math.cos(math.pi / 2 + 0.5), abs=1e-4)


def test_arcface_fallback_past_pi_and_easy_margin():
    theta = 2.9  # theta + m > pi: insightface's fallback cos(theta) - m*sin(m)
    head = _head_with([[math.cos(theta), math.sin(theta)]], s=1.0)
    out = head(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert out.item() == pytest.approx(math.cos(theta) - 0.5 * math.sin(0.5), abs=1e-5)
    easy = _head_with([[math.cos(theta), math.sin(theta)]], s=1.0, easy_margin=True)
    assert easy(torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(math.cos(theta), abs=1e-5)


def test_arcface_is_finite_at_the_poles():
    head = _head_with([[1.0, 0.0], [-1.0, 0.0]])
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    logits = head(emb, torch.tensor([0, 0]))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0])).backward()
    assert torch.isfinite(logits).all() and torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("name,spec,stem", [
    ("tiny", InputSpec(1, 112, 112), "pixel"),
    ("tiny", InputSpec(35, 14, 14), "freq_native"),
    ("tiny", InputSpec(34, 14, 14), "freq_upsample"),
    ("fedface_net", InputSpec(1, 112, 112), "pixel"),
    ("fedface_net", InputSpec(34, 14, 14), "freq_native"),
])
def test_backbones_share_the_trunk_and_differ_only_in_the_stem(name, spec, stem):
    cfg = {"name": name, "stem": "auto" if stem != "freq_upsample" else stem}
    net = build_backbone(cfg, spec).eval()
    assert net.stem.kind == stem
    out = net(torch.randn(2, *spec.shape))
    assert out.shape == (2, net.embedding_size)
    raw = build_backbone({"name": name}, InputSpec(1, 112, 112))
    assert [p.shape for p in net.trunk.parameters()] == [p.shape for p in raw.trunk.parameters()]


def test_iresnet18_builds_at_full_resolution():
    net = build_backbone({"name": "iresnet18", "width": 0.25}, InputSpec(1, 112, 112)).eval()
    assert net(torch.randn(1, 1, 112, 112)).shape == (1, 128)


def test_wrong_channel_count_names_stem_and_expected_shape():
    net = build_backbone({"name": "tiny"}, InputSpec(35, 14, 14))
    with pytest.raises(ValueError, match=r"freq_native.*\(B, 35, 14, 14\)"):
        net(torch.randn(2, 34, 14, 14))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="known: .*fedface_net"):
        build_backbone({"name": "resnet9000"}, InputSpec(1, 112, 112))


def test_head_config():
    head = build_head({"head": {"s": 32, "m": 0.4}}, 16, 7)
    assert head.num_classes == 7 and head.s == 32 and head.m == 0.4


def test_mixup_arcface_matches_algorithm_1_by_hand():
    # paper 001 Algorithm 1 with k = 2: out = sum_i c_i (fc + onehot(y_i)(cos(theta_i + m) - cos theta_i)), times s
    a0, a1, a2 = 0.4, 1.0, 2.0  # angles of three class centres to the embedding (x axis)
    centres = [[math.cos(a), math.sin(a)] for a in (a0, a1, a2)]
    head = _head_with(centres, s=10.0, m=0.3)
    emb = torch.tensor([[1.0, 0.0]])
    logits = head(emb, torch.tensor([[0, 2]]), torch.tensor([[0.55, 0.45]]))
    expected = [10 * (math.cos(a0) + 0.55 * (math.cos(a0 + 0.3) - math.cos(a0))),
                10 * math.cos(a1),
                10 * (math.cos(a2) + 0.45 * (math.cos(a2 + 0.3) - math.cos(a2)))]
    assert logits[0].tolist() == pytest.approx(expected, abs=1e-4)
    # the loss is one cross-entropy of those logits against the weighted one-hot target
    from fedface.models.arcface import soft_targets

    target = soft_targets(torch.tensor([[0, 2]]), torch.tensor([[0.55, 0.45]]), 3)
    loss = torch.nn.functional.cross_entropy(logits, target)
    logp = torch.log_softmax(torch.tensor([expected]), 1)[0]
    assert loss.item() == pytest.approx(-(0.55 * logp[0] + 0.45 * logp[2]).item(), abs=1e-4)
    # k = 1 with weight 1 is plain ArcFace
    plain = head(emb, torch.tensor([2]))
    assert torch.allclose(head(emb, torch.tensor([[2]]), torch.tensor([[1.0]])), plain)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_embedding_bias_is_arcface_torchs_unless_switched_off(norm):
    """model.embedding_bias=false: no learnt bias on the embedding, so a training batch of embeddings has mean zero
    (BatchNorm) -- the shared direction the collapsed LFW runs grew to norm ~10 cannot exist. Default: arcface_torch's
    layout, scale fixed at 1 and a learnt bias."""
    spec = InputSpec(1, 112, 112)
    centred = build_backbone({"name": "tiny", "norm": norm, "embedding_bias": False}, spec).train()
    assert not any(n.startswith("trunk.features") for n, _ in centred.named_parameters())
    if norm == "batch":
        assert centred(torch.randn(16, 1, 112, 112)).mean(0).abs().max() < 1e-4
    default = build_backbone({"name": "tiny", "norm": norm}, spec)
    assert [n for n, p in default.named_parameters() if n.startswith("trunk.features") and p.requires_grad] == \
        ["trunk.features.bias"]
