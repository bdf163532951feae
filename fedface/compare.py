"""`fedface compare experiment=<name>`: protections x malicious-server attacks, one federation per cell.

An experiment is a Hydra config in ``configs/experiment/`` (``# @package _global_``): it fixes the data, backbone,
rounds and federation for every cell, and its ``compare`` block names the grid -- ``protections`` x ``attacks`` x
``seeds`` -- and each attack's budget (``compare.gradient`` / ``compare.learned``: override lists applied to every
cell alike). Only ``protect`` / ``mixup`` and the seed differ between cells.

A *cell* is (protection, seed): one federation (``strategies.simulate``) with the gradient-inversion server
(``attack=gradient``) when the grid has that attack, then the learned reconstruction (``fedface.reconstruct``) with
the cell's own federated model as the SRRA target and, with the gradient attack, the decoding of what gradient
inversion recovered. A cell yields one record per attack. Cells live in ``<out>/cells/<protection>-s<seed>-<hash>``,
the hash taken over the cell's resolved configs (not the experiment's name), and end with an atomically written
``cell.json``: a compare that was killed re-runs only the cells without a finished ``cell.json``. Cells run in a
process pool of ``compare.jobs`` workers.

The clients' federation key (FEDFACE_KEY) is drawn once per compare, in this process's environment only (never
written), so the learned attack's ``knows_key`` threat and SRRA see the clients' key; set FEDFACE_KEY to choose it.

After the cells: ``results.json`` (schema ``fedface.report.schema``), ``table.md``, ``frontier.png``,
``curves.png``, ``grids/``, ``tensorboard/``, ``config.yaml``, then ``report.html`` -- each written atomically, the
report last, so an interrupted compare never leaves a half-written one.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import signal
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedface.config import ConfigError, compose_config, to_container
from fedface.compare_records import records_of, summarise
from fedface.report.schema import UTILITY_METRICS
from fedface.experiment.keys import simulation_key
from fedface.io import atomic_write_json

log = logging.getLogger(__name__)

def _presets() -> dict[str, list[str]]:
    """Protection name in a grid -> the config choices that make it: one file per name in configs/preset/."""
    from fedface.config import CONFIG_DIR

    return {p.stem: [str(o) for o in OmegaConf.load(p).overrides]
            for p in sorted((CONFIG_DIR / "preset").glob("*.yaml"))}


PROTECTIONS: dict[str, list[str]] = _presets()
#: known names that are not built yet: a grid may list them; their records say why they are missing
PROTECTIONS_LATER: dict[str, str] = {}
ATTACKS = ("gradient", "learned", "model_inversion")
ATTACKS_LATER: dict[str, str] = {}
#: bump when a cell's work changes in a way its config does not show (invalidates cached cells)
#: 2: model inversion (``fedface invert`` on the cell's final weights) joined the cell; SRRA reasons recorded
CELL_VERSION = 5  # 3: PPFR-FD per-image normalisation, block-aligned shifts, collapse verdict; 4: node policies,
# reply screening, the embedding-bias and margin-warm-up keys; 5: one spelling per utility metric in the rounds
# (``fedface.report.schema.UTILITY_METRICS``: ``tar_at_far_1e-3``, no -1 sentinel)


def threat_note(protection: str) -> str | None:
    """The label of a protection whose rows mean something else against the grid's attacker (the server): central DP
    (no protection against it) and SecAgg+ (it sees only the aggregate: its attacks ran on the aggregate)."""
    from fedface.federation.central_dp import THREAT_NOTE
    from fedface.federation.secagg import THREAT_NOTE as SECAGG_NOTE

    overrides = PROTECTIONS.get(protection, [])
    dp = [o for o in overrides if o.startswith("federation.dp=")]
    if dp and dp[-1] != "federation.dp=none":
        return THREAT_NOTE
    secagg = [o for o in overrides if o.startswith("federation.secagg=")]
    return SECAGG_NOTE if secagg and secagg[-1] == "federation.secagg=true" else None


# ---------------------------------------------------------------------------------------------------- the grid
def load_experiment(overrides: list[str]) -> DictConfig:
    if not any(o.lstrip("+~").startswith("experiment=") for o in overrides):
        raise ConfigError("fedface compare needs experiment=<name> (configs/experiment/: "
                          + ", ".join(sorted(p.stem for p in _experiment_dir().glob("*.yaml"))) + ")")
    cfg = compose_config(overrides)
    if "compare" not in cfg:
        raise ConfigError("the experiment config has no `compare` block (see configs/experiment/demo.yaml)")
    return cfg


def _experiment_dir() -> Path:
    from fedface.config import CONFIG_DIR

    return CONFIG_DIR / "experiment"


def check_grid(protections: list[str], attacks: list[str]) -> None:
    """Unknown names fail here, before anything runs, with the known names listed."""
    known_p = [*PROTECTIONS, *PROTECTIONS_LATER]
    bad = [p for p in protections if p not in known_p]
    if bad:
        later = f" (not built yet: {', '.join(PROTECTIONS_LATER)})" if PROTECTIONS_LATER else ""
        raise ValueError(f"compare.protections: unknown {', '.join(map(repr, bad))}; known: {', '.join(PROTECTIONS)}"
                         f"{later}")
    known_a = [*ATTACKS, *ATTACKS_LATER]
    bad = [a for a in attacks if a not in known_a]
    if bad:
        later = f" (not built yet: {', '.join(ATTACKS_LATER)})" if ATTACKS_LATER else ""
        raise ValueError(f"compare.attacks: unknown {', '.join(map(repr, bad))}; known: {', '.join(ATTACKS)}{later}")
    if not protections or not attacks:
        raise ValueError("compare.protections and compare.attacks must each name at least one entry")
    if len(set(protections)) != len(protections) or len(set(attacks)) != len(attacks):
        raise ValueError("compare.protections / compare.attacks list a name twice")


def data_present(cfg: DictConfig) -> bool:
    """Whether the experiment's real face data is on disk (synthetic data always is)."""
    if cfg.data.name == "synthetic":
        return True
    from fedface.data.sources import load_configured

    try:
        load_configured(to_container(cfg.data))
    except (FileNotFoundError, ValueError):
        return False
    return True


