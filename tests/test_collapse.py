"""ArcFace's degenerate solution: the closed form against the real head, and the detector on a forced collapse."""
from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from fedface.cli import main
from fedface.mixup.mix import mix_weights
from fedface.models.arcface import ArcFace, soft_targets
from fedface.train import collapse
from tests.test_cli import FAST


def _antipodal(num_classes: int, batch: int, s: float, m: float) -> tuple[ArcFace, torch.Tensor]:
    """A head whose centres all point one way and embeddings pointing the other way: every cos theta = -1."""
    head = ArcFace(16, num_classes, s=s, m=m)
    direction = F.normalize(torch.randn(16), dim=0)
    with torch.no_grad():
        head.weight.copy_(direction.expand(num_classes, 16))
    return head, -direction.expand(batch, 16).clone()


@pytest.mark.parametrize("s,expected", [(64.0, 20.40), (32.0, 12.73)])
def test_closed_form_equals_the_heads_loss_at_the_antipodal_configuration(s, expected):
    head, emb = _antipodal(158, 8, s, 0.5)
    labels = torch.arange(8)
    loss = F.cross_entropy(head(emb, labels), labels).item()
    assert collapse.degenerate_loss(158, s, 0.5) == pytest.approx(loss, abs=1e-3)
    assert loss == pytest.approx(expected, abs=0.01)  # the values the notes and issue quote


@pytest.mark.parametrize("k", [2, 4])
def test_mixup_closed_form_equals_mixup_arcface_at_the_antipodal_configuration(k):
    head, emb = _antipodal(158, 64, 64.0, 0.5)
    weights = mix_weights(64, k, 0.55, torch.Generator().manual_seed(0), torch.device("cpu"))
    labels = torch.stack([torch.randperm(158)[:k] for _ in range(64)])  # distinct classes per row
    loss = F.cross_entropy(head(emb, labels, weights), soft_targets(labels, weights, 158)).item()
    assert collapse.degenerate_loss(158, 64.0, 0.5, weights=weights) == pytest.approx(loss, abs=1e-3)


def test_mixup_expectation_falls_with_k_as_the_reviews_measured():
    spec = {"max_weight": 0.55, "weight_draw": "abs_normal"}
    head = {"s": 64.0, "m": 0.5}
    k2 = collapse.expected_degenerate_loss(158, head, {"k": [2], **spec})
    k4 = collapse.expected_degenerate_loss(158, head, {"k": [4], **spec})
    assert k2 == pytest.approx(12.75, abs=0.1) and k4 == pytest.approx(10.05, abs=0.1)
    assert collapse.expected_degenerate_loss(10, {"easy_margin": True}) == pytest.approx(math.log(10))
    # a client with 2 identities mixing k = 4 (labels repeat): a finite value, never an error that fails the client
    assert math.isfinite(collapse.expected_degenerate_loss(2, head, {"k": [4], **spec}))


def test_detector_flags_a_forced_collapse_and_passes_a_healthy_head():
    head, _ = _antipodal(50, 1, 64.0, 0.5)
    degenerate = collapse.degenerate_loss(50, 64.0, 0.5)
    stuck = collapse.check(degenerate - 0.3, degenerate, head.weight)
    assert stuck["collapsed"] and stuck["head_row_cosine"] == pytest.approx(1.0)
    # the centres alone give it away, whatever the loss
    assert collapse.check(2.0, degenerate, head.weight)["collapsed"]
    healthy = collapse.check(7.0, degenerate, torch.randn(50, 128))
    assert not healthy["collapsed"] and abs(healthy["head_row_cosine"]) < 0.1
    assert collapse.check(float("nan"), degenerate, None)["collapsed"] is False
    # a short run still far above L_deg and falling (the 3-round demo: 2.19, 1.75, 1.24) is not a collapse
    assert not collapse.is_collapsed([2.19, 1.75, 1.24], -0.05)
    # one that ends on the plateau is, even without 3 epochs there -- when its centres say so, or cannot be read
    assert collapse.is_collapsed([1.6, 1.2, 0.99, 0.98], 0.92)
    assert collapse.is_collapsed([1.6, 1.2, 0.99, 0.98], None)
    # mixed training: the centres decide (a k-mix's L_deg can sit at a healthy loss), and they do catch MixUp's collapse
    assert not collapse.is_collapsed([1.6, 1.2, 0.99, 0.98], 0.0, mixed=True)
    assert collapse.is_collapsed([1.6, 1.2, 0.99, 0.98], 0.92, mixed=True)


