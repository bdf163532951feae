"""Verification protocol: 10-fold accuracy (threshold chosen on 9 folds, tested on the 10th), TAR@FAR, ROC AUC.

Mirrors insightface ``eval/verification.py`` (LFW protocol), with thresholds taken from the scores themselves.
"""
from __future__ import annotations

import numpy as np


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold maximising accuracy of ``score > t`` on these pairs (midpoint between adjacent scores)."""
    order = np.argsort(scores)
    s, g = scores[order], same[order].astype(np.int64)
    # predict "same" for everything strictly above position k: TP = genuine above, TN = impostors at or below
    genuine_above = g.sum() - np.concatenate([[0], np.cumsum(g)])
    impostor_below = np.concatenate([[0], np.cumsum(1 - g)])
    correct = genuine_above + impostor_below
    k = int(np.argmax(correct))
    if k == 0:
        return float(s[0] - 1e-6)
    if k == len(s):
        return float(s[-1] + 1e-6)
    return float((s[k - 1] + s[k]) / 2)


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold accuracy and threshold; each fold's threshold is fit on the other folds."""
    folds = np.unique(fold)
    accs, ths = [], []
    for f in folds:
        train, test = fold != f, fold == f
        t = best_threshold(scores[train], same[train])
        accs.append(float(np.mean((scores[test] > t) == same[test])))
        ths.append(t)
    return np.array(accs), np.array(ths)


def far_threshold(impostor_scores: np.ndarray, far: float) -> float | None:
    """The threshold t such that ``score > t`` accepts at most ``far`` of these impostor scores.

    None when there are fewer than 1/far impostor scores: the operating point cannot be measured on this set.
    """
    impostor = np.sort(np.asarray(impostor_scores, np.float64))[::-1]
    if len(impostor) < round(1 / far):
        return None
    k = int(np.floor(far * len(impostor)))  # number of impostors allowed above the threshold
    return float(impostor[k])


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float | None:
    """True-accept rate (``score > far_threshold``) where at most ``far`` of impostor pairs are accepted; None when
    there are too few impostor pairs to measure that operating point."""
    threshold = far_threshold(scores[~same], far)
    return None if threshold is None else float(np.mean(scores[same] > threshold))


def verification_metrics(scores: np.ndarray, same: np.ndarray, fold: np.ndarray,
                         fars=(1e-3, 1e-2)) -> dict:
    # imported here, not at module level: sklearn is 1.6 s of a ClientApp's 4.4 s import, which a deployed node pays
    # on every message (Flower 1.42 starts one ClientApp process per message; docs/scale.md)
    from sklearn.metrics import roc_auc_score, roc_curve

    scores, same, fold = np.asarray(scores, np.float64), np.asarray(same, bool), np.asarray(fold)
    accs, ths = kfold_accuracy(scores, same, fold)
    fpr, tpr, _ = roc_curve(same, scores)
    eer_idx = int(np.argmin(np.abs(fpr - (1 - tpr))))
    return {
        "accuracy": float(accs.mean()),
        "accuracy_std": float(accs.std()),
        "fold_accuracy": accs.tolist(),
        "threshold": float(ths.mean()),
        "auc": float(roc_auc_score(same, scores)),
        "eer": float((fpr[eer_idx] + 1 - tpr[eer_idx]) / 2),
        "tar_at_far": {f"{far:g}": tar_at_far(scores, same, far) for far in fars},
        "pairs": int(len(same)),
        "genuine": int(same.sum()),
        "impostor": int((~same).sum()),
    }
