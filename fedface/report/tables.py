"""Markdown tables from results records."""
from __future__ import annotations


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _collapse(check: dict | None) -> str:
    """ArcFace's degenerate solution (``fedface.train.collapse``): the verdict with its evidence."""
    if check is None:
        return "n/a"
    word = "**COLLAPSED**" if check["collapsed"] else "no"
    ratio = check.get("loss_ratio")
    return f"{word} (loss {'n/a' if ratio is None else f'{ratio:.2f}'} x L_deg, centres cos {check['head_row_cosine']:.2f})"


def verification_table(records: list[dict]) -> str:
    """One row per run: protection, data, accuracy ± std (10 folds), TAR@FAR, AUC, identification, speed."""
    rows = ["| data | protection | model | acc % (10-fold) | TAR@FAR=1e-3 | TAR@FAR=1e-2 | AUC | top-1 % | "
            "train s | img/s | collapsed |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        v, t = r.get("verification", {}), r.get("train", {})
        tar = v.get("tar_at_far", {})
        rows.append(
            f"| {r['data']['dataset']} | {r['protection']['name']} | {r['model']['name']} | "
            f"{_pct(v.get('accuracy'))} ± {_pct(v.get('accuracy_std'))} | {_pct(tar.get('0.001'))} | "
            f"{_pct(tar.get('0.01'))} | {v.get('auc', float('nan')):.4f} | "
            f"{_pct(v.get('identification', {}).get('top1'))} | {t.get('seconds', 0):.0f} | "
            f"{t.get('images_per_second', 0):.0f} | {_collapse(r.get('collapse'))} |"
        )
    return "\n".join(rows)
