"""Stacked AWNN (docs/STACKING.md): every member of a stack trained with Adam matches the unstacked
run of its seed (float64, 1e-9), through widths that grow and shrink and a capacity that grows;
inactive entries and their optimiser state stay exactly zero; per-member state round-trips."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from data.tensors import TensorSplit, iterate
from experiments.regimes.awnn import AWNNRegime
from experiments.regimes.base import RunContext
from models.awnn import (AdaptiveMLP, StackedAdaptiveMLP, adaptive_modules, build, stack_adaptive,
                         update_widths)
from tests.awnn_steps import plus_penalty

SEEDS = [0, 1, 2]
N_TRAIN = 96


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def classifier(seed: int, **kw) -> nn.Sequential:
    cfg = OmegaConf.create({"num_hidden": 1, "nu0": 0.08, "k": 0.9, "activation": "relu6",
                            "init": "kaiming_plus", "max_width": None, "grow_init": "layer",
                            "importance": "paper", **kw})
    torch.manual_seed(seed)
    return build(cfg, {"in_features": 2, "num_classes": 3})


def dataset() -> TensorSplit:
    gen = torch.Generator().manual_seed(42)
    x = torch.randn(N_TRAIN, 1, 2, generator=gen)            # flattened by the classifier
    y = (x[:, 0, 0] > 0).long() + (x[:, 0, 1] > 0.5).long()
    return TensorSplit(x, y)


def ctx_for(model, optimizer) -> RunContext:
    return RunContext(model=model, optimizer=optimizer, data=SimpleNamespace(info={"n_train": N_TRAIN}),
                      cfg=None, device=torch.device("cpu"))


def train_unstacked(seed: int, epochs: int, regime_kw: dict, model_kw: dict):
    model = classifier(seed, **model_kw)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    regime = AWNNRegime(**regime_kw)
    ctx = ctx_for(model, opt)
    regime.before_training(ctx)
    gen = torch.Generator().manual_seed(seed + 1)
    history = []
    for epoch in range(epochs):
        ctx.epoch = epoch
        for (x,), y in iterate(dataset(), 16, gen):
            loss = plus_penalty(F.cross_entropy(model(x), y), regime, ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            regime.after_step(ctx)
            history.append(model[1].widths)
            del loss
    return model, opt, history


def train_stacked(epochs: int, regime_kw: dict, model_kw: dict):
    stack = stack_adaptive([classifier(s, **model_kw) for s in SEEDS])
    opt = torch.optim.Adam(stack.parameters(), lr=0.05)
    regime = AWNNRegime(**regime_kw)
    ctx = ctx_for(stack, opt)
    regime.before_training(ctx)
    gens = [torch.Generator().manual_seed(s + 1) for s in SEEDS]
    history, metrics = [], None
    for epoch in range(epochs):
        ctx.epoch = epoch
        for batches in zip(*(iterate(dataset(), 16, g) for g in gens)):
            x = torch.stack([b[0][0] for b in batches])
            y = torch.stack([b[1] for b in batches])
            out = stack(x)
            per_sample = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
            losses = per_sample.view(y.shape).mean(1)
            loss = plus_penalty(losses.sum(), regime, ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            regime.after_step(ctx)
            history.append(stack.widths)
            _assert_inactive_zero(stack[1], opt)
            del loss
        metrics = regime.on_epoch_end(ctx, epoch)
    return stack, opt, history, metrics


def _assert_inactive_zero(m: StackedAdaptiveMLP, opt):
    """Outside each member's active blocks: parameters, Adam moments and importance exactly 0."""
    p = m.theta
    for i in range(m.members):
        for t in [p.detach()] + [s for s in opt.state.get(p, {}).values()
                                 if torch.is_tensor(s) and s.shape == p.shape]:
            sizes = [m.in_features, *m.widths[i], m.out_features]
            active = ([(sizes[k + 1], sizes[k]) for k in range(m.num_hidden + 1)]
                      + [(n,) for n in sizes[1:len(m.piece_names()) - m.num_hidden]])
            for name, piece, shape in zip(m.piece_names(), m.layout.views(t), active):
                outside = piece[i].clone()
                outside[tuple(slice(0, n) for n in shape)] = 0
                assert outside.abs().max() == 0, name
        for f, w in zip(m.importances(), m.widths[i]):
            assert (f[i, w:] == 0).all() and (f[i, :w] > 0).all()


