"""AWNN core: importance, width, kaiming+, resizing with optimiser state, truncation, regime.

Exactness against an independent slow implementation: tests/test_awnn_reference.py; stacks:
tests/test_awnn_stacked.py; device cleanliness: tests/test_awnn_device.py.
"""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from experiments.regimes.awnn import AWNNRegime
from experiments.regimes.base import RunContext
from models import build_model
from models.awnn import (AdaptiveMLP, adaptive_modules, flat_optimizer_state, importance,
                         log_prior_nu, log_prior_theta, sum_sq_importance, truncate,
                         truncate_to_accuracy, update_widths, width_for)
from models.awnn.importance import softplus_host
from models.fcn import FCN
from tests.awnn_steps import plus_penalty
from tests.helpers import ROOT


def _assert_exact_storage(m: AdaptiveMLP, optimizer=None):
    """Weights and biases have exactly the active sizes; θ (and its optimiser state) is exactly
    zero outside them; the optimiser holds exactly the model's parameters."""
    sizes = [m.in_features, *m.widths, m.out_features]
    assert [tuple(w.shape) for w in m.weight] == [(b, a) for a, b in zip(sizes[:-1], sizes[1:])]
    assert [len(b) for b in m.bias] == sizes[1:]
    tensors = [m.theta.detach()]
    if optimizer is not None:
        held = [p for g in optimizer.param_groups for p in g["params"]]
        assert [id(p) for p in held] == [id(p) for p in m.parameters()]
        for p in held:
            for t in optimizer.state.get(p, {}).values():
                assert not torch.is_tensor(t) or t.ndim == 0 or t.shape == p.shape
        tensors += [t for t in optimizer.state.get(m.theta, {}).values() if t.shape == m.theta.shape]
    for t in tensors:
        outside = t.clone()
        for piece in m.active_pieces(outside):
            piece.zero_()
        assert outside.abs().max() == 0


def test_importance_sums_to_one_and_decreases():
    f = importance(5000, 0.01)
    assert f.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (f[1:] < f[:-1]).all()
    assert f[0].item() == pytest.approx(1 - math.exp(-0.01))
    # the kept D neurons carry at least k of the mass
    assert importance(width_for(0.01), 0.01).sum().item() >= 0.9
    g = importance(50, 0.1, "authors")
    assert g.sum().item() == pytest.approx(1.0, abs=1e-6) and (g[1:] < g[:-1]).all()
    for convention in ("paper", "authors"):
        for width, nu in ((300, 0.02), (7, 0.9), (2000, 0.001)):
            ref = importance(width, torch.tensor(nu, dtype=torch.float64), convention).pow(2).sum()
            assert sum_sq_importance(width, nu, convention) == pytest.approx(ref.item(), rel=1e-12)
    with pytest.raises(ValueError, match="importance='normalised'.*allowed"):
        importance(5, 0.1, "normalised")


def test_importance_is_differentiable_in_nu():
    nu = torch.tensor(0.05, requires_grad=True)
    importance(40, nu)[10].backward()
    assert nu.grad is not None and nu.grad.item() != 0


@pytest.mark.parametrize("nu, width", [(0.02, 117), (0.01, 232), (0.004, 577)])
def test_width_for_known_rates(nu, width):
    assert width_for(nu, 0.9) == width
    assert AdaptiveMLP(3, 2, nu0=nu).widths == [width]


def test_width_for_rejects_bad_values():
    with pytest.raises(ValueError, match="k=1.5"):
        width_for(0.1, 1.5)
    with pytest.raises(ValueError, match="nu=0"):
        width_for(0.0)


def test_bad_constructor_values_are_named():
    with pytest.raises(ValueError, match="activation='gelu'.*allowed"):
        AdaptiveMLP(2, 2, activation="gelu")
    with pytest.raises(ValueError, match="init='xavier'.*allowed"):
        AdaptiveMLP(2, 2, init="xavier")
    with pytest.raises(ValueError, match="max_width=50"):
        AdaptiveMLP(2, 2, nu0=0.01, max_width=50)
    with pytest.raises(ValueError, match="importance='sum'.*allowed"):
        AdaptiveMLP(2, 2, importance="sum")


def test_forward_any_leading_dims():
    m = AdaptiveMLP(5, 3, 2)
    assert m(torch.randn(4, 6, 5)).shape == (4, 6, 3)
    assert m(torch.randn(5)).shape == (3,)


