"""The DCGAN face prior for model inversion (fedface/models/face_gan.py)."""
from __future__ import annotations

import pytest
import torch

from fedface.experiment.generators import gan_prior
from fedface.models.face_gan import GanConfig, Generator, faces_for, train_gan
from fedface.attacks.inversion import InversionConfig, head_scores, invert_centres

SMALL = {"latent": 8, "size": 16, "width": 8, "batch_size": 32, "lr": 1e-3}


def _blobs(n: int, seed: int = 0) -> torch.Tensor:
    """A simple picture family (N, 32, 32) in [0, 255]: a bright disc at a random height and width on a dark ground."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy, cx = (8 + 16 * torch.rand(2, n, generator=g)).unbind(0)
    disc = ((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) < 36
    return disc.float() * 220 + 20


def test_config_is_validated():
    with pytest.raises(ValueError, match="attack.inversion.gan.latnet"):
        GanConfig.from_cfg({"latnet": 8})
    with pytest.raises(ValueError, match="power of 2"):
        GanConfig.from_cfg({"size": 48})
    with pytest.raises(ValueError, match="attack.inversion.prior='glow'"):
        InversionConfig.from_cfg({"prior": "glow"})
    with pytest.raises(ValueError, match="attack.inversion.gan.width "):
        InversionConfig.from_cfg({"prior": "gan", "gan": {"width ": 8}})


def test_training_moves_the_generator_towards_the_faces():
    """After a short training the generated pictures' mean and spread match the data's far better than the untrained
    generator's (same seed, same architecture)."""
    faces = faces_for(_blobs(256), 16)
    cfg = GanConfig(**SMALL, steps=100, seed=0)
    torch.manual_seed(cfg.seed)
    untrained = Generator(cfg.latent, cfg.size, cfg.width).eval()
    trained, facts = train_gan(faces, cfg)
    z = torch.randn(256, cfg.latent, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before, after = untrained(z), trained(z)

    def gap(x: torch.Tensor) -> float:  # per-pixel mean and std against the data's
        return float((x.mean(0) - faces.mean(0)).abs().mean() + (x.std(0) - faces.std(0)).abs().mean())

    assert facts["steps"] == 100 and facts["faces"] == 256 and facts["stopped"] is None
    assert after.shape == (256, 1, 16, 16) and after.abs().max() <= 1
    assert gap(after) < 0.5 * gap(before), (gap(before), gap(after))


def test_prior_is_cached_and_inverts_through_the_generator(tmp_path):
    """The second call loads the cached generator (same pictures); inverting class centres through the prior raises
    each target-class score, with every picture the generator's (decoded at the model's input size)."""
    aux = _blobs(64).to(torch.uint8)
    cfg = GanConfig(**SMALL, steps=30)
    first, f1 = gan_prior(aux, cfg, tmp_path)
    second, f2 = gan_prior(aux, cfg, tmp_path)
    z = torch.randn(3, cfg.latent)
    assert f1["cached"] is False and f2["cached"] is True and f1["steps"] == f2["steps"] == 30
    assert torch.equal(first.decode(z), second.decode(z)) and first.decode(z).shape == (3, 1, 32, 32)
    assert len(list(tmp_path.glob("gan-prior-*.safetensors"))) == 1

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(32, 16)).eval()
    centres = torch.randn(3, 16)
    start = head_scores(centres, model(first.decode(z).detach())).diag()
    out = invert_centres(model, centres, (1, 32, 32), InversionConfig(steps=60, lr=0.1, bn=0, prior="gan"),
                         prior=first)
    end = head_scores(centres, model(out["model_inputs"])).diag()
    assert (end > start).all(), (start, end)
    assert not any(p.requires_grad for p in first.generator.parameters())