@pytest.mark.parametrize("model_kw, regime_kw", [
    ({}, {"sigma_theta": 1.0}),
    ({"num_hidden": 2, "importance": "authors", "grow_init": "normal"}, {"sigma_theta": 0.5}),
])
def test_members_match_unstacked_runs(model_kw, regime_kw):
    epochs = 4
    stack, opt, history, metrics = train_stacked(epochs, regime_kw, model_kw)
    totals = [[sum(w) for w in step] for step in history]
    moves = [b - a for s0, s1 in zip(totals, totals[1:]) for a, b in zip(s0, s1)]
    assert min(moves) < 0 < max(moves)                      # widths shrank and grew
    assert stack[1].capacities != [w for w in classifier(0, **model_kw)[1].widths]  # grew
    for i, seed in enumerate(SEEDS):
        model, uopt, uhistory = train_unstacked(seed, epochs, regime_kw, model_kw)
        assert [h[i] for h in history] == uhistory
        member = stack.member_state_dict(i)
        own = model.state_dict()
        assert member.keys() == own.keys()
        for key, value in own.items():
            if key.endswith("_extra_state"):
                assert torch.equal(member[key]["grow_rng"], value["grow_rng"])
            else:
                torch.testing.assert_close(member[key], value, rtol=1e-9, atol=1e-11)
        mstate, ustate = stack.member_optimizer_state(opt, i), uopt.state_dict()
        assert mstate["param_groups"] == ustate["param_groups"]
        for k, entries in ustate["state"].items():
            for key, value in entries.items():
                if value.shape == model[1].theta.shape:        # θ may be wider than the widths
                    value = model[1].active_flat(value)
                torch.testing.assert_close(mstate["state"][k][key], value, rtol=1e-9, atol=1e-12)
        assert metrics["width/l0"][i] == model[1].widths[0]
        assert metrics["nu/l0"][i] == pytest.approx(model[1].nus()[0].item(), rel=1e-9)


def test_parameters_follow_member_order_with_a_member_axis():
    members = [classifier(s) for s in SEEDS]
    stack = stack_adaptive(members)
    for p, q in zip(stack.parameters(), members[0].parameters(), strict=True):
        assert p.shape == (len(SEEDS), *q.shape)
    x = torch.randn(5, 1, 2)
    out = stack(x)                                            # one batch for every member
    per_member = stack(x.expand(len(SEEDS), *x.shape).clone())
    for i, m in enumerate(members):
        torch.testing.assert_close(out[i], m(x), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(per_member[i], m(x), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="does not flatten to in_features=2"):
        stack(torch.randn(2, 5, 1, 2))
    with pytest.raises(ValueError, match="has 2 member batches; this stack has 3"):
        stack_adaptive(members, input_shape=(1, 2))(torch.randn(2, 5, 1, 2))


def test_member_state_round_trip_and_resume():
    """A member saved from a stack resumes as an unstacked run (and back) with identical steps."""
    stack, opt, _, _ = train_stacked(1, {"sigma_theta": 1.0}, {})
    i = 1
    fresh = classifier(SEEDS[i])
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.05)
    fresh.load_state_dict(copy.deepcopy(stack.member_state_dict(i)))
    fresh_opt.load_state_dict(copy.deepcopy(stack.member_optimizer_state(opt, i)))
    other = stack_adaptive([classifier(s) for s in SEEDS])
    other_opt = torch.optim.Adam(other.parameters(), lr=0.05)
    other.load_member_state_dict(i, copy.deepcopy(fresh.state_dict()))
    other.load_member_optimizer_state(other_opt, i, copy.deepcopy(fresh_opt.state_dict()))
    x, y = torch.randn(3, 16, 1, 2), torch.randint(0, 3, (3, 16))
    for _ in range(6):
        for model, o, inputs, target in ((fresh, fresh_opt, x[i], y[i]), (other, other_opt, x, y)):
            out = model(inputs)
            loss = F.cross_entropy(out.reshape(-1, 3), target.reshape(-1), reduction="sum") / 16
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
            with torch.no_grad():
                adaptive_modules(model)[0].raw_nu.sub_(0.05)   # push the widths up
            update_widths(model, o)
        assert other.widths[i] == fresh[1].widths
    for key, value in fresh.state_dict().items():
        if not key.endswith("_extra_state"):
            torch.testing.assert_close(other.member_state_dict(i)[key], value, rtol=1e-9, atol=1e-11)


def test_zero_member_shrinks_it_for_good_and_non_finite_nu_keeps_widths():
    stack = stack_adaptive([classifier(s) for s in SEEDS])
    opt = torch.optim.Adam(stack.parameters(), lr=0.05)
    out = stack(torch.randn(3, 8, 1, 2))
    out.sum().backward()
    opt.step()
    widths = stack.widths
    with torch.no_grad():
        stack[1].raw_nu[0] = float("nan")
        stack[1].raw_nu[2] += 1.0
    stack.zero_member(1, opt)
    assert all(p[1].abs().max() == 0 for p in stack.parameters())
    assert all(s[1].abs().max() == 0
               for p in stack.parameters() for s in opt.state[p].values() if s.ndim)
    assert stack.widths[1] == [1] * len(widths[1])
    assert update_widths(stack, opt)
    assert stack.widths[0] == widths[0] and stack.widths[1] == [1] * len(widths[1])
    assert stack.widths[2][0] < widths[2][0]
    with pytest.raises(IndexError, match="member 3"):
        stack.member_state_dict(3)