def _activation_variances(init: str, convention: str = "paper") -> list[float]:
    torch.manual_seed(0)
    m = AdaptiveMLP(100, 10, 5, nu0=0.01, activation="relu", init=init, importance=convention)
    with torch.no_grad():
        return [a.var().item() for a in m.hidden_activations(torch.randn(2000, 100))]


@pytest.mark.parametrize("convention", ["paper", "authors"])
def test_kaiming_plus_keeps_activation_variance_across_depth(convention):
    # AWNN Fig. 2 / Thm 3.1: kaiming+ keeps Var[α] about constant, kaiming collapses it.
    plus = _activation_variances("kaiming_plus", convention)
    plain = _activation_variances("kaiming", convention)
    assert all(0.3 < v / plus[0] < 3.0 for v in plus)
    assert plain[-1] / plain[0] < 1e-6


@pytest.mark.parametrize("convention", ["paper", "authors"])
def test_kaiming_plus_std_uses_the_convention(convention):
    m = AdaptiveMLP(3, 2, 2, nu0=0.05, importance=convention)
    nus = m.host_nus()
    f = importance(m.widths[0], torch.tensor(nus[0], dtype=torch.float64), convention)
    expected = math.sqrt(2.0 / f.pow(2).sum().item())
    assert m.layer_std(1, m.widths, nus) == pytest.approx(expected, rel=1e-12)
    assert m.layer_std(0, m.widths, nus) == pytest.approx(math.sqrt(2.0 / 3))


def test_grow_then_shrink_back_restores_function():
    torch.manual_seed(0)
    m = AdaptiveMLP(4, 3, 2, nu0=0.05)
    x = torch.randn(64, 4)
    before, alphas = m(x).detach(), m.hidden_activations(x)[0].detach()
    widths = m.widths
    m.resize([w + 30 for w in widths])
    grown_alpha = m.hidden_activations(x)[0].detach()
    assert torch.equal(grown_alpha[:, :widths[0]], alphas)   # kept neurons untouched
    assert not torch.allclose(m(x), before)                   # fresh neurons do contribute
    m.resize([w + 200 for w in widths])
    m.resize(widths)
    torch.testing.assert_close(m(x), before, rtol=0, atol=0)
    _assert_exact_storage(m)


def _train_steps(m, opt, n=3):
    for _ in range(n):
        x = torch.randn(32, m.in_features)
        loss = F.cross_entropy(m(x), torch.randint(0, m.out_features, (32,)))
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("make_opt, keys", [
    (lambda p: torch.optim.Adam(p, lr=1e-3), ("exp_avg", "exp_avg_sq")),
    (lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9), ("momentum_buffer",)),
])
def test_optimizer_state_survives_resize(make_opt, keys):
    torch.manual_seed(0)
    m = AdaptiveMLP(3, 2, 1, nu0=0.05)
    opt = make_opt(m.parameters())
    _train_steps(m, opt)
    d = m.widths[0]
    def state(k):                                # (W_0, W_1) of the optimiser's state `k`
        return tuple(m.active_pieces(opt.state[m.theta][k])[:2])

    saved = {k: tuple(t.clone() for t in state(k)) for k in keys}
    m.resize([4 * d], opt)                       # θ is replaced, in the optimiser too
    w_in = m.weight[0]
    assert w_in.shape[0] == 4 * d
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in m.parameters()]
    for k in keys:
        s_in, s_out = state(k)
        assert s_in.shape == w_in.shape
        assert torch.equal(s_in[:d], saved[k][0][:d]) and torch.equal(s_out[:, :d], saved[k][1][:, :d])
        assert s_in[d:].abs().max() == 0 and s_out[:, d:].abs().max() == 0
    _train_steps(m, opt)                         # the optimiser keeps working on resized tensors
    half = d // 2
    m.resize([half], opt)
    _assert_exact_storage(m, opt)
    m.resize([d], opt)                           # regrown neurons start with zero state
    for k in keys:
        s_in, s_out = state(k)
        assert s_in[half:d].abs().max() == 0
        assert s_out[:, half:d].abs().max() == 0
    _train_steps(m, opt)
    _assert_exact_storage(m, opt)


