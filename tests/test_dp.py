"""protect=dp_sgd: DP-SGD (Abadi et al. 2016, Algorithm 1) with Opacus -- GroupNorm backbone, per-example clipping,
noise, RDP accounting, refusals, per-client epsilon in a federation and in a centralized run."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from opacus.validators import ModuleValidator

from clients.client_app import app as client_app
from fedface.cli import main
from fedface.config import compose_config
from fedface.federation.setup import prepare_federation
from fedface.mixup import build_mixer
from fedface.models import build_backbone, build_head
from fedface.protect import build_protection
from fedface.models.spec import InputSpec
from fedface.train import TrainConfig, train_local
from fedface.protect.dp import check_config
from fedface.train.dp import epsilon, make_accountant
from fedface.models.arcface import fr_loss
from clients.records import DP_HISTORY
from strategies.server_loop import run_federation
from tests.local_grid import LocalGrid

N, CLASSES = 32, 4


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (N, 112, 112), generator=g, dtype=torch.uint8), torch.arange(N) % CLASSES


def _model(norm: str = "group"):
    torch.manual_seed(0)
    backbone = build_backbone({"name": "tiny", "norm": norm}, InputSpec(1, 112, 112))
    return backbone, build_head({}, backbone.embedding_size, CLASSES)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 1, "batch_size": 8, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
                          "schedule": "constant", "flip": False, "shift": 0, **kw})


def _dp(noise: float, clip: float = 1.0):
    return build_protection({"name": "dp_sgd", "noise_multiplier": noise, "max_grad_norm": clip, "delta": 1e-5})


def _flat(backbone, head) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in [*backbone.parameters(), *head.parameters()] if p.requires_grad])


@pytest.mark.parametrize("name,spec", [("tiny", InputSpec(1, 112, 112)), ("fedface_net", InputSpec(34, 14, 14))])
def test_group_norm_backbone_validates_with_opacus(name, spec):
    net = build_backbone({"name": name, "norm": "group"}, spec)
    ModuleValidator.validate(net, strict=True)  # raises on BatchNorm or any other unsupported module
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    groups = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert groups and all(m.num_channels % m.num_groups == 0 and m.num_groups <= 32 for m in groups)
    assert isinstance(net.trunk.features, torch.nn.LayerNorm) and not net.trunk.features.weight.requires_grad
    assert net(torch.randn(2, *spec.shape)).shape == (2, net.embedding_size)
    batch = build_backbone({"name": name}, spec)  # the default stays BatchNorm (existing results unchanged)
    assert ModuleValidator.validate(batch, strict=False)
    with pytest.raises(ValueError, match="model.norm='layer'"):
        build_backbone({"name": name, "norm": "layer"}, spec)


def test_one_step_clips_every_example_then_averages_over_the_expected_batch():
    """Noise 0, a tiny clip C: the update equals -lr * sum_i clip_C(g_i) / L, each g_i computed alone by autograd --
    which checks Opacus' per-example gradients (our ArcFace sampler included) and the clipping itself."""
    images, labels = _data()
    backbone, head = _model()
    b0, h0 = copy.deepcopy(backbone), copy.deepcopy(head)
    before, clip, lr, bs = _flat(backbone, head), 1e-3, 0.1, 8
    record = []
    train_local(backbone, head, _dp(0.0, clip), images, labels, _cfg(lr=lr, batch_size=bs),
                torch.Generator().manual_seed(3), record=record)
    update = _flat(backbone, head) - before
    x, y = record[0].model_input, record[0].labels
    assert 0 < len(y) < N  # a Poisson lot
    expected, norms = torch.zeros_like(before), []
    for i in range(len(y)):
        b0.zero_grad(), h0.zero_grad()
        fr_loss(b0, h0, x[i : i + 1], y[i : i + 1]).backward()
        g = torch.cat([p.grad.flatten() for p in [*b0.parameters(), *h0.parameters()] if p.requires_grad])
        norms.append(g.norm().item())
        expected += g / max(1.0, g.norm().item() / clip)
    assert min(norms) > 10 * clip  # every example really was clipped
    torch.testing.assert_close(update, -lr * expected / bs, rtol=1e-3, atol=1e-7)
    assert update.norm() <= lr * clip * len(y) / bs * (1 + 1e-4)
    assert not any(hasattr(p, "grad_sample") for p in backbone.parameters())  # Opacus' hooks are gone afterwards