def test_per_member_sigma_theta_weights_each_member():
    stack = stack_adaptive([classifier(s) for s in SEEDS])
    ctx = ctx_for(stack, None)
    regime = AWNNRegime(sigma_theta=[1.0, 2.0, 4.0])
    regime.before_training(ctx)
    expected = sum(sum(stack.member_state_dict(i)[k].pow(2).sum() for k in stack.member_state_dict(i)
                       if not k.endswith(("raw_nu", "_extra_state"))) / (2 * s ** 2 * N_TRAIN)
                   for i, s in enumerate([1.0, 2.0, 4.0]))
    torch.testing.assert_close(regime.prior_penalty(ctx), expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="one value per member"):
        AWNNRegime(sigma_theta=[1.0, 2.0]).prior_penalty(ctx)


def test_refuses_members_that_differ():
    with pytest.raises(ValueError, match="differs from member 0 in \\['importance'\\]"):
        stack_adaptive([classifier(0), classifier(1, importance="authors")])
    with pytest.raises(TypeError, match="not nn.Sequential"):
        stack_adaptive([nn.Sequential(nn.Flatten(), AdaptiveMLP(2, 3)), nn.Linear(2, 3)])
    assert math.isfinite(stack_adaptive([classifier(0)])(torch.randn(4, 1, 2)).sum().item())


def test_capacity_follows_the_widest_member():
    """Capacity grows with headroom when a member outgrows it and shrinks when every member has
    fallen below 80% of it; neither changes another member's function or optimiser state."""
    stack = stack_adaptive([classifier(s) for s in SEEDS])
    opt = torch.optim.Adam(stack.parameters(), lr=0.05)
    x = torch.randn(3, 8, 1, 2)
    stack(x).sum().backward()
    opt.step()
    mlp = stack[1]
    mlp.resize_members({0: [100]}, opt)
    assert mlp.capacities == [110]
    mlp.resize_members({0: [20], 1: [25], 2: [12]}, opt)
    assert mlp.capacities == [28]                      # 1.1 x 25, rounded up
    before, state = stack(x)[1], stack.member_optimizer_state(opt, 1)
    mlp.resize_members({0: [40]}, opt)
    assert mlp.capacities == [44]
    mlp.resize_members({0: [10]}, opt)
    assert mlp.capacities == [28]
    torch.testing.assert_close(stack(x)[1], before, rtol=1e-12, atol=1e-14)
    after = stack.member_optimizer_state(opt, 1)
    for k, entries in state["state"].items():
        for key, value in entries.items():
            assert torch.equal(after["state"][k][key], value)
    _assert_inactive_zero(mlp, opt)


def test_per_member_weight_prior_in_the_step_matches_the_loss_term():
    """σθ per member: the prior's gradient added in the optimiser step (the regime's hook)
    trains the stack as the prior as a loss term does."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(len(SEEDS), 32, 2, generator=gen)
    y = torch.randint(0, 3, (len(SEEDS), 32), generator=gen)
    runs = []
    for in_step in (True, False):
        stack = stack_adaptive([classifier(s) for s in SEEDS])
        opt = torch.optim.Adam(stack.parameters(), lr=0.05)
        ctx = ctx_for(stack, opt)
        regime = AWNNRegime(sigma_theta=[0.3, 1.0, 3.0])
        regime.before_training(ctx)
        for _ in range(15):
            out = stack(x)
            loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
            loss = loss.mean(1).sum()
            loss = plus_penalty(loss, regime, ctx) if in_step else loss + regime.prior_penalty(ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if not in_step:
                assert not opt._optimizer_step_pre_hooks
            opt.step()
            regime.after_step(ctx)
        runs.append((stack.widths, [p.detach() for p in stack.parameters()]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_an_unstacked_checkpoint_wider_than_its_widths_loads_into_a_stack():
    """An unstacked θ keeps capacity beyond its widths (models/awnn/capacity.py); its saved model
    and optimiser state load into a stack member as that member's active entries."""
    torch.manual_seed(0)
    model = classifier(SEEDS[0])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
    for widths in ([90], [70]):
        model[1].resize(widths, opt)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    mlp = model[1]
    assert mlp.theta.numel() > mlp.active_flat(mlp.theta).numel()     # θ wider than the widths
    stack = stack_adaptive([classifier(s) for s in SEEDS])
    stack_opt = torch.optim.Adam(stack.parameters(), lr=0.05)     # a resume: before any step
    stack.load_member_state_dict(1, model.state_dict())
    stack.load_member_optimizer_state(stack_opt, 1, opt.state_dict())
    member = stack.member_optimizer_state(stack_opt, 1)
    for k, p in enumerate(model.parameters()):
        for key, value in opt.state[p].items():
            want = mlp.active_flat(value) if value.shape == mlp.theta.shape else value
            assert torch.equal(member["state"][k][key], want)
    torch.testing.assert_close(stack(x.expand(len(SEEDS), -1, -1))[1], model(x), rtol=1e-6, atol=1e-7)