def test_update_widths_follows_nu_and_max_width():
    m = AdaptiveMLP(2, 2, 2, nu0=0.02, max_width=150)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    assert update_widths(m, opt) is False
    with torch.no_grad():
        m.raw_nu.copy_(torch.tensor([-20.0, 0.0]))   # ν at its floor for layer 0
    assert update_widths(m, opt) is True
    nus = m.host_nus()
    assert nus == [softplus_host(r) + m.nu_min for r in m.raw_nu.tolist()]
    assert m.widths == [min(150, width_for(nus[0])), width_for(nus[1])]
    assert m.widths[0] <= 150 and m.widths[1] < 117
    _assert_exact_storage(m, opt)


def test_non_finite_nu_keeps_the_width():
    m = AdaptiveMLP(2, 2, 2, nu0=0.05)
    widths = m.widths
    with torch.no_grad():
        m.raw_nu.copy_(torch.tensor([float("nan"), -float("inf")]))
    assert update_widths(m, None) is False and m.widths == widths


def test_gradient_step_moves_nu():
    torch.manual_seed(0)
    m = AdaptiveMLP(2, 2, 1, nu0=0.05)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    nu_before = m.nus().item()
    loss = F.cross_entropy(m(torch.randn(64, 2)), torch.randint(0, 2, (64,)))
    loss = loss - log_prior_nu(m, mu=0.5, sigma=0.1)    # prior pulls ν up
    opt.zero_grad()
    loss.backward()
    assert m.raw_nu.grad.abs().item() > 0
    opt.step()
    assert m.nus().item() > nu_before


def test_log_priors():
    m = AdaptiveMLP(3, 2, 1, nu0=0.05)
    m.resize([m.widths[0] + 40])
    m.resize([10])
    active = [m.weight[0][:10], m.bias[0][:10], m.weight[1][:, :10], m.bias[1]]
    expected = -sum(t.pow(2).sum() for t in active) / (2 * 2.0 ** 2)
    torch.testing.assert_close(log_prior_theta(m, 2.0), expected)
    nu = m.nus()[0]
    expected_nu = torch.distributions.Normal(0.1, 0.3).log_prob(nu)
    torch.testing.assert_close(log_prior_nu(m, 0.1, 0.3), expected_nu)


def test_state_dict_round_trip_at_changed_width():
    torch.manual_seed(0)
    m = AdaptiveMLP(3, 2, 2, nu0=0.05)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    _train_steps(m, opt)
    m.resize([150, 20], opt)
    _train_steps(m, opt)
    # deep copies: Optimizer.load_state_dict would otherwise share the moment tensors
    model_state, opt_state = copy.deepcopy(m.state_dict()), copy.deepcopy(opt.state_dict())
    fresh = AdaptiveMLP(3, 2, 2, nu0=0.05)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    params = list(fresh.parameters())
    fresh.load_state_dict(model_state)
    fresh_opt.load_state_dict(opt_state)
    assert fresh.widths == [150, 20] and list(fresh.parameters()) == params   # same objects
    x = torch.randn(16, 3)
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    for widths in ([200, 30], [10, 5]):              # growth draws continue the saved generator
        torch.manual_seed(1)
        fresh.resize(widths, fresh_opt)
        _train_steps(fresh, fresh_opt, 1)
        torch.manual_seed(1)
        m.resize(widths, opt)
        _train_steps(m, opt, 1)
        torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)


def test_growth_draws_come_from_the_models_generator():
    torch.manual_seed(0)
    a = AdaptiveMLP(3, 2, 1, nu0=0.05)
    torch.manual_seed(0)
    b = AdaptiveMLP(3, 2, 1, nu0=0.05)
    torch.manual_seed(123)                       # the global stream does not matter for growth
    a.resize([60])
    torch.manual_seed(456)
    b.resize([60])
    assert torch.equal(a.weight[0], b.weight[0]) and torch.equal(a.weight[1], b.weight[1])
    torch.manual_seed(1)
    c = AdaptiveMLP(3, 2, 1, nu0=0.05)
    c.resize([60])
    assert not torch.equal(a.weight[0][48:], c.weight[0][48:])   # other seed, other draws
    # building the model does not move the global generator beyond its init draws
    torch.manual_seed(0)
    AdaptiveMLP(3, 2, 1, nu0=0.05)
    after_model = torch.randn(3)
    torch.manual_seed(0)
    torch.empty(48, 3).normal_()
    torch.empty(2, 48).normal_()
    assert torch.equal(torch.randn(3), after_model)


