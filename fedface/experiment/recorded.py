"""What a finished run recorded for the experimenter to score afterwards: the in-federation inversions
(``attacks/round-R/node-N/inversion.*``, read by ``fedface invert``) and the gradient attacks' recoveries with the
attacked clients' true pixels (read by ``fedface reconstruct attack.recovered=RUN``)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from fedface.experiment.ground_truth import ground_truth_path, load_ground_truth
from fedface.experiment.scoring import truth
from fedface.runs import RunLayout

log = logging.getLogger(__name__)


def recorded_inversions(run_dir) -> dict[int, dict[str, Any]]:
    """The in-federation inversions a run recorded (``attacks/round-R/node-N/inversion.*``), per round: the
    concatenated ``model_input`` of every attacked node, the head ``rows`` they target (= their identities under a
    shared head) and each node's summary."""
    by_round: dict[int, dict[str, Any]] = {}
    for summary in RunLayout(run_dir).recorded("inversion.json"):
        tensors = load_file(str(summary.with_suffix(".safetensors")))
        facts = json.loads(summary.read_text())
        rnd = int(summary.parent.parent.name.split("-")[1])
        entry = by_round.setdefault(rnd, {"model_input": [], "rows": [], "nodes": []})
        entry["model_input"].append(tensors["model_input"])
        entry["rows"].append(tensors["rows"])
        entry["nodes"].append(facts)
    return {r: {"model_input": torch.cat(e["model_input"]), "rows": torch.cat(e["rows"]), "nodes": e["nodes"]}
            for r, e in sorted(by_round.items())}


def gradient_recoveries(run_dir: Path) -> list[dict[str, Any]]:
    """What a gradient-attacked federation run (``fedface simulate attack=gradient``) recovered, with the attacked
    client's true pixels: one entry per attacked reply and gradient threat (the policy channel has no pixels)."""
    run_dir, layout = Path(run_dir), RunLayout(run_dir)
    found = []
    for f in layout.recorded("*.safetensors"):
        if f.stem == "policy":
            continue
        rnd, node = (int(part.name.split("-")[1]) for part in (f.parent.parent, f.parent))
        gt = ground_truth_path(rnd, node, layout.ground_truth)
        if not gt.exists():
            log.warning("%s: no ground truth %s, not scored", f, gt)
            continue
        found.append({"threat": f.stem, "round": f.parent.parent.name, "node": f.parent.name,
                      "model_input": load_file(str(f))["model_input"].float(),
                      "pixels": truth(load_ground_truth(gt)[0])["pixels"]})
    if not found:
        skipped = _skipped_gradient_attacks(run_dir)
        if not skipped:
            raise FileNotFoundError(f"attack.recovered={run_dir}: no attacks/round-*/node-*/<threat>.safetensors "
                                    f"with ground truth (run `fedface simulate attack=gradient` first)")
        # e.g. SecAgg+: no per-client update exists, and the aggregate's inversion is over the memory bound
        log.warning("attack.recovered=%s: the run's gradient attacks recovered nothing: %s", run_dir,
                    "; ".join(skipped))
    return found


def _skipped_gradient_attacks(run_dir: Path) -> list[str]:
    """Why a federation run's gradient attacks recovered nothing, from its results.json (distinct reasons); empty
    unless it recorded gradient attacks and every one of them was skipped."""
    try:
        rounds = json.loads(RunLayout(run_dir).results.read_text()).get("rounds") or []
    except (OSError, ValueError):
        return []
    attacks = [a for r in rounds for a in r.get("attacks") or [] if a.get("attack") == "gradient"]
    if not attacks or not all(a.get("skipped") for a in attacks):
        return []
    return list(dict.fromkeys(a["skipped"] for a in attacks))
