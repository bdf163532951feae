"""The built wheel works on its own: installed (non-editable) into a fresh virtual environment outside the repository,
`fedface train --help` and a one-epoch synthetic run succeed -- the configs travel inside the wheel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    pytest.importorskip("hatchling", reason="the wheel test builds with hatchling (pip install -e .[dev])")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FEDFACE_CONFIGS")}
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                  str(REPO)], tmp_path, env)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("fedface-*.whl")
    fresh = tmp_path / "fresh"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], tmp_path, env).returncode == 0
    python = fresh / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                     env).stdout.strip())
    # the dependencies (torch, flwr, ...) come from this environment; fedface itself only from the wheel
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                      str(wheel)], tmp_path, env)
    assert installed.returncode == 0, installed.stderr[-2000:]
    where = _run([str(python), "-c", "import fedface, fedface.config as c; print(fedface.__file__, c.CONFIG_DIR)"],
                 tmp_path, env)
    assert str(site) in where.stdout and "_configs" in where.stdout, where.stdout + where.stderr
    cli = fresh / "bin" / "fedface"
    helped = _run([str(cli), "train", "--help"], tmp_path, env)
    assert helped.returncode == 0 and "ppfr_fd" in helped.stdout, helped.stderr[-2000:]
    run_dir = tmp_path / "run"
    trained = _run([str(cli), "train", "data=synthetic", "data.num_identities=12", "data.images_per_identity=6",
                    "data.split.test_identities=4", "data.pairs.per_fold=6", "model=tiny", "train.epochs=1",
                    "train.batch_size=16", "run.progress=false", f"run.dir={run_dir}"], tmp_path, env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "done"