def test_a_run_records_the_verdict_in_results_and_every_curve_point(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, "train.epochs=2", f"run.dir={run_dir}"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    verdict = res["collapse"]
    assert set(verdict) >= {"collapsed", "loss", "degenerate_loss", "loss_ratio", "head_row_cosine"}
    head = OmegaConf.load(run_dir / "config.yaml").model.head
    assert verdict["degenerate_loss"] == pytest.approx(collapse.degenerate_loss(8, head.s, head.m))
    assert verdict["loss"] == res["train"]["final_loss"]
    assert [p["degenerate_loss"] for p in res["curve"]] == [verdict["degenerate_loss"]] * 2
    assert "collapsed" in capsys.readouterr().out


def test_a_collapsed_run_is_flagged_not_silently_done(tmp_path, monkeypatch, capsys):
    """Force the collapse: lr 0 keeps the head at a configuration whose centres all point one way."""
    from fedface.models import arcface

    def collapsed_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        with torch.no_grad():
            self.weight.copy_(self.weight[:1].expand_as(self.weight))

    original = arcface.ArcFace.__init__
    monkeypatch.setattr(arcface.ArcFace, "__init__", collapsed_init)
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, "train.lr=0", f"run.dir={run_dir}"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "done" and res["collapse"]["collapsed"] is True
    assert "COLLAPSED" in capsys.readouterr().out


def test_a_stall_at_the_degenerate_loss_is_caught_even_when_the_run_escapes_part_of_the_way():
    """The shipped PPFR-FD run (docs/results before the fix) sat on 20.40 for epochs, then crept to 17.85 (70.5 %):
    its final ratio (0.875) alone would pass. The per-image run passes through 20.4 without stopping."""
    shipped = [45.7, 36.5, 20.19, 19.96, 19.69, 19.41, 18.9, 18.3, 17.85]
    healthy = [40.44, 31.55, 24.96, 20.93, 18.18, 15.70, 13.22, 11.24, 9.31, 7.23, 5.49, 4.10, 3.07, 2.25, 1.78, 1.58]
    ratios = lambda xs: [x / 20.40 for x in xs]  # noqa: E731
    assert collapse.stalled(ratios(shipped)) >= collapse.STALL_EPOCHS
    assert collapse.check(shipped[-1], 20.40, None, ratios(shipped)[:-1])["collapsed"]
    assert collapse.stalled(ratios(healthy)) < collapse.STALL_EPOCHS
    assert not collapse.check(healthy[-1], 20.40, None, ratios(healthy)[:-1])["collapsed"]


def test_a_short_run_falling_past_the_degenerate_loss_with_spread_centres_is_not_stuck():
    """The LFW compare's PPFR-FD cell (10 rounds): its loss falls through L_deg and its last rounds fall slowly
    (lr decay), but its class centres are spread -- at the degenerate solution they all point one way. Without a
    head to read, the same losses ending on the plateau still flag the run."""
    cell = [2.01, 1.70, 1.56, 1.43, 1.28, 1.17, 1.08, 0.99, 0.975, 0.95]
    assert collapse._stalls(cell)[-1] >= 2  # its end is a stall by the loss alone
    assert not collapse.is_collapsed(cell, head_row_cosine=0.01)
    assert collapse.is_collapsed(cell, head_row_cosine=None)
    assert collapse.is_collapsed(cell, head_row_cosine=0.9)
    # seed 2 of the same cell: three slow rounds in the band, a stall by the loss alone; its centres were spread
    # in every one of them (the rounds record the cosine), so the solution never held it
    seed2 = [2.06, 1.71, 1.57, 1.45, 1.34, 1.21, 1.11, 1.025, 0.997, 0.97]
    assert collapse.stalled(seed2) >= collapse.STALL_EPOCHS
    assert not collapse.is_collapsed(seed2, 0.05, cosines=[0.02] * 9 + [0.05])
    # held with its centres aligned, then escaping part of the way with them spreading again: still flagged
    held = [1.5, 1.05, 1.02, 1.0, 0.98, 0.7, 0.5]
    assert collapse.is_collapsed(held, 0.2, cosines=[0.1, 0.9, 0.95, 0.96, 0.95, 0.5, 0.2])


def test_a_federations_verdict_comes_from_what_its_rounds_record():
    rounds = [{"round": r + 1, "loss_over_degenerate": x, "head_row_cosine": c, "mixed_samples": False}
              for r, (x, c) in enumerate([(1.5, 0.2), (1.0, 0.95), (0.98, 0.96), (0.97, 0.97)])]
    verdict = collapse.rounds_verdict(rounds)
    assert verdict["collapsed"] and verdict["head_row_cosine"] == 0.97 and verdict["stalled_rounds"] == 3
    assert collapse.rounds_verdict([{"round": 1, "train_loss": 2.0}]) is None  # SecAgg+: no evidence on the wire
