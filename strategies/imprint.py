"""attack=imprint inside the federation: the malicious server's trap for ONE node per attacked round.

``send`` replaces the target node's train message by a modified one -- the run config with ``model.imprint.bins``
(the client then builds its backbone with the trap, ``fedface.models.trap.install_trap``), the global arrays plus
the trap's (``backbone.trap.*``) and a one-step round (``steps=1``: the trap's update is then one gradient) -- and
leaves every other node's message as it was. ``receive`` takes the target's reply out of the replies (it trained
another model: it is not averaged), reads its inputs from the trap's update and scores them against the client's
recorded ground truth (``fedface.experiment.ground_truth``; the experimenter's, never the server's). Writes
``attacks/round-R/node-N/imprint.{safetensors,json}``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from fedface.attacks import imprint as trap_mod
from fedface.experiment.ground_truth import ground_truth_path, load_ground_truth
from fedface.experiment.scoring import attacker_aux
from fedface.runs import RunLayout
from fedface.attacks.threat import AttackConfig
from fedface.io import atomic_save_safetensors, atomic_write_json
from fedface.protect import input_spec
from clients.records import ARRAYS, CONFIG, RUN_CONFIG, from_record, to_record

log = logging.getLogger(__name__)


class ImprintServer:
    def __init__(self, run_config: dict[str, Any], run_dir: Path, attack: AttackConfig):
        self.run_config, self.run_dir, self.attack = run_config, Path(run_dir), attack
        icfg = attack.imprint
        self.bins, self.strength = int(icfg.get("bins", 64)), float(icfg.get("strength", 1.0))
        self.psnr_db, self.node = float(icfg.get("psnr_db", 30.0)), icfg.get("node")
        self.shape = tuple(input_spec(dict(run_config["protect"])).shape)
        self._trap = None
        self._pending: dict[int, dict[str, np.ndarray]] = {}  # round -> (node, trap arrays sent)

    def trap(self):
        if self._trap is None:
            seed = int(self.run_config["seed"])
            aux = attacker_aux(self.run_config["data"], seed)  # the server's own faces: LFW-a people in no client's data
            if aux is None:
                raise ValueError(f"attack=imprint: data.aux={self.run_config['data'].get('aux')!r} gives the server no "
                                 "auxiliary faces to set the trap's thresholds (data.aux=lfwa and LFW-a on disk)")
            self._trap = trap_mod.server_trap(self.run_config["protect"], aux, self.bins, self.strength, seed)
        return self._trap

    def send(self, server_round: int, messages: list[Message], sent: dict[str, np.ndarray]) -> list[Message]:
        nodes = sorted(m.metadata.dst_node_id for m in messages)
        target = int(self.node) if self.node is not None else (nodes[0] if nodes else None)
        if target not in nodes:
            log.warning("round %d: imprint target node %s not sampled: no trap sent", server_round, target)
            return messages
        trap = trap_mod.trap_arrays(self.trap())
        cfg = json.loads(self.run_config_json())
        cfg["model"]["imprint"] = {"bins": self.bins}
        out = []
        for m in messages:
            if m.metadata.dst_node_id != target:
                out.append(m)
                continue
            round_cfg = ConfigRecord({**dict(m.content[CONFIG]), RUN_CONFIG: json.dumps(cfg, sort_keys=True),
                                      "steps": 1, "epochs": 1})
            content = RecordDict({ARRAYS: to_record({**sent, **trap}), CONFIG: round_cfg})
            for key in m.content.keys():  # the policy record (adaptive MixUp) goes as it was
                if key not in (ARRAYS, CONFIG):
                    content[key] = m.content[key]
            out.append(Message(content=content, dst_node_id=target, message_type=MessageType.TRAIN))
        self._pending[server_round] = {"node": target, "trap": trap}
        log.info("round %d: MALICIOUS WEIGHTS: trap (%d bins) sent to node %d", server_round, self.bins, target)
        return out

    def run_config_json(self) -> str:
        return json.dumps(self.run_config, sort_keys=True)

    def receive(self, server_round: int, replies: list[Message], lr: float) -> tuple[list[Message], list[dict]]:
        pending = self._pending.pop(server_round, None)
        if pending is None:
            return replies, []
        node = pending["node"]
        mine = [r for r in replies if r.metadata.src_node_id == node]
        rest = [r for r in replies if r.metadata.src_node_id != node]
        base = {"node": node, "round": server_round, "attack": "imprint", "threat": "malicious_weights",
                "malicious_weights": True, "bins": self.bins, "aggregated": False,
                "space": "model_input: the standardised pixels" if self.run_config["protect"]["name"] == "none" else
                f"model_input: the MASKED tensor ({self.run_config['protect']['name']} output, not pixels; "
                "`fedface imprint` maps it to pixels white-box / with the decoder)"}
        if not mine or mine[0].has_error():
            return rest, [{**base, "skipped": "the trapped node sent no reply" if not mine else
                           f"the trapped node failed: {mine[0].error.reason}"}]
        t0 = time.perf_counter()
        returned = from_record(mine[0].content[ARRAYS])
        wd = float(self.run_config["train"].get("weight_decay", 0.0))
        cands, bins = trap_mod.read_reply(pending["trap"], returned, lr, wd, self.shape)
        out = {**base, "candidates": len(cands), "seconds": 0.0}
        folder = RunLayout(self.run_dir).attack(server_round, node)
        gt = ground_truth_path(server_round, node, RunLayout(self.run_dir).ground_truth)
        if gt is not None and gt.exists():
            records, _ = load_ground_truth(gt)
            truth = records[0].model_input
            rate = trap_mod.recovery_rate(cands, truth, self.psnr_db)
            out.update({k: rate[k] for k in ("recovered", "batch", "rate", "best_psnr") if k in rate},
                       threshold_db=self.psnr_db, steps=len(records))
        else:
            out["scores_unavailable"] = "no ground truth recorded by the client (attack.ground_truth=false?)"
        out["seconds"] = round(time.perf_counter() - t0, 3)
        atomic_save_safetensors(folder / "imprint.safetensors",
                                {"candidates": cands.contiguous().numpy(), "bins": np.asarray(bins, np.int64)})
        atomic_write_json(folder / "imprint.json", out)
        log.info("round %d: imprint on node %d: %s/%s inputs recovered (> %.0f dB)", server_round, node,
                 out.get("recovered"), out.get("batch"), self.psnr_db)
        return rest, [out]
