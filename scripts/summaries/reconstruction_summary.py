"""Issue 8's table from `scripts/recipes/reconstruction_table.sh` runs: pixel and identity-leak scores per protection and
attack, with paper 001's scores (Sec. 4.2, ``fedface.metrics.scores.paper_scores``) computed across the rows of one
comparison -- each attack kind under the default threat (server, no key) is one comparison over the protections;
``none`` is the accuracy reference and, as in paper 001's Table 2, gets no scores.

usage: python scripts/summaries/reconstruction_summary.py results/reconstruct-orl [--out docs/results/reconstruct-orl.md]
       [--copy docs/results]   (--copy: each run's results.json as <copy>/<folder>__<row>.json)
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from fedface.io import atomic_write_text
from fedface.metrics.scores import paper_scores
from fedface.report.tables import markdown_table, num

ORDER = ["none", "fr_fd", "ppfr_fd", "ppfr_fd+adamixup", "obfuscator", "peep", "instahide"]


def load(folder: Path) -> dict[str, dict]:
    runs = {}
    for res in sorted(folder.glob("*/results.json")):
        r = json.loads(res.read_text())
        if r.get("status") != "done":
            continue
        target = OmegaConf.load(res.parent / "config.yaml").attack.target
        acc = None
        if target and Path(target, "results.json").exists():
            acc = json.loads(Path(target, "results.json").read_text())["verification"]["accuracy"]
        runs[res.parent.name] = {**r, "target_accuracy": acc, "path": res}
    return dict(sorted(runs.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)))


def scored(runs: dict[str, dict]) -> dict[tuple[str, str, str], dict]:
    """(row, attack, threat) -> paper-001 scores, one comparison per attack kind (threat: server)."""
    out = {}
    reference = runs.get("none", {}).get("target_accuracy")
    kinds = sorted({r["attack"] for run in runs.values() for r in run["rows"] if r["attack"] in ("decoder", "cgan")})
    for kind in kinds:
        cells = []
        for name, run in runs.items():
            if name == "none":
                continue
            row = next((r for r in run["rows"] if r["attack"] == kind and r["threat"] == "server"), None)
            if row is None or row["identity"].get("cos") is None:
                continue
            m = run["masking_effect"]
            cell = {"key": (name, kind, "server"), "masking_visual": m["visual"], "masking_feature": m["feature"],
                    "attack_visual": 1 - row["ssim"], "attack_feature": 1 - row["identity"]["cos"]}
            if reference is not None and run["target_accuracy"] is not None:
                cell["accuracy"] = run["target_accuracy"]
            cells.append(cell)
        if len({"accuracy" in c for c in cells}) > 1:  # a measure must be on every row or none
            cells = [{k: v for k, v in c.items() if k != "accuracy"} for c in cells]
        if cells:
            has_acc = "accuracy" in cells[0]
            for c in paper_scores(cells, reference if has_acc else None):
                out[c["key"]] = c
    return out


def table(runs: dict[str, dict]) -> str:
    scores = scored(runs)
    rows = []
    for name, run in runs.items():
        m = run["masking_effect"]
        for r in run["rows"]:
            if "skipped" in r:
                rows.append([name, "", "", r["attack"], r["threat"], f"skipped: {r['skipped']}"] + [""] * 7)
                continue
            idn = r["identity"]
            s = scores.get((name, r["attack"], r["threat"]), {})
            rows.append([name, num(run["target_accuracy"], ".2%"), f"{num(m['visual'])} / {num(m['feature'])}",
                         r["attack"], r["threat"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", num(idn.get("cos")),
                         num(idn.get("same_person"), ".2f"), num(idn.get("top1"), ".2f"), num(idn.get("srra"), ".2f"),
                         num(s.get("privacy_score")),
                         f"{num(s.get('comprehensive_mean'))} / {num(s.get('comprehensive_product'))}"])
    return markdown_table(["protection", "target acc.", "masking effect visual / feature", "attack", "threat", "PSNR",
                           "SSIM", "COS", "dlib same", "top-1", "SRRA", "privacy", "comprehensive mean / product"],
                          rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--copy", type=Path)
    args = ap.parse_args()
    runs = load(args.folder)
    if not runs:
        raise SystemExit(f"no finished runs under {args.folder}")
    text = table(runs)
    print(text)
    if args.out:
        atomic_write_text(args.out, f"<!-- python scripts/summaries/reconstruction_summary.py {args.folder} -->\n{text}\n")
    if args.copy:
        for name, run in runs.items():
            shutil.copyfile(run["path"], args.copy / f"{args.folder.name}__{name}.json")


if __name__ == "__main__":
    main()
