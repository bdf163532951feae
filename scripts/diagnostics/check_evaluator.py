"""Check the independent face model (dlib's descriptor, ``fedface.metrics.identity``) on real faces before trusting
its COS: the first N matched and N mismatched pairs of LFW View 2 (pairs.txt, fold 1), on LFW-a with fedface's crop
(x 70-179, y 75-184 -> 112 x 112 gray, as ``data=lfwa`` loads them). Prints the descriptor distance and cosine of
same-person and different-person pairs, the share dlib calls the same person (distance < 0.6) and the time per face.
usage: python scripts/diagnostics/check_evaluator.py [--pairs 300] [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fedface.data.images import read_face
from fedface.data.pairs import lfw_image_path, read_lfw_pairs
from fedface.data.sources import FOLDER_SOURCES, resolve_root
from fedface.metrics.identity import SAME_PERSON_DISTANCE, IndependentEvaluator


def faces(root, names_nums) -> torch.Tensor:
    geometry = FOLDER_SOURCES["lfwa"].geometry
    return torch.stack([torch.tensor(read_face(root / "lfwa" / lfw_image_path(n, k), geometry)) for n, k in names_nums])


def summary(s: dict) -> str:
    d, c = np.asarray(s["distance_each"]), np.asarray(s["cos_each"])
    return (f"distance mean {d.mean():.3f} median {np.median(d):.3f} [5%, 95%] [{np.quantile(d, 0.05):.3f}, "
            f"{np.quantile(d, 0.95):.3f}]; cosine mean {c.mean():.3f}; same person (d < {SAME_PERSON_DISTANCE}) "
            f"{s['same_person']:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300, help="matched and mismatched pairs each, at most 300")
    ap.add_argument("--data", default=None, help="data root (default: FEDFACE_DATA or ../shared/data)")
    args = ap.parse_args()
    evaluator = IndependentEvaluator()
    if not evaluator.available():
        raise SystemExit(f"independent evaluator unavailable: {evaluator.reason}")
    root = resolve_root(args.data)
    fold1 = [p for p in read_lfw_pairs(root / "lfw_pairs" / "pairs.txt") if p.fold == 0]
    start, n_faces = time.perf_counter(), 0
    for kind, same in (("same person", True), ("two people", False)):
        pairs = [p for p in fold1 if p.same == same][: args.pairs]
        left = faces(root, [(p.name1, p.num1) for p in pairs])
        right = faces(root, [(p.name2, p.num2) for p in pairs])
        print(f"{kind:11s} ({len(pairs)} pairs): {summary(evaluator.score(left, right))}")
        n_faces += 2 * len(pairs)
    print(f"{(time.perf_counter() - start) / n_faces * 1000:.0f} ms per face (decode + descriptor)")


if __name__ == "__main__":
    main()
