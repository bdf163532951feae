"""Identity-leak metrics: does a reconstructed face still carry its person's identity?

Pixel metrics (``image``) say how close a reconstruction looks; these say whether a face recogniser still finds the
person in it (paper 002, FaceObfuscator, Sec. 5.1 "COS" and "SRRA"; paper 003, AdvFace, Sec. 5.1 "SRRA").

- **COS under an independent model** (paper 002 Sec. 5.1): cosine similarity between the identity vectors of a
  reconstruction and of its original under a face recogniser that is *not* the federated one -- a fixed model
  trained elsewhere cannot have been shaped by the protection it judges. Ours is dlib's ResNet face descriptor
  (``dlib_face_recognition_resnet_model_v1``, 128-d), whose weights ship inside the PyPI package
  ``face-recognition-models`` (run by ``dlib-bin``): nothing is downloaded at run time. ``IndependentEvaluator``.
- **SRRA**, success rate of replay attacks (papers 002 and 003, Sec. 5.1): the reconstructions are presented to the
  *target* system -- the client's protection, then the federated backbone (``fedface.eval.embed``) -- and one counts
  as a success when the system accepts it as its true identity. ``srra`` / ``replay_attack``.
- **Attack top-1**: closed-set identification of each reconstruction among the enrolled identities' templates,
  under any embedder (the target system or the independent model). ``attack_top1`` / ``identification_attack``.

Enrolment and the decision (our operating point; the papers do not state theirs): an identity's template is the mean
of its enrolled images' unit embeddings, re-normalised; a probe is accepted as identity c when its cosine to c's
template is *strictly above* the threshold at FAR = 1e-3 (``fedface.eval.verification.far_threshold``, the same rule
as TAR@FAR). By default that threshold comes from the impostor side of this very decision: every enrolled image
against every *other* identity's template.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from fedface.eval.embed import embed
from fedface.eval.verification import far_threshold
from fedface.protect.base import Protection

#: faces (N, H, W) or (N, 1, H, W), uint8 or float in [0, 255] -> (N, d) embeddings
Embedder = Callable[[torch.Tensor], torch.Tensor]

#: the package that carries dlib's model files (imported by path only: its __init__ needs pkg_resources)
MODELS_PACKAGE = "face_recognition_models"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: dlib's descriptor network reads 150 x 150 face chips
CHIP = 150
#: dlib's documented decision rule for this model: descriptors closer than 0.6 are the same person (99.38% on LFW)
SAME_PERSON_DISTANCE = 0.6


def as_faces(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) faces, uint8 or float in [0, 255] -> uint8 (N, H, W) on CPU.

    A replayed or judged reconstruction is a picture, so float pixels are rounded and clipped to 8 bits as an image
    file would hold them.
    """
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3:
        raise ValueError(f"faces must be (N, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.cpu()
    return images.detach().float().round().clamp(0, 255).to(torch.uint8).cpu()


class EvaluatorUnavailable(RuntimeError):
    """The independent face model cannot run here; the message says why."""


def _load_dlib():
    """(dlib, 5-point landmark predictor, descriptor network), or EvaluatorUnavailable naming what is missing."""
    try:
        import dlib
    except ImportError as err:
        raise EvaluatorUnavailable(f"dlib is not importable ({err}); install it with pip install 'fedface[identity]'"
                                   " (packages dlib-bin, face-recognition-models)") from None
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EvaluatorUnavailable(f"package {MODELS_PACKAGE} (PyPI face-recognition-models) is not installed; "
                                   "pip install 'fedface[identity]'")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    landmarks, descriptor = models / LANDMARKS_FILE, models / DESCRIPTOR_FILE
    for path in (landmarks, descriptor):
        if not path.is_file():
            raise EvaluatorUnavailable(f"dlib model file {path} is missing")
    try:
        return dlib, dlib.shape_predictor(str(landmarks)), dlib.face_recognition_model_v1(str(descriptor))
    except RuntimeError as err:  # dlib's deserialisation error for a truncated or foreign file
        raise EvaluatorUnavailable(f"cannot load dlib model files from {models}: {err}") from None


class IndependentEvaluator:
    """dlib's ResNet face descriptor, the COS evaluator of paper 002 (Sec. 5.1) -- never the federated model.

    Protocol: each 112 x 112 gray face is resized to 150 x 150 (bilinear), replicated to RGB, its 5 landmarks are
    predicted inside the *whole* image rectangle (our faces are already aligned crops, so no face detector), and dlib
    aligns the 150 x 150 chip from them and computes the 128-d descriptor. On LFW-a crops two photos of one person lie
    at descriptor distance ~0.45, two people at ~0.81 (``scripts/diagnostics/check_evaluator.py``; docs/attacks.md).

    Construction never fails: when dlib or its model files are missing, ``available()`` is False, ``reason`` says
    why, ``score`` reports it and ``embed`` raises ``EvaluatorUnavailable``.
    """

    name = "dlib_resnet_v1"

    def __init__(self) -> None:
        self.reason: str | None = None
        self._dlib = None
        try:
            self._dlib = _load_dlib()
        except EvaluatorUnavailable as why:
            self.reason = str(why)

    def available(self) -> bool:
        return self._dlib is not None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Faces (see ``as_faces``) -> (N, 128) float64 dlib descriptors (not unit length: dlib compares distances)."""
        if self._dlib is None:
            raise EvaluatorUnavailable(self.reason)
        dlib, landmarks, descriptor = self._dlib
        whole = dlib.rectangle(0, 0, CHIP - 1, CHIP - 1)
        out = []
        for face in as_faces(images).numpy():
            chip = Image.fromarray(face).resize((CHIP, CHIP), Image.Resampling.BILINEAR)
            rgb = np.ascontiguousarray(np.repeat(np.asarray(chip)[..., None], 3, axis=2))
            out.append(np.asarray(descriptor.compute_face_descriptor(rgb, landmarks(rgb, whole))))
        return torch.from_numpy(np.stack(out)) if out else torch.empty(0, 128, dtype=torch.float64)

    def _pairs(self, recon: torch.Tensor, originals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(recon) != len(originals):
            raise ValueError(f"{len(recon)} reconstructions for {len(originals)} originals: pair them first "
                             "(e.g. with fedface.metrics.image.match)")
        return self.embed(recon), self.embed(originals)

    def cosine(self, recon: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
        """Per-pair cosine (N,) of recon[i] and originals[i] descriptors: paper 002's COS (higher = more leaked)."""
        return F.cosine_similarity(*self._pairs(recon, originals), dim=1)

    def distance(self, recon: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
        """Per-pair Euclidean descriptor distance (N,), dlib's own metric (< ``SAME_PERSON_DISTANCE``: same person)."""
        a, b = self._pairs(recon, originals)
        return (a - b).norm(dim=1)

    def score(self, recon: torch.Tensor, originals: torch.Tensor) -> dict:
        """JSON-able COS summary of recon[i] against originals[i]: mean and per-pair cosine and distance, and the
        share of pairs dlib calls the same person; ``{"unavailable": reason}`` when dlib cannot run here.

        dlib's descriptors are not centred: on LFW-a two different people already score cosine ~0.83 and one person
        ~0.95 (docs/attacks.md), so read ``cos`` against those levels and against the mean-face floor (the same call
        with the aux faces' mean as ``recon``); ``distance`` / ``same_person`` are dlib's own decision-grade
        measures."""
        if self._dlib is None:
            return {"evaluator": self.name, "unavailable": self.reason}
        a, b = self._pairs(recon, originals)
        cos, dist = F.cosine_similarity(a, b, dim=1), (a - b).norm(dim=1)
        return {"evaluator": self.name, "cos": float(cos.mean()), "cos_each": cos.tolist(),
                "distance": float(dist.mean()), "distance_each": dist.tolist(),
                "same_person": float((dist < SAME_PERSON_DISTANCE).double().mean())}


def _labels(labels) -> np.ndarray:
    return np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)


def enrol(emb: torch.Tensor, labels) -> tuple[torch.Tensor, np.ndarray]:
    """Templates (C, d) and their identities (C,): per identity, the mean unit embedding, re-normalised."""
    labels = _labels(labels)
    if len(labels) != len(emb) or not len(labels):
        raise ValueError(f"{len(emb)} enrolled embeddings and {len(labels)} labels: need as many, at least one")
    unit = F.normalize(emb.detach().double(), dim=1)
    identities = np.unique(labels)
    templates = torch.stack([unit[torch.as_tensor(labels == c)].mean(0) for c in identities])
    return F.normalize(templates, dim=1), identities


def _similarities(probe_emb: torch.Tensor, probe_labels, templates: torch.Tensor,
                  identities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, C) cosines of probes to templates and each probe's template column; every probe needs a template."""
    probe_labels = _labels(probe_labels)
    if len(probe_labels) != len(probe_emb):
        raise ValueError(f"{len(probe_emb)} probe embeddings but {len(probe_labels)} labels")
    missing = sorted(set(probe_labels.tolist()) - set(identities.tolist()))
    if missing:
        raise ValueError(f"probe identities {missing} have no enrolled template")
    sims = (F.normalize(probe_emb.detach().double(), dim=1) @ templates.double().T).numpy()
    own = np.searchsorted(identities, probe_labels)  # identities is sorted (np.unique)
    return sims, own


def impostor_scores(emb: torch.Tensor, labels, templates: torch.Tensor, identities: np.ndarray) -> np.ndarray:
    """Cosine of every enrolled image to every *other* identity's template: the impostor side of the probe-vs-template
    decision a replay faces, so that ``far_threshold`` of these is that decision's operating point."""
    sims, own = _similarities(emb, labels, templates, identities)
    other = np.ones_like(sims, dtype=bool)
    other[np.arange(len(own)), own] = False
    return sims[other]


def srra(probe_emb: torch.Tensor, probe_labels, templates: torch.Tensor, identities: np.ndarray,
         threshold: float) -> dict:
    """Success rate of replay attacks (papers 002/003, Sec. 5.1): the share of probes (reconstructions) whose cosine to
    their own identity's template is strictly above ``threshold``. Lower = more private."""
    sims, own = _similarities(probe_emb, probe_labels, templates, identities)
    accepted = sims[np.arange(len(own)), own] > threshold
    return {"srra": float(accepted.mean()) if len(own) else None, "accepted": int(accepted.sum()),
            "probes": len(own), "threshold": float(threshold)}


def attack_top1(probe_emb: torch.Tensor, probe_labels, templates: torch.Tensor, identities: np.ndarray) -> dict:
    """Closed-set top-1 of probes (reconstructions) among the templates: nearest template by cosine is the true
    identity. ``chance`` = 1 / number of templates. Lower = more private."""
    sims, own = _similarities(probe_emb, probe_labels, templates, identities)
    hits = sims.argmax(axis=1) == own
    return {"top1": float(hits.mean()) if len(own) else None, "probes": len(own), "gallery": len(identities),
            "chance": 1 / len(identities)}


def target_embedder(backbone: nn.Module, protection: Protection, seed: int = 0, batch_size: int = 256) -> Embedder:
    """The target system as a replayed picture meets it: the client's protection, then the federated backbone, with
    the evaluation's flip-sum (``fedface.eval.embed``); the protection's randomness seeded by ``seed``."""
    return lambda images: embed(backbone, protection, as_faces(images), batch_size, seed=seed)


def identification_attack(embedder: Embedder, recon: torch.Tensor, recon_labels, enrolled: torch.Tensor,
                          enrolled_labels) -> dict:
    """``attack_top1`` of reconstructions against templates enrolled from ``enrolled`` faces, both embedded by
    ``embedder`` (``target_embedder(...)`` or ``IndependentEvaluator().embed``)."""
    templates, identities = enrol(embedder(enrolled), enrolled_labels)
    return attack_top1(embedder(recon), recon_labels, templates, identities)


def replay_attack(backbone: nn.Module, protection: Protection, recon: torch.Tensor, recon_labels,
                  enrolled: torch.Tensor, enrolled_labels, far: float = 1e-3,
                  impostor: np.ndarray | None = None, seed: int = 0) -> dict:
    """SRRA and attack top-1 of reconstructions presented to the target system (protection + backbone).

    ``enrolled`` are the faces the system enrolled for the true identities (every identity in ``recon_labels`` needs
    some; preferably not the very images that were reconstructed). The acceptance threshold is ``far_threshold`` at
    ``far`` of ``impostor`` scores when given (e.g. the impostor pairs of a verification set), else of
    ``impostor_scores`` of the enrolled faces. With fewer than 1/far impostor scores the operating point cannot be
    measured: ``srra`` is None and ``unavailable`` says why. Pass the originals as ``recon`` for the ceiling (a
    perfect reconstruction's SRRA).
    """
    embedder = target_embedder(backbone, protection, seed)
    enrolled_emb = embedder(enrolled)
    templates, identities = enrol(enrolled_emb, enrolled_labels)
    recon_emb = embedder(recon)
    source = "given" if impostor is not None else "enrolled faces vs other identities' templates"
    if impostor is None:
        impostor = impostor_scores(enrolled_emb, enrolled_labels, templates, identities)
    out = {"far": far, "impostor_scores": int(len(impostor)), "threshold_from": source,
           **attack_top1(recon_emb, recon_labels, templates, identities)}
    threshold = far_threshold(impostor, far)
    if threshold is None:
        return {**out, "srra": None,
                "unavailable": f"{len(impostor)} impostor scores cannot measure FAR={far:g} (need {round(1 / far)})"}
    return {**out, **srra(recon_emb, recon_labels, templates, identities, threshold)}