def _update(noise: float, seed: int) -> torch.Tensor:
    images, labels = _data()
    backbone, head = _model()
    before = _flat(backbone, head)
    train_local(backbone, head, _dp(noise), images, labels, _cfg(), torch.Generator().manual_seed(seed))
    return _flat(backbone, head) - before


def test_update_variance_across_seeds_grows_with_the_noise_multiplier():
    var = {}
    for noise in (0.0, 0.5, 2.0):
        updates = torch.stack([_update(noise, seed) for seed in range(3)])
        var[noise] = updates.var(dim=0).mean().item()
    assert var[0.0] < var[0.5] < var[2.0]
    # the noise term of Algorithm 1: std lr * sigma * C / L per coordinate, dominating the clipped signal
    assert var[2.0] == pytest.approx((0.1 * 2.0 * 1.0 / 8) ** 2, rel=0.2)


def test_epsilon_is_finite_decreases_with_noise_and_grows_with_steps():
    eps = []
    for noise in (0.5, 1.0, 2.0):
        acc = make_accountant([(noise, 0.25, 40)])
        eps.append(epsilon(acc, 1e-5))
    assert all(0 < e < math.inf for e in eps) and eps[0] > eps[1] > eps[2]
    few, many = (epsilon(make_accountant([(1.0, 0.25, n)]), 1e-5) for n in (10, 100))
    assert few < many
    assert epsilon(make_accountant([(0.0, 0.25, 1)]), 1e-5) == math.inf
    # the accountant train_local steps (a resumed one keeps composing)
    images, labels = _data()
    backbone, head = _model()
    acc = make_accountant([(1.0, 8 / N, 5)])
    res = train_local(backbone, head, _dp(1.0), images, labels, _cfg(steps=2), torch.Generator().manual_seed(0),
                      accountant=acc)
    assert res.dp["steps"] == 7 and res.dp["delta"] == 1e-5 and res.dp["sample_rate"] == 8 / N
    assert res.dp["epsilon"] == pytest.approx(epsilon(make_accountant([(1.0, 8 / N, 7)]), 1e-5))


def test_dp_sgd_with_mixup_is_refused_naming_both_keys():
    cfg = compose_config(["protect=dp_sgd", "mixup=fixed", "model.norm=group"])
    with pytest.raises(ValueError, match=r"protect=dp_sgd with mixup=fixed is refused.*mixup=none"):
        check_config(cfg)
    images, labels = _data()
    backbone, head = _model()
    mixer = build_mixer({"name": "fixed", "k": 2}, InputSpec(1, 112, 112), 8)
    with pytest.raises(ValueError, match=r"protect=dp_sgd with mixup=fixed"):
        train_local(backbone, head, _dp(1.0), images, labels, _cfg(), torch.Generator(), mixer=mixer)


def test_dp_sgd_with_batch_norm_is_refused_naming_model_norm(tmp_path):
    with pytest.raises(ValueError, match=r"needs model.norm=group \(got model.norm=batch\)"):
        check_config(compose_config(["protect=dp_sgd"]))
    images, labels = _data()
    backbone, head = _model("batch")
    with pytest.raises(ValueError, match="set model.norm=group"):
        train_local(backbone, head, _dp(1.0), images, labels, _cfg(), torch.Generator())
    assert main(["train", "data=synthetic", "model=tiny", "protect=dp_sgd", f"run.dir={tmp_path / 'run'}"]) == 2
    assert not (tmp_path / "run").exists()  # refused before anything is written


SMALL = ["data=synthetic", "data.num_identities=12", "data.images_per_identity=6", "data.split.test_identities=4",
         "data.pairs.per_fold=6", "model=tiny", "model.norm=group", "train.batch_size=8", "federation.num_clients=3",
         "federation.rounds=2", "federation.min_train_nodes=1", "federation.local_steps=2",
         "protect=dp_sgd", "federation.client_cache=1"]


