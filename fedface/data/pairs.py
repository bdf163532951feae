"""Verification pairs: LFW-style seeded balanced folds on held-out identities, and LFW's official View-2 list."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Pairs:
    """Index pairs into one dataset: ``left[i]``, ``right[i]`` are image indices, ``same[i]`` True when genuine."""

    left: np.ndarray
    right: np.ndarray
    same: np.ndarray  # bool
    fold: np.ndarray  # int in 0..folds-1

    def __len__(self) -> int:
        return len(self.same)

    def summary(self) -> dict:
        return {
            "pairs": int(len(self)),
            "genuine": int(self.same.sum()),
            "impostor": int((~self.same).sum()),
            "folds": int(self.fold.max() + 1) if len(self) else 0,
        }


def balanced_pairs(labels: np.ndarray, folds: int, per_fold: int, seed: int) -> Pairs:
    """``per_fold`` pairs per fold, half genuine, half impostor, drawn without repeats from ``labels``' images.

    Pairs (not people) are assigned to folds: held-out sets such as ORL's 10 people are too few for people-disjoint
    folds. Raises ValueError naming data.pairs.* when the identities cannot supply that many distinct pairs.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    by_id = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    multi = [c for c, idx in by_id.items() if len(idx) >= 2]
    n_gen, n_imp = folds * (per_fold // 2), folds * (per_fold - per_fold // 2)
    if per_fold < 2 or folds < 2:
        raise ValueError("data.pairs.folds and data.pairs.per_fold must both be >= 2")
    if len(by_id) < 2 or not multi:
        raise ValueError(
            f"verification pairs need >= 2 test identities and one with >= 2 images; the split left {len(by_id)} "
            "identities (data.split.test_identities / data.min_images_per_identity)"
        )
    genuine = [(i, j) for c in multi for a, i in enumerate(by_id[c]) for j in by_id[c][a + 1 :]]
    if len(genuine) < n_gen:
        raise ValueError(
            f"only {len(genuine)} genuine pairs exist among the test identities, {n_gen} requested "
            "(lower data.pairs.per_fold or raise data.split.test_identities)"
        )
    gen = np.array(genuine)[rng.choice(len(genuine), n_gen, replace=False)]
    imp: set[tuple[int, int]] = set()
    n = len(labels)
    test_idx = np.concatenate(list(by_id.values()))
    max_imp = (n * n - sum(len(v) ** 2 for v in by_id.values())) // 2
    if max_imp < n_imp:
        raise ValueError(f"only {max_imp} impostor pairs exist, {n_imp} requested (data.pairs.per_fold)")
    while len(imp) < n_imp:
        a, b = rng.choice(test_idx, 2, replace=False)
        if labels[a] != labels[b]:
            imp.add((min(a, b), max(a, b)))
    imp_arr = np.array(sorted(imp))[rng.permutation(n_imp)]
    left = np.concatenate([gen[:, 0], imp_arr[:, 0]])
    right = np.concatenate([gen[:, 1], imp_arr[:, 1]])
    same = np.concatenate([np.ones(n_gen, bool), np.zeros(n_imp, bool)])
    fold = np.concatenate([np.arange(n_gen) % folds, np.arange(n_imp) % folds])
    return Pairs(left, right, same, fold)


@dataclass(frozen=True)
class OfficialPair:
    name1: str
    num1: int
    name2: str
    num2: int
    fold: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2


def read_lfw_pairs(path: Path) -> list[OfficialPair]:
    """Parse LFW's pairs.txt (View 2: header ``10<TAB>300``, then per fold 300 matched and 300 mismatched lines)."""
    lines = Path(path).read_text().strip().splitlines()
    head = lines[0].split()
    folds, per = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
    out = []
    for k, line in enumerate(lines[1:]):
        f = line.split("\t")
        fold = k // (2 * per)
        if len(f) == 3:
            out.append(OfficialPair(f[0], int(f[1]), f[0], int(f[2]), fold))
        elif len(f) == 4:
            out.append(OfficialPair(f[0], int(f[1]), f[2], int(f[3]), fold))
        else:
            raise ValueError(f"{path}:{k + 2}: not an LFW pair line: {line!r}")
    if len(out) != folds * per * 2:
        raise ValueError(f"{path}: expected {folds * per * 2} pairs from its header, found {len(out)}")
    return out


def lfw_image_path(name: str, num: int) -> str:
    return f"{name}/{name}_{num:04d}.jpg"
