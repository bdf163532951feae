"""`fedface compare`: the grid's checks, the cell cache / resume, the results.json schema, failed cells, an
interrupted compare, and a real two-cell compare end to end (tiny model, synthetic faces, one round)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from fedface import compare, compare_records
from fedface.cli import main
from fedface import compare_report
from fedface.report.schema import RESULTS, describe, validate

from conftest import needs_data

# a tiny grid on synthetic faces: no real data needed, one round, two clients
TINY = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
        "data.pairs.per_fold=6", "model=tiny", "train.batch_size=4", "federation.num_clients=2",
        "federation.rounds=1", "federation.min_train_nodes=1", "federation.local_steps=2",
        "compare.protections=[none,ppfr_fd]", "compare.attacks=[gradient]",
        "compare.gradient=['attack.max_clients=1','attack.threats=[{}]','attack.gradient.iterations=5',"
        "'attack.gradient.max_seconds=10']"]


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["experiment=demo", *TINY, f"compare.out={tmp_path / 'out'}", *extra]


def _fake_execute(cell):
    """A stand-in for one cell's federation + attacks (no Ray): a run whose numbers depend on the protection."""
    masked = cell["protection"] != "none"
    rounds = [{"round": r, "accuracy": 0.6 + 0.1 * r - 0.1 * masked, "train_loss": 1.0 / r, "bytes_sent": 1000,
               "bytes_received": 1000,
               "attacks": [{"attack": "gradient", "threat": "server", "skipped": None,
                            "scores": {"masked": {"psnr": 20.0, "ssim": 0.1}} if masked else
                            {"masked": {"psnr": 30.0, "ssim": 0.9}, "image": {"psnr": 30.0, "ssim": 0.9}}}]
               if r == 1 else []} for r in (1, 2)]
    return {"rounds": rounds, "status": "done"}, None


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def test_unknown_protection_or_attack_fails_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"'bogus'; known: ") as err:
        compare.run_compare(_args(tmp_path, "compare.protections=[none,bogus]"))
    assert all(name in str(err.value) for name in compare.PROTECTIONS)  # the complete list of configs/preset/
    with pytest.raises(ValueError, match=r"compare.attacks: unknown 'dlg'; known: gradient, learned, model_inversion"):
        compare.run_compare(_args(tmp_path, "compare.attacks=[dlg]"))
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written
    assert main(["compare", *_args(tmp_path, "compare.protections=[nope]")]) == 2
    assert "known: advface, central_dp" in capsys.readouterr().err
    assert main(["compare", "data=orl"]) == 2  # no experiment=
    assert "experiment=<name>" in capsys.readouterr().err


def test_known_but_unbuilt_entries_are_recorded_not_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "_execute", _fake_execute)
    monkeypatch.setattr(compare, "PROTECTIONS_LATER", {"unbuilt": "lands with a later issue"})
    res = compare.run_compare(_args(tmp_path, "compare.protections=[none,ppfr_fd,unbuilt]"))
    validate(res)
    dp = [r for r in res["records"] if r["protection"] == "unbuilt"]
    assert dp and {r["status"] for r in dp} == {"unavailable"}
    html = (tmp_path / "out" / "report.html").read_text()
    assert dp[0]["error"] in html


def test_cell_hash_is_the_resolved_config_not_the_name(tmp_path):
    cfg = compare.load_experiment(_args(tmp_path))
    cells, _, _ = compare.cell_plan(_args(tmp_path), cfg)
    again, _, _ = compare.cell_plan(_args(tmp_path, "compare.name=other"), compare.load_experiment(
        _args(tmp_path, "compare.name=other")))
    assert [c["config_hash"] for c in cells] == [c["config_hash"] for c in again]
    changed, _, _ = compare.cell_plan(_args(tmp_path, "federation.rounds=2"), compare.load_experiment(
        _args(tmp_path, "federation.rounds=2")))
    assert not {c["config_hash"] for c in cells} & {c["config_hash"] for c in changed}
    assert len({c["config_hash"] for c in cells}) == 2  # the two protections differ


