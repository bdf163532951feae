"""protect=advface (paper 003): a shadow decoder trained on the client's own pairs, then PGD (eq. 6) within bounds."""
from __future__ import annotations

import pytest
import torch

from fedface.data import load_faces
from fedface.models import build_backbone, build_head
from fedface.protect import build_protection, input_spec, needs_key
from fedface.protect.advface import AdvFace
from fedface.train import TrainConfig, train_local

KEY = bytes(range(32))
# a CPU-sized shadow decoder and PGD: the test checks the mechanism, not the paper's budget
TINY = {"iterations": 6, "shadow": {"size": 32, "width": 4, "steps": 40, "batch_size": 16, "lr": 3e-3}}


def advface(inner="none", key=None, **over) -> AdvFace:
    return build_protection({"name": "advface", "inner": inner, **TINY, **over}, key)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def data():
    return load_faces("synthetic", num_identities=4, images_per_identity=6, seed=1)


@pytest.fixture(scope="module")
def pixels(data):
    return data.images.unsqueeze(1).float()


@pytest.fixture(scope="module")
def fitted(pixels):
    return advface().fit(pixels)


@pytest.fixture(scope="module")
def fitted_ppfr(pixels):
    return advface("ppfr_fd", KEY).fit(pixels)


def test_pgd_raises_the_shadow_decoders_loss(fitted, pixels):
    x = pixels[:12]
    z = fitted.inner(x)
    y = fitted(x, gen())
    with torch.no_grad():
        clean, adv = fitted.shadow_loss(z, x), fitted.shadow_loss(y, x)
    assert (adv > clean).all()
    assert adv.mean() > 1.5 * clean.mean()
    # the same budget of random signs (the paper's "Random" baseline, Sec. 5.1.3) raises it far less
    noise = fitted.total_bound * torch.sign(torch.randn(z.shape, generator=gen(3)))
    with torch.no_grad():
        assert fitted.shadow_loss(z + noise, x).mean() < adv.mean()


def test_perturbation_respects_its_bounds(fitted, pixels):
    x = pixels[:8]
    z = fitted.inner(x)
    delta = fitted(x, gen()) - z
    # total: total_eps (1.0) x the std of the client's model_inputs; per iteration: min(alpha, eps) x std
    assert fitted.total_bound == pytest.approx(1.0 * fitted.describe()["scale"])
    assert delta.abs().max() <= fitted.total_bound * (1 + 1e-5)
    assert delta.abs().max() >= 0.5 * fitted.total_bound  # PGD uses the budget
    one = advface(iterations=1)
    one._shadow = fitted._shadow  # the same shadow decoder, one iteration of eq. 6
    step = one(x, gen()) - z
    assert step.abs().max() <= fitted.step_bound * (1 + 1e-5)
    assert fitted.step_bound == pytest.approx(0.2 * fitted.describe()["scale"])
    # without a total bound (the paper's literal eq. 6) only iterations x per-step bound holds
    free = advface(total_eps=None, iterations=3)
    free._shadow = fitted._shadow
    assert free.total_bound == pytest.approx(3 * fitted.step_bound)
    assert (free(x, gen()) - z).abs().max() <= free.total_bound * (1 + 1e-5)


def test_eps_below_alpha_clips_each_step(fitted, pixels):
    x = pixels[:4]
    small = advface(iterations=1, eps=0.05)
    small._shadow = fitted._shadow
    delta = small(x, gen()) - small.inner(x)
    assert delta.abs().max() == pytest.approx(0.05 * fitted.describe()["scale"], rel=1e-4)


def test_deterministic_given_the_generator_and_detached(fitted_ppfr, pixels):
    x = pixels[:6]
    a, b = fitted_ppfr(x, gen(7)), fitted_ppfr(x, gen(7))
    assert torch.equal(a, b)
    assert a.grad_fn is None  # no gradient into the training graph from PGD (nor from the unparametrised inner)
    # the only randomness is the inner protection's, drawn from the passed generator (PGD starts at delta = 0)
    noisy = advface({"name": "noise", "sigma": 0.1}, iterations=2)
    noisy._shadow = advface().fit(pixels[:8])._shadow  # a shadow decoder for [-1, 1] pixel inputs
    assert torch.equal(noisy(x, gen(7)), noisy(x, gen(7)))
    assert not torch.equal(noisy(x, gen(7)), noisy(x, gen(8)))


def test_output_spec_is_the_inner_ones(fitted, fitted_ppfr, pixels):
    assert fitted.output_spec(112, 112) == build_protection("none").output_spec(112, 112)
    assert fitted_ppfr.output_spec(112, 112).shape == (34, 14, 14)
    assert fitted_ppfr(pixels[:3], gen()).shape == (3, 34, 14, 14)
    assert input_spec({"name": "advface", "inner": "ppfr_fd"}).shape == (34, 14, 14)


