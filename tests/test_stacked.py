"""Stacked execution (docs/STACKING.md): every member of a stack trains exactly like the unstacked
run of its seed (float64, same init, same batch order, same updates)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from data.tensors import TensorSplit, iterate, iterate_members
from experiments.train import evaluate
from models import balancing
from models.dfa import DFANet
from models.fcn import FCN
from models.stacked import (StackedDFANet, StackedFCN, clip_grad_norm_per_member,
                            evaluate_members, is_stackable, load_member_optimizer_state,
                            member_correct, member_losses, member_optimizer_state,
                            member_weight_penalty, stack_models)

SEEDS = (0, 1, 2)
IN, WIDTHS, OUT = 6, [8, 5], 3
TOL = dict(rtol=0, atol=1e-9)
OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1),
    "momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1, amsgrad=True),
}


def fcn(seed: int) -> FCN:
    torch.manual_seed(seed)                    # as experiments/steps.py builds a member
    return FCN(IN, WIDTHS, OUT).double()


def dfa(seed: int, feedback_seed: int = 0) -> DFANet:
    torch.manual_seed(seed)
    return DFANet(IN, WIDTHS, OUT, feedback_seed=feedback_seed).double()


def split(n: int = 40, seed: int = 123) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    return TensorSplit(torch.randn(n, IN, generator=g, dtype=torch.float64),
                       torch.randint(0, OUT, (n,), generator=g))


def l_penalty(model: nn.Module, p: int, coeff: float) -> torch.Tensor:
    """experiments/regimes/penalty.py, written out: coeff * Σ|w|^p over weight matrices."""
    weights = [w for w in model.parameters() if w.ndim > 1]
    return coeff * sum(w.abs().pow(p).sum() for w in weights)


def train_unstacked(model, data, seed, make_opt, epochs=3, batch=16, penalty=None, clip=0.0,
                    opt=None, skip_epochs=0):
    """The loop of experiments/train.py, one member (`skip_epochs`: resume after that many)."""
    opt = opt or make_opt(model.parameters())
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(skip_epochs):
        torch.randperm(len(data), generator=gen)
    for _ in range(epochs):
        for (x,), y in iterate(data, batch, gen):
            loss = F.cross_entropy(model(x), y)
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
    return model, opt


def train_stacked(stack, data, seeds, make_opt, epochs=3, batch=16, penalty=None, clip=0.0,
                  opt=None, before_step=None, skip_epochs=0):
    opt = opt or make_opt(stack.parameters())
    gens = [torch.Generator().manual_seed(s + 1) for s in seeds]
    for g in gens:
        for _ in range(skip_epochs):
            torch.randperm(len(data), generator=g)
    for _ in range(epochs):
        for (x,), y in iterate_members(data, batch, gens):
            loss = member_losses(stack(x), y).sum()
            if penalty is not None:
                loss = loss + penalty(stack)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                clip_grad_norm_per_member(stack.parameters(), clip)
            if before_step is not None:
                before_step(stack)
            opt.step()
    return stack, opt


def assert_member_equals(stack, i, model):
    got = stack.member_state_dict(i)
    want = model.state_dict()
    assert list(got) == list(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], **TOL)


# --------------------------------------------------------------------------- forward
@pytest.mark.parametrize("build", [fcn, dfa])
def test_forward_equals_each_members_forward(build):
    members = [build(s) for s in SEEDS]
    stack = stack_models(copy.deepcopy(members))
    x = torch.randn(len(SEEDS), 7, IN, dtype=torch.float64)
    shared = torch.randn(7, IN, dtype=torch.float64)
    out, out_shared = stack(x), stack(shared)
    expanded = stack(shared.expand(len(SEEDS), *shared.shape))
    assert out.shape == out_shared.shape == (len(SEEDS), 7, OUT)
    for i, m in enumerate(members):
        torch.testing.assert_close(out[i], m(x[i]), **TOL)
        torch.testing.assert_close(out_shared[i], m(shared), **TOL)
        torch.testing.assert_close(expanded[i], m(shared), **TOL)
    # parameters in each member's order, with the member axis in front
    for p, q in zip(stack.parameters(), members[0].parameters(), strict=True):
        assert p.shape == (len(SEEDS), *q.shape)


def test_input_rank_decides_with_input_shape_and_ambiguity_is_refused():
    members = [FCN(4, [5], 2).double() for _ in range(3)]
    image = torch.randn(3, 1, 2, 2, dtype=torch.float64)    # 3 samples of shape [1, 2, 2]
    with pytest.raises(ValueError, match="input_shape"):
        stack_models(members)(image)                           # [S=3, B=1, 4] or [B=3, 1, 2, 2]?
    stack = stack_models(members, input_shape=(1, 2, 2))
    out = stack(image)
    assert out.shape == (3, 3, 2)
    torch.testing.assert_close(out[1], members[1](image), **TOL)
    assert stack(image.unsqueeze(0).expand(3, -1, -1, -1, -1)).shape == (3, 3, 2)
    with pytest.raises(ValueError, match="4 member batches"):
        stack(torch.randn(4, 3, 1, 2, 2, dtype=torch.float64))


# --------------------------------------------------------------------------- data
@pytest.mark.parametrize("shuffle", [True, False])
def test_iterate_members_gives_each_member_its_own_batches(shuffle):
    data = split(37)
    gens = [torch.Generator().manual_seed(s + 1) for s in SEEDS]
    ref_gens = [torch.Generator().manual_seed(s + 1) for s in SEEDS]
    for _epoch in range(2):                       # the generators carry over between epochs
        got = list(iterate_members(data, 8, gens, shuffle=shuffle))
        assert len(got) == 5 and got[-1][0][0].shape == (3, 5, IN) and got[-1][1].shape == (3, 5)
        for i, g in enumerate(ref_gens):
            ref = list(iterate(data, 8, g, shuffle=shuffle))
            for ((x,), y), ((rx,), ry) in zip(got, ref, strict=True):
                assert torch.equal(x[i], rx) and torch.equal(y[i], ry)
    assert not torch.equal(got[0][1][0], got[0][1][1]) or not shuffle


# --------------------------------------------------------------------------- losses, metrics
def test_member_losses_and_correct_match_per_member_reference():
    out = torch.randn(3, 9, OUT, dtype=torch.float64)
    y = torch.randint(0, OUT, (3, 9))
    losses, correct = member_losses(out, y), member_correct(out, y)
    for i in range(3):
        torch.testing.assert_close(losses[i], F.cross_entropy(out[i], y[i]), **TOL)
        assert correct[i] == (out[i].argmax(-1) == y[i]).sum()
    torch.testing.assert_close(member_losses(out, y[0])[2], F.cross_entropy(out[2], y[0]), **TOL)
    with pytest.raises(ValueError, match="does not match"):
        member_losses(out, y[:, :4])


@pytest.mark.parametrize("classes", [2, 3, 10, 40])
def test_member_losses_equal_the_flat_cross_entropy_bit_for_bit(classes):
    """Few classes take the class-axis-1 kernel: same loss and gradient floats as the flat form."""
    out = (5 * torch.randn(8, 128, classes)).requires_grad_()
    y = torch.randint(0, classes, (8, 128))
    flat = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(8, 128).mean(1)
    ours = member_losses(out, y)
    assert torch.equal(ours, flat)
    assert torch.equal(torch.autograd.grad(ours.sum(), out)[0],
                       torch.autograd.grad(flat.sum(), out)[0])


@pytest.mark.parametrize("build", [fcn, dfa])
def test_evaluate_members_matches_unstacked_evaluate(build):
    members = [build(s) for s in SEEDS]
    stack = stack_models(copy.deepcopy(members))
    data = split(45, seed=9)
    got = evaluate_members(stack, data, batch_size=16)
    for i, m in enumerate(members):
        want = evaluate(m, data, "classification", 16)
        assert got["loss"][i] == pytest.approx(want["loss"], abs=1e-12)
        assert got["acc"][i] == pytest.approx(want["acc"], abs=1e-12)


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_training_matches_unstacked_step_by_step(opt):
    data = split()
    stack, _ = train_stacked(stack_models([fcn(s) for s in SEEDS]), data, SEEDS, OPTIMIZERS[opt])
    for i, s in enumerate(SEEDS):
        model, _ = train_unstacked(fcn(s), data, s, OPTIMIZERS[opt])
        assert_member_equals(stack, i, model)
        assert not torch.equal(model[0].weight, fcn(s)[0].weight)      # it trained


def test_bias_free_members_train_as_unstacked():
    def build(seed):
        torch.manual_seed(seed)
        return FCN(IN, WIDTHS, OUT, bias=False).double()

    data = split()
    stack, _ = train_stacked(stack_models([build(s) for s in SEEDS]), data, SEEDS,
                             OPTIMIZERS["adam"])
    assert all(lin.bias is None for lin in stack.linears)
    for i, s in enumerate(SEEDS):
        model, _ = train_unstacked(build(s), data, s, OPTIMIZERS["adam"])
        assert_member_equals(stack, i, model)


@pytest.mark.parametrize("p", [1, 2])
def test_per_member_penalty_coefficients_match_unstacked_penalties(p):
    data, coeffs = split(), [0.01, 0.0, 0.03]
    c = torch.tensor(coeffs, dtype=torch.float64)
    stack, _ = train_stacked(stack_models([fcn(s) for s in SEEDS]), data, SEEDS,
                             OPTIMIZERS["momentum"],
                             penalty=lambda m: member_weight_penalty(m, p, c))
    for i, s in enumerate(SEEDS):
        pen = (lambda m, k=coeffs[i]: l_penalty(m, p, k)) if coeffs[i] else None
        model, _ = train_unstacked(fcn(s), data, s, OPTIMIZERS["momentum"], penalty=pen)
        assert_member_equals(stack, i, model)


def test_per_member_clipping_matches_unstacked_clipping():
    data = split()
    stack = stack_models([fcn(s) for s in SEEDS])
    norms = []
    stack, _ = train_stacked(stack, data, SEEDS, OPTIMIZERS["sgd"], clip=0.5,
                             before_step=lambda m: norms.append(
                                 torch.linalg.vector_norm(torch.stack([
                                     torch.linalg.vector_norm(p.grad.flatten(1), dim=1)
                                     for p in m.parameters()]), dim=0)))
    norms = torch.stack(norms)                      # after clipping, [steps, S]
    assert (norms <= 0.5).all()
    assert ((norms - 0.5).abs() < 1e-5).any() and (norms < 0.45).any()   # binds, per member
    for i, s in enumerate(SEEDS):
        model, _ = train_unstacked(fcn(s), data, s, OPTIMIZERS["sgd"], clip=0.5)
        assert_member_equals(stack, i, model)
    # one step by hand: norms and clipped gradients of torch's clip_grad_norm_, per member
    unclipped = stack_models([fcn(s) for s in SEEDS])
    x = torch.randn(3, 4, IN, dtype=torch.float64)
    member_losses(unclipped(x), torch.zeros(3, 4, dtype=torch.long)).sum().backward()
    grads = [p.grad.clone() for p in unclipped.parameters()]
    total = clip_grad_norm_per_member(unclipped.parameters(), 1.0)
    for i in range(3):
        params = [nn.Parameter(torch.zeros_like(g[i])) for g in grads]
        for q, g in zip(params, grads):
            q.grad = g[i].clone()
        ref_total = torch.nn.utils.clip_grad_norm_(params, 1.0)
        torch.testing.assert_close(total[i], ref_total, **TOL)
        for p, q in zip(unclipped.parameters(), params):
            torch.testing.assert_close(p.grad[i], q.grad, **TOL)


@pytest.mark.parametrize("feedback", ["shared", "per_member"])
def test_dfa_members_match_unstacked_dfa_training(feedback):
    data = split()
    fb = (lambda s: 0) if feedback == "shared" else (lambda s: 10 + s)
    stack = stack_models([dfa(s, fb(s)) for s in SEEDS])
    assert isinstance(stack, StackedDFANet)
    assert bool(stack.shared_keys) == (feedback == "shared")
    stack, _ = train_stacked(stack, data, SEEDS, OPTIMIZERS["momentum"])
    for i, s in enumerate(SEEDS):
        model, _ = train_unstacked(dfa(s, fb(s)), data, s, OPTIMIZERS["momentum"])
        assert_member_equals(stack, i, model)


# --------------------------------------------------------------------------- member state
@pytest.mark.parametrize("build", [fcn, dfa])
def test_member_state_dict_round_trips(build):
    stack = stack_models([build(s) for s in SEEDS])
    x = torch.randn(5, IN, dtype=torch.float64)
    single = build(7)
    single.load_state_dict(stack.member_state_dict(1))
    torch.testing.assert_close(single(x), stack(x)[1], **TOL)
    before = [stack.member_state_dict(i) for i in (0, 2)]
    stack.load_member_state_dict(1, build(7).state_dict())
    assert_member_equals(stack, 1, build(7))
    for i, sd in zip((0, 2), before):
        for key, value in stack.member_state_dict(i).items():
            assert torch.equal(value, sd[key])
    with pytest.raises(KeyError, match="missing"):
        stack.load_member_state_dict(0, {})
    wrong = {k: v.clone() for k, v in build(7).state_dict().items()}
    last = list(wrong)[-1]
    wrong[last] = wrong[last][:1]
    kept = stack.member_state_dict(0)
    with pytest.raises(ValueError, match="per member"):
        stack.load_member_state_dict(0, wrong)
    for key, value in stack.member_state_dict(0).items():       # nothing was half-loaded
        assert torch.equal(value, kept[key])
    with pytest.raises(IndexError, match="0..2"):
        stack.member_state_dict(3)


def test_loading_a_different_feedback_unshares_it():
    stack = stack_models([dfa(s) for s in SEEDS])
    assert stack.feedback(0).shape == (OUT, WIDTHS[0])
    other = dfa(1, feedback_seed=5)
    stack.load_member_state_dict(1, other.state_dict())
    assert stack.feedback(0).shape == (3, OUT, WIDTHS[0]) and "feedback0" not in stack.shared_keys
    assert torch.equal(stack.feedback(0)[1], other.feedback(0))
    assert torch.equal(stack.feedback(0)[0], dfa(0).feedback(0))
    assert_member_equals(stack, 1, other)


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_optimizer_state_conversion_round_trips_and_continues_identically(opt):
    data, make = split(), OPTIMIZERS[opt]
    stack, stacked_opt = train_stacked(stack_models([fcn(s) for s in SEEDS]), data, SEEDS, make,
                                       epochs=2)
    # stacked -> unstacked: member 2 continues alone exactly as it continues in the stack
    single = fcn(99)
    single.load_state_dict(stack.member_state_dict(2))
    single_opt = make(single.parameters())
    single_opt.load_state_dict(stack.member_optimizer_state(stacked_opt, 2))
    # unstacked -> stacked: a fresh stack loads every member's model and optimiser state
    fresh = stack_models([fcn(99) for _ in SEEDS])
    fresh_opt = make(fresh.parameters())
    for i in range(len(SEEDS)):
        fresh.load_member_state_dict(i, stack.member_state_dict(i))
        if i == 0:
            fresh.load_member_optimizer_state(fresh_opt, i, member_optimizer_state(stacked_opt, i))
        else:
            load_member_optimizer_state(fresh_opt, i, member_optimizer_state(stacked_opt, i))
    assert fresh_opt.state_dict()["param_groups"] == stacked_opt.state_dict()["param_groups"]
    _continue(stack, stacked_opt, data, SEEDS)
    _continue(fresh, fresh_opt, data, SEEDS)
    gen = torch.Generator().manual_seed(SEEDS[2] + 1)
    for _ in range(3):                              # the member's generator after 2 + 1 epochs
        batches = list(iterate(data, 16, gen))
    for (x,), y in batches:
        loss = F.cross_entropy(single(x), y)
        single_opt.zero_grad(set_to_none=True)
        loss.backward()
        single_opt.step()
    assert_member_equals(stack, 2, single)
    for i in range(len(SEEDS)):
        assert_member_equals(fresh, i, _member(stack, i))


def _continue(stack, opt, data, seeds):
    """Epoch 3 of every member (generators advanced past epochs 1 and 2)."""
    train_stacked(stack, data, seeds, None, epochs=1, opt=opt, skip_epochs=2)


def _member(stack, i):
    model = fcn(99)
    model.load_state_dict(stack.member_state_dict(i))
    return model


def test_optimizer_state_conversion_refuses_mismatches():
    stack, opt = train_stacked(stack_models([fcn(s) for s in SEEDS]), split(), SEEDS,
                               OPTIMIZERS["adam"], epochs=1)
    state = member_optimizer_state(opt, 0)
    state["state"][0]["step"] = state["state"][0]["step"] + 1
    with pytest.raises(ValueError, match="same step"):
        load_member_optimizer_state(opt, 0, state)
    with pytest.raises(ValueError, match="sizes"):
        load_member_optimizer_state(torch.optim.Adam(list(stack.parameters())[:2]), 0,
                                    member_optimizer_state(opt, 0))
    with pytest.raises(IndexError):
        member_optimizer_state(opt, 3)


# --------------------------------------------------------------------------- divergence
def test_a_diverged_member_leaves_the_others_alone_and_zero_member_stops_its_nans():
    data, make = split(), OPTIMIZERS["adam"]

    def poison(stack):                              # member 1's gradients blow up on every step
        for p in stack.parameters():
            p.grad[1] = float("nan")

    stack, opt = train_stacked(stack_models([fcn(s) for s in SEEDS]), data, SEEDS, make,
                               before_step=poison)
    assert all(torch.isnan(p[1]).all() for p in stack.parameters())
    for i in (0, 2):
        model, _ = train_unstacked(fcn(SEEDS[i]), data, SEEDS[i], make)
        assert_member_equals(stack, i, model)
    stack.zero_member(1, opt)
    assert all((p[1] == 0).all() for p in stack.parameters())
    _continue(stack, opt, data, SEEDS)
    assert all(torch.isfinite(p).all() for p in stack.parameters())


# --------------------------------------------------------------------------- construction
def test_stack_models_dispatch_and_errors():
    assert isinstance(stack_models([fcn(s) for s in SEEDS]), StackedFCN)
    assert is_stackable(fcn(0)) and is_stackable(dfa(0))
    assert not is_stackable(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="cannot stack Linear"):
        stack_models([nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="share one type"):
        stack_models([fcn(0), dfa(0)])
    with pytest.raises(ValueError, match="differs from member 0"):
        stack_models([fcn(0), FCN(IN, [9, 5], OUT).double()])
    with pytest.raises(ValueError, match="activations"):
        stack_models([fcn(0), FCN(IN, WIDTHS, OUT, activation="tanh").double()])
    with pytest.raises(ValueError, match="at least one"):
        stack_models([])


def test_awnn_members_go_to_models_awnn_or_fail_clearly():
    from models import awnn

    member = awnn.build(awnn.AdaptiveMLPConfig(), {"in_features": 2, "num_classes": 2})
    if hasattr(awnn, "stack_adaptive"):
        assert is_stackable(member)
        assert stack_models([member, copy.deepcopy(member)]).members == 2
    else:
        assert not is_stackable(member)
        with pytest.raises(NotImplementedError, match="stack_adaptive"):
            stack_models([member])


@pytest.mark.parametrize("build", [fcn, dfa])
@pytest.mark.parametrize("full", [False, True])
def test_balancing_a_stack_balances_each_member_as_unstacked(build, full):
    members = [build(s) for s in SEEDS]
    stack = stack_models(copy.deepcopy(members))
    assert all(g.members == len(SEEDS) for g in stack.unit_groups(include_bias=True))
    run = balancing.full_balance if full else balancing.partial_balance
    run(stack, 1)
    for i, m in enumerate(members):
        run(m, 1)
        assert_member_equals(stack, i, m)


def test_nb_l1_training_with_optimizer_rescaling_matches_unstacked():
    """experiments/regimes/balance.py PartialBalancing (p = 1, every epoch, momentum state)."""
    data, make = split(), OPTIMIZERS["momentum"]
    members = [fcn(s) for s in SEEDS]
    stack = stack_models(copy.deepcopy(members))
    opt = make(stack.parameters())
    singles = [(m, make(m.parameters())) for m in members]
    for epoch in range(3):
        train_stacked(stack, data, SEEDS, make, epochs=1, opt=opt, skip_epochs=epoch)
        result = balancing.partial_balance(stack, 1, seed=epoch)
        balancing.rescale_optimizer_state(opt, result.param_scales())
        for (m, o), s in zip(singles, SEEDS):
            train_unstacked(m, data, s, make, epochs=1, opt=o, skip_epochs=epoch)
            r = balancing.partial_balance(m, 1, seed=epoch)
            balancing.rescale_optimizer_state(o, r.param_scales())
    for i, (m, o) in enumerate(singles):
        assert_member_equals(stack, i, m)
        for k, state in member_optimizer_state(opt, i)["state"].items():
            torch.testing.assert_close(state["momentum_buffer"],
                                       o.state_dict()["state"][k]["momentum_buffer"], **TOL)


def test_balancing_a_member_subset_leaves_the_others_alone():
    stack = stack_models([fcn(s) for s in SEEDS])
    before = stack.member_state_dict(1)
    balancing.partial_balance(stack, 1, members=torch.tensor([0, 2]))
    for key, value in stack.member_state_dict(1).items():
        assert torch.equal(value, before[key])
    m = fcn(SEEDS[2])
    balancing.partial_balance(m, 1)
    assert_member_equals(stack, 2, m)


def test_covariant_feedback_is_never_stacked_silently():
    members = [DFANet(IN, WIDTHS, OUT, feedback_seed=s, feedback_transform="covariant") for s in (0, 1)]
    with pytest.raises(TypeError, match="covariant"):
        stack_models(members)
