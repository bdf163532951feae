"""The results folder of ``fedface compare``: table.md (paper 001's Table 2 shape), frontier.png, curves.png,
grids/, tensorboard/, results.json, config.yaml and report.html (one self-contained page, images embedded).

Every file is written atomically; ``report.html`` is removed first and written last, so a compare interrupted while
writing leaves either no report or a whole one -- never a half-written one.
"""
from __future__ import annotations

import base64
import html
import io
import shutil
from pathlib import Path
from typing import Any

from fedface.federation.central_dp import THREAT_NOTE as CENTRAL_DP
from fedface.federation.secagg import THREAT_NOTE as SECAGG
from fedface.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from fedface.report.schema import TAR_1E2, TAR_1E3
from fedface.report.tables import markdown_table
from fedface.runs import RunLayout

ATTACK_TITLES = {"gradient": "Malicious server I: gradient inversion (decoded to faces)",
                 "learned": "Malicious server II: learned reconstruction (U-Net decoder)",
                 "model_inversion": "Malicious server III: model inversion of the final weights (fedface invert)"}


def _stat(s: dict | None, scale: float = 1.0, spec: str = ".2f") -> str:
    if s is None:
        return "n/a"
    text = format(s["mean"] * scale, spec)
    return text + (f" ± {format(s['ci95'] * scale, spec)}" if s.get("ci95") is not None else "")


def _f(v, spec=".3f") -> str:
    return "n/a" if v is None else format(v, spec)


COLUMNS = ["protection", "seeds", "accuracy %", "TAR@FAR 1e-3 / 1e-2 %", "masking 1-SSIM / 1-COS",
           "attack PSNR dB (floor)", "attack SSIM", "attack COS", "SRRA", "top-1 dlib / target", "privacy score",
           "accuracy score", "comprehensive mean / product", "MB / round"]


def row_name(s: dict[str, Any]) -> str:
    """A row's protection, with its threat note when it gives no protection against the server (central DP) and its
    (epsilon, delta) when it is DP-SGD."""
    if s.get("threat_note"):
        return f"{s['protection']} ({s['threat_note']})"
    if s.get("delta") is not None:
        eps = "inf" if s.get("epsilon") is None else f"{s['epsilon']['mean']:.2f}"
        return f"{s['protection']} (ε = {eps}, δ = {s['delta']:g})"
    return s["protection"]


def table_rows(results: dict[str, Any], attack: str) -> list[list[str]]:
    rows = []
    for s in results["summary"]:
        if s["attack"] != attack:
            continue
        if s["status"] != "done":
            rows.append([row_name(s), "-", f"{s['status'].upper()}: {s.get('error', '')}"] + [""] * 11)
            continue
        sc = s.get("scores") or {}
        failed = f" ({len(s['failed_seeds'])} failed)" if s.get("failed_seeds") else ""
        rows.append([
            row_name(s), f"{len(s['seeds'])}{failed}", _stat(s["accuracy"], 100) + _collapsed(s),
            f"{_stat(s[TAR_1E3], 100)} / {_stat(s[TAR_1E2], 100)}",
            f"{_stat(s['masking_visual'], 1, '.3f')} / {_stat(s['masking_feature'], 1, '.3f')}",
            f"{_stat(s['psnr'])}{_mark(s)} ({_stat(s.get('floor_psnr'))})", _stat(s["ssim"], 1, ".3f") + _mark(s),
            _stat(s["cos"], 1, ".3f"), _stat(s["srra"], 1, ".2f"),
            f"{_stat(s['attack_top1'], 1, '.2f')} / {_stat(s.get('target_top1'), 1, '.2f')}",
            "-" if s["protection"] == "none" else _f(sc.get("privacy_score")),
            "-" if s["protection"] == "none" else _f(sc.get("accuracy_score")),
            "-" if s["protection"] == "none" else
            f"{_f(sc.get('comprehensive_mean'))} / {_f(sc.get('comprehensive_product'))}",
            _f(None if s.get("bytes_per_round") is None else s["bytes_per_round"] / 1e6, ".2f")])
    return rows


def _collapsed(s: dict[str, Any]) -> str:
    """Flag the seeds stuck in ArcFace's degenerate solution: their accuracy is an artifact, not the protection's."""
    return f" COLLAPSED ({s['collapsed']}/{len(s['seeds'])})" if s.get("collapsed") else ""


