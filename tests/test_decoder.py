"""Issue 8: the learned-reconstruction attack (decoder, cGAN, the attacker's pairs, `fedface reconstruct`)."""
import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, needs_data
from fedface.attacks import learned
from fedface.experiment.recorded import gradient_recoveries
from fedface.models.decoder import DecoderConfig, UNet, reconstruct, to_targets, train
from fedface.protect import build_protection


def _smooth_faces(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Blurry random blobs in [-1, 1]: something a small U-Net can learn to copy in a few steps."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("kind", ["decoder", "cgan"])
def test_generator_learns_a_mapping_from_frequency_like_inputs(kind):
    targets = _smooth_faces(64, size=32)
    # a frequency-like input: 16 channels on an 8 x 8 grid, a fixed linear function of the target
    inputs = torch.nn.functional.pixel_unshuffle(targets, 4) * 3 + 1
    cfg = DecoderConfig(kind=kind, size=32, width=8, steps=80, batch_size=16, lr=2e-3)
    before = (reconstruct(UNet(16, 32, 8), inputs) - targets).abs().mean()
    net, facts = train(inputs, targets, cfg)
    after = (reconstruct(net, inputs) - targets).abs().mean()
    assert facts["steps"] == 80 and facts["stopped"] == "steps"
    assert after < 0.5 * before, (float(before), float(after))
    assert (net.mean - 1).abs().max() < 0.5  # per-channel standardisation fitted on the training inputs


def test_training_is_bounded_by_max_seconds():
    x, y = torch.randn(8, 2, 16, 16), _smooth_faces(8, size=32)
    _, facts = train(x, y, DecoderConfig(kind="decoder", size=32, width=8, steps=10_000, max_seconds=0.5))
    assert facts["stopped"] == "max_seconds" and facts["steps"] < 10_000


def test_bad_decoder_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="attack.decoder.kind"):
        DecoderConfig(kind="vae")
    with pytest.raises(ValueError, match="attack.decoder.stpes"):
        DecoderConfig.from_cfg({"stpes": 3})
    with pytest.raises(FloatingPointError, match="NaN"):
        train(torch.full((4, 1, 8, 8), float("nan")), _smooth_faces(4), DecoderConfig(steps=1, width=8))
    with pytest.raises(ValueError, match=f"at least {learned.MIN_AUX}"):
        learned.aux_pairs(build_protection("none"), {"name": "none"}, torch.zeros(10, 112, 112, dtype=torch.uint8),
                          64, 0)