def seeds_of(spec: DictConfig, protection: str) -> list[int]:
    seeds = spec.headline_seeds if protection in (spec.get("headline") or []) else spec.seeds
    return [int(s) for s in seeds]


def _strip(cfg: DictConfig) -> dict[str, Any]:
    """A cell config as a plain dict without what does not change the cell's results (paths, the grid, where Ray
    runs the clients)."""
    plain = to_container(cfg)
    plain.pop("compare", None)
    plain.pop("run", None)
    plain.get("federation", {}).pop("ray", None)
    for key in ("cache", "target", "recovered"):
        plain.get("attack", {}).pop(key, None)
    return plain


def cell_plan(overrides: list[str], cfg: DictConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                list[str]]:
    """The cells to run (configs composed and checked now, so a bad override fails before any cell runs), the
    records of known-but-unavailable grid entries, and notes for the report."""
    spec = cfg.compare
    protections, attacks = list(spec.protections), list(spec.attacks)
    check_grid(protections, attacks)
    notes: list[str] = []
    base = [o for o in overrides if not o.lstrip("+~").startswith("compare.")]
    data_override: list[str] = []
    gradient = list(spec.gradient)
    if not data_present(cfg):
        if spec.get("fallback") != "synthetic":
            raise FileNotFoundError(f"experiment {spec.name}: data={cfg.data.name} is not on disk (FEDFACE_DATA or "
                                    f"../shared/data) and compare.fallback is not synthetic")
        data_override = ["data=synthetic", "data.num_identities=40", "data.split.test_identities=10",
                         "data.pairs.per_fold=40"]
        if "learned" in attacks:
            attacks = [a for a in attacks if a != "learned"]
            notes.append("learned reconstruction skipped: it trains on LFW-a auxiliary faces, which are not on disk")
        if "model_inversion" in attacks:
            attacks = [a for a in attacks if a != "model_inversion"]
            notes.append("model inversion skipped: its face prior and decoder come from LFW-a auxiliary faces, which "
                         "are not on disk")
        if "gradient" in attacks and any(g.replace(" ", "") in ("attack.gradient.prior=pca", "attack.gradient.prior=gan")
                                         for g in gradient):
            gradient.append("attack.gradient.prior=free")
            notes.append("gradient inversion without its face prior (prior=free): the prior is learned from LFW-a "
                         "auxiliary faces, which are not on disk")
        notes.insert(0, f"NOTE: data={cfg.data.name} is not on disk -- this compare ran on SYNTHETIC faces; its "
                        f"numbers say nothing about real faces. Put ORL under ../shared/data or FEDFACE_DATA.")
        for n in notes:
            log.warning(n)
    dp = [p for p in protections if p in PROTECTIONS and "protect=dp_sgd" in PROTECTIONS[p]]
    if dp and cfg.model.get("norm", "batch") != "group":
        raise ConfigError(f"compare.protections lists {', '.join(dp)}, which needs model.norm=group -- and then every "
                          "cell must use it, so the rows differ only in the protection: set model.norm=group in the "
                          "experiment (or as an override)")
    runnable = [a for a in attacks if a in ATTACKS]
    out = Path(spec.out)
    cells, unavailable = [], []
    for protection in protections:
        for seed in seeds_of(spec, protection):
            if protection in PROTECTIONS_LATER:
                unavailable += [_unavailable(protection, a, seed, PROTECTIONS_LATER[protection]) for a in attacks]
                continue
            unavailable += [_unavailable(protection, a, seed, ATTACKS_LATER[a]) for a in attacks
                            if a in ATTACKS_LATER]
            if not runnable:
                continue
            cell_over = [*base, *data_override, *PROTECTIONS[protection], f"seed={seed}"]
            fed = compose_config([*cell_over, *(["attack=gradient", *gradient] if "gradient" in runnable
                                                else ["attack=none"])])
            rec = compose_config([*cell_over, "attack=learned", *spec.learned]) if "learned" in runnable else None
            inv = compose_config([*cell_over, "attack=inversion", *(spec.get("model_inversion") or [])]) \
                if "model_inversion" in runnable else None
            digest = hashlib.sha256(json.dumps([CELL_VERSION, _strip(fed), _strip(rec) if rec is not None else None,
                                                *([_strip(inv)] if inv is not None else [])],
                                               sort_keys=True, default=str).encode()).hexdigest()[:12]
            cell_dir = out / "cells" / f"{protection.replace('+', '_')}-s{seed}-{digest}"
            fed_plain, rec_plain = _cell_config(fed, cell_dir / "federation"), None
            if rec is not None:
                rec_plain = _cell_config(rec, cell_dir / "reconstruct")
                rec_plain["attack"]["target"] = str(cell_dir / "federation")
                rec_plain["attack"]["recovered"] = str(cell_dir / "federation") if "gradient" in runnable else None
            inv_plain = None
            if inv is not None:  # `fedface invert` on the cell's own final global weights
                inv_plain = _cell_config(inv, cell_dir / "invert")
                inv_plain["attack"]["target"] = str(cell_dir / "federation")
            cells.append({"protection": protection, "seed": seed, "attacks": runnable, "config_hash": digest,
                          "dir": str(cell_dir), "federation": fed_plain, "reconstruct": rec_plain,
                          "invert": inv_plain})
    # seed by seed (stable: rows keep their order within a seed), so a compare stopped part-way holds whole seeds of
    # every row -- a comparable set -- rather than every seed of the first rows
    cells.sort(key=lambda cell: cell["seed"])
    return cells, unavailable, notes