def _mark(s: dict[str, Any]) -> str:
    """A dagger on PSNR/SSIM measured on the masked model input rather than on pixels."""
    return " †" if str(s.get("space") or "").startswith("model input") else ""


def _floor_cos(rows: list[dict[str, Any]]) -> str:
    return _stat(next((s["floor_cos"] for s in rows if s.get("floor_cos")), None), 1, ".3f")


def footnotes(results: dict[str, Any], attack: str) -> list[str]:
    rows = [s for s in results["summary"] if s["attack"] == attack and s["status"] == "done"]
    notes = []
    space = next((s.get("space") for s in rows if str(s.get("space") or "").startswith("pixels")), None)
    if space:
        notes.append(f"PSNR/SSIM space: {space}; (floor) = the mean face of the attacker's auxiliary set, which an "
                     f"attack must beat to show anything.")
    guesses = next((s["space"] for s in rows if str(s.get("space") or "").startswith("pictures")), None)
    if guesses:  # model inversion: identity scores only (COS, SRRA, top-1), against the floor in the record
        notes.append(f"Space: {guesses}; COS / SRRA / top-1 score the inversions as guesses of the attacked "
                     f"identities (the mean face, as a guess, scores COS {_floor_cos(rows)}).")
    if any(_mark(s) for s in rows):
        notes.append("†: PSNR/SSIM of the recovered masked model input against the true one (no decoder in this "
                     "grid: add the learned attack to decode to faces); not comparable with pixel rows and left out "
                     "of the paper-001 attack level.")
    srra = next((s.get("srra_unavailable") for s in rows if s.get("srra_unavailable")), None)
    if srra:
        hint = " (raise compare.learned's attack.victims)" if attack == "learned" and "impostor" in srra else ""
        notes.append(f"SRRA n/a: {srra}{hint}; the target system's top-1 identification of the reconstructions is "
                     f"shown instead where measured.")
    if any(s.get("threat_note") == SECAGG for s in rows):
        notes.append("SecAgg+ rows (federation.secagg): the server receives only the sum of the sampled clients' "
                     "updates, so per-client attacks are unavailable by construction; its gradient inversion ran on "
                     "the aggregate (one update of all their batches) and model inversion on the shared weights.")
    if any(s.get("threat_note") == CENTRAL_DP for s in rows):
        notes.append("Central DP rows (Flower's DP-FedAvg wrappers, federation.dp): no protection against the server "
                     "-- the server sees every client's update before it adds the noise, so this table's attacks "
                     "work as without DP; the noise protects the released model from outside observers only.")
    if any(s.get("collapsed") for s in rows):
        notes.append("COLLAPSED: the class centres point one way, as they do on ArcFace's degenerate solution -- at the "
                     "end, or for 3+ rounds in which the clients' loss stalled at that solution's loss "
                     "(fedface.train.collapse): that row's accuracy says nothing about what its input keeps.")
    if sum(s["protection"] != "none" for s in rows) == 1:
        notes.append("One masked row: paper 001's scores are normalised across rows, so with a single row every score "
                     "is the midpoint 0.75 and ranks nothing.")
    return notes


