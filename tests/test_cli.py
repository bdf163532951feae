import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedface.cli import main

FAST = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
        "data.pairs.per_fold=6", "model=tiny", "train.epochs=1", "train.batch_size=16", "run.progress=false"]


def test_train_writes_config_results_and_tensorboard(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, f"run.dir={run_dir}"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "done" and 0.0 <= res["verification"]["accuracy"] <= 1.0
    from fedface.report.schema import TRAIN, describe, validate

    validate(res, TRAIN)  # the documented shape, in docs/results-schema.md
    assert describe(TRAIN) in (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    with pytest.raises(ValueError, match="results.verification.auc: missing"):
        validate({**res, "verification": {k: v for k, v in res["verification"].items() if k != "auc"}}, TRAIN)
    assert res["data"]["identities"]["train"] == 8 and res["data"]["pairs"]["pairs"] == 60
    prov = res["machine"]["provenance"]  # which code, which packages, which command made this number
    assert len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool) and prov["packages"]["torch"]
    assert "train" in prov["command"] and "run.dir=<abs>/run" in prov["command"]  # no machine path in results
    assert str(tmp_path) not in json.dumps(prov)
    assert "seed: 0" in (run_dir / "config.yaml").read_text()
    assert any((run_dir / "tensorboard").iterdir())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    hp = EventAccumulator(str(next((run_dir / "tensorboard").rglob("hparams"))))  # the HParams tab's run
    hp.Reload()
    assert "final/accuracy" in hp.Tags()["scalars"]
    assert (run_dir / "model.safetensors").exists() and (run_dir / "partition.json").exists()
    assert "acc %" in capsys.readouterr().out
    before = (run_dir / "results.json").read_bytes()
    # a second run into the same folder (the default run.dir is shared by every config change) must not destroy it
    assert main(["train", *FAST, "seed=1", f"run.dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "run.dir" in err and "run.overwrite=true" in err and err.count("\n") == 1
    assert (run_dir / "results.json").read_bytes() == before and "seed: 0" in (run_dir / "config.yaml").read_text()
    assert main(["train", *FAST, "seed=1", f"run.dir={run_dir}", "run.overwrite=true"]) == 0
    assert "seed: 1" in (run_dir / "config.yaml").read_text()
    # run.reuse (the recipes): this very run is kept, untouched; a changed config replaces it
    capsys.readouterr()
    before = (run_dir / "results.json").read_bytes()
    assert main(["train", *FAST, "seed=1", f"run.dir={run_dir}", "run.reuse=true", "run.progress=false"]) == 0
    assert "already holds this run" in capsys.readouterr().out
    assert (run_dir / "results.json").read_bytes() == before
    assert main(["train", *FAST, "seed=2", f"run.dir={run_dir}", "run.reuse=true"]) == 0
    assert "seed: 2" in (run_dir / "config.yaml").read_text() and (run_dir / "results.json").read_bytes() != before


@pytest.mark.parametrize("override,needle", [
    ("train.epochz=3", "epochz"),
    ("data=casia", "casia"),
    ("data.split.test_identities=12", "data.split.test_identities"),
])
def test_user_errors_are_one_line(tmp_path, capsys, override, needle):
    assert main(["train", *FAST, f"run.dir={tmp_path}", override]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("\n") <= 2


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "fedface.cli", "--help"], capture_output=True, text=True, check=True)
    assert "fedface <command>" in out.stdout


def test_analysis_network_reports_its_trained_gates(tmp_path):
    run_dir = tmp_path / "analysis"
    assert main(["train", *FAST, "protect=ppfr_analysis", "train.epochs=2", f"run.dir={run_dir}"]) == 0
    prot = json.loads((run_dir / "results.json").read_text())["protection"]
    assert prot["analysis"] and len(prot["weights"]) == 36
    assert min(prot["weights"]) < 0.95  # Loss_pri moved the gates from their start a_i = 0.95


def test_unknown_ppfr_norm_is_one_line_naming_the_key_and_choices(tmp_path, capsys):
    assert main(["train", *FAST, "protect=ppfr_fd", "protect.norm=pixel", f"run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "protect.norm='pixel'; known: image, channel" in err and "Traceback" not in err and err.count("\n") <= 2


def test_command_help_cfg_job_and_multirun(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "protect    " in out and "ppfr_fd" in out and "train.epochs=40" in out and "Traceback" not in out
    assert main(["simulate", "protect=ppfr_fd", "federation.rounds=3", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "rounds: 3" in out and "name: ppfr_fd" in out
    assert main(["train", "-m", "seed=1,2"]) == 2
    assert "multirun" in capsys.readouterr().err


def test_a_non_finite_loss_still_lands_a_valid_failed_results_json(tmp_path, capsys):
    from fedface.report.schema import TRAIN, validate

    run_dir = tmp_path / "run"
    assert main(["train", *FAST, f"run.dir={run_dir}", "train.lr=1e20"]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "train.lr" in err and err.count("\n") == 1
    res = json.loads((run_dir / "results.json").read_text())
    validate(res, TRAIN)
    assert res["status"] == "failed" and "non-finite" in res["error"]
