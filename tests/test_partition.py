import numpy as np
import pytest

from fedface.data import load_faces
from fedface.data.pairs import balanced_pairs
from fedface.data.partition import make_partition
from fedface.data.shards import make_shards
from tests.conftest import data_root, needs_data

ORL_CFG = {"split": {"protocol": "identity", "test_identities": 10}, "pairs": {"folds": 10, "per_fold": 60},
           "aux": "lfwa"}


def _ids(data, idx):
    return set(data.labels[idx].tolist())


@needs_data("orl_faces", "lfwa", "lfw_pairs")
def test_orl_partition_roles_never_overlap():
    d = load_faces("orl")
    cfg = {**ORL_CFG, "split": {**ORL_CFG["split"], "public_identities": 5}}
    t = make_partition(d, cfg, seed=0, root=data_root())
    assert _ids(d, t.train_idx).isdisjoint(_ids(d, t.test_idx))
    assert _ids(d, t.public_idx).isdisjoint(_ids(d, t.train_idx) | _ids(d, t.test_idx))
    assert len(_ids(d, t.test_idx)) == 10 and len(_ids(d, t.public_idx)) == 5 and len(_ids(d, t.train_idx)) == 25
    pair_ids = set(d.labels[t.pairs.left].tolist()) | set(d.labels[t.pairs.right].tolist())
    assert pair_ids <= _ids(d, t.test_idx)
    assert t.aux_source == "lfwa" and len(t.aux_identities) == 1468
    names = t.identities
    assert not set(names["aux"]) & (set(names["train"]) | set(names["test"]) | set(names["public"]))


@needs_data("lfwa", "lfw_pairs")
def test_lfw_disjoint_protocol_numbers():
    d = load_faces("lfwa")
    t = make_partition(d, {"split": {"protocol": "lfw_disjoint", "train_min_images": 10}, "aux": "lfwa"}, 0,
                       root=data_root())
    s = t.summary()
    assert s["identities"]["train"] == 158 and s["images"]["train"] == 4324
    assert (s["pairs"]["pairs"], s["pairs"]["genuine"], s["pairs"]["impostor"]) == (5274, 2404, 2870)
    assert s["pairs"]["folds"] == 10
    per_fold = np.bincount(t.pairs.fold)
    assert per_fold.tolist() == [510, 497, 510, 535, 544, 537, 507, 528, 561, 545]
    aux = set(t.aux_identities)
    assert len(aux) == 1468 and sum(int(d.counts()[d.identity_names.index(n)]) for n in aux) == 1549
    train, test = set(t.identities["train"]), set(t.identities["test"])
    assert not (train & test) and not (aux & train) and not (aux & test)
    pair_people = {d.identity_names[i] for i in d.labels[np.r_[t.pairs.left, t.pairs.right]].tolist()}
    assert pair_people.isdisjoint(train)


def test_pairs_are_balanced_seeded_and_valid():
    labels = np.repeat(np.arange(12), 6)
    a = balanced_pairs(labels, folds=10, per_fold=20, seed=1)
    b = balanced_pairs(labels, folds=10, per_fold=20, seed=1)
    c = balanced_pairs(labels, folds=10, per_fold=20, seed=2)
    assert np.array_equal(a.left, b.left) and np.array_equal(a.right, b.right)
    assert not np.array_equal(a.left, c.left)
    assert a.same.sum() == (~a.same).sum() == 100
    for f in range(10):
        in_fold = a.fold == f
        assert a.same[in_fold].sum() == (~a.same[in_fold]).sum() == 10
    assert np.array_equal(labels[a.left] == labels[a.right], a.same)
    assert len({(l, r) for l, r in zip(a.left, a.right)}) == len(a)  # no repeated pair
    assert np.all(a.left != a.right)


def test_impossible_pairs_name_the_config_keys():
    labels = np.repeat(np.arange(3), 2)  # 3 genuine pairs exist
    with pytest.raises(ValueError, match="data.pairs.per_fold"):
        balanced_pairs(labels, folds=10, per_fold=20, seed=0)
    with pytest.raises(ValueError, match="test_identities|min_images"):
        balanced_pairs(np.arange(5), folds=10, per_fold=2, seed=0)


def test_identity_split_bad_test_count():
    d = load_faces("synthetic", num_identities=8, images_per_identity=4)
    with pytest.raises(ValueError, match="data.split.test_identities"):
        make_partition(d, {"split": {"test_identities": 8}, "aux": "none"}, 0)


def test_identity_shards_cover_every_identity_exactly_once():
    labels = np.repeat(np.arange(30), 7)
    shards = make_shards(labels, 8, "identity", seed=0)
    owners = {}
    for k, s in enumerate(shards):
        for c in np.unique(labels[s]):
            assert c not in owners, f"identity {c} on clients {owners[c]} and {k}"
            owners[c] = k
        assert np.all(np.isin(np.flatnonzero(np.isin(labels, np.unique(labels[s]))), s))  # all its images
    assert sorted(owners) == list(range(30))
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(labels)))


def test_iid_and_dirichlet_shards_partition_all_samples():
    labels = np.repeat(np.arange(20), 10)
    for mode in ("iid", "dirichlet"):
        shards = make_shards(labels, 5, mode, alpha=1.0, seed=0)
        assert sorted(np.concatenate(shards).tolist()) == list(range(200)) and all(len(s) for s in shards)
    skew = make_shards(labels, 5, "dirichlet", alpha=0.05, seed=0)
    iid = make_shards(labels, 5, "iid", seed=0)
    n_ids = lambda shards: np.mean([len(np.unique(labels[s])) for s in shards])  # noqa: E731
    assert n_ids(skew) < n_ids(iid)


def test_more_clients_than_identities_is_a_clear_error():
    with pytest.raises(ValueError, match="federation.num_clients=9 exceeds the 4 training identities"):
        make_shards(np.repeat(np.arange(4), 3), 9, "identity")
