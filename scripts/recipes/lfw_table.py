"""The LFW-disjoint centralized table (docs/results.md "LFW-disjoint"): every protection at one budget, resumable.

Each row is `fedface train data=lfwa train.epochs=16 seed=<s> <row overrides>`: train on the 158 LFW-a people with
>= 10 images, verify on the 5,274 official View-2 pairs with no training person. A finished row is reused only when
its saved config.yaml equals the config the row resolves to now (``run.reuse=true``: keyed by the config, never by
the folder name; a changed override or default re-runs it). Rows run ``--jobs`` at a time with ``threads=1`` each.

usage: python scripts/recipes/lfw_table.py [--out results/lfw] [--jobs 2] [--epochs 16] [ROW | ROW-sSEED ...]  (none: all)
       python scripts/recipes/lfw_table.py --list
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PPFR = "protect=ppfr_fd"
CHANNEL = f"{PPFR} protect.norm=channel"
OBF14 = "protect=obfuscator protect.upscale=1 protect.bias=2"
#: row -> (overrides, seeds). Three seeds for the headline rows (none, ppfr_fd, ppfr_fd + AdaMixUp), one elsewhere.
ROWS: dict[str, tuple[str, tuple[int, ...]]] = {
    "none": ("protect=none", (0, 1, 2)),
    "fr_fd": ("protect=fr_fd", (0,)),
    "ppfr_fd": (PPFR, (0, 1, 2)),
    "ppfr_fd-norm_channel": (CHANNEL, (0,)),
    "ppfr_fd-norm_channel-nosort": (f"{CHANNEL} protect.steps.shuffle2=false protect.steps.sort=false", (0,)),
    "ppfr_fd-block_shifts": (f"{PPFR} train.shift_grid=null", (0,)),
    "ppfr_fd-block_shifts-head_s64": (f"{PPFR} train.shift_grid=null model.head.s=64", (0,)),
    "obfuscator": ("protect=obfuscator", (0,)),
    "obfuscator-m0.2": ("protect=obfuscator model.head.m=0.2", (0,)),
    # the variant this project shipped until 2026-12-07: BDCT of the 112 px face, not of its 8x upscale (14 x 14)
    "obfuscator-14px": (OBF14, (0,)),
    "obfuscator-14px-m0.2": (f"{OBF14} model.head.m=0.2", (0,)),
    "obfuscator-14px-nobias": (f"{OBF14} model.embedding_bias=false", (0,)),
    "obfuscator-14px-nobias-warmup": (f"{OBF14} model.embedding_bias=false train.margin_warmup=0.25", (0,)),
    "ppfr_fd-nobias-warmup": (f"{PPFR} model.embedding_bias=false train.margin_warmup=0.25", (0,)),
    "ppfr_fd+mixup-k2-nobias-warmup": (f"{PPFR} mixup=fixed mixup.k=2 model.embedding_bias=false "
                                       "train.margin_warmup=0.25", (0,)),
    "ppfr_fd+mixup-k2": (f"{PPFR} mixup=fixed mixup.k=2", (0,)),
    "ppfr_fd+mixup-k2-m0.2": (f"{PPFR} mixup=fixed mixup.k=2 model.head.m=0.2", (0,)),
    "ppfr_fd+mixup-k2-renorm": (f"{PPFR} mixup=fixed mixup.k=2 mixup.renormalize=true", (0,)),
    "ppfr_fd+mixup-k4": (f"{PPFR} mixup=fixed mixup.k=4", (0,)),
    "ppfr_fd+mixup-k4-m0.2": (f"{PPFR} mixup=fixed mixup.k=4 model.head.m=0.2", (0,)),
    "ppfr_fd+adamixup-2-5-m0.2": (f"{PPFR} mixup=adaptive mixup.k_min=2 mixup.k_max=5 model.head.m=0.2", (0,)),
    "ppfr_fd+mixup-k2-maxw0.65": (f"{PPFR} mixup=fixed mixup.k=2 mixup.max_weight=0.65", (0,)),
    "ppfr_fd+adamixup-2-5": (f"{PPFR} mixup=adaptive mixup.k_min=2 mixup.k_max=5", (0, 1, 2)),
    # MixUp is known to need longer schedules than plain training: 3x the budget for k=2 and its control
    "ppfr_fd-e48": (f"{PPFR} train.epochs=48", (0,)),
    "ppfr_fd+mixup-k2-m0.2-e48": (f"{PPFR} mixup=fixed mixup.k=2 model.head.m=0.2 train.epochs=48", (0,)),
    "ppfr_fd+adamixup-2-5-m0.2-e48": (f"{PPFR} mixup=adaptive mixup.k_min=2 mixup.k_max=5 model.head.m=0.2 "
                                      "train.epochs=48", (0, 1, 2)),
    "instahide": ("protect=instahide", (0,)),
    "instahide-m0.2": ("protect=instahide model.head.m=0.2", (0,)),
    "peep": ("protect=peep", (0,)),
    "peep-m0.2": ("protect=peep model.head.m=0.2", (0,)),
}


def runs(selected: list[str]) -> list[tuple[str, list[str]]]:
    """(run name, overrides) of every seed of each selected row, or of the one run a ``<row>-s<seed>`` names, in the
    order given (so a queue can put one seed of a slow row before the other seeds)."""
    every = {f"{row}-s{seed}": [*overrides.split(), f"seed={seed}"] for row, (overrides, seeds) in ROWS.items()
             for seed in seeds}
    names = [n for item in selected for n in ([item] if item in every else
                                              [f"{item}-s{seed}" for seed in ROWS[item][1]])]
    return [(n, every[n]) for n in dict.fromkeys(names)]


def run_one(name: str, overrides: list[str], out: Path, epochs: int) -> str:
    run_dir = out / name
    # run.reuse: a finished run of this very config in the folder is kept; anything else there is replaced
    full = ["data=lfwa", f"train.epochs={epochs}", "threads=1", "run.progress=false", f"run.dir={run_dir}",
            "run.reuse=true", *overrides]
    t0 = time.time()
    log = out / f"{name}.log"
    with open(log, "w") as f:  # streamed: a long row's progress is readable while it runs
        rc = subprocess.run([sys.executable, "-m", "fedface.cli", "train", *full], stdout=f, stderr=subprocess.STDOUT,
                            cwd=ROOT).returncode
    if rc == 0 and "already holds this run" in log.read_text():
        return f"{name}: cached (same config)"
    return f"{name}: {'done' if rc == 0 else f'FAILED (exit {rc}, see {log})'} in {time.time() - t0:.0f} s"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="*", help=f"rows or single runs <row>-s<seed> (default: all): {', '.join(ROWS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "lfw")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--list", action="store_true", help="print the rows and their overrides")
    args = ap.parse_args(argv)
    if args.list:
        for row, (overrides, seeds) in ROWS.items():
            print(f"{row}: {overrides} (seeds {', '.join(map(str, seeds))})")
        return 0
    unknown = sorted(r for r in args.rows if r not in ROWS and not any(r == n for n, _ in runs(list(ROWS))))
    if unknown:
        print(f"lfw_table: unknown row(s) {', '.join(unknown)}; known: {', '.join(ROWS)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    todo = runs(args.rows or list(ROWS))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for line in pool.map(lambda r: run_one(*r, args.out, args.epochs), todo):
            print(line, flush=True)
    finished = [str(args.out / name) for name, _ in todo if (args.out / name / "results.json").exists()]
    subprocess.run([sys.executable, "-m", "fedface.cli", "summarize", "--seeds", *finished], cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