def test_cells_run_seed_by_seed_so_a_stopped_compare_holds_whole_seeds(tmp_path):
    """Headline rows with 3 seeds, another row with 1: every row's seed 0 comes before any seed 1, rows in order."""
    args = _args(tmp_path, "compare.protections=[none,ppfr_fd,ppfr_fd+adamixup]", "compare.headline=[none,ppfr_fd]",
                 "compare.headline_seeds=[0,1,2]", "compare.seeds=[0]")
    cells, _, _ = compare.cell_plan(args, compare.load_experiment(args))
    assert [(c["protection"], c["seed"]) for c in cells] == [
        ("none", 0), ("ppfr_fd", 0), ("ppfr_fd+adamixup", 0), ("none", 1), ("ppfr_fd", 1), ("none", 2),
        ("ppfr_fd", 2)]


def test_a_sigterm_stops_the_compare_and_a_failed_flower_run_does_not(tmp_path, monkeypatch):
    """``kill`` or a job's time limit: with Ray's driver handler in place (``ray.init`` turns SIGTERM into
    ``sys.exit(15)``) the compare stops, leaving the cell without its cell.json to re-run next time; Flower's own
    ``sys.exit`` for a failed run is one failed cell, and the compare goes on."""
    def killed(cell):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs before this returns
        return _fake_execute(cell)

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # Ray's driver handler
    try:
        monkeypatch.setattr(compare, "_execute", killed)
        with pytest.raises(SystemExit):
            compare.run_compare(_args(tmp_path))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not list((tmp_path / "out").rglob("cell.json"))
    monkeypatch.setattr(compare, "_execute", lambda cell: sys.exit(201))  # flwr's SERVERAPP_EXCEPTION
    res = compare.run_compare(_args(tmp_path))
    assert [r["status"] for r in res["records"]] == ["failed", "failed"] and res["cells"]["failed"] == 2


def test_cached_cells_are_judged_by_todays_collapse_detector(tmp_path):
    """A cell's collapse verdict is re-read from the rounds its federation recorded, so a compare resumed after the
    detector changed judges its cached cells by today's rule; without that file, the stored verdict stands."""
    from fedface.runs import RunLayout

    rounds = [{"round": r, "loss_over_degenerate": x, "head_row_cosine": 0.01, "mixed_samples": False}
              for r, x in enumerate([2.0, 1.08, 0.99, 0.975, 0.95], 1)]
    results = RunLayout(tmp_path / "cell" / "federation").results
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"rounds": rounds}))
    outcome = {"federation": {"rounds": [], "collapse": {"collapsed": True}}, "cell_dir": str(tmp_path / "cell")}
    assert compare_records._collapse(outcome)["collapsed"] is False  # centres spread: not the degenerate solution
    assert compare_records._collapse({**outcome, "cell_dir": str(tmp_path / "gone")})["collapsed"] is True


def test_failed_cell_is_recorded_and_the_others_complete(tmp_path, monkeypatch):
    def flaky(cell):
        if cell["protection"] == "ppfr_fd":
            raise RuntimeError("boom in the federation")
        return _fake_execute(cell)

    monkeypatch.setattr(compare, "_execute", flaky)
    res = compare.run_compare(_args(tmp_path))
    validate(res)
    by = {r["protection"]: r for r in res["records"]}
    assert by["none"]["status"] == "done" and by["ppfr_fd"]["status"] == "failed"
    assert "boom in the federation" in by["ppfr_fd"]["error"] and res["cells"]["failed"] == 1
    out = tmp_path / "out"
    assert "boom in the federation" in (out / "report.html").read_text()
    assert "FAILED: RuntimeError: boom" in (out / "table.md").read_text()
    # resume re-runs the failed cell only
    monkeypatch.setattr(compare, "_execute", _fake_execute)
    res = compare.run_compare(_args(tmp_path))
    assert res["cells"] == {"total": 2, "ran": 1, "resumed": 1, "failed": 0}