def test_stacks_on_ppfr_fd_with_its_key():
    assert needs_key({"name": "advface", "inner": "ppfr_fd"})
    assert needs_key({"name": "advface", "inner": {"name": "ppfr_fd", "keep": 20}})
    assert not needs_key({"name": "advface", "inner": "none"})
    assert not needs_key({"name": "advface", "inner": {"name": "ppfr_fd", "analysis": True}})
    with pytest.raises(ValueError, match="federation key"):
        advface("ppfr_fd", None)
    p = advface({"name": "ppfr_fd", "keep": 20}, KEY)
    assert p.needs_key and p.output_spec(112, 112).shape == (18, 14, 14)
    assert torch.equal(p.inner.permutation, build_protection({"name": "ppfr_fd", "keep": 20}, KEY).permutation)


def test_analysis_gates_still_train_through_advface(pixels):
    p = advface({"name": "ppfr_fd", "analysis": True}, None, iterations=2).fit(pixels[:8])
    y = p(pixels[:4], gen())
    (y.square().mean() + p.aux_loss()).backward()
    assert p.inner.gate.logits.grad is not None and p.inner.gate.logits.grad.abs().sum() > 0
    assert all(q.grad is None for q in p.shadow.parameters())


def test_shadow_decoder_stays_on_the_client(fitted):
    names = [n for n, _ in fitted.named_parameters()] + list(fitted.state_dict())
    assert not any("shadow" in n or n.startswith(("inp", "downs", "ups")) for n in names)
    assert not list(fitted.parameters())  # inner=none has none; the shadow decoder is not among them
    assert not any(q.requires_grad for q in fitted.shadow.parameters())
    facts = fitted.describe()
    assert facts["inner"] == {"name": "none"} and facts["shadow_training"]["steps"] == 40


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="protect.iteration"):
        build_protection({"name": "advface", "iteration": 40})
    with pytest.raises(ValueError, match="protect.shadow.step"):
        build_protection({"name": "advface", "shadow": {"step": 3}})
    with pytest.raises(ValueError, match="protect.shadow.size"):
        build_protection({"name": "advface", "shadow": {"size": 40}})
    with pytest.raises(ValueError, match="protect.total_eps"):
        build_protection({"name": "advface", "total_eps": 0})
    with pytest.raises(ValueError, match="protect.inner"):
        build_protection({"name": "advface", "inner": {"keep": 3}})
    with pytest.raises(ValueError, match="unknown protection protect.name='ppfr'"):
        build_protection({"name": "advface", "inner": "ppfr"})
    with pytest.raises(RuntimeError, match="fit"):
        build_protection({"name": "advface"}).shadow


def test_the_repo_config_is_the_papers_pgd():
    from fedface.config import compose_config, to_container

    cfg = to_container(compose_config(["protect=advface"]).protect)
    assert (cfg["iterations"], cfg["alpha"], cfg["eps"]) == (40, 0.2, 0.2)
    assert build_protection(cfg).describe()["total_eps"] == cfg["total_eps"]


def test_a_short_local_training_runs(data, fitted):
    torch.manual_seed(0)
    net = build_backbone({"name": "tiny"}, fitted.output_spec(112, 112))
    head = build_head({"head": {"s": 16.0, "m": 0.2}}, net.embedding_size, data.num_identities)
    res = train_local(net, head, fitted, data.images, data.labels, TrainConfig(steps=2, batch_size=8),
                      torch.Generator().manual_seed(0))
    assert res.steps == 2 and res.loss == res.loss


def test_compare_grids_name_both_advface_rows():
    from fedface.compare import PROTECTIONS, PROTECTIONS_LATER, check_grid
    from fedface.config import compose_config, to_container

    assert "advface" not in PROTECTIONS_LATER
    check_grid(["advface", "ppfr_fd+advface"], ["learned"])
    inner = {n: to_container(compose_config(PROTECTIONS[n]).protect)["inner"] for n in ("advface", "ppfr_fd+advface")}
    assert inner == {"advface": "none", "ppfr_fd+advface": "ppfr_fd"}


def test_the_shadow_fit_is_seeded_and_leaves_the_global_rng_alone(fitted, pixels):
    state = torch.random.get_rng_state()
    again = advface().fit(pixels)
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(again.shadow.state_dict().values(), fitted.shadow.state_dict().values()):
        assert torch.equal(a, b)


def test_first_forward_fits_even_under_no_grad(pixels):
    """An attacker's copy runs under no_grad (evaluation, masking aux faces): the shadow fit still trains."""
    fresh = advface()
    with torch.no_grad():
        out = fresh(pixels[:8], generator=gen())
    assert fresh.shadow is not None and out.shape == pixels[:8].shape and not out.requires_grad