def table_md(results: dict[str, Any]) -> str:
    lines = [f"<!-- fedface compare experiment={results['experiment']}: {results['command']} -->",
             f"# {results['experiment']}: with/without masking under attack ({results['data']})", ""]
    lines += [f"> {n}" for n in results["notes"]] + ([""] if results["notes"] else [])
    for attack in results["grid"]["attacks"]:
        lines += [f"## {ATTACK_TITLES.get(attack, attack)}", "", markdown_table(COLUMNS, table_rows(results, attack))]
        lines += [f"\n{n}" for n in footnotes(results, attack)]
        lines.append("")
    m = results["machine"]
    lines.append(f"Mean ± 95% CI (Student t) over seeds where a row has several. Scores: paper 001 Sec. 4.2, "
                 f"normalised across this table's masked rows (`none` is the accuracy reference). Machine: "
                 f"{m.get('cpu_count')} CPUs, torch threads {m.get('torch_threads')}, load "
                 f"{', '.join(f'{x:.1f}' for x in m.get('load_average', []))}; compare wall time "
                 f"{results['wall_seconds']:.0f} s ({results['cells']['ran']} cells ran, "
                 f"{results['cells']['resumed']} cached, {results['cells']['failed']} failed).")
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def frontier_png(results: dict[str, Any]) -> bytes:
    """Privacy (1 - SSIM of the attack's reconstruction) vs utility (verification accuracy): one point per
    protection and attack (marker = attack, colour = protection); bars = 95% CI over seeds where there are several.
    The legend sits outside the axes, one entry per protection and per attack, so a 10-row grid stays readable."""
    plt = _plt()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = {"gradient": "o", "learned": "s", "model_inversion": "^"}
    protections = results["grid"]["protections"]
    colours = {p: plt.cm.tab10(i % 10) for i, p in enumerate(protections)}
    names: dict[str, str] = {}
    attacks: list[str] = []
    for s in results["summary"]:
        if s["status"] != "done" or s.get("ssim") is None or s.get("accuracy") is None or _mark(s):
            continue  # masked-space SSIM (†) is not a privacy of faces: no point on this plot
        x, y = 1 - s["ssim"]["mean"], 100 * s["accuracy"]["mean"]
        ax.errorbar(x, y, xerr=s["ssim"].get("ci95"), yerr=None if s["accuracy"].get("ci95") is None else
                    100 * s["accuracy"]["ci95"], fmt=markers.get(s["attack"], "o"), color=colours[s["protection"]],
                    ms=8, capsize=3)
        ax.annotate(s["protection"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
        names.setdefault(s["protection"], row_name(s) if s.get("delta") is not None else s["protection"])
        if s["attack"] not in attacks:
            attacks.append(s["attack"])
    ax.set_xlabel("privacy: 1 - SSIM of the server's reconstruction (higher = more private)")
    ax.set_ylabel("utility: verification accuracy %")
    ax.set_title(f"{results['experiment']} ({results['data']}): privacy vs utility", fontsize=9)
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], ls="", marker="o", color=colours[p], label=names[p]) for p in protections if p in names]
    handles += [Line2D([], [], ls="", marker=markers.get(a, "o"), color="black", mfc="none",
                       label=a.replace("_", " ")) for a in attacks]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _png(fig)


