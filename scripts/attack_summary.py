"""Markdown table of the attacks recorded in federation runs (results.json -> rounds[].attacks), one row per attack.

Columns: the run's protection / batch / local steps, round, attack (gradient | policy) and threat variant; PSNR and
SSIM in the masked space (recovered model inputs vs the true ones, Hungarian-matched) next to the mean-face floor in
that space; after un-mixing (MixUp, structure unknown); in pixel space (white-box inversion) next to the pixel floor;
label precision / recall (head=shared); iterations, seconds and whether the time bound stopped it.
usage: python scripts/attack_summary.py results/attack-orl/*
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def cell(scores: dict, key: str) -> str:
    s = scores.get(key)
    return "-" if s is None else f"{s['psnr']:.1f} / {s['ssim']:.2f}"


def main(runs: list[str]) -> None:
    print("| run | round | attack | threat | masked PSNR/SSIM | masked floor | un-mixed | image PSNR/SSIM | "
          "image floor | labels P/R | it | s | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        f = Path(run) / "results.json"
        if not f.exists():
            continue
        res = json.loads(f.read_text())
        for rnd in res.get("rounds", []):
            for a in rnd.get("attacks", []):
                head = f"| {Path(run).name} | {rnd['round']} | {a.get('attack', 'gradient')} | {a['threat']} |"
                if "skipped" in a:
                    print(head + f" skipped: {a['skipped'][:70]} |" + " |" * 8)
                    continue
                s = a.get("scores", {})
                lab = s.get("labels")
                lab_s = "-" if lab is None else f"{lab['precision']:.2f} / {lab['recall']:.2f}"
                print(head + f" {cell(s, 'masked')} | {cell(s, 'floor_masked')} | {cell(s, 'unmixed')} | "
                      f"{cell(s, 'image')} | {cell(s, 'floor_image')} | {lab_s} | {a['iterations']} | "
                      f"{a['seconds']:.0f} | {'time-bounded' if a['stopped'] == 'max_seconds' else ''} |")


if __name__ == "__main__":
    main(sys.argv[1:])
