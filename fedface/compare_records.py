"""A compare's cells as records and summary rows: one record per (cell, attack) with the cell's utility, privacy and
cost, then mean +- 95% CI over seeds per (protection, attack) and paper 001's scores (Sec. 4.2). ``fedface.compare``
runs the cells; ``fedface.compare_report`` renders what this module computes."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedface.report.schema import ACCURACY, TAR_1E2, TAR_1E3, UTILITY_METRICS


#: which `fedface invert` row a compare record reports (server threat, scored pictures), in this order of preference:
#: class-centre inversion when the server holds the centres (head=shared), else backbone-only BN-statistics inversion
INVERSION_ROWS = ("class-centre", "class-centre (pictures through the protection)",
                  "class-centre (masked space) + decoder", "BN statistics only",
                  "BN statistics only (pictures through the protection)", "BN statistics only (masked space) + decoder")


def _inversion_privacy(inv: dict[str, Any]) -> dict[str, Any]:
    rows = inv.get("rows", [])
    scored = {r["attack"]: r for r in rows if r.get("threat") == "server" and "identity" in r}
    pick = next((scored[a] for a in INVERSION_ROWS if a in scored), None)
    floor = next((r for r in rows if r.get("attack") == "mean face (floor)"), None)
    out: dict[str, Any] = {"space": "pictures 112x112 (identity guesses: PSNR/SSIM n/a, an inverted class centre "
                                    "or feature statistics has no one original image)",
                           "inversion_rows": rows, "head": inv.get("head")}
    if pick is None:
        out["inversion_row"] = None
        out["srra_unavailable"] = "no scored model-inversion row (see inversion_rows)"
        return out
    idn = pick["identity"]
    out.update(inversion_row=pick["attack"], cos=idn.get("cos"), same_person=idn.get("same_person"),
               attack_top1=idn.get("top1"), srra=idn.get("srra"), target_top1=idn.get("target_top1"))
    if idn.get("srra") is None:
        out["srra_unavailable"] = idn.get("srra_unavailable") or "not measured"
    if floor is not None and "identity" in floor:
        out["floor_cos"] = floor["identity"].get("cos")
        out["floor_srra"] = floor["identity"].get("srra")
    return out


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _collapse(outcome: dict[str, Any]) -> dict[str, Any] | None:
    """The cell's collapse verdict under today's detector, from the evidence its federation recorded every round (a
    compare that resumes after the rule changed re-judges its cached cells); the stored verdict without that file."""
    from fedface.runs import RunLayout
    from fedface.train.collapse import rounds_verdict

    results = RunLayout(Path(outcome["cell_dir"]) / "federation").results if outcome.get("cell_dir") else None
    if results is None or not results.exists():
        return outcome["federation"].get("collapse")
    return rounds_verdict(json.loads(results.read_text()).get("rounds", []))


def records_of(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per attack of a cell (schema: ``fedface.report.schema.RECORD``)."""
    base = {"protection": outcome["protection"], "seed": outcome["seed"], "config_hash": outcome["config_hash"],
            "wall_seconds": outcome.get("wall_seconds"), "machine": outcome.get("machine"),
            "cell_dir": outcome.get("cell_dir")}
    base = {k: v for k, v in base.items() if v is not None or k == "wall_seconds"}
    if outcome["status"] != "done":
        return [{**base, "attack": a, "status": "failed", "error": outcome.get("error", "unknown error")}
                for a in outcome["attacks"]]
    rounds = outcome["federation"]["rounds"]
    evaluated = [r for r in rounds if r.get("accuracy") is not None]
    last = evaluated[-1] if evaluated else {}
    utility = {**{k: _num(last.get(k)) for k in UTILITY_METRICS},
               "curve": [{"round": r["round"], "accuracy": _num(r.get("accuracy")),
                          "train_loss": _num(r.get("train_loss"))} for r in rounds],
               "collapse": _collapse(outcome)}
    per_round = [(r.get("bytes_sent") or 0) + (r.get("bytes_received") or 0) for r in rounds]
    bytes_per_round = sum(per_round) / len(per_round) if per_round else None
    rec = outcome.get("reconstruct") or {}
    masking = rec.get("masking_effect") or {}
    last_dp = next((r for r in reversed(rounds) if r.get("delta") is not None), {})
    out = []
    for attack in outcome["attacks"]:
        privacy = {"psnr": None, "ssim": None, "cos": None, "same_person": None, "attack_top1": None, "srra": None,
                   "masking_visual": masking.get("visual"), "masking_feature": masking.get("feature")}
        if last_dp.get("delta") is not None:  # protect=dp_sgd: the largest client epsilon after the last round
            privacy.update(epsilon=last_dp.get("epsilon_max"), delta=last_dp["delta"])
        if attack == "learned":
            row = next((r for r in rec.get("rows", []) if r.get("attack") == "decoder" and r.get("threat") == "server"
                        and "skipped" not in r), None)
            floor = next((r for r in rec.get("rows", []) if r.get("attack") == "mean face"), None)
            if row is not None:
                idn = row.get("identity", {})
                privacy.update(psnr=row["psnr"], ssim=row["ssim"], cos=idn.get("cos"),
                               same_person=idn.get("same_person"), attack_top1=idn.get("top1"),
                               srra=idn.get("srra"), target_top1=idn.get("target_top1"),
                               space="pixels 64x64 (U-Net decoder on the masked inputs)")
                if idn.get("srra") is None:
                    privacy["srra_unavailable"] = idn.get("srra_unavailable", "not measured")
            if floor is not None:
                privacy["floor_psnr"], privacy["floor_ssim"] = floor["psnr"], floor["ssim"]
        elif attack == "model_inversion":
            privacy.update(_inversion_privacy(outcome.get("invert") or {}))
        else:  # gradient inversion: decoded to faces by the learned decoder when the grid has it, else raw
            decoded = [r for r in rec.get("gradient_recoveries") or [] if r.get("attack") == "gradient+decoder"]
            raw = [a for r in rounds for a in r["attacks"] if a.get("skipped") is None and a.get("scores")]
            if decoded:
                privacy.update(psnr=_mean([r["psnr"] for r in decoded]), ssim=_mean([r["ssim"] for r in decoded]),
                               floor_psnr=_mean([r["floor"]["psnr"] for r in decoded]),
                               floor_ssim=_mean([r["floor"]["ssim"] for r in decoded]),
                               space="pixels 64x64 (gradient-recovered inputs decoded by the learned decoder)")
            elif raw:
                space = "image" if all("image" in a["scores"] for a in raw) else "masked"
                privacy.update(psnr=_mean([a["scores"][space]["psnr"] for a in raw]),
                               ssim=_mean([a["scores"][space]["ssim"] for a in raw]),
                               space="pixels (recovered image)" if space == "image" else
                               "model input (masked; not comparable with pixel rows)")
            privacy["gradient_raw"] = [a for r in rounds for a in r["attacks"]]
            privacy["srra_unavailable"] = ("not measured for gradient inversion: its recoveries are one reply's "
                                           "batch, scored by PSNR/SSIM; replay (SRRA) is measured on the learned and "
                                           "model-inversion rows")
        out.append({**base, "attack": attack, "status": "done", "utility": utility, "privacy": privacy,
                    "bytes_per_round": bytes_per_round, "scores": None})
    return out