def test_loads_the_older_capacity_sized_format():
    torch.manual_seed(0)
    m = AdaptiveMLP(3, 2, 1, nu0=0.05)
    state = m.state_dict()
    d = m.widths[0]
    old = {"raw_nu": state["raw_nu"], "width_state": torch.tensor([d]),
           "weight.0": torch.cat([state["weight.0"], torch.zeros(d, 3)]),
           "weight.1": torch.cat([state["weight.1"], torch.zeros(2, d)], 1),
           "bias.0": torch.cat([state["bias.0"], torch.zeros(d)]), "bias.1": state["bias.1"]}
    fresh = AdaptiveMLP(3, 2, 1, nu0=0.2)
    fresh.load_state_dict(old)
    x = torch.randn(4, 3)
    assert fresh.widths == [d] and torch.equal(fresh(x), m(x))


def test_truncation_identity_and_graceful_degradation():
    torch.manual_seed(0)
    m = AdaptiveMLP(8, 4, 1, nu0=0.02)
    x = torch.randn(512, 8)
    full = m(x).detach()
    assert torch.equal(truncate(m, 1.0)(x), full)
    assert torch.equal(truncate(m, m.widths)(x), full)
    errors = [(truncate(m, keep)(x) - full).pow(2).mean().item() for keep in (0.1, 0.3, 0.6, 0.9)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.1 * errors[0]
    assert m.widths == [117]                     # the original is left alone
    with pytest.raises(ValueError, match="keep=\\[200\\]"):
        truncate(m, [200])


def test_truncate_to_accuracy():
    m = AdaptiveMLP(8, 4, 1, nu0=0.02)             # width 117

    def accuracy(model):                           # a stand-in that saturates at width 60
        return min(1.0, adaptive_modules(model)[0].widths[0] / 60)

    small, acc = truncate_to_accuracy(m, accuracy, max_drop=0.05, steps=20)
    assert small.widths == [58] and acc == pytest.approx(58 / 60)   # keep 10/20; 9/20 -> 53
    tight, acc = truncate_to_accuracy(m, accuracy, max_drop=0.0, steps=20)
    assert tight.widths == [64] and acc == 1.0     # keep 11/20 -> 64 >= 60
    assert m.widths == [117]


def test_build_from_registry():
    cfg = OmegaConf.create({"name": "awnn_mlp", "num_hidden": 2, "nu0": 0.02, "activation": "relu"})
    model = build_model(cfg, {"in_features": 12, "num_classes": 5})
    assert model(torch.randn(7, 3, 4)).shape == (7, 5)
    [mlp] = adaptive_modules(model)
    assert mlp.widths == [117, 117]
    conf = OmegaConf.load(ROOT / "conf/model/awnn_mlp.yaml")
    assert build_model(conf, {"in_features": 2, "num_classes": 2})[1].widths == [232]


def _ctx(model, optimizer, n_train=1000, epoch=0):
    return RunContext(model=model, optimizer=optimizer, data=SimpleNamespace(info={"n_train": n_train}),
                      cfg=None, device=torch.device("cpu"), epoch=epoch)


def test_regime_requires_adaptive_model():
    fcn = FCN(2, [8], 2)
    regime = AWNNRegime(sigma_theta=1.0)
    with pytest.raises(ValueError, match="regime awnn needs a model with adaptive layers"):
        regime.before_training(_ctx(fcn, torch.optim.SGD(fcn.parameters(), lr=0.1)))


def test_regime_penalty_and_width_update():
    torch.manual_seed(0)
    m = AdaptiveMLP(2, 2, 1, nu0=0.02)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    ctx = _ctx(m, opt, n_train=500)
    regime = AWNNRegime(sigma_theta=10.0, nu_prior=(0.1, 0.5))
    regime.before_training(ctx)
    expected = -(log_prior_theta(m, 10.0) + log_prior_nu(m, 0.1, 0.5)) / 500
    torch.testing.assert_close(regime.prior_penalty(ctx), expected)
    other = AWNNRegime(1.0, n_train=50)
    assert other.prior_penalty(ctx).item() == pytest.approx(-log_prior_theta(m, 1.0).item() / 50)
    width = m.widths[0]
    with torch.no_grad():
        m.raw_nu.add_(1.0)                       # as if the optimiser had moved ν up
    regime.after_step(ctx)
    assert ctx.optimizer is opt and m.widths[0] < width
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in m.parameters()]
    metrics = regime.on_epoch_end(ctx, 0)
    assert metrics["width/total"] == metrics["width/l0"] == m.widths[0]
    assert metrics["nu/l0"] == pytest.approx(m.nus().item())
    assert regime.state_dict() == {"n": 500}