def test_cached_generator_is_reused_and_lands_atomically(tmp_path):
    from fedface.experiment.generators import trained_decoder

    x, y = torch.randn(16, 3, 14, 14), _smooth_faces(16, size=32)
    cfg = DecoderConfig(kind="decoder", size=32, width=8, steps=3)
    net, facts = trained_decoder(x, y, cfg, tmp_path, "d-abc")
    again, facts2 = trained_decoder(x, y, cfg, tmp_path, "d-abc")
    assert not facts["cached"] and facts2["cached"]
    assert torch.equal(reconstruct(net, x), reconstruct(again, x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d-abc.json", "d-abc.safetensors"]  # no temp files left
    assert json.loads((tmp_path / "d-abc.json").read_text())["config"]["steps"] == 3


def test_mixed_rows_keep_their_own_face():
    """The attacker's pair target of a MixUp row is face b (column 0, weight >= 0.45 for k = 2 under the 0.55 cap):
    face b is one of the row's two sources, and the row's most correlated face on average."""
    faces = (torch.rand(12, 112, 112, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    mixed = learned.mask(build_protection("none"), {"name": "fixed", "k": 2, "max_weight": 0.55}, faces, seed=0)
    plain = build_protection("none")(faces.unsqueeze(1).float())
    corr = torch.corrcoef(torch.cat([mixed.flatten(1), plain.flatten(1)]))[:12, 12:]
    top2 = corr.topk(2, dim=1).indices
    assert all(b in top2[b] for b in range(12))
    assert corr.diagonal().mean() > 0.5


def test_attacker_key_is_its_own_unless_granted():
    cfg = {"name": "ppfr_fd"}
    client = b"c" * 32
    assert learned.attacker_key(cfg, True, client, 0) == client
    assert learned.attacker_key(cfg, False, client, 0) not in (client, None)
    assert learned.attacker_key({"name": "none"}, True, client, 0) is None


def test_targets_are_area_downsampled_into_unit_range():
    px = torch.full((2, 1, 112, 112), 255.0)
    px[1] = 0
    t = to_targets(px, 64)
    assert t.shape == (2, 1, 64, 64) and float(t[0].min()) == 1.0 and float(t[1].max()) == -1.0


@needs_data("orl_faces", "lfwa", "lfw_pairs")
def test_reconstruct_command_end_to_end(tmp_path):
    """A tiny `fedface reconstruct` on ORL: rows, floor, identity scores, grid, resolved config -- and the
    unprotected attack beats the mean-face floor even at a 40-step budget."""
    from fedface.cli import main

    recovered = _fake_gradient_run(tmp_path / "fed")
    run = tmp_path / "run"
    rc = main(["reconstruct", "data=orl", "protect=none", "attack.kinds=[decoder]", "attack.threats=[{}]",
               "attack.decoder.steps=40", "attack.decoder.width=8", "attack.victims=24",
               f"attack.cache={tmp_path / 'cache'}", f"attack.recovered={recovered}", f"run.dir={run}",
               "run.progress=false", "threads=1"])
    assert rc == 0
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "done" and results["victims"] == 24
    from fedface.report.schema import RECONSTRUCT, describe, validate

    validate(results, RECONSTRUCT)  # the documented shape (the command validated it too), in docs/results-schema.md
    assert describe(RECONSTRUCT) in (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    floor, attack = results["rows"][0], results["rows"][1]
    assert floor["attack"] == "mean face" and attack["attack"] == "decoder"
    assert attack["psnr"] > floor["psnr"] + 3
    assert "srra_unavailable" in attack["identity"]  # no attack.target given
    assert (run / "grids" / "none.png").stat().st_size > 0 and (run / "config.yaml").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    assert board.Tags()["images"] == ["reconstruction/none"]  # the grid, viewable next to the run's scalars
    assert (run / "reconstructions.safetensors").exists()
    # (b): the decoder applied to what a gradient attack "recovered" -- here the exact inputs, so it beats the floor
    (rec,) = results["gradient_recoveries"]
    assert rec["attack"] == "gradient+decoder" and rec["faces"] == 4 and rec["psnr"] > rec["floor"]["psnr"] + 3


def _fake_gradient_run(folder):
    """A `fedface simulate attack=gradient` run dir in miniature: config, one attacked reply whose recovered inputs
    are the true ones, and that client's recorded ground truth."""
    from omegaconf import OmegaConf

    from fedface.experiment.ground_truth import save_ground_truth
    from fedface.data.sources import load_configured
    from fedface.io import atomic_save_safetensors
    from fedface.train.loop import StepRecord

    data = load_configured(OmegaConf.to_container(OmegaConf.load(REPO / "configs/data/orl.yaml")))
    pixels = data.images[:4].unsqueeze(1).float()
    x = build_protection("none")(pixels)
    folder.mkdir()
    OmegaConf.save(OmegaConf.create({"protect": {"name": "none"}, "mixup": {"name": "none"}}), folder / "config.yaml")
    atomic_save_safetensors(folder / "attacks/round-1/node-5/server.safetensors", {"model_input": x.numpy()})
    save_ground_truth(folder / "ground_truth/round-1/node-5.safetensors",
                      [StepRecord(model_input=x, labels=torch.zeros(4, dtype=torch.long), lr=0.1,
                                  indices=torch.arange(4), pixels=pixels)], {})
    return folder


def test_reconstruct_refuses_bad_config(tmp_path):
    from fedface.config import compose_config
    from fedface.reconstruct import run_reconstruct

    with pytest.raises(ValueError, match="attack.victimz"):
        run_reconstruct(compose_config(["attack=learned", "+attack.victimz=3", f"run.dir={tmp_path}"]))
    with pytest.raises(ValueError, match="attack.name"):
        run_reconstruct(compose_config(["attack=gradient", f"run.dir={tmp_path}"]))


def test_gradient_recoveries_empty_only_when_every_gradient_attack_was_skipped(tmp_path):
    """A SecAgg+ run attacks only the aggregate (here skipped by the memory bound): its learned row still runs, with no
    decoded recoveries; a run with no attack record, or an unskipped attack without files, is an error."""
    def run(attacks):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        (d / "results.json").write_text(json.dumps({"rounds": [{"round": 1, "attacks": attacks}]}))
        return d

    skipped = [{"node": "aggregate", "attack": "gradient", "skipped": "above attack.gradient.max_inputs=128"},
               {"node": "aggregate", "attack": "policy", "skipped": "the policy update is zero"}]
    assert gradient_recoveries(run(skipped)) == []
    with pytest.raises(FileNotFoundError, match="attack.recovered="):
        gradient_recoveries(run([]))
    with pytest.raises(FileNotFoundError, match="attack.recovered="):
        gradient_recoveries(run([*skipped, {"node": "7", "attack": "gradient", "scores": {}}]))
