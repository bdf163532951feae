"""Paper 001's performance measures for masking algorithms (Sec. 4.2), computed across the rows of one comparison.

A row is one protection (under one attack, on one data set). Its inputs, each oriented so that *higher = more
private*:

- masking effect (Sec. 4.2.1) of the masked data shown as a picture against the original faces:
  ``masking_visual`` = 1 - mean SSIM (the paper's visual index is LPIPS, see ``LPIPS_UNAVAILABLE``) and
  ``masking_feature`` = 1 - mean cos(f(masked), f(original)), f a face model trained on original faces;
- attack effect (Sec. 4.2.2): the same two indices of the attack's reconstructions, ``attack_visual`` and
  ``attack_feature``;
- ``accuracy`` (Sec. 4.2.3): the protected system's recognition accuracy; accuracy ratio R = accuracy / accuracy of
  the unprotected system (``reference_accuracy``; Table 2 gives the unprotected ArcFace row no scores, "-", so leave
  that row out of ``rows``).

``effect`` computes one level's two indices from images. ``paper_scores`` then works across rows (Sec. 4.2.4):
each index and R is min-max normalised to [0.5, 1] over the rows (``normalise``); eq. (9) privacy score
P = alpha * masking level + beta * attack level with alpha = 0.4, beta = 0.6; eq. (10) accuracy score A = N(R);
eq. (11) comprehensive score. Two things the extracted text does not settle, both parameters here:

- eq. (9)'s symbols were lost, so how a level's two indices (visual, feature) combine is not legible: we take the
  weighted mean of their normalised values, ``index_weights`` = (0.5, 0.5) by default; a level with one index
  measured uses that one;
- the text calls the comprehensive score the *product* of P and A, but Table 2's numbers are their *mean*
  (Masking+MixUp(k=2): 0.912 = (0.825 + 0.999) / 2; k=6: 0.750 = (1.000 + 0.500) / 2): both are reported,
  ``comprehensive_mean`` (Table 2) and ``comprehensive_product`` (the text).

Check against Table 2 (LFW): A = N(R) over the twelve masked rows with ArcFace's 99.23 as reference reproduces the
accuracy-score column to within 0.0015 (``tests/test_scores.py``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from fedface.metrics.identity import Embedder, EvaluatorUnavailable
from fedface.metrics.image import ssim

#: alpha (masking level) and beta (attack level) of eq. (9), Sec. 4.2.4: "set to be 0.4 and 0.6 in the experiments"
LEVEL_WEIGHTS = (0.4, 0.6)
#: (visual, feature) weights inside one level: eq. (9)'s form is illegible in the extracted text -- our choice
INDEX_WEIGHTS = (0.5, 0.5)
#: Sec. 4.2.4: "the normalized range is [0.5, 1]"
LOW, HIGH = 0.5, 1.0
LEVELS = {"masking": ("masking_visual", "masking_feature"), "attack": ("attack_visual", "attack_feature")}
LPIPS_UNAVAILABLE = ("unavailable: LPIPS (paper 001 Sec. 4.2.1) needs the lpips package, torchvision and AlexNet "
                     "weights fetched on first use; fedface installs none of them, so the visual index is 1 - SSIM")


def effect(images: torch.Tensor, originals: torch.Tensor, data_range: float = 255.0,
           embedder: Embedder | None = None) -> dict:
    """Masking effect (Sec. 4.2.1) or attack effect (Sec. 4.2.2) of ``images`` against their ``originals``.

    ``images``: the masked data shown as pictures, or the reconstructions; both (B, C, H, W) float, pairs in order.
    ``visual`` = 1 - mean SSIM; ``feature`` = 1 - mean cosine of the two under ``embedder`` (a model trained on
    original faces: ``IndependentEvaluator().embed`` or ``target_embedder`` of an unprotected model), None with
    ``feature_unavailable`` when no embedder is given or it cannot run. Higher = more private.
    """
    out = {"visual": 1 - float(ssim(images, originals, data_range).mean()), "visual_metric": "1 - SSIM",
           "lpips": LPIPS_UNAVAILABLE, "feature": None}
    if embedder is None:
        return {**out, "feature_unavailable": "no feature model given"}
    try:
        cos = F.cosine_similarity(embedder(images).double(), embedder(originals).double(), dim=1)
    except EvaluatorUnavailable as why:
        return {**out, "feature_unavailable": str(why)}
    return {**out, "feature": 1 - float(cos.mean())}


def normalise(values: Sequence[float], low: float = LOW, high: float = HIGH) -> np.ndarray:
    """Min-max normalisation onto [low, high] (Sec. 4.2.4): the smallest value -> low, the largest -> high. A measure
    equal on every row ranks none above another: every row gets the midpoint."""
    v = np.asarray(values, dtype=np.float64)
    span = v.max() - v.min()
    if span == 0:
        return np.full(v.shape, (low + high) / 2)
    return low + (high - low) * (v - v.min()) / span


def _column(rows: Sequence[Mapping], key: str) -> np.ndarray | None:
    """The key's values over the rows; None when no row has it; an error when only some rows do or a value is bad."""
    values = [row.get(key) for row in rows]
    if all(v is None for v in values):
        return None
    missing = [row.get("name", i) for i, (row, v) in enumerate(zip(rows, values)) if v is None]
    if missing:
        raise ValueError(f"measure {key!r} is missing from rows {missing}: rows can only be scored on the same "
                         "measures")
    column = np.asarray(values, dtype=np.float64)
    if not np.isfinite(column).all():
        raise ValueError(f"measure {key!r} has non-finite values {column.tolist()}")
    return column