def test_online_compression_schedule():
    regime = AWNNRegime(1.0, compress={"mu": 0.05, "sigma": 1.0, "start": 1000, "end": 2500,
                                       "factor": 0.1})
    assert regime.nu_prior_at(999) is None
    assert regime.nu_prior_at(1000) == (0.05, 1.0)
    assert regime.nu_prior_at(1750)[1] == pytest.approx(math.sqrt(0.1))
    assert regime.nu_prior_at(2500)[1] == pytest.approx(0.1)
    assert regime.nu_prior_at(4000)[1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="compress keys"):
        AWNNRegime(1.0, compress={"mu": 0.05})


def test_training_learns_and_adapts_width():
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    y = (x[:, 0] * x[:, 1] > 0).long()
    m = AdaptiveMLP(2, 2, 1, nu0=0.05, activation="relu6")
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    ctx = _ctx(m, opt, n_train=256)
    regime = AWNNRegime(sigma_theta=1.0)
    regime.before_training(ctx)
    seen = {m.widths[0]}
    for _ in range(400):
        loss = plus_penalty(F.cross_entropy(m(x), y), regime, ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        regime.after_step(ctx)
        seen.add(m.widths[0])
    assert (m(x).argmax(-1) == y).float().mean() > 0.9
    assert len(seen) > 1
    _assert_exact_storage(m, opt)


@pytest.mark.parametrize("convention", ["paper", "authors"])
def test_forward_importances_match_eq12(convention):
    m = AdaptiveMLP(2, 2, 2, nu0=0.004, importance=convention)
    with torch.no_grad():
        m.raw_nu[1] += 0.5
    for f, nu, width in zip(m.importances(), m.nus(), m.widths):
        torch.testing.assert_close(f, importance(width, nu, convention), rtol=2e-4, atol=0)


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.Adam(p, lr=0.01),
                                      lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9,
                                                                weight_decay=1e-3)])
def test_weight_prior_in_the_step_matches_the_loss_term(make_opt):
    """The regime adds the weight prior's gradient in the optimiser step; training matches the
    prior as a loss term (prior_penalty) up to float rounding (float64 here), widths exactly,
    and the loss the loop backpropagates carries no θ prior."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 2, dtype=torch.float64), torch.randint(0, 2, (64,))
    runs = []
    for in_step in (True, False):
        torch.manual_seed(1)
        m = AdaptiveMLP(2, 2, 2, nu0=0.05).double()
        opt = make_opt(m.parameters())
        ctx = _ctx(m, opt, n_train=50)
        regime = AWNNRegime(sigma_theta=0.5, nu_prior=(0.1, 0.5))
        regime.before_training(ctx)
        widths = []
        for _ in range(30):
            loss = F.cross_entropy(m(x), y)
            loss = loss + (regime.penalty(ctx) if in_step else regime.prior_penalty(ctx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if not in_step:
                opt._optimizer_step_pre_hooks.clear()       # the loss term carries the prior
            opt.step()
            regime.after_step(ctx)
            widths.append(m.widths)
        runs.append((widths, [p.detach() for p in m.parameters()]))
    assert runs[0][0] == runs[1][0] and len({tuple(w) for w in runs[0][0]}) > 1
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(regime.penalty(ctx), -log_prior_nu(m, 0.1, 0.5) / 50)


def test_fused_forward_matches_the_unfused_path_and_reuses_importances_only_while_nu_stands():
    """forward (one autograd node) = _run (plain autograd over Importance) in value and every
    gradient (x included); the importance state is reused only while ν's values and the widths
    stand, and the regime's θ list follows a resize."""
    torch.manual_seed(0)
    m = AdaptiveMLP(3, 4, 2, nu0=0.1, activation="leaky_relu").double()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    params = [x, *m.parameters()]
    fused = torch.autograd.grad(m(x).square().sum(), params)
    plain = torch.autograd.grad(m._run(x, None).square().sum(), params)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    m.update_widths()                                    # raw ν read on the host
    state = m.importance_state()
    assert m.importance_state() is state                 # nothing moved: reused
    with torch.no_grad():
        m.raw_nu.add_(0.0)                               # same values, new version: recomputed
    assert m.importance_state() is not state
    m.update_widths()
    state = m.importance_state()
    with torch.no_grad():
        m.raw_nu.mul_(1.01)
    assert m.importance_state() is not state
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    ctx = _ctx(m, opt, n_train=50)
    regime = AWNNRegime(sigma_theta=1.0)
    regime.before_training(ctx)
    regime.penalty(ctx)
    before = regime._theta_parameters(m, [m])
    m.resize([w + 3 for w in m.widths], opt)
    after = regime._theta_parameters(m, [m])
    assert after is not before and [id(p) for p in after] == [id(p) for p in list(m.parameters())[1:]]


