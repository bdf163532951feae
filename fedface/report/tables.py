"""The one markdown table renderer, and the number formats every table shares."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A header, its separator and one line per row; cells become text and a ``|`` inside a cell becomes ``/``."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def pct(x: float | None, digits: int = 2) -> str:
    """A share as a percentage; n/a when it does not exist."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def num(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def collapse_verdict(check: dict | None) -> str:
    """ArcFace's degenerate solution (``fedface.train.collapse``): the verdict with its evidence."""
    if check is None:
        return "n/a"
    word = "**COLLAPSED**" if check["collapsed"] else "no"
    ratio = check.get("loss_ratio")
    return f"{word} (loss {num(ratio, '.2f')} x L_deg, centres cos {check['head_row_cosine']:.2f})"


def verification_table(records: list[dict]) -> str:
    """One row per run: protection, data, accuracy ± std (10 folds), TAR@FAR, AUC, identification, speed."""
    rows = []
    for r in records:
        v, t = r.get("verification", {}), r.get("train", {})
        tar = v.get("tar_at_far", {})
        rows.append([r["data"]["dataset"], r["protection"]["name"], r["model"]["name"],
                     f"{pct(v.get('accuracy'))} ± {pct(v.get('accuracy_std'))}", pct(tar.get("0.001")),
                     pct(tar.get("0.01")), num(v.get("auc"), ".4f"), pct(v.get("identification", {}).get("top1")),
                     f"{t.get('seconds', 0):.0f}", f"{t.get('images_per_second', 0):.0f}",
                     collapse_verdict(r.get("collapse"))])
    return markdown_table(["data", "protection", "model", "acc % (10-fold)", "TAR@FAR=1e-3", "TAR@FAR=1e-2", "AUC",
                           "top-1 %", "train s", "img/s", "collapsed"], rows)
