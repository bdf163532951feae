"""A run's folder: resolved config, results.json (atomic), TensorBoard events, machine facts.

A folder holds one run. A command pointed at a folder that already holds one (results.json, a model or a server
checkpoint) refuses before it touches anything, unless the user says what to do with the earlier run:
``run.overwrite=true`` replaces it (its results, model and checkpoints are removed first, so nothing of the two runs
mixes), ``federation.resume=true`` continues it (``fedface simulate``; the config must match, ``resume_mismatch``),
``run.reuse=true`` keeps it when it is this very run -- finished, with the same resolved config (``run.*`` aside) --
and replaces it otherwise: what the recipes use, so a changed override or default re-runs a row and an unchanged one
is not run twice (keyed by the config, never by the folder's name).
The default ``run.dir`` is shared by every command and config change with the same data/protection/seed, so without
this a second run silently destroyed the first.
"""
from __future__ import annotations

import json
import os
import platform
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fedface.config import config_differences
from fedface.io import atomic_write_json, atomic_write_text


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def check_run_config(cfg) -> None:
    """What every command reads, checked before any data is loaded or folder created: types and ranges of ``seed``,
    ``threads``, ``train.*``, ``mixup.*`` and the protection; one ValueError naming the key."""
    from fedface.mixup import MixupConfig
    from fedface.models import build_backbone
    from fedface.protect import input_spec
    from fedface.train import TrainConfig

    for key, low in (("seed", None), ("threads", 0)):
        value = cfg.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            raise ValueError(f"{key}={value!r} must be an integer" + (f" >= {low}" if low is not None else ""))
    train = TrainConfig.from_cfg(cfg["train"])
    mixup = MixupConfig.from_cfg(cfg["mixup"])
    if mixup.name != "none":
        mixup.validate(train.batch_size)
    build_backbone(cfg["model"], input_spec(cfg["protect"]))  # unknown model.name / norm / protection keys: here


