import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import data_root, needs_data
from fedface.data.images import read_face
from fedface.data.sources import FOLDER_SOURCES
from fedface.metrics import identity
from fedface.metrics.identity import (EvaluatorUnavailable, IndependentEvaluator, as_faces, attack_top1, enrol,
                                      identification_attack, impostor_scores, replay_attack, srra)
from fedface.protect.base import NoProtection


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def axes_gallery():
    """Identities 7, 8, 9 enrolled with two images each around the x, y and z axes: templates are the axes."""
    emb = unit([1, 0.1, 0], [1, -0.1, 0], [0, 1, 0.1], [0, 1, -0.1], [0.1, 0, 1], [-0.1, 0, 1])
    labels = np.array([7, 7, 8, 8, 9, 9])
    return emb, labels, *enrol(emb, labels)


def test_enrol_gives_unit_mean_templates():
    _, _, templates, ids = axes_gallery()
    assert ids.tolist() == [7, 8, 9]
    assert torch.allclose(templates, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_srra_accepts_exactly_the_probes_above_the_threshold():
    _, _, templates, ids = axes_gallery()
    # cosines to the own template: 0.98 (a good reconstruction), 0.6 (a poor one), 0 (looks like identity 9)
    probes = unit([0.98, (1 - 0.98**2) ** 0.5, 0], [0, 0.6, 0.8], [0, 0, 1])
    out = srra(probes, [7, 8, 8], templates, ids, threshold=0.7)
    assert out == {"srra": 1 / 3, "accepted": 1, "probes": 3, "threshold": 0.7}
    assert srra(probes, [7, 8, 8], templates, ids, threshold=0.5)["accepted"] == 2
    with pytest.raises(ValueError, match=r"\[3\] have no enrolled template"):
        srra(probes, [7, 8, 3], templates, ids, threshold=0.5)


def test_attack_top1_picks_the_nearest_template():
    _, _, templates, ids = axes_gallery()
    probes = unit([0.9, 0.3, 0], [0.2, 0.1, 0.9], [0.1, 0.9, 0.3])  # nearest: 7, 9, 8
    out = attack_top1(probes, torch.tensor([7, 8, 8]), templates, ids)
    assert out == {"top1": 2 / 3, "probes": 3, "gallery": 3, "chance": 1 / 3}


def test_impostor_scores_are_the_other_identities_templates():
    emb, labels, templates, ids = axes_gallery()
    scores = impostor_scores(emb, labels, templates, ids)
    expected = (emb @ templates.T).numpy()[labels[:, None] != ids[None, :]]  # 6 images x 2 other identities
    assert scores.shape == (12,) and np.allclose(np.sort(scores), np.sort(expected))
    assert np.all(scores <= 0.1 / np.sqrt(1.01) + 1e-12)  # an axis image's largest off-axis component


class Flat(nn.Module):
    """A stand-in federated backbone: a fixed random projection of the pixels (cosines roughly preserved)."""

    def __init__(self, pixels, dim=64):
        super().__init__()
        self.proj = nn.Linear(pixels, dim, bias=False)
        nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.proj(x.flatten(1))


def patterned_faces(identities=10, per_identity=12, size=16, noise=30.0):
    g = torch.Generator().manual_seed(3)
    base = torch.rand((identities, size, size), generator=g) * 255
    labels = torch.arange(identities).repeat_interleave(per_identity)
    images = base[labels] + noise * torch.randn((len(labels), size, size), generator=g)
    return images.clamp(0, 255).to(torch.uint8), labels, base


def test_replay_attack_through_the_target_system():
    enrolled, labels, base = patterned_faces()
    backbone = Flat(16 * 16)
    # a faithful reconstruction of identity 0 and one of identity 1 that came out as identity 2's face
    recon = torch.stack([base[0], base[2]])[:, None]  # float (N, 1, H, W), as a decoder returns them
    out = replay_attack(backbone, NoProtection(), recon, [0, 1], enrolled, labels)
    assert out["impostor_scores"] == 120 * 9 and out["threshold_from"].startswith("enrolled")
    assert out["srra"] == 0.5 and out["accepted"] == 1
    assert out["top1"] == 0.5 and out["gallery"] == 10
    too_few = replay_attack(backbone, NoProtection(), recon, [0, 1], enrolled[:24], labels[:24])
    assert too_few["srra"] is None and "need 1000" in too_few["unavailable"]
    given = replay_attack(backbone, NoProtection(), recon, [0, 1], enrolled, labels, impostor=np.full(1000, 0.999))
    assert given["threshold_from"] == "given" and given["srra"] == 0.0  # nothing beats a 0.999 threshold


def test_identification_attack_under_any_embedder():
    enrolled, labels, base = patterned_faces()
    out = identification_attack(lambda x: as_faces(x).flatten(1).double() - 127.5, base[[3, 4, 5]], [3, 4, 9],
                                enrolled, labels)
    assert out["top1"] == pytest.approx(2 / 3)


def test_as_faces_rounds_clips_and_checks_shape():
    x = torch.tensor([[[-3.0, 254.6], [300.0, 1.4]]])
    assert as_faces(x[:, None]).tolist() == [[[0, 255], [255, 1]]]
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, 1, H, W\)"):
        as_faces(torch.zeros(2, 3, 4, 4))


