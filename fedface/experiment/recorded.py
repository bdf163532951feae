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

from fedface.experiment.ground_truth import load_ground_truth
from fedface.experiment.scoring import ground_truth_dir, truth

log = logging.getLogger(__name__)


def recorded_inversions(run_dir) -> dict[int, dict[str, Any]]:
    """The in-federation inversions a run recorded (``attacks/round-R/node-N/inversion.*``), per round: the
    concatenated ``model_input`` of every attacked node, the head ``rows`` they target (= their identities under a
    shared head) and each node's summary."""
    by_round: dict[int, dict[str, Any]] = {}
    for summary in sorted(Path(run_dir).glob("attacks/round-*/node-*/inversion.json")):
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
    run_dir = Path(run_dir)
    found = []
    for f in sorted(run_dir.glob("attacks/round-*/node-*/*.safetensors")):
        if f.stem == "policy":
            continue
        gt = ground_truth_dir(run_dir) / f.parent.parent.name / f"{f.parent.name}.safetensors"
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
        rounds = json.loads((run_dir / "results.json").read_text()).get("rounds") or []
    except (OSError, ValueError):
        return []
    attacks = [a for r in rounds for a in r.get("attacks") or [] if a.get("attack") == "gradient"]
    if not attacks or not all(a.get("skipped") for a in attacks):
        return []
    return list(dict.fromkeys(a["skipped"] for a in attacks))