def _cell_config(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    plain = to_container(cfg)
    plain.pop("compare", None)
    plain["run"]["dir"] = str(run_dir)
    plain["run"]["name"] = run_dir.parent.name
    # the folder is keyed by the cell's config hash: what an unfinished cell left there is a failed attempt at
    # this same config, which the re-run replaces (fedface.runs.claim)
    plain["run"]["overwrite"] = True
    return plain


def _unavailable(protection: str, attack: str, seed: int, why: str) -> dict[str, Any]:
    return {"protection": protection, "attack": attack, "seed": seed, "status": "unavailable", "error": why}


# ---------------------------------------------------------------------------------------------------- one cell
def finished(cell: dict[str, Any]) -> dict[str, Any] | None:
    """The cell's stored outcome when it finished (status done) under the same config hash, else None."""
    f = Path(cell["dir"]) / "cell.json"
    if not f.exists():
        return None
    try:
        stored = json.loads(f.read_text())
    except json.JSONDecodeError:
        return None
    return stored if stored.get("status") == "done" and stored.get("config_hash") == cell["config_hash"] else None


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (federation, then learned reconstruction) and write its ``cell.json``; never raises for a
    failure inside the cell: the outcome says ``failed`` with the error."""
    from fedface.runs import machine_info

    t0 = time.perf_counter()
    cell_dir = Path(cell["dir"])
    if cell_dir.exists():  # an unfinished earlier attempt: start the cell over
        shutil.rmtree(cell_dir)
    cell_dir.mkdir(parents=True)
    outcome: dict[str, Any] = {"protection": cell["protection"], "seed": cell["seed"],
                               "config_hash": cell["config_hash"], "attacks": cell["attacks"], "status": "running"}
    try:
        fed, rec, *inv = _execute(cell)
        outcome.update(status="done", federation=fed, reconstruct=rec, invert=inv[0] if inv else None)
    except BaseException as err:  # noqa: BLE001 -- Flower ends some failed runs with sys.exit: a failed cell too
        if stopped_from_outside(err):
            raise
        log.error("cell %s seed %d failed: %s", cell["protection"], cell["seed"], err)
        outcome.update(status="failed", error=f"{type(err).__name__}: {err}",
                       traceback=traceback.format_exc(limit=6))
    outcome["wall_seconds"] = time.perf_counter() - t0
    outcome["machine"] = {**machine_info(), "load_average": list(os.getloadavg())}
    atomic_write_json(cell_dir / "cell.json", outcome)
    return outcome


def stopped_from_outside(err: BaseException) -> bool:
    """Ctrl-C, or a SIGTERM (``kill``, a job's time limit): Ray's driver turns SIGTERM into ``sys.exit(15)``
    (``ray.init``), which must stop the compare -- the cell re-runs next time -- not be recorded as a failed cell."""
    return isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and err.code == signal.SIGTERM)


def _execute(cell: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    from fedface.experiment.ground_truth import ENV_VAR as GROUND_TRUTH_ENV
    from fedface.invert import run_invert
    from fedface.reconstruct import run_reconstruct
    from strategies.simulate import simulate

    if cell["federation"].get("threads"):
        import torch

        torch.set_num_threads(int(cell["federation"]["threads"]))
    try:
        fed = simulate(OmegaConf.create(cell["federation"]))
    finally:
        os.environ.pop(GROUND_TRUTH_ENV, None)  # simulate() points the clients' recorder at this cell only
    if fed.get("status") != "done":
        raise RuntimeError(f"federation {fed.get('status')}: {fed.get('error', 'see its results.json')}")
    rec = None
    if cell["reconstruct"] is not None:
        rec = run_reconstruct(OmegaConf.create(cell["reconstruct"]))
    inv = None
    if cell.get("invert") is not None:  # model inversion of the cell's final global weights (fedface.invert)
        inv = run_invert(OmegaConf.create(cell["invert"]))
    return _brief_federation(fed), _brief_reconstruct(rec), _brief_invert(inv)


def _brief_federation(fed: dict[str, Any]) -> dict[str, Any]:
    """What the report needs of a federation's results.json (the full file stays in the cell dir)."""
    rounds = []
    for r in fed.get("rounds", []):
        attacks = [{k: a.get(k) for k in ("attack", "threat", "node", "round", "iterations", "seconds", "stopped",
                                          "skipped")}
                   | {"scores": {s: {m: a["scores"][s].get(m) for m in ("psnr", "ssim", "mse")}
                                 for s in ("masked", "image") if s in a.get("scores", {})}}
                   for a in r.get("attacks", []) if a.get("attack") == "gradient"]
        rounds.append({k: r.get(k) for k in ("round", *UTILITY_METRICS, "train_loss", "bytes_sent", "bytes_received",
                                             "seconds", "epsilon_max", "delta")} | {"attacks": attacks})
    return {"rounds": rounds, "status": fed.get("status"), "collapse": fed.get("collapse")}


def _brief_reconstruct(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    return {k: rec.get(k) for k in ("protection", "rows", "ceiling", "masking_effect", "gradient_recoveries",
                                    "victims", "aux", "status")}


def _brief_invert(inv: dict[str, Any] | None) -> dict[str, Any] | None:
    """The rows of ``fedface invert`` without their per-step curves (the full file stays in the cell dir)."""
    if inv is None:
        return None
    rows = [{k: v for k, v in r.items() if k not in ("curve", "centre_cos")} for r in inv.get("rows", [])]
    return {"head": inv.get("head"), "protection": inv.get("protection"), "identities": inv.get("identities"),
            "key": inv.get("key"), "model_unchanged": inv.get("model_unchanged"), "rows": rows,
            "status": inv.get("status")}


# ---------------------------------------------------------------------------------------------------- compare
def run_compare(overrides: list[str]) -> dict[str, Any]:
    """The whole compare: plan (all checks first), run the missing cells, write the results folder."""
    from fedface import compare_report
    from fedface.report.schema import validate
    from fedface.runs import machine_info

    t0 = time.perf_counter()
    cfg = load_experiment(overrides)
    spec = cfg.compare
    cells, unavailable, notes = cell_plan(overrides, cfg)  # every error in the grid or an override: before any run
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cells if finished(c) is None]
    log.info("compare %s: %d cells, %d finished earlier, %d to run (jobs=%d)", spec.name, len(cells),
             len(cells) - len(todo), len(todo), int(spec.jobs))
    with simulation_key():  # one key per compare, in this process's (and its workers') env only: never written
        _run_cells(todo, int(spec.jobs))
    outcomes = []
    for c in cells:
        f = Path(c["dir"]) / "cell.json"
        if not f.exists():  # a worker that died without a word (killed, out of memory): a failed cell
            atomic_write_json(f, {"protection": c["protection"], "seed": c["seed"], "config_hash": c["config_hash"],
                                  "attacks": c["attacks"], "status": "failed",
                                  "error": "the cell's worker died before writing its outcome (killed?)"})
        stored = json.loads(f.read_text())
        stored["cell_dir"] = c["dir"]
        stored["resumed"] = c not in todo
        outcomes.append(stored)
    records = [r for o in outcomes for r in records_of(o)] + unavailable
    for r in records:
        if threat_note(r["protection"]):
            r["threat_note"] = threat_note(r["protection"])
    protections, attacks = list(spec.protections), list(spec.attacks)
    summary = summarise(records, protections, attacks)
    for r in records:
        match = next((s for s in summary if s["protection"] == r["protection"] and s["attack"] == r["attack"]), {})
        r.setdefault("scores", None)
        if r["status"] == "done":
            r["scores"] = match.get("scores")
    results = {"schema": "fedface.compare/1", "experiment": str(spec.name), "status": "done", "out": str(out),
               "command": "fedface compare " + " ".join(overrides),
               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "data": str(cells[0]["federation"]["data"]["name"]) if cells else str(cfg.data.name),
               "grid": {"protections": protections, "attacks": attacks,
                        "seeds": {p: seeds_of(spec, p) for p in protections}},
               "notes": notes, "cells": {"total": len(cells), "ran": len(todo), "resumed": len(cells) - len(todo),
                                         "failed": sum(o["status"] != "done" for o in outcomes)},
               "wall_seconds": time.perf_counter() - t0,
               "machine": {**machine_info(), "load_average": list(os.getloadavg())},
               "records": records, "summary": summary}
    validate(results)
    compare_report.write_all(out, results, OmegaConf.to_yaml(cfg, resolve=True))
    return results


def _run_cells(cells: list[dict[str, Any]], jobs: int) -> None:
    if jobs <= 1 or len(cells) <= 1:
        for i, c in enumerate(cells, 1):
            log.info("cell %d/%d: %s seed %d", i, len(cells), c["protection"], c["seed"])
            run_cell(c)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_cell, c): c for c in cells}
        for future, c in futures.items():
            try:
                log.info("cell %s seed %d: %s", c["protection"], c["seed"], future.result()["status"])
            except Exception as err:  # noqa: BLE001 -- a dead worker: run_compare records the cell as failed
                log.error("cell %s seed %d: worker failed: %s", c["protection"], c["seed"], err)


__all__ = ["run_compare", "check_grid", "cell_plan", "threat_note", "PROTECTIONS",
           "ATTACKS",
           "ATTACKS_LATER", "PROTECTIONS_LATER"]