def test_interrupted_compare_leaves_no_half_written_report_and_resumes(tmp_path, monkeypatch):
    calls = []

    def interrupted(cell):
        calls.append(cell["protection"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _fake_execute(cell)

    monkeypatch.setattr(compare, "_execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare.run_compare(_args(tmp_path))
    out = tmp_path / "out"
    assert not (out / "report.html").exists() and not (out / "results.json").exists()
    assert not _tmp_files(out)
    # killed while writing the report's pieces: no report at all, not half of one
    monkeypatch.setattr(compare, "_execute", _fake_execute)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_report, "write_tensorboard", killed)
    with pytest.raises(KeyboardInterrupt):
        compare.run_compare(_args(tmp_path))
    assert not (out / "report.html").exists() and not _tmp_files(out)
    monkeypatch.undo()
    monkeypatch.setattr(compare, "_execute", _fake_execute)
    res = compare.run_compare(_args(tmp_path))
    assert res["cells"]["ran"] == 0 and res["cells"]["resumed"] == 2  # both cells finished before the kill
    html = (out / "report.html").read_text()
    assert html.rstrip().endswith("</html>") and "data:image/png;base64," in html


def test_schema_rejects_a_bad_record_and_is_documented():
    good = {"protection": "none", "attack": "gradient", "seed": 0, "status": "failed", "error": "x"}
    results = {"schema": "fedface.compare/1", "experiment": "t", "status": "done", "out": "o", "command": "c",
               "created": "now", "data": "orl", "grid": {}, "notes": [], "cells": {}, "wall_seconds": 1.0,
               "machine": {}, "records": [good], "summary": []}
    validate(results)
    with pytest.raises(ValueError, match=r"results.records\[0\].seed"):
        validate({**results, "records": [{**good, "seed": "0"}]})
    with pytest.raises(ValueError, match="results.summary: missing"):
        validate({k: v for k, v in results.items() if k != "summary"})
    text = describe(RESULTS)
    assert "`records`" in text and "`psnr`" in text and "`privacy_score`" in text


def test_mean_ci_uses_student_t():
    s = compare_records.mean_ci([0.5, 0.6, 0.7])
    t = 4.30265  # Student's t, 0.975 quantile, 2 degrees of freedom
    assert s["n"] == 3 and abs(s["mean"] - 0.6) < 1e-12 and abs(s["ci95"] - t * 0.1 / 3 ** 0.5) < 1e-5
    assert compare_records.mean_ci([0.4])["ci95"] is None and compare_records.mean_ci([None]) is None


def test_a_row_the_attack_could_not_measure_is_unscored_not_erasing_the_others():
    """SecAgg+'s gradient row has no PSNR/SSIM (no per-client update; the aggregate over the memory bound): it gets
    no paper-001 scores, and the measured rows keep theirs, normalised among themselves."""
    def record(protection, ssim, accuracy):
        privacy = {"psnr": None if ssim is None else 12.0, "ssim": ssim, "space": "pixels 64x64",
                   "masking_visual": 0.9 if "ppfr" in protection else 0.05, "masking_feature": 0.1}
        return {"protection": protection, "attack": "gradient", "seed": 0, "status": "done",
                "utility": {"accuracy": accuracy, "curve": []}, "privacy": privacy, "bytes_per_round": 1.0}

    records = [record("none", 0.5, 0.9), record("ppfr_fd", 0.1, 0.6), record("peep", 0.3, 0.7),
               record("secagg", None, 0.85)]
    rows = {r["protection"]: r for r in compare_records.summarise(records, [r["protection"] for r in records],
                                                           ["gradient"])}
    assert rows["secagg"]["scores"] is None and rows["none"]["scores"] is None
    assert rows["ppfr_fd"]["scores"]["privacy_score"] > rows["peep"]["scores"]["privacy_score"]


def test_srra_na_has_a_reason_in_records_and_report(tmp_path, monkeypatch):
    """A gradient record never measures SRRA: its record and the report say why instead of a silent n/a."""
    monkeypatch.setattr(compare, "_execute", _fake_execute)
    res = compare.run_compare(_args(tmp_path))
    for r in res["records"]:
        assert r["privacy"]["srra"] is None and "not measured for gradient inversion" in r["privacy"]["srra_unavailable"]
    assert "SRRA n/a: not measured for gradient inversion" in (tmp_path / "out" / "table.md").read_text()


def _fake_execute_with_inversion(cell):
    fed, rec = _fake_execute(cell)
    ident = {"cos": 0.9, "same_person": 0.5, "top1": 0.5, "srra": None,
             "srra_unavailable": "336 impostor scores cannot measure FAR=0.001 (need 1000)"}
    rows = [{"attack": "mean face (floor)", "threat": "-", "identity": {**ident, "cos": 0.8}},
            {"attack": "class-centre", "threat": "server", "skipped": "head=local: no class centre leaves the clients"},
            {"attack": "BN statistics only", "threat": "server", "identity": ident}]
    return fed, rec, {"head": "local", "rows": rows, "status": "done"}


def test_model_inversion_records_from_the_cells_invert_rows(tmp_path, monkeypatch):
    """Fast: the cell plan composes one `fedface invert` per cell on the cell's own federation (budget from
    compare.model_inversion, in the cell hash); records carry its identity metrics, the floor and SRRA's reason."""
    args = _args(tmp_path, "compare.attacks=[gradient,model_inversion]",
                 "compare.model_inversion=['attack.identities=2','attack.inversion.steps=3']")
    cells, unavailable, _ = compare.cell_plan(args, compare.load_experiment(args))
    assert not unavailable
    for c in cells:
        assert c["invert"]["attack"]["name"] == "inversion" and c["invert"]["attack"]["identities"] == 2
        assert c["invert"]["attack"]["target"] == str(Path(c["dir"]) / "federation")
        assert c["invert"]["run"]["dir"] == str(Path(c["dir"]) / "invert")
    more = _args(tmp_path, "compare.attacks=[gradient,model_inversion]",
                 "compare.model_inversion=['attack.identities=3']")
    assert {c["config_hash"] for c in cells}.isdisjoint(
        c["config_hash"] for c in compare.cell_plan(more, compare.load_experiment(more))[0])
    monkeypatch.setattr(compare, "_execute", _fake_execute_with_inversion)
    res = compare.run_compare(args)
    validate(res)
    mi = [r for r in res["records"] if r["attack"] == "model_inversion"]
    assert len(mi) == 2 and {r["status"] for r in mi} == {"done"}
    p = mi[0]["privacy"]
    assert p["inversion_row"] == "BN statistics only" and p["cos"] == 0.9 and p["floor_cos"] == 0.8
    assert p["attack_top1"] == 0.5 and p["srra"] is None and "impostor scores" in p["srra_unavailable"]
    assert "SRRA n/a: 336 impostor scores" in (tmp_path / "out" / "table.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_cell_compare_with_model_inversion(tmp_path):
    """Model inversion in the grid: each cell runs `fedface invert` on its own final weights (tiny budget) and its
    record carries the identity metrics (COS, SRRA or why not, attack top-1, the mean-face floor) and a grid."""
    from conftest import data_root
    if data_root() is None or not (data_root() / "lfwa").is_dir():
        pytest.skip("LFW-a (the attacker's auxiliary faces for the inversion priors) not found")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    budget = ("compare.model_inversion=['attack.identities=2','attack.threats=[{}]','attack.inversion.steps=3',"
              f"'attack.decoder=null','attack.cache={tmp_path / 'cache'}']")
    res = compare.run_compare(_args(tmp_path, "data.aux=lfwa", "compare.attacks=[model_inversion]", budget))
    validate(res)
    assert res["cells"]["failed"] == 0, [r.get("error") for r in res["records"]]
    assert {(r["protection"], r["attack"], r["status"]) for r in res["records"]} == {
        ("none", "model_inversion", "done"), ("ppfr_fd", "model_inversion", "done")}
    for r in res["records"]:
        p = r["privacy"]
        assert p["head"] == "local" and p["inversion_row"].startswith("BN statistics only")
        assert p["psnr"] is None and "PSNR/SSIM n/a" in p["space"]
        assert p["srra"] is not None or p["srra_unavailable"]
        if "cos_unavailable" not in p["inversion_rows"][0].get("identity", {}):
            assert p["cos"] is not None and p["attack_top1"] is not None and p["floor_cos"] is not None
        assert (Path(r["cell_dir"]) / "invert" / "results.json").exists()
    assert len(list((tmp_path / "out" / "grids").glob("*-model_inversion.png"))) == 2
    assert "Malicious server III" in (tmp_path / "out" / "table.md").read_text()


def test_two_cell_compare_end_to_end_and_resume(tmp_path, capsys):
    """A real compare: two federations (tiny model, synthetic faces, one round, gradient attack), the results
    folder, the schema; a second run skips both finished cells."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    assert main(["compare", *_args(tmp_path)]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "out"
    assert "| none |" in printed and "report: " in printed and str(out / "report.html") in printed
    res = json.loads((out / "results.json").read_text())
    validate(res)
    assert res["cells"] == {"total": 2, "ran": 2, "resumed": 0, "failed": 0}
    assert {(r["protection"], r["attack"], r["status"]) for r in res["records"]} == {
        ("none", "gradient", "done"), ("ppfr_fd", "gradient", "done")}
    for r in res["records"]:
        assert r["utility"]["accuracy"] is not None and r["bytes_per_round"] > 0 and r["privacy"]["psnr"] is not None
        assert len(r["config_hash"]) == 12 and r["machine"]["cpu_count"]
    for name in ("table.md", "frontier.png", "curves.png", "report.html", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "grids").glob("*.png")) and (out / "tensorboard").is_dir()
    assert res["notes"] == []  # synthetic was asked for: no fallback note
    # without the learned decoder, ppfr_fd's gradient scores are in masked space: flagged, never ranked with pixels
    by = {r["protection"]: r for r in res["records"]}
    assert by["none"]["privacy"]["space"].startswith("pixels")
    assert by["ppfr_fd"]["privacy"]["space"].startswith("model input") and "†" in (out / "table.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/cell.json")}
    assert main(["compare", *_args(tmp_path)]) == 0
    res2 = json.loads((out / "results.json").read_text())
    assert res2["cells"]["ran"] == 0 and res2["cells"]["resumed"] == 2
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("cells/*/cell.json")}
    assert [r["utility"]["accuracy"] for r in res2["records"]] == [r["utility"]["accuracy"] for r in res["records"]]


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_data("orl_faces", "lfwa", "lfw_pairs")
def test_orl_compare_with_learned_reconstruction(tmp_path):
    """Both attacks on real faces: the learned decoder's rows, the decoded gradient recoveries, SRRA's target."""
    args = ["experiment=demo", "federation.rounds=1", "compare.protections=[none,ppfr_fd]",
            "compare.attacks=[gradient,learned]", f"compare.out={tmp_path / 'out'}",
            "compare.gradient=['attack.max_clients=1','attack.threats=[{}]','attack.gradient.iterations=10']",
            "compare.learned=['attack.kinds=[decoder]','attack.threats=[{}]','attack.decoder.steps=20',"
            f"'attack.decoder.width=8','attack.victims=12','attack.cache={tmp_path / 'cache'}']"]
    assert main(["compare", *args]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    validate(res)
    learned = {r["protection"]: r for r in res["records"] if r["attack"] == "learned"}
    assert learned["none"]["privacy"]["cos"] is not None and learned["ppfr_fd"]["privacy"]["masking_visual"] > 0.5
    grad = [r for r in res["records"] if r["attack"] == "gradient"]
    assert all(r["privacy"]["space"].startswith("pixels") for r in grad)
    assert len(list((tmp_path / "out" / "grids").glob("*.png"))) == 4


def test_schema_doc_is_generated_from_the_schema():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    assert describe(RESULTS) in doc


def test_demo_falls_back_to_synthetic_faces_with_a_loud_note(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("FEDFACE_DATA", str(tmp_path / "empty"))
    cfg = compare.load_experiment(["experiment=demo", f"compare.out={tmp_path / 'out'}"])
    cells, _, notes = compare.cell_plan(["experiment=demo"], cfg)
    assert notes and "SYNTHETIC" in notes[0] and any("learned reconstruction skipped" in n for n in notes)
    assert {c["federation"]["data"]["name"] for c in cells} == {"synthetic"}
    assert all(c["attacks"] == ["gradient"] and c["reconstruct"] is None for c in cells)
    # the demo's GGL prior is learned from LFW-a aux faces: without them the attack runs without its prior, and says so
    assert cfg.compare.gradient[-1] == "attack.gradient.prior=pca" and any("prior=free" in n for n in notes)
    assert {c["federation"]["attack"]["gradient"]["prior"] for c in cells} == {"free"}
    with pytest.raises(FileNotFoundError, match="not on disk"):
        compare.cell_plan(["experiment=orl"], compare.load_experiment(["experiment=orl"]))


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs" /
                                                         "experiment").glob("*.yaml")))
def test_every_experiment_config_composes_with_a_valid_grid(name):
    cfg = compare.load_experiment([f"experiment={name}"])
    assert cfg.compare.name == name and str(cfg.compare.out) == f"results/{name}"
    compare.check_grid(list(cfg.compare.protections), list(cfg.compare.attacks))
    assert int(cfg.federation.ray.num_cpus) >= 1 and int(cfg.threads) == 1


def test_a_cell_whose_worker_died_is_recorded_as_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "_run_cells", lambda cells, jobs: None)  # workers that never wrote cell.json
    res = compare.run_compare(_args(tmp_path))
    validate(res)
    assert {r["status"] for r in res["records"]} == {"failed"} and res["cells"]["failed"] == 2
    assert "worker died" in res["records"][0]["error"]


def test_one_name_per_method_in_results_and_the_compare_grid():
    """A run's protection label (results, grids) is the compare grid's own name for that method."""
    from fedface.protect import protection_label

    checked = []
    for name, overrides in compare.PROTECTIONS.items():
        if any(o.startswith(("federation.", "protect.")) for o in overrides) or "advface" in name:
            continue  # server-side DP / SecAgg+ and parameter variants are grid names, not a protection's
        groups = dict(o.split("=", 1) for o in overrides)
        assert protection_label({"name": groups["protect"]}, {"name": groups["mixup"]}) == name
        checked.append(name)
    assert {"none", "ppfr_fd", "ppfr_fd+adamixup", "obfuscator"} <= set(checked)


def test_a_preset_file_adds_a_grid_row_without_python(tmp_path, monkeypatch):
    """configs/preset/: one YAML file per grid row; a new file is a new row."""
    import shutil

    from fedface import config

    configs = tmp_path / "configs"
    shutil.copytree(config.CONFIG_DIR, configs)
    (configs / "preset" / "ppfr_fd_keep24.yaml").write_text("overrides: [protect=ppfr_fd, protect.keep=24, mixup=none]\n")
    monkeypatch.setattr(config, "CONFIG_DIR", configs)
    assert compare._presets()["ppfr_fd_keep24"] == ["protect=ppfr_fd", "protect.keep=24", "mixup=none"]
    assert compare._presets()["ppfr_fd+adamixup"] == ["protect=ppfr_fd", "mixup=adaptive"]
