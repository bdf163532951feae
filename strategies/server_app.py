"""Flower ServerApp for `flwr run` (simulation or deployment): compose the Hydra config, then the round loop.

``fedface simulate`` builds its own ServerApp around the same ``run_federation`` (strategies/simulate.py).
Run config keys (pyproject ``[tool.flwr.app.config]``, ``flwr run -c``): ``overrides`` (Hydra overrides) and
``run-dir``. The server never reads a key or a node's data path: with ``federation.num_classes`` set (deployment)
it does not touch face data at all.
"""
from __future__ import annotations

import logging
import shlex
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedface.config import compose_config
from fedface.data.sources import REPO_ROOT
from fedface.federation.setup import prepare_federation
from fedface.runs import RunDir
from strategies.grid import polled
from strategies.server_loop import run_federation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.getLogger("strategies").setLevel(logging.INFO)
    overrides = shlex.split(str(context.run_config.get("overrides", "")))
    if context.run_config.get("run-dir"):
        overrides.append(f"run.dir={context.run_config['run-dir']}")
    cfg = compose_config(overrides)
    run_dir = Path(cfg.run.dir)
    if not run_dir.is_absolute():  # the ServerApp's cwd is wherever the SuperLink started
        run_dir = REPO_ROOT / run_dir
    plain = prepare_federation(cfg)
    run_federation(polled(grid), plain, RunDir(run_dir, cfg).path)
