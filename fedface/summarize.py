"""`fedface summarize RUN... [--seeds]`: markdown tables of finished runs, whatever made them.

Each RUN is a folder holding a ``results.json``; its ``command`` picks the table:
- ``train``: verification accuracy (± std over seeds with ``--seeds``, folders differing only in a trailing
  ``-s<seed>`` are one row; else ± std over the 10 folds), TAR@FAR=1e-3, AUC, top-1, the collapse check (final loss
  over ArcFace's degenerate loss, ``fedface.train.collapse``), speed, and MixUp's k;
- ``simulate``: rounds, best and final accuracy, traffic and time per round, the accuracy curve; and, when the run
  attacked replies, one row per attack (masked / un-mixed / pixel PSNR and SSIM next to their mean-face floors,
  label precision and recall);
- ``invert`` / ``imprint``: the model-inversion identity scores / the trap's recovered inputs;
- ``reconstruct``: the learned reconstruction's pixel and identity scores;
- a compare folder: its tables (``fedface.compare_report.table_md``).
Every table is drawn by ``fedface.report.tables.markdown_table``.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from fedface.report.schema import ACCURACY, ACCURACY_STD, AUC, TOP1
from fedface.report.tables import markdown_table, num, pct
from fedface.runs import RunLayout

USAGE = "usage: fedface summarize RUN [RUN ...] [--seeds]   (RUN: a folder with a results.json)"


def load(run: Path) -> dict[str, Any]:
    path = RunLayout(run).results
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise OSError(f"{path}: no results ({err.strerror}); give run folders of finished fedface commands") from None
    except ValueError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None


def kind_of(results: dict[str, Any]) -> str:
    return "compare" if "experiment" in results and "grid" in results else str(results.get("command"))


# --------------------------------------------------------------------------------------------------- fedface train
def training_table(runs: list[tuple[str, dict]], by_seed: bool) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for name, rec in runs:
        if rec.get("status") == "done":
            groups[re.sub(r"-s\d+$", "", name) if by_seed else name].append(rec)
    mixup = any(r.get("mixup", {}).get("name", "none") != "none" for recs in groups.values() for r in recs)
    header = ["run", "n", "acc % mean ± std", "TAR@FAR=1e-3 %", "AUC", "top-1 %", "loss / L_deg", "s/epoch", "img/s"]
    rows = [_training_row(label, recs) + ([_mixup_cell(recs)] if mixup else []) for label, recs in groups.items()]
    return markdown_table(header + (["mixup"] if mixup else []), rows)


def _training_row(label: str, recs: list[dict]) -> list[str]:
    v = [r["verification"] for r in recs]
    acc = np.array([x[ACCURACY] for x in v]) * 100
    spread = f"{acc.std(ddof=1):.2f} (seeds)" if len(recs) > 1 else f"{100 * v[0][ACCURACY_STD]:.2f} (folds)"
    tar = [x["tar_at_far"].get("0.001") for x in v]
    top1 = [x["identification"][TOP1] for x in v]
    return [label, len(recs), f"{acc.mean():.2f} ± {spread}", "n/a" if None in tar else pct(np.mean(tar), 1),
            f"{np.mean([x[AUC] for x in v]):.4f}", "n/a" if None in top1 else pct(np.mean(top1), 1),
            _collapse_cell(recs), f"{np.mean([r['train']['seconds_per_epoch'] for r in recs]):.1f}",
            f"{np.mean([r['train']['images_per_second'] for r in recs]):.0f}"]


def _collapse_cell(recs: list[dict]) -> str:
    """Final loss over ArcFace's degenerate loss, worst run; COLLAPSED when flagged."""
    checks = [r.get("collapse") for r in recs]
    if None in checks:
        return "-"
    flagged = sum(c["collapsed"] for c in checks)
    worst = max(c["loss_ratio"] or 0.0 for c in checks)
    return f"{worst:.2f}" + (f" COLLAPSED ({flagged}/{len(checks)})" if flagged else "")