def start(cfg: DictConfig) -> torch.Generator:
    """Every command's first step: the config's check, ``threads`` (when set), then every seed from ``seed``."""
    check_run_config(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    return seed_everything(int(cfg.seed))


def machine_info() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return {**info, "provenance": provenance()}


#: the fedface command line being run (``fedface.cli.main`` sets it; else the process's own argv)
COMMAND: list[str] = []


def provenance() -> dict[str, Any]:
    """Where a result came from: the git commit of the code (and whether the tree had uncommitted changes), the
    versions of the packages that decide the numbers, and the command line."""
    import subprocess
    import sys
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    commit = git("rev-parse", "HEAD")
    return {"commit": commit, "dirty": None if commit is None else bool(git("status", "--porcelain", "-uno")),
            "packages": {p: installed(p) for p in ("fedface", "torch", "flwr", "numpy", "opacus", "hydra-core")},
            "command": portable_command(list(COMMAND) or ([Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []))}


def portable_command(args: list[str]) -> list[str]:
    """The command line without this machine's absolute paths (results.json files are committed and shared):
    ``key=/a/b/run`` becomes ``key=<abs>/run`` -- the setting and the folder's name, not where it lay."""
    return [f"{key}=<abs>/{Path(value).name}" if sep and Path(value).is_absolute() else arg
            for arg in args for key, sep, value in [arg.partition("=")]]


@dataclass(frozen=True)
class RunLayout:
    """Every path in a run folder, spelled once. What writes each: ``RunDir`` (config, results, tensorboard), the
    commands (model, partition), the federation's server (checkpoint, node policy, attacks) and its simulated clients
    (ground truth, never sent)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "config.yaml")          # the resolved config of the run
    results = property(lambda self: self.root / "results.json")        # status, metrics, provenance
    model = property(lambda self: self.root / "model.safetensors")     # fedface train's weights
    partition = property(lambda self: self.root / "partition.json")    # who is in which role
    checkpoint = property(lambda self: self.root / "checkpoint")       # the federation's round-NNNNN/ folders
    tensorboard = property(lambda self: self.root / "tensorboard")
    node_policy = property(lambda self: self.root / "node-policy.yaml")  # simulated nodes' privacy policy
    ground_truth = property(lambda self: self.root / "ground_truth")   # simulated clients' inputs (attack scoring)
    attacks = property(lambda self: self.root / "attacks")             # the malicious server's recoveries
    reconstructions = property(lambda self: self.root / "reconstructions.safetensors")  # fedface reconstruct's
    grids = property(lambda self: self.root / "grids")                 # figures: original | masked | recovered

    judge_cache = property(lambda self: self.attacks / "judge")        # the identity judge's embeddings

    def attack(self, server_round: int, node: int) -> Path:
        """Where the server's attack on ``node``'s round-``server_round`` reply is saved."""
        return self.attacks / f"round-{server_round}" / f"node-{node}"

    def recorded(self, pattern: str) -> list[Path]:
        """Every saved attack file named ``pattern`` (e.g. ``*.png``), all rounds and nodes, sorted."""
        return sorted(self.attacks.glob(f"round-*/node-*/{pattern}"))

#: config keys a resumed federation may change: where/how it is written, and how many rounds it goes on for
RESUMABLE_CHANGES = ("run", "federation.resume", "federation.rounds", "federation.round_timeout")


def earlier_run(path: Path) -> list[str]:
    """The markers of an earlier run in ``path`` (empty: the folder is free): finished or partial results, a trained
    model, a federation's checkpoints."""
    layout = RunLayout(path)
    return [p.name for p in (layout.results, layout.model, layout.checkpoint) if p.exists()]


def claim(path: Path, overwrite: bool = False, resume: bool = False) -> None:
    """Make ``path`` this run's folder; ValueError (naming ``run.dir`` and the two ways on) when it holds an earlier
    run and neither ``overwrite`` nor ``resume`` is set. ``overwrite`` removes the earlier run's markers first."""
    found = earlier_run(path)
    if found and overwrite:
        for marker in found:
            target = Path(path) / marker
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    elif found and not resume:
        raise ValueError(f"run.dir={path} already holds a run ({', '.join(found)}): choose another run.dir, or set "
                         "run.overwrite=true to replace it (federation.resume=true continues a federation)")
    Path(path).mkdir(parents=True, exist_ok=True)


class RunReused(Exception):
    """``run.reuse=true`` and ``run.dir`` already holds this finished run: nothing to do (the CLI exits 0)."""


def same_finished_run(path: Path, cfg: Any) -> bool:
    """``path`` holds a finished run (results.json with status done) whose saved config equals ``cfg``, ``run.*``
    aside (where it is written and how it reports change no number)."""
    layout = RunLayout(path)
    try:
        done = json.loads(layout.results.read_text()).get("status") == "done"
        then = OmegaConf.to_container(OmegaConf.load(layout.config), resolve=True)
    except (OSError, ValueError):
        return False
    now = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    return done and not config_differences(then, now, ("run",))


def resume_mismatch(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The config keys (dotted) whose values differ between the run being resumed and this one, ignoring
    ``RESUMABLE_CHANGES``: a resumed run must be the run it continues."""
    return config_differences(saved, now, RESUMABLE_CHANGES)


class RunDir:
    def __init__(self, path: str | os.PathLike, cfg: DictConfig):
        self.path = Path(path)
        self.layout = RunLayout(self.path)
        fed = cfg.get("federation") or {}
        reuse = bool(cfg.run.get("reuse", False))
        if reuse and same_finished_run(self.path, cfg):
            raise RunReused(f"run.dir={self.path} already holds this run (same config, finished): reused")
        resume = bool(fed.get("resume", False))  # resuming keeps the folder's unfinished run, reuse or not
        claim(self.path, bool(cfg.run.get("overwrite", False)) or (reuse and not resume), resume)
        atomic_write_text(self.layout.config, OmegaConf.to_yaml(cfg, resolve=True))
        self._writer = None

    @property
    def tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.layout.tensorboard))
        return self._writer

    def write_results(self, results: dict[str, Any]) -> Path:
        """Land ``results.json`` atomically (partial results of a long command land after every step)."""
        atomic_write_json(self.layout.results, results)
        return self.layout.results

    def finish(self, results: dict[str, Any]) -> None:
        """Mark ``results`` done, land ``results.json`` atomically and close the run."""
        results["status"] = "done"
        self.write_results(results)
        self.close()

    def log_image(self, tag: str, png: Path) -> None:
        """A saved figure (a reconstruction grid) as a TensorBoard image next to the run's scalars."""
        from PIL import Image

        with Image.open(png) as im:
            self.tensorboard.add_image(tag, np.asarray(im.convert("RGB")), dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def log_hparams(writer, cfg: Any, metrics: dict[str, Any]) -> None:
    """The run's hyper-parameters (every scalar of the resolved config but ``run.*``) and its final metrics as
    TensorBoard hparams, so runs can be compared in its HParams tab."""
    from fedface.config import flat_config

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    hparams = {k: v for k, v in flat_config(plain).items()
               if isinstance(v, (bool, int, float, str)) and not k.startswith(("run.", "config."))}
    values = {f"final/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
    writer.add_hparams(hparams, values, run_name="hparams")
