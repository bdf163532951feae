"""Print a markdown verification table from run folders (`fedface train` results.json), one row per folder.

Federation runs (`fedface simulate`) get their own table: rounds run (and why it stopped), best and final
verification accuracy, megabytes sent / received per round, seconds per round, and the accuracy curve.

Folders whose names differ only in a trailing `-s<seed>` are also summarised as mean ± std over seeds.
When runs used MixUp, a last column gives k (fixed) or the average proportion of each k (adaptive, paper 001 Table 3).
usage: python scripts/summarize.py results/orl-table/* [--seeds]
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def load(run: Path) -> dict | None:
    f = run / "results.json"
    if not f.exists():
        return None
    r = json.loads(f.read_text())
    return r if r.get("status") == "done" else None


def row(label: str, recs: list[dict]) -> str:
    acc = np.array([r["verification"]["accuracy"] for r in recs]) * 100
    fold_std = np.mean([r["verification"]["accuracy_std"] for r in recs]) * 100
    auc = np.mean([r["verification"]["auc"] for r in recs])
    tar = [r["verification"]["tar_at_far"].get("0.001") for r in recs]
    tar_s = "n/a" if None in tar else f"{100 * np.mean(tar):.1f}"
    top1 = [r["verification"]["identification"]["top1"] for r in recs]
    top1_s = "n/a" if None in top1 else f"{100 * np.mean(top1):.1f}"
    spe = np.mean([r["train"]["seconds_per_epoch"] for r in recs])
    ips = np.mean([r["train"]["images_per_second"] for r in recs])
    spread = f"{acc.std(ddof=1):.2f} (seeds)" if len(recs) > 1 else f"{fold_std:.2f} (folds)"
    return (f"| {label} | {len(recs)} | {acc.mean():.2f} ± {spread} | {tar_s} | {auc:.4f} | {top1_s} | "
            f"{collapse_cell(recs)} | {spe:.1f} | {ips:.0f} |")


def collapse_cell(recs: list[dict]) -> str:
    """Final loss over ArcFace's degenerate loss (``fedface.train.collapse``), worst run; COLLAPSED when flagged."""
    checks = [r.get("collapse") for r in recs]
    if None in checks:
        return "-"
    worst = max(c["loss_ratio"] or 0.0 for c in checks)
    flagged = sum(c["collapsed"] for c in checks)
    return f"{worst:.2f}" + (f" COLLAPSED ({flagged}/{len(checks)})" if flagged else "")


def mixup_cell(recs: list[dict]) -> str:
    m = recs[0].get("mixup", {"name": "none"})
    if m["name"] == "none":
        return "-"
    if m["name"] == "fixed":
        return f"k={m['k'][0]}"
    props = np.mean([r["mixup"]["k_proportion"] for r in recs], axis=0)
    return f"k {m['k'][0]}-{m['k'][-1]}: [{', '.join(f'{p:.2f}' for p in props)}]"


def federation_rows(runs: list[Path]) -> None:
    print("| run | rounds | best acc % (round) | final acc % | MB sent / received per round | s/round | "
          "accuracy per round (%) |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        r = json.loads((run / "results.json").read_text())
        rounds = r["rounds"]
        evals = [(x["round"], 100 * x["accuracy"]) for x in rounds if x.get("accuracy") is not None]
        if not evals:
            continue
        best = max(evals, key=lambda e: e[1])
        sent = np.mean([x["bytes_sent"] for x in rounds]) / 1e6
        received = np.mean([x["bytes_received"] for x in rounds]) / 1e6
        secs = np.mean([x["seconds"] for x in rounds])
        stop = "plateau" if r.get("stopped") else ("max" if r.get("status") == "done" else r.get("status"))
        curve = " ".join(f"{a:.0f}" for _, a in evals)
        print(f"| {run.parent.name}/{run.name} | {len(rounds)} ({stop}) | {best[1]:.2f} ({best[0]}) | {evals[-1][1]:.2f} | "
              f"{sent:.1f} / {received:.1f} | {secs:.0f} | {curve} |")


def main(argv: list[str]) -> None:
    by_seed = "--seeds" in argv
    runs = [Path(a) for a in argv if not a.startswith("--")]
    simulated = [r for r in runs if (r / "results.json").exists()
                 and json.loads((r / "results.json").read_text()).get("command") == "simulate"]
    if simulated:
        federation_rows(simulated)
        runs = [r for r in runs if r not in simulated]
        if not runs:
            return
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        rec = load(run)
        if rec is None:
            continue
        label = re.sub(r"-s\d+$", "", run.name) if by_seed else run.name
        groups[label].append(rec)
    mixup = any(r.get("mixup", {}).get("name", "none") != "none" for recs in groups.values() for r in recs)
    print("| run | n | acc % mean ± std | TAR@FAR=1e-3 % | AUC | top-1 % | loss / L_deg | s/epoch | img/s |"
          + (" mixup |" * mixup))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" * mixup))
    for label, recs in groups.items():
        print(row(label, recs) + (f" {mixup_cell(recs)} |" if mixup else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