def _mixup_cell(recs: list[dict]) -> str:
    m = recs[0].get("mixup", {"name": "none"})
    if m["name"] == "none":
        return "-"
    if m["name"] == "fixed":
        return f"k={m['k'][0]}"
    props = np.mean([r["mixup"]["k_proportion"] for r in recs], axis=0)
    return f"k {m['k'][0]}-{m['k'][-1]}: [{', '.join(f'{p:.2f}' for p in props)}]"


# --------------------------------------------------------------------------------------------------- fedface simulate
def federation_table(runs: list[tuple[str, dict]]) -> str:
    rows = []
    for name, r in runs:
        rounds = r.get("rounds", [])
        evals = [(x["round"], 100 * x[ACCURACY]) for x in rounds if x.get(ACCURACY) is not None]
        if not evals:
            continue
        best = max(evals, key=lambda e: e[1])
        stop = "plateau" if r.get("stopped") else ("max" if r.get("status") == "done" else r.get("status"))
        rows.append([name, f"{len(rounds)} ({stop})", f"{best[1]:.2f} ({best[0]})", f"{evals[-1][1]:.2f}",
                     f"{np.mean([x['bytes_sent'] for x in rounds]) / 1e6:.1f} / "
                     f"{np.mean([x['bytes_received'] for x in rounds]) / 1e6:.1f}",
                     f"{np.mean([x['seconds'] for x in rounds]):.0f}", " ".join(f"{a:.0f}" for _, a in evals)])
    return markdown_table(["run", "rounds", "best acc % (round)", "final acc %", "MB sent / received per round",
                           "s/round", "accuracy per round (%)"], rows)


def _ceiling(ceiling: dict) -> str:
    """The attack's identity ceilings (``scoring.identity_ceilings``): dlib top-1 / SRRA of the true faces; of the
    prior's best fit."""
    parts = [f"{num(c.get('top1'), '.2f')} / {num(c.get('srra'), '.2f')}"
             for c in (ceiling.get("truth"), ceiling.get("prior_fit")) if c]
    return "; ".join(parts) or "-"


def attack_table(runs: list[tuple[str, dict]]) -> str:
    """The attacks a federation run recorded (``rounds[].attacks``), one row per attack."""
    def cell(scores: dict, key: str) -> str:
        s = scores.get(key)
        return "-" if s is None else f"{s['psnr']:.1f} / {s['ssim']:.2f}"

    rows = []
    for name, res in runs:
        for rnd in res.get("rounds", []):
            for a in rnd.get("attacks", []):
                head = [name, rnd["round"], a.get("attack", "gradient"), a.get("threat", "-")]
                if "skipped" in a:
                    rows.append(head + [f"skipped: {a['skipped'][:70]}"] + [""] * 11)
                    continue
                s = a.get("scores", {})
                lab, idn, top = s.get("labels"), s.get("identity") or {}, s.get("ceiling") or {}
                rows.append(head + [a.get("prior", "free"), cell(s, "masked"), cell(s, "floor_masked"),
                                    cell(s, "unmixed"), cell(s, "image"), cell(s, "floor_image"),
                                    f"{num(idn.get('cos'), '.2f')} / {num(idn.get('top1'), '.2f')}",
                                    num(idn.get("srra"), ".2f"), _ceiling(top),
                                    "-" if lab is None else f"{lab['precision']:.2f} / {lab['recall']:.2f}",
                                    a.get("iterations", "-"), num(a.get("seconds"), ".0f"),
                                    "time-bounded" if a.get("stopped") == "max_seconds" else ""])
    return markdown_table(["run", "round", "attack", "threat", "prior", "masked PSNR/SSIM", "masked floor",
                           "un-mixed", "image PSNR/SSIM", "image floor", "dlib COS / top-1", "SRRA",
                           "ceiling top-1 / SRRA: faces; prior fit", "labels P/R",
                           "it", "s", "note"], rows)


