"""A run's folder: resolved config, results.json (atomic), TensorBoard events, machine facts."""
from __future__ import annotations

import os
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fedface.io import atomic_write_json, atomic_write_text


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def start(cfg: DictConfig) -> torch.Generator:
    """Every command's first step: ``threads`` (when set), then every seed from ``seed``."""
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
    return info


class RunDir:
    def __init__(self, path: str | os.PathLike, cfg: DictConfig):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        self._writer = None

    @property
    def tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.path / "tensorboard"))
        return self._writer

    def write_json(self, name: str, obj: Any) -> Path:
        target = self.path / name
        atomic_write_json(target, obj)
        return target

    def finish(self, results: dict[str, Any]) -> None:
        """Mark ``results`` done, land ``results.json`` atomically and close the run."""
        results["status"] = "done"
        self.write_json("results.json", results)
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