def _per_piece_optimizer_state(m: AdaptiveMLP, saved: dict) -> dict:
    """`saved` as an optimiser over (raw_nu, W_0, ..., b_0, ...) held it: the format before θ."""
    n = len(m.layout.shapes)
    state, groups, new_id = {}, [], 0
    for group in saved["param_groups"]:
        ids = []
        for pid in group["params"]:
            entry = saved["state"][pid]
            flat = entry["exp_avg"].shape != (m.num_hidden,)
            for k in range(n if flat else 1):
                state[new_id] = {key: m.active_pieces(v)[k].clone() if flat and v.ndim else v
                                 for key, v in entry.items()}
                ids.append(new_id)
                new_id += 1
        groups.append({**group, "params": ids})
    return {"state": state, "param_groups": groups}


@pytest.mark.parametrize("split_nu", [False, True])
def test_pre_flat_optimizer_state_loads(split_nu):
    """An optimiser state saved when every weight and bias was its own parameter loads into the
    flat θ (checkpoints written before the flat layout resume)."""
    torch.manual_seed(0)
    m = AdaptiveMLP(3, 2, 2, nu0=0.1)

    def adam(model):
        params = [model.theta, model.raw_nu] if split_nu else list(model.parameters())
        groups = [{"params": params[:1]}, {"params": params[1:], "lr": 0.0}] if split_nu \
            else [{"params": params}]
        return torch.optim.Adam(groups, lr=1e-2)

    opt = adam(m)
    _train_steps(m, opt)
    saved = opt.state_dict()
    old = _per_piece_optimizer_state(m, saved)
    assert sum(len(g["params"]) for g in old["param_groups"]) == 2 + len(m.layout.shapes) - 1
    fresh = AdaptiveMLP(3, 2, 2, nu0=0.1)
    fresh.load_state_dict(m.state_dict())
    fresh_opt = adam(fresh)
    fresh_opt.load_state_dict(flat_optimizer_state(fresh, fresh_opt, old))
    for p, q in zip(m.parameters(), fresh.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], fresh_opt.state[q][key])
    assert flat_optimizer_state(fresh, fresh_opt, saved) is saved      # today's format: as is


def test_random_resizes_keep_kept_entries_and_zero_the_rest():
    """Resizes within and across capacities (models/awnn/capacity.py), layers growing and
    shrinking at once: kept neurons keep their weights and optimiser state, everything outside the
    active blocks stays exactly zero, and the fused forward pass equals the plain one."""
    gen = torch.Generator().manual_seed(4)
    m = AdaptiveMLP(3, 2, 2, nu0=0.1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    x = torch.randn(16, 3)
    for step in range(40):
        _train_steps(m, opt, 1)
        before = [p.detach().clone() for p in m.active_pieces(m.theta)]
        state = [s.clone() for s in m.active_pieces(opt.state[m.theta]["exp_avg"])]
        old = m.widths
        new = [int(w) for w in torch.randint(1, 60, (2,), generator=gen)]
        m.resize(new, opt)
        _assert_exact_storage(m, opt)
        for a, b, s, t in zip(before, m.active_pieces(m.theta), state,
                              m.active_pieces(opt.state[m.theta]["exp_avg"])):
            keep = tuple(slice(0, min(i, j)) for i, j in zip(a.shape, b.shape))
            assert torch.equal(a[keep], b[keep].detach()), (step, old, new)
            assert torch.equal(s[keep], t[keep]), (step, old, new)
        torch.testing.assert_close(m(x), m._run(x, None), rtol=1e-6, atol=1e-7)
    assert m.storage_version > 0                     # capacities changed on the way