def _level(norm: Mapping[str, np.ndarray], keys: tuple[str, str], index_weights: tuple[float, float],
           i: int) -> float | None:
    """One row's level score: the weighted mean of the level's normalised indices that were measured."""
    parts = [(w, norm[k][i]) for k, w in zip(keys, index_weights) if k in norm]
    if not parts:
        return None
    return float(sum(w * v for w, v in parts) / sum(w for w, _ in parts))


def paper_scores(rows: Sequence[Mapping], reference_accuracy: float | None = None,
                 level_weights: tuple[float, float] = LEVEL_WEIGHTS,
                 index_weights: tuple[float, float] = INDEX_WEIGHTS,
                 low: float = LOW, high: float = HIGH) -> list[dict]:
    """Paper 001's scores (Sec. 4.2.4, eqs. 9-11) for every row, normalised across these rows.

    Each row may hold ``masking_visual``, ``masking_feature``, ``attack_visual``, ``attack_feature`` (higher = more
    private, see ``effect``) and ``accuracy`` (then ``reference_accuracy``, the unprotected system's, is required);
    a measure must be on every row or on none. Returns copies of the rows with ``accuracy_ratio``, ``normalised``
    (each measure on [low, high]), ``masking_score`` / ``attack_score`` (the levels), ``privacy_score`` (eq. 9,
    None unless both levels are measured), ``accuracy_score`` (eq. 10), ``comprehensive_mean`` (Table 2) and
    ``comprehensive_product`` (eq. 11 as the text states it). Every score: higher = better (more private, or more
    accurate). Scores rank the rows against each other; they mean nothing for a single row.
    """
    if not rows:
        raise ValueError("paper_scores needs at least one row")
    norm = {}
    for keys in LEVELS.values():
        for key in keys:
            column = _column(rows, key)
            if column is not None:
                norm[key] = normalise(column, low, high)
    accuracy = _column(rows, "accuracy")
    if accuracy is not None:
        if reference_accuracy is None or reference_accuracy <= 0:
            raise ValueError(f"rows carry 'accuracy': the accuracy ratio needs a positive reference_accuracy (the "
                             f"unprotected system's), got {reference_accuracy!r}")
        ratio = accuracy / reference_accuracy
        norm["accuracy_ratio"] = normalise(ratio, low, high)
    alpha, beta = level_weights
    out = []
    for i, row in enumerate(rows):
        masking = _level(norm, LEVELS["masking"], index_weights, i)
        attack = _level(norm, LEVELS["attack"], index_weights, i)
        privacy = None if masking is None or attack is None else alpha * masking + beta * attack
        acc = float(norm["accuracy_ratio"][i]) if accuracy is not None else None
        both = privacy is not None and acc is not None
        out.append({**row, "accuracy_ratio": float(ratio[i]) if accuracy is not None else None,
                    "normalised": {k: float(v[i]) for k, v in norm.items()},
                    "masking_score": masking, "attack_score": attack, "privacy_score": privacy,
                    "accuracy_score": acc,
                    "comprehensive_mean": (privacy + acc) / 2 if both else None,
                    "comprehensive_product": privacy * acc if both else None})
    return out