@pytest.fixture(scope="module")
def evaluator():
    ev = IndependentEvaluator()
    if not ev.available():
        pytest.skip(f"independent evaluator unavailable: {ev.reason}")
    return ev


def lfwa(name, number):
    return torch.tensor(read_face(data_root() / "lfwa" / name / f"{name}_{number:04d}.jpg",
                                      FOLDER_SOURCES["lfwa"].geometry))


@needs_data("lfwa")
def test_dlib_tells_one_person_from_two(evaluator):
    # LFW View 2 fold 1: a matched pair (pairs.txt line 3) and a mismatched one (line 302), fedface's LFW-a crop
    a, b = torch.stack([lfwa("Akhmed_Zakayev", 1), lfwa("Abdel_Madi_Shabneh", 1)]), \
        torch.stack([lfwa("Akhmed_Zakayev", 3), lfwa("Dean_Barker", 1)])
    s = evaluator.score(a, b)
    same, different = s["distance_each"]
    assert same < identity.SAME_PERSON_DISTANCE < different
    assert s["cos_each"][0] > s["cos_each"][1] and s["same_person"] == 0.5
    assert torch.allclose(evaluator.cosine(a, b), torch.tensor(s["cos_each"], dtype=torch.float64))
    # float (N, 1, H, W) input of the same pixels embeds identically
    assert torch.equal(evaluator.embed(a[:, None].float()), evaluator.embed(a))


@pytest.mark.parametrize("broken", ["dlib", "models"])
def test_unavailable_evaluator_reports_why(monkeypatch, broken):
    if broken == "dlib":
        monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    else:
        pytest.importorskip("dlib")
        monkeypatch.setattr(identity.importlib.util, "find_spec", lambda name: None)
    ev = IndependentEvaluator()
    assert not ev.available()
    assert ("dlib is not importable" if broken == "dlib" else "face_recognition_models") in ev.reason
    faces = torch.zeros(2, 112, 112, dtype=torch.uint8)
    assert ev.score(faces, faces) == {"evaluator": "dlib_resnet_v1", "unavailable": ev.reason}
    with pytest.raises(EvaluatorUnavailable):
        ev.embed(faces)


@needs_data("lfwa")
def test_the_identity_judge_scores_a_person_and_a_pairing(evaluator, tmp_path):
    """``fedface.experiment.judge``: a guess is judged against every image of its person, a reconstruction against
    its own image; a wrong person scores lower both ways; without a target system SRRA names why."""
    from fedface.experiment.judge import IdentityJudge

    gallery = torch.stack([lfwa("Akhmed_Zakayev", 1), lfwa("Akhmed_Zakayev", 3), lfwa("Dean_Barker", 1)])
    labels = torch.tensor([0, 0, 1])
    judge = IdentityJudge(gallery, labels, "no target here", seed=0, cache=tmp_path)
    guess = gallery[1:2, None].float()  # a picture of person 0
    right, wrong = judge.score(guess, torch.tensor([0])), judge.score(guess, torch.tensor([1]))
    assert right["cos"] > wrong["cos"] and right["top1"] == 1.0 and wrong["top1"] == 0.0
    assert right["srra_unavailable"] == "no target here" and right["chance"] == 0.5
    paired = judge.score(gallery[:, None].float())  # each picture is its own gallery image
    assert paired["cos"] > 0.999 and paired["same_person"] == 1.0 and paired["top1"] == 1.0
    shifted = judge.score(gallery[[2, 0, 1], None].float())  # picture i is not a reconstruction of image i
    assert shifted["cos"] < paired["cos"] and shifted["same_person"] < 1.0
    assert list(tmp_path.glob("dlib-gallery-*.safetensors"))  # the gallery's descriptors are cached
    again = IdentityJudge(gallery, labels, "no target here", seed=0, cache=tmp_path).score(guess, torch.tensor([0]))
    assert again["cos"] == pytest.approx(right["cos"])
