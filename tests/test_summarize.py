"""`fedface summarize`: one command, one table renderer, for the results.json of every command (real committed
results in docs/results/ as the runs)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedface.cli import main
from fedface.report.tables import markdown_table
from fedface.summarize import summarize

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def run_dir(tmp_path: Path, name: str, source: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copyfile(RESULTS / source, folder / "results.json")
    return folder


def test_markdown_table_escapes_cells_and_matches_its_header():
    text = markdown_table(["a", "b"], [[1, "x|y"], [None, 2.5]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x/y |", "| None | 2.5 |"]


def test_seeds_of_one_training_row_become_mean_and_spread(tmp_path):
    runs = [run_dir(tmp_path, f"lfw-none-s{s}", f"lfw__none-s{s}.json") for s in range(3)]
    accs = [100 * json.loads((r / "results.json").read_text())["verification"]["accuracy"] for r in runs]
    lines = summarize(runs, by_seed=True).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| lfw-none | 3 | ")
    assert f"{sum(accs) / 3:.2f} ± " in lines[2] and "(seeds)" in lines[2]
    assert len(summarize(runs).splitlines()) == 2 + 3  # without --seeds: one row per folder, spread over folds


def test_every_kind_of_run_gets_its_table(tmp_path):
    runs = [run_dir(tmp_path, "central", "lfw__none-s0.json"),
            run_dir(tmp_path, "fed", "attack-orl__none-b4-s1.json"),
            run_dir(tmp_path, "inv", "inversion-orl__central-none.json"),
            run_dir(tmp_path, "rec", "reconstruct-lfw__fr_fd.json")]
    text = summarize(runs)
    assert "| run | n | acc % mean ± std |" in text  # fedface train
    assert "| run | rounds | best acc % (round) |" in text and "| fed | " in text  # fedface simulate
    assert "| run | round | attack | threat | prior | masked PSNR/SSIM |" in text  # its recorded attacks
    assert "| inv: " in text and "COS (dlib)" in text  # fedface invert, rows named by their run
    assert "| protection | attack | threat | PSNR | SSIM |" in text  # fedface reconstruct


def test_bad_runs_are_one_line_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["summarize", str(empty)]) == 2
    assert f"{empty / 'results.json'}: no results" in capsys.readouterr().err
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "results.json").write_text(json.dumps({"command": "paint"}))
    with pytest.raises(ValueError, match=r"odd: results.json of an unknown command \['paint'\]"):
        summarize([odd])
    assert main(["summarize"]) == 2 and "usage: fedface summarize" in capsys.readouterr().out


def test_the_attack_table_shows_each_attacks_identity_ceilings():
    from fedface.summarize import attack_table

    attack = {"threat": "server", "prior": "pca", "iterations": 10, "seconds": 1.0,
              "scores": {"identity": {"cos": 0.8, "top1": 0.0, "srra": 0.0},
                         "ceiling": {"truth": {"top1": 1.0, "srra": 0.25}, "prior_fit": {"top1": 0.125, "srra": 0.0}}}}
    row = attack_table([("run", {"rounds": [{"round": 1, "attacks": [attack]}]})]).splitlines()[2]
    assert "| 1.00 / 0.25; 0.12 / 0.00 |" in row
    old = attack_table([("run", {"rounds": [{"round": 1, "attacks": [{**attack, "scores": {}}]}]})])
    assert old.splitlines()[2].count("| - |") >= 1  # results from before the ceilings: a dash, not an error
