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
