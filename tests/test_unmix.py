import math

import pytest
import torch

from fedface.attacks.unmix import coefficients_from_labels, mixing_matrix, unmix
from fedface.mixup.mix import mixup

B, SHAPE = 8, (34, 14, 14)


def sources(seed=0):
    # float64: the k = 3 draw below has condition number ~5e3, which float32 mixtures would turn into 5e-4 errors
    return torch.randn((B, *SHAPE), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def mixed_batch(x, labels, k, seed):
    """The real ``mixup``: mixed batch, labels (B, k), weights (B, k), partners (B, k)."""
    mixed, mix_labels, weights, partners = mixup(x, labels, k, torch.Generator().manual_seed(seed))
    assert torch.equal(labels[partners], mix_labels)
    return mixed, mix_labels, weights, partners


@pytest.mark.parametrize("k", [2, 3, 4])
def test_noise_free_mixup_is_recovered_exactly(k):
    x, labels = sources(), torch.arange(B) * 7  # distinct labels
    mixed, mix_labels, weights, partners = mixed_batch(x, labels, k, seed=k)
    a = mixing_matrix(partners, weights, B)
    assert torch.allclose(a.sum(dim=1), torch.ones(B, dtype=torch.float64))
    assert torch.equal(coefficients_from_labels(mix_labels, weights, labels), a)  # labels identify the sources
    recovered, facts = unmix(mixed, a)
    assert facts["determined"] and facts["rank"] == B and math.isfinite(facts["condition"])
    assert torch.allclose(recovered, x, atol=1e-4)


def test_rank_deficient_system_is_reported():
    x = sources()
    mixed, _, weights, partners = mixed_batch(x, torch.arange(B), 3, seed=5)
    half = B // 2  # the attacker observed only half the mixtures: 4 equations for 8 sources
    a = mixing_matrix(partners[:half], weights[:half], B)
    recovered, facts = unmix(mixed[:half], a)
    assert facts == {"rank": half, "n_sources": B, "determined": False, "condition": math.inf}
    refit = torch.einsum("bn,n...->b...", a, recovered)
    assert torch.allclose(refit, mixed[:half], atol=1e-8)  # still the minimum-norm fit of what was seen


def test_shared_labels_merge_their_sources():
    x, labels = sources(), torch.tensor([0, 1, 2, 3, 4, 5, 6, 6])  # sources 6 and 7 share label 6
    mixed, mix_labels, weights, _ = mixed_batch(x, labels, 2, seed=3)
    a = coefficients_from_labels(mix_labels, weights, labels)
    assert torch.equal(a[:, 6], a[:, 7]) and torch.allclose(a.sum(dim=1), torch.ones(B, dtype=torch.float64))
    recovered, facts = unmix(mixed, a)
    assert not facts["determined"] and facts["rank"] == B - 1
    merged, _ = unmix(mixed, torch.cat([a[:, :6], a[:, 6:].sum(dim=1, keepdim=True)], dim=1))  # one column a label
    assert torch.allclose(recovered[6], merged[6]) and torch.allclose(recovered[7], merged[6])  # both get z_L


def test_ridge_shrinks_towards_zero():
    x = sources()
    mixed, _, weights, partners = mixed_batch(x, torch.arange(B), 2, seed=2)
    a = mixing_matrix(partners, weights, B)
    plain, _ = unmix(mixed, a)
    shrunk, _ = unmix(mixed, a, ridge=1.0)
    assert shrunk.norm() < plain.norm()
    with pytest.raises(ValueError, match="does not match"):
        unmix(mixed[:3], a)