# --------------------------------------------------------------------------------------------------- attacks
def invert_table(rows: list[dict[str, Any]]) -> str:
    """``fedface invert``'s rows: identity scores of the inversions (dlib and the target system)."""
    out = []
    for r in rows:
        if "skipped" in r:
            out.append([r["protection"], r["head"], r["attack"], r["threat"], f"skipped: {r['skipped']}"] + [""] * 6)
            continue
        i = r.get("identity", {})
        out.append([r["protection"], r["head"], r["attack"], r["threat"],
                    *(num(i.get(m)) for m in ("cos", "same_person", "top1", "srra", "target_top1")),
                    num(r.get("centre_cos_mean")), num(r.get("row_precision"))])
    return markdown_table(["protection", "head", "attack", "threat", "COS (dlib)", "same person", "top-1", "SRRA",
                           "target top-1", "centre cos", "row precision"], out)


def imprint_table(runs: list[tuple[str, dict]]) -> str:
    """``fedface imprint``: inputs the trap read back (> 30 dB in model-input space) per run."""
    rows = []
    for name, r in runs:
        if not r.get("rows"):
            continue
        rec, tot = sum(x["recovered"] for x in r["rows"]), sum(x["batch"] for x in r["rows"])
        pix = [x["pixel_psnr_mean"] for x in r["rows"] if "pixel_psnr_mean" in x]
        rows.append([name, r["malicious_weights"], r["protection"], f"{len(r['rows'])} x {r['batch_size']}",
                     f"{rec}/{tot}", f"{rec / tot:.3f}", f"{np.mean(pix):.1f} dB" if pix else "n/a"])
    return markdown_table(["run", "MALICIOUS WEIGHTS", "protection", "clients x batch",
                           "recovered (> 30 dB, model_input)", "rate", "pixel PSNR (mean)"], rows)


def reconstruct_table(rows: list[dict[str, Any]]) -> str:
    """``fedface reconstruct``'s rows: pixel and identity scores of each attack on one protection."""
    out = []
    for r in rows:
        if "skipped" in r:
            continue
        idn = r.get("identity", {})
        out.append([r["protection"], r["attack"], r["threat"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}",
                    num(idn.get("cos")), num(idn.get("srra")), num(idn.get("top1")), r.get("note", "")])
    return markdown_table(["protection", "attack", "threat", "PSNR", "SSIM", "COS", "SRRA", "top-1", "note"], out)


# --------------------------------------------------------------------------------------------------- the command
def summarize(runs: list[Path], by_seed: bool = False) -> str:
    by_kind: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for run in runs:
        results = load(run)
        by_kind[kind_of(results)].append((run.name, results))
    unknown = sorted(set(by_kind) - {"train", "simulate", "invert", "imprint", "reconstruct", "compare"})
    if unknown:
        names = [n for k in unknown for n, _ in by_kind[k]]
        raise ValueError(f"{', '.join(names)}: results.json of an unknown command {unknown}")
    several = len(runs) > 1
    tables = []
    if by_kind["train"]:
        tables.append(training_table(by_kind["train"], by_seed))
    if by_kind["simulate"]:
        tables.append(federation_table(by_kind["simulate"]))
        if any(a for _, r in by_kind["simulate"] for rnd in r.get("rounds", []) for a in rnd.get("attacks", [])):
            tables.append(attack_table(by_kind["simulate"]))
    if by_kind["invert"]:
        tables.append(invert_table([{**row, "protection": f"{name}: {row['protection']}" if several
                                     else row["protection"]} for name, r in by_kind["invert"] for row in r["rows"]]))
    if by_kind["imprint"]:
        tables.append(imprint_table(by_kind["imprint"]))
    if by_kind["reconstruct"]:
        tables.append(reconstruct_table([row for _, r in by_kind["reconstruct"] for row in r["rows"]]))
    if by_kind["compare"]:
        from fedface.compare_report import table_md

        tables += [table_md(r) for _, r in by_kind["compare"]]
    return "\n\n".join(tables)


def main(args: list[str]) -> int:
    runs = [Path(a) for a in args if not a.startswith("--")]
    flags = [a for a in args if a.startswith("--")]
    if any(f in ("-h", "--help") for f in args):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0
    if not runs or set(flags) - {"--seeds"}:
        print(USAGE)
        return 2
    print(summarize(runs, by_seed="--seeds" in flags))
    return 0