def curves_png(results: dict[str, Any]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    seen = set()
    for s in results["summary"]:
        if s["status"] != "done" or s["protection"] in seen or not s.get("curve"):
            continue
        seen.add(s["protection"])
        ax.plot([p["round"] for p in s["curve"]], [100 * p["accuracy"] for p in s["curve"]], marker="o",
                label=f"{s['protection']} ({len(s['seeds'])} seed{'s' if len(s['seeds']) > 1 else ''})")
    ax.set_xlabel("round")
    ax.set_ylabel("verification accuracy % (held-out identities)")
    ax.set_title(f"{results['experiment']} ({results['data']}): accuracy per round (mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    if seen:
        ax.legend(fontsize=8)
    return _png(fig)


def grid_sources(results: dict[str, Any]) -> dict[str, Path]:
    """grids/<protection>-s<seed>-<attack>.png <- the cell's own grid (original | what the server reconstructed)."""
    out = {}
    for r in results["records"]:
        if r["status"] != "done" or not r.get("cell_dir"):
            continue
        cell = Path(r["cell_dir"])
        if r["attack"] == "learned":
            found = [p for p in sorted((cell / "reconstruct" / "grids").glob("*.png"))
                     if not p.name.startswith("gradient-")]
        elif r["attack"] == "model_inversion":  # real | floor | ceiling | inversions (fedface invert's grid)
            found = sorted((cell / "invert" / "grids").glob("*.png"))
        else:
            found = sorted((cell / "reconstruct" / "grids").glob("gradient-*.png")) or \
                RunLayout(cell / "federation").recorded("*.png")
        if found:
            out[f"{r['protection'].replace('+', '_')}-s{r['seed']}-{r['attack']}.png"] = found[0]
    return out


def write_tensorboard(folder: Path, results: dict[str, Any]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    if folder.exists():
        shutil.rmtree(folder)
    for r in results["records"]:
        if r["status"] != "done":
            continue
        writer = SummaryWriter(str(folder / f"{r['protection'].replace('+', '_')}-s{r['seed']}"))
        if r["attack"] == results["grid"]["attacks"][0]:
            for p in r["utility"]["curve"]:
                if p.get("accuracy") is not None:
                    writer.add_scalar("utility/accuracy", p["accuracy"], p["round"])
        for key in ("psnr", "ssim", "cos", "srra"):
            if r["privacy"].get(key) is not None:
                writer.add_scalar(f"privacy/{r['attack']}/{key}", r["privacy"][key], 0)
        writer.close()


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def report_html(results: dict[str, Any], images: dict[str, bytes], grids: dict[str, bytes]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>fedface compare {e(results['experiment'])}"
             "</title><style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:13px;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}th{background:#eee}.note{background:#fee;border:2px solid"
             " #c00;padding:.5em 1em;font-weight:bold}.failed{color:#c00}img{max-width:100%}figure{display:inline-block;"
             "margin:.5em;vertical-align:top}figcaption{font-size:12px}</style></head><body>",
             f"<h1>fedface compare: {e(results['experiment'])} — with/without masking under attack</h1>",
             f"<p>Data: <b>{e(results['data'])}</b>. Command: <code>{e(results['command'])}</code>. Created "
             f"{e(results['created'])}. Cells: {results['cells']['total']} ({results['cells']['ran']} ran, "
             f"{results['cells']['resumed']} cached, {results['cells']['failed']} failed).</p>"]
    parts += [f"<p class='note'>{e(n)}</p>" for n in results["notes"]]
    for attack in results["grid"]["attacks"]:
        parts.append(f"<h2>{e(ATTACK_TITLES.get(attack, attack))}</h2><table><tr>"
                     + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr>")
        for row in table_rows(results, attack):
            failed = row[2].startswith(("FAILED", "UNAVAILABLE", "MISSING"))
            if failed:
                parts.append(f"<tr class='failed'><td>{e(row[0])}</td><td>{e(row[1])}</td>"
                             f"<td colspan='{len(COLUMNS) - 2}' style='text-align:left'>{e(row[2])}</td></tr>")
            else:
                parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
        parts += [f"<p>{e(n)}</p>" for n in footnotes(results, attack)]
    parts.append("<p>Mean ± 95% CI (Student t) over seeds where a row has several. Scores: paper 001 Sec. 4.2, "
                 "normalised across each table's masked rows; <code>none</code> is the accuracy reference (\"-\", "
                 "as in its Table 2). Higher scores = more private / more accurate.</p>")
    parts.append("<h2>Privacy vs utility</h2>" + "".join(
        f"<figure>{_img(images[name], name)}<figcaption>{e(name)}</figcaption></figure>" for name in images))
    if grids:
        parts.append("<h2>What the server reconstructed</h2><p>Each grid: original faces | the masked input (or the "
                     "gradient-recovered input) | the attack's reconstruction.</p>")
        parts += [f"<figure>{_img(data, name)}<figcaption>{e(name)}</figcaption></figure>"
                  for name, data in grids.items()]
    failed = [r for r in results["records"] if r["status"] != "done"]
    if failed:
        parts.append("<h2>Failed / unavailable cells</h2><ul>" + "".join(
            f"<li class='failed'>{e(r['protection'])} / {e(r['attack'])} seed {r['seed']}: {e(r['status'])} — "
            f"{e(r.get('error', ''))}</li>" for r in failed) + "</ul>")
    m = results["machine"]
    parts.append(f"<h2>Machine</h2><p>{e(str(m.get('platform')))}, {m.get('cpu_count')} CPUs, torch "
                 f"{e(str(m.get('torch')))}, CUDA {m.get('cuda')}, load average "
                 f"{', '.join(f'{x:.1f}' for x in m.get('load_average', []))}; wall time "
                 f"{results['wall_seconds']:.0f} s.</p></body></html>")
    return "\n".join(parts)


def write_all(out: Path, results: dict[str, Any], config_yaml: str) -> None:
    out = Path(out)
    report = out / "report.html"
    report.unlink(missing_ok=True)  # no stale report beside new results while this runs
    layout = RunLayout(out)
    atomic_write_json(layout.results, results)
    atomic_write_text(out / "table.md", table_md(results))
    atomic_write_text(layout.config, config_yaml)
    images = {"frontier.png": frontier_png(results), "curves.png": curves_png(results)}
    for name, data in images.items():
        atomic_write_bytes(out / name, data)
    grids = {}
    for name, src in grid_sources(results).items():
        grids[name] = src.read_bytes()
        atomic_write_bytes(out / "grids" / name, grids[name])
    write_tensorboard(layout.tensorboard, results)
    atomic_write_text(report, report_html(results, images, grids))
