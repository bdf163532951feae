"""Slow end-to-end runs (pytest -m slow; CI runs them with a time bound)."""
import json

import pytest

from fedface.cli import main
from tests.conftest import needs_data


@pytest.mark.slow
@needs_data("orl_faces")
def test_centralized_orl_baseline_learns_to_verify_unseen_people(tmp_path):
    run_dir = tmp_path / "orl"
    assert main(["train", "data=orl", "train.epochs=12", "run.progress=false", "run.save_model=false",
                 f"run.dir={run_dir}"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    v = res["verification"]
    # 10 held-out people the model never saw: chance is 50%; a trained face model separates them well
    assert v["accuracy"] > 0.85 and v["auc"] > 0.9
    assert res["curve"][-1]["loss"] < res["curve"][0]["loss"]


@pytest.mark.slow
@needs_data("orl_faces")
def test_centralized_orl_masked_ppfr_fd_learns(tmp_path):
    run_dir = tmp_path / "ppfr"
    assert main(["train", "data=orl", "protect=ppfr_fd", "train.epochs=12", "run.progress=false",
                 "run.save_model=false", f"run.dir={run_dir}"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["protection"]["name"] == "ppfr_fd" and res["model"]["input"] == [34, 14, 14]
    assert res["verification"]["accuracy"] > 0.75