def test_federation_reports_each_clients_epsilon_every_round(tmp_path):
    """client_cache=1: each node's task is evicted between its rounds, so round 2's epsilon composes with round 1's
    only because the accountant's history lives in the node's context.state."""
    cfg = prepare_federation(compose_config([*SMALL, f"run.dir={tmp_path}"]))
    grid = LocalGrid(client_app, 3)
    res = run_federation(grid, cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    r1, r2 = saved["rounds"]
    for r in (r1, r2):
        assert len(r["epsilons"]) == 3 and r["delta"] == 1e-5
        assert all(0 < e < math.inf for e in r["epsilons"].values())
        assert r["epsilon_max"] == max(r["epsilons"].values())
    assert all(r2["epsilons"][n] > r1["epsilons"][n] for n in r1["epsilons"])
    for ctx in grid.contexts.values():
        assert sum(ctx.state[DP_HISTORY]["steps"]) == 2 * 2  # rounds x local steps
    assert res["status"] == "done"


def test_centralized_train_saves_epsilon(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "data=synthetic", "data.num_identities=12", "data.images_per_identity=6",
                 "data.split.test_identities=4", "data.pairs.per_fold=6", "model=tiny", "model.norm=group",
                 "protect=dp_sgd", "train.steps=2", "train.batch_size=8", "run.progress=false",
                 f"run.dir={run_dir}"]) == 0
    dp = json.loads((run_dir / "results.json").read_text())["dp"]
    assert 0 < dp["epsilon"] < math.inf and dp["delta"] == 1e-5 and dp["steps"] == 2


def test_compare_grid_runs_dp_sgd_at_three_noise_levels_on_one_group_norm_backbone(tmp_path):
    from fedface import compare
    from fedface.config import ConfigError

    grid = ["experiment=demo", "data=synthetic", "compare.attacks=[gradient]", f"compare.out={tmp_path}",
            "compare.protections=[none,dp_sgd_weak,dp_sgd,dp_sgd_strong]"]
    with pytest.raises(ConfigError, match="needs model.norm=group"):
        compare.cell_plan(grid, compare.load_experiment(grid))
    grid.append("model.norm=group")
    cells, unavailable, _ = compare.cell_plan(grid, compare.load_experiment(grid))
    assert not unavailable and {c["federation"]["model"]["norm"] for c in cells} == {"group"}
    noise = {c["protection"]: c["federation"]["protect"].get("noise_multiplier") for c in cells}
    assert noise == {"none": None, "dp_sgd_weak": 0.5, "dp_sgd": 1.0, "dp_sgd_strong": 2.0}


def test_compare_records_and_tables_carry_the_dp_epsilon():
    from fedface import compare_records
    from fedface.compare_report import row_name
    from fedface.report.schema import RECORD, SUMMARY, validate

    def outcome(protection, rounds):
        return {"protection": protection, "seed": 0, "config_hash": "h", "status": "done", "attacks": ["gradient"],
                "federation": {"rounds": rounds}, "reconstruct": None}

    rounds = [{"round": 1, "accuracy": 0.6, "epsilon_max": 3.5, "delta": 1e-5, "attacks": []},
              {"round": 2, "accuracy": 0.7, "epsilon_max": 5.25, "delta": 1e-5, "attacks": []}]
    dp_rec, = compare_records.records_of(outcome("dp_sgd", rounds))
    plain, = compare_records.records_of(outcome("none", [{"round": 1, "accuracy": 0.8, "attacks": []}]))
    validate(dp_rec, RECORD, "record")
    assert dp_rec["privacy"]["epsilon"] == 5.25 and dp_rec["privacy"]["delta"] == 1e-5  # the LAST round's, composed
    assert "epsilon" not in plain["privacy"]
    rows = compare_records.summarise([plain, dp_rec], ["none", "dp_sgd"], ["gradient"])
    for r in rows:
        validate(r, SUMMARY, "row")
    assert [row_name(r) for r in rows] == ["none", "dp_sgd (ε = 5.25, δ = 1e-05)"]
