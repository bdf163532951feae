import numpy as np
import pytest
import torch

from fedface.eval.identification import identification_top1
from fedface.eval.verification import best_threshold, kfold_accuracy, tar_at_far, verification_metrics


def test_perfectly_separable_scores_give_full_accuracy():
    same = np.array([True] * 50 + [False] * 50)
    scores = np.where(same, 0.8, 0.2) + np.linspace(0, 0.01, 100)
    fold = np.arange(100) % 10
    m = verification_metrics(scores, same, fold)
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0 and m["eer"] == 0.0
    assert 0.21 < m["threshold"] < 0.8


def test_constructed_embeddings_with_known_accuracy():
    # genuine pairs at cosine 0.9; impostors at 0.1, except exactly 10% of impostors at 0.95 which no threshold
    # can separate from genuines: the best achievable (and the 10-fold) accuracy is 1 - 0.05 = 0.95
    rng = np.random.default_rng(0)
    n = 200
    same = np.array([True] * n + [False] * n)
    scores = np.where(same, 0.9, 0.1)
    scores[n : n + n // 10] = 0.95
    fold = np.concatenate([np.arange(n) % 10, rng.permutation(np.arange(n) % 10)])
    accs, _ = kfold_accuracy(scores, same, fold)
    assert accs.mean() == pytest.approx(0.95, abs=0.02)
    assert verification_metrics(scores, same, fold)["auc"] == pytest.approx(0.9, abs=1e-9)


def test_best_threshold_on_known_case():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    same = np.array([False, False, False, True, True, True])
    assert best_threshold(scores, same) == pytest.approx(0.5)


def test_tar_at_far_needs_enough_impostors():
    rng = np.random.default_rng(1)
    imp = rng.normal(0, 0.1, 2000)
    gen = rng.normal(0.6, 0.1, 500)
    scores = np.r_[gen, imp]
    same = np.r_[np.ones(500, bool), np.zeros(2000, bool)]
    tar = tar_at_far(scores, same, 1e-3)
    threshold = np.sort(imp)[::-1][2]
    assert tar == pytest.approx(np.mean(gen > threshold))
    assert np.mean(imp > threshold) <= 1e-3
    assert tar_at_far(scores[:600], same[:600], 1e-3) is None  # 100 impostors cannot measure FAR=1e-3


def test_identification_top1():
    labels = np.repeat(np.arange(4), 3)
    centres = torch.eye(4)
    emb = centres[labels] + 0.01 * torch.randn(12, 4, generator=torch.Generator().manual_seed(0))  # order-free
    emb = torch.nn.functional.normalize(emb, dim=1)
    assert identification_top1(emb, labels)["top1"] == 1.0
    emb_swapped = emb.clone()
    emb_swapped[labels == 3] = centres[0]  # identity 3 looks like identity 0
    res = identification_top1(torch.nn.functional.normalize(emb_swapped, dim=1), labels, seed=0)
    assert res["top1"] < 1.0
