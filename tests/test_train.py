import pytest
import torch

from fedface.data import load_faces
from fedface.models import build_backbone, build_head
from fedface.protect import build_protection
from fedface.train import NonFiniteLossError, TrainConfig, train_local

CFG = TrainConfig(epochs=6, batch_size=32, lr=0.1, shift=2)


def _setup(seed=0):
    torch.manual_seed(seed)
    d = load_faces("synthetic", num_identities=8, images_per_identity=8, seed=1)
    prot = build_protection("none")
    net = build_backbone({"name": "tiny"}, prot.output_spec(112, 112))
    head = build_head({"head": {"s": 16.0, "m": 0.2}}, net.embedding_size, d.num_identities)
    return d, prot, net, head


def test_training_lowers_the_loss():
    d, prot, net, head = _setup()
    res = train_local(net, head, prot, d.images, d.labels, CFG, torch.Generator().manual_seed(0))
    assert res.steps == 6 * 2 and res.examples == 6 * 64
    assert res.epoch_losses[-1] < 0.7 * res.epoch_losses[0]


@pytest.mark.parametrize("cfg, expected", [(TrainConfig(epochs=2, batch_size=24), 4),  # 64 images: 24 + 24 an epoch
                                           (TrainConfig(epochs=2, batch_size=24, drop_last=False), 6),  # + 16
                                           (TrainConfig(steps=3, batch_size=100), 3)])
def test_planned_steps_are_the_steps_train_local_runs(cfg, expected):
    """A node's policy counts a round's local steps before training (planned_steps); it must be what runs."""
    from fedface.train.loop import planned_steps

    d, prot, net, head = _setup()
    res = train_local(net, head, prot, d.images, d.labels, cfg, torch.Generator().manual_seed(0))
    assert res.steps == planned_steps(cfg, len(d.labels)) == expected


def test_same_seed_same_weights():
    outs = []
    for _ in range(2):
        d, prot, net, head = _setup()
        train_local(net, head, prot, d.images, d.labels, TrainConfig(steps=3, batch_size=16),
                    torch.Generator().manual_seed(5))
        outs.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_nan_loss_is_one_clear_error():
    d, prot, net, head = _setup()
    with torch.no_grad():
        head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="epoch 0 step 0.*train.lr"):
        train_local(net, head, prot, d.images, d.labels, CFG, torch.Generator().manual_seed(0))


def test_empty_shard_and_unknown_train_key():
    d, prot, net, head = _setup()
    with pytest.raises(ValueError, match="empty shard"):
        train_local(net, head, prot, d.images[:0], d.labels[:0], CFG, torch.Generator())
    with pytest.raises(ValueError, match="train.epoch"):
        TrainConfig.from_cfg({"epoch": 3})


def _offsets(x: torch.Tensor, out: torch.Tensor) -> set[tuple[int, int]]:
    """The (dy, dx) translation (and flip) that maps each face of ``x`` onto ``out``, found by exhaustive search."""
    found = set()
    for a, b in zip(x, out):
        for img in (a, a.flip(-1)):
            for dy in range(-9, 10):
                for dx in range(-9, 10):
                    crop = (slice(max(dy, 0) + 9, 112 - max(-dy, 0) - 9), slice(max(dx, 0) + 9, 112 - max(-dx, 0) - 9))
                    moved = torch.roll(img, (dy, dx), dims=(-2, -1))
                    if torch.equal(moved[0][crop], b[0][crop]):
                        found.add((dy, dx))
    return found


def test_frequency_inputs_shift_by_whole_blocks_and_pixels_by_pixels():
    """``shift_grid=None``: a block-DCT input shifts on its protection's grid (whole blocks, edge padded; at shift=4
    only flips), a pixel input by pixels. The default ``shift_grid=1`` shifts every input by pixels (measured better)."""
    from fedface.train import augment_batch

    x = torch.randint(0, 256, (6, 112, 112), dtype=torch.uint8)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    on_grid = TrainConfig(shift=4, shift_grid=None)  # the protection's grid
    pixels = _offsets(x.unsqueeze(1).float(), augment_batch(x, on_grid, gen(), grid=1))
    assert pixels and all(max(abs(d) for d in o) <= 4 for o in pixels) and pixels != {(0, 0)}
    assert _offsets(x.unsqueeze(1).float(), augment_batch(x, on_grid, gen(), grid=8)) == {(0, 0)}
    blocks = _offsets(x.unsqueeze(1).float(), augment_batch(x, TrainConfig(shift=8, shift_grid=None), gen(), grid=8))
    assert blocks and all(d % 8 == 0 for o in blocks for d in o) and blocks != {(0, 0)}
    default = augment_batch(x, TrainConfig(shift=4), gen(), grid=8)  # shift_grid=1: pixel shifts for every input
    assert torch.equal(default, augment_batch(x, on_grid, gen(), grid=1))
    edge = augment_batch(torch.full((4, 112, 112), 200, dtype=torch.uint8), TrainConfig(shift=8, shift_grid=None),
                         gen(), grid=8)
    assert (edge == 200).all()  # edge padding: no black border that test images never have


def test_protections_declare_their_grid():
    from fedface.protect import build_protection

    assert build_protection("none").grid == 1 and build_protection("fr_fd").grid == 8
    assert build_protection("ppfr_fd", key=b"k" * 32).grid == 8
    assert build_protection({"name": "obfuscator", "upscale": 1}).grid == 8
    assert build_protection("obfuscator").grid == 1  # 8x upscaled: a one-pixel shift moves a whole block
    assert build_protection({"name": "instahide", "domain": "freq"}).grid == 8


def test_margin_warms_up_over_the_run_and_rounds():
    """train.margin_warmup: the head trains with no margin at step 0 (normalised softmax) and the full m from the
    end of the warm-up on; federated, one value per round, the one the server sends and the attack replays."""
    from fedface.train.loop import margin_scale, round_margin_scale

    d, prot, net, head = _setup()
    seen = []
    original = head.margin_cos
    head.margin_cos = lambda cos: (seen.append(head.margin_scale), original(cos))[1]
    train_local(net, head, prot, d.images, d.labels, TrainConfig(steps=8, batch_size=16, margin_warmup=0.5),
                torch.Generator().manual_seed(0))
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    cos = torch.tensor([[0.3, -0.2], [0.9, 0.1]])
    head.margin_scale = 0.0
    assert torch.equal(head.margin_cos(cos), cos)  # no margin: ArcFace's logits are s·cos θ
    head.margin_scale = 1.0
    assert (head.margin_cos(cos) < cos).all()
    cfg = {"train": {"margin_warmup": 0.25}, "federation": {"rounds": 8}}
    assert [round_margin_scale(cfg, r) for r in (1, 2, 3, 4)] == [0.0, 0.5, 1.0, 1.0]
    assert margin_scale(0.0, 0.0) == 1.0