def _mean(xs: list[float]) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def mean_ci(xs: list[float | None]) -> dict[str, Any] | None:
    """Mean and the half-width of its two-sided 95% Student-t confidence interval (None with one value)."""
    xs = [float(x) for x in xs if x is not None]
    if not xs:
        return None
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return {"mean": m, "ci95": None, "n": n}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    from scipy.stats import t as student_t

    return {"mean": m, "ci95": float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n), "n": n}


SUMMARY_METRICS = {ACCURACY: ("utility", ACCURACY), TAR_1E3: ("utility", TAR_1E3), TAR_1E2: ("utility", TAR_1E2),
                   "psnr": ("privacy", "psnr"), "ssim": ("privacy", "ssim"), "cos": ("privacy", "cos"),
                   "srra": ("privacy", "srra"),
                   "attack_top1": ("privacy", "attack_top1"), "target_top1": ("privacy", "target_top1"),
                   "floor_psnr": ("privacy", "floor_psnr"), "floor_cos": ("privacy", "floor_cos"),
                   "masking_visual": ("privacy", "masking_visual"),
                   "masking_feature": ("privacy", "masking_feature"), "epsilon": ("privacy", "epsilon")}


def summarise(records: list[dict[str, Any]], protections: list[str], attacks: list[str]) -> list[dict[str, Any]]:
    """One row per (protection, attack): mean +- 95% CI over seeds, and paper 001's scores normalised across the
    grid's rows of that attack (``none`` is the accuracy reference and gets no scores, as in its Table 2)."""
    from fedface.metrics.scores import paper_scores

    rows = []
    for attack in attacks:
        for protection in protections:
            mine = [r for r in records if r["protection"] == protection and r["attack"] == attack]
            done = [r for r in mine if r["status"] == "done"]
            row: dict[str, Any] = {"protection": protection, "attack": attack, "seeds": [r["seed"] for r in done],
                                   "status": "done" if done else (mine[0]["status"] if mine else "missing")}
            note = next((r["threat_note"] for r in mine if r.get("threat_note")), None)
            if note:  # central DP / SecAgg+: what the row means against the server (set on its records)
                row["threat_note"] = note
            if not done:
                row["error"] = mine[0].get("error") if mine else "no record"
            else:
                row["failed_seeds"] = [r["seed"] for r in mine if r["status"] != "done"]
                for name, (group, key) in SUMMARY_METRICS.items():
                    row[name] = mean_ci([r[group].get(key) for r in done])
                row["bytes_per_round"] = _mean([r["bytes_per_round"] for r in done])
                row["curve"] = _mean_curve([r["utility"]["curve"] for r in done])
                row["collapsed"] = sum(bool((r["utility"].get("collapse") or {}).get("collapsed")) for r in done)
                row["space"] = done[0]["privacy"].get("space")
                if done[0]["privacy"].get("delta") is not None:
                    row["delta"] = done[0]["privacy"]["delta"]
                if done[0]["privacy"].get("srra_unavailable"):
                    row["srra_unavailable"] = done[0]["privacy"]["srra_unavailable"]
            rows.append(row)
        scored = [r for r in rows if r["attack"] == attack and r["status"] == "done" and r["protection"] != "none"]
        reference = next((r["accuracy"]["mean"] for r in rows if r["attack"] == attack and r["protection"] == "none"
                          and r["status"] == "done" and r.get("accuracy")), None)
        cells = []
        for r in scored:
            c = {"masking_visual": _m(r["masking_visual"]), "masking_feature": _m(r["masking_feature"]),
                 # pixel-space reconstructions only: a masked-space SSIM (gradient attack without the decoder)
                 # measures another thing and must not be ranked against pixel rows
                 "attack_visual": None if r["ssim"] is None or not str(r.get("space", "")).startswith("pixels")
                 else 1 - r["ssim"]["mean"],
                 "attack_feature": None if r["cos"] is None else 1 - r["cos"]["mean"],
                 "accuracy": _m(r["accuracy"]) if reference else None}
            cells.append(c)
        # a row the attack could not measure (SecAgg+: no per-client update, the aggregate over the memory bound)
        # gets no scores, rather than erasing the attack level of every measured row (a measure must be on all rows)
        attacked = [c["attack_visual"] is not None or c["attack_feature"] is not None for c in cells]
        if any(attacked) and not all(attacked):
            scored = [r for r, a in zip(scored, attacked) if a]
            cells = [c for c, a in zip(cells, attacked) if a]
        for key in ("masking_visual", "masking_feature", "attack_visual", "attack_feature", "accuracy"):
            if any(c[key] is None for c in cells):  # a measure must be on every row or on none
                for c in cells:
                    c.pop(key)
        if cells:
            for r, s in zip(scored, paper_scores(cells, reference if "accuracy" in cells[0] else None)):
                r["scores"] = {k: s[k] for k in ("masking_score", "attack_score", "privacy_score", "accuracy_score",
                                                 "comprehensive_mean", "comprehensive_product", "accuracy_ratio")}
    for r in rows:
        r.setdefault("scores", None)
    return rows


def _m(stat: dict | None) -> float | None:
    return None if stat is None else stat["mean"]


def _mean_curve(curves: list[list[dict]]) -> list[dict[str, Any]]:
    by_round: dict[int, list[float]] = {}
    for curve in curves:
        for p in curve:
            if p.get("accuracy") is not None:
                by_round.setdefault(p["round"], []).append(p["accuracy"])
    return [{"round": k, "accuracy": sum(v) / len(v)} for k, v in sorted(by_round.items())]
