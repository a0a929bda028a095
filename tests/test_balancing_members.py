"""Balancing a stacked model (docs/STACKING.md): every member equals the same balancing of that
member alone, in one vectorised pass; a member subset leaves the others bit-identical."""
from __future__ import annotations

import copy

import pytest
import torch

from models import balancing as nb
from models.dfa import DFANet
from models.fcn import FCN
from models.rnn import ReLURNNClassifier
from models.text_classifier import TransformerClassifier
from tests.balancing_stacks import StackedMembers

S = 3


@pytest.fixture(autouse=True)
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _seeded(make, seed):
    torch.manual_seed(seed)
    return make()


ARCHS = {   # make, chain (described by chain_groups_from_params), inputs
    "fcn": (lambda: FCN(4, [7, 5, 6], 3), True, lambda: (torch.randn(9, 4),)),
    "dfa": (lambda: DFANet(4, [6, 5], 3), True, lambda: (torch.randn(9, 4),)),
    "rnn": (lambda: ReLURNNClassifier(20, 3, 0, embed_dim=5, hidden=6, num_layers=2), False,
            lambda: (torch.randint(1, 20, (4, 6)), torch.tensor([6, 2, 4, 1]))),
    "transformer": (lambda: TransformerClassifier(20, 3, 0, d_model=8, nhead=2, num_layers=2,
                                                  dim_feedforward=12, dropout=0.0).eval(), False,
                    lambda: (torch.randint(1, 20, (4, 6)), torch.tensor([6, 2, 4, 1]))),
}


def setup(arch="fcn", count=S, prepare=None):
    """(stack, singles): the stacked model and an unstacked copy of every member."""
    make, chain, _ = ARCHS[arch]
    singles = [_seeded(make, seed) for seed in range(count)]
    if prepare:
        prepare(singles)
    return StackedMembers(copy.deepcopy(singles), chain=chain), singles


def assert_members_equal(stack, singles, which=None, rtol=1e-12, atol=1e-14):
    for i in (range(len(singles)) if which is None else which):
        for n, q in singles[i].named_parameters():
            torch.testing.assert_close(stack.param(n)[i], q.detach(), rtol=rtol, atol=atol)


def assert_results_match(result, single_results, which=None):
    which = list(range(len(single_results))) if which is None else which
    assert result.members == which
    for k, i in enumerate(which):
        r = single_results[i]
        assert (result.sweeps[k], result.newton_steps[k]) == (r.sweeps, r.newton_steps)
        assert result.converged[k] == r.converged
        assert result.cost_before[k] == pytest.approx(r.cost_before, rel=1e-12)
        assert result.cost_after[k] == pytest.approx(r.cost_after, rel=1e-12)
        assert result.max_log_imbalance[k] == pytest.approx(r.max_log_imbalance, rel=1e-9,
                                                            abs=1e-12)
        for ls, lu in zip(result.log_scales, r.log_scales):
            torch.testing.assert_close(ls[i], lu, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- groups

def test_chain_groups_from_params_is_chain_groups_with_a_member_axis():
    model = _seeded(ARCHS["fcn"][0], 0)
    plain = nb.unit_groups(model)
    lins = model.linears
    again = nb.chain_groups_from_params([m.weight for m in lins], [m.bias for m in lins], True)
    assert [(g.size, [(s.param, s.dim, s.is_bias) for s in g.incoming + g.outgoing])
            for g in plain] == [(g.size, [(s.param, s.dim, s.is_bias)
                                          for s in g.incoming + g.outgoing]) for g in again]
    stack, _ = setup()
    groups = nb.unit_groups(stack)          # dispatches to stack.unit_groups
    assert [g.members for g in groups] == [S] * 3
    assert [(s.dim, s.is_bias) for s in groups[0].incoming + groups[0].outgoing] == [
        (1, False), (1, True), (2, False)]
    a, b = nb.neuron_costs(stack, 2)[1]
    assert a.shape == b.shape == (S, 5)


def test_chain_groups_from_params_rejects_bad_shapes():
    w = [torch.zeros(S, 5, 4), torch.zeros(S, 3, 5)]
    b = [torch.zeros(S, 5), torch.zeros(S, 3)]
    with pytest.raises(ValueError, match=r"weight 0 has shape \(3, 5, 4\); expected \[out, in\]; "
                                         r"pass members=S"):
        nb.chain_groups_from_params(w, b, True)
    with pytest.raises(ValueError, match=r"expected \[S=4, out, in\]"):
        nb.chain_groups_from_params(w, b, True, members=4)
    with pytest.raises(ValueError, match="weight 1 has 6 inputs, expected 5"):
        nb.chain_groups_from_params([w[0], torch.zeros(S, 3, 6)], b, True, members=S)
    with pytest.raises(ValueError, match=r"bias 0 has shape \(3, 4\)"):
        nb.chain_groups_from_params(w, [torch.zeros(S, 4), b[1]], True, members=S)
    with pytest.raises(ValueError, match="2 weights but 1 biases"):
        nb.chain_groups_from_params(w, b[:1], True, members=S)
    with pytest.raises(ValueError, match="mix members"):
        stacked = nb.chain_groups_from_params(w, b, True, members=S)
        plain = nb.chain_groups_from_params([w[0][0], w[1][0]], [b[0][0], b[1][0]], True)
        nb.max_log_imbalance(stacked + plain, 1)


def test_member_subset_argument_is_checked():
    stack, singles = setup()
    with pytest.raises(ValueError, match="only a stacked model"):
        nb.partial_balance(singles[0], 1, members=[0])
    for bad, msg in [([3], r"in \[0, 3\)"), ([0, 0], "distinct"), ([1.5], "integer"),
                     (torch.tensor([True, False, True]), "not a mask")]:
        with pytest.raises(ValueError, match=msg):
            nb.full_balance(stack, 1, members=bad)


# ---------------------------------------------------------------- equal to each member alone

@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("order", nb.ORDERS)
@pytest.mark.parametrize("p", (1, 2))
def test_partial_balance_per_member_equals_unstacked(arch, order, p):
    stack, singles = setup(arch)
    result = nb.partial_balance(stack, p, order=order, seed=7)
    alone = [nb.partial_balance(m, p, order=order, seed=7) for m in singles]
    assert_members_equal(stack, singles)
    assert_results_match(result, alone)


def _prebalance_member_1(singles):
    nb.full_balance(singles[1], 1, tol=1e-9)   # needs no sweep at tol=1e-6: counts differ


@pytest.mark.parametrize("arch", ["fcn", "rnn"])
@pytest.mark.parametrize("method,order", [("sweep", "forward"), ("sweep", "random"),
                                          ("direct", "forward")])
@pytest.mark.parametrize("p", (1, 2))
def test_full_balance_per_member_equals_unstacked(arch, method, order, p):
    stack, singles = setup(arch, prepare=_prebalance_member_1 if p == 1 else None)
    result = nb.full_balance(stack, p, method=method, order=order, seed=3)
    alone = [nb.full_balance(m, p, method=method, order=order, seed=3) for m in singles]
    assert_members_equal(stack, singles)
    assert_results_match(result, alone)
    assert all(result.converged)
    if p == 1:
        steps = result.sweeps if method == "sweep" else result.newton_steps
        assert len(set(steps)) > 1, steps      # members stopped at different times


@pytest.mark.parametrize("method", ["closed_form", "iterate"])
def test_tied_balance_per_member_equals_unstacked(method):
    make = (lambda: FCN(4, [7, 5, 6], 3, bias=False)) if method == "closed_form" else None
    if make:
        singles = [_seeded(make, seed) for seed in range(S)]
        stack = StackedMembers(copy.deepcopy(singles), chain=True)
    else:
        stack, singles = setup()
    result = nb.tied_layer_balance(stack, 2, method=method)
    alone = [nb.tied_layer_balance(m, 2, method=method) for m in singles]
    assert_members_equal(stack, singles, rtol=1e-10, atol=1e-13)
    assert result.sweeps == [r.sweeps for r in alone] and all(result.converged)


def test_param_scales_per_member_equal_unstacked():
    stack, singles = setup("rnn")
    scales = nb.full_balance(stack, 2).param_scales()
    for i, m in enumerate(singles):
        alone = nb.full_balance(m, 2).param_scales()
        for n, q in m.named_parameters():
            want = alone.get(q, torch.ones_like(q))
            got = scales.get(stack.param(n), torch.ones_like(stack.param(n)))[i]
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def _train_together(stack, singles, make_opt, steps=3):
    """The same elementwise gradients for each member alone and for the stack."""
    opt = make_opt(stack.parameters())
    opts = [make_opt(m.parameters()) for m in singles]
    for t in range(steps):
        gen = torch.Generator().manual_seed(100 + t)
        for n in stack.names:
            grad = torch.randn(stack.param(n).shape, generator=gen)
            stack.param(n).grad = grad.clone()
            for i, m in enumerate(singles):
                dict(m.named_parameters())[n].grad = grad[i].clone()
        for o in [opt, *opts]:
            o.step()
    return opt, opts


OPTIMIZERS = {"sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
              "adam": lambda ps: torch.optim.Adam(ps, lr=0.01)}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_rescaled_per_member_as_unstacked(name):
    stack, singles = setup()
    opt, opts = _train_together(stack, singles, OPTIMIZERS[name])
    nb.rescale_optimizer_state(opt, nb.partial_balance(stack, 1, order="random").param_scales())
    for m, o in zip(singles, opts):
        nb.rescale_optimizer_state(o, nb.partial_balance(m, 1, order="random").param_scales())
    for n in stack.names:
        state = opt.state[stack.param(n)]
        for i, (m, o) in enumerate(zip(singles, opts)):
            alone = o.state[dict(m.named_parameters())[n]]
            for key, value in alone.items():
                if torch.is_tensor(value) and value.ndim:
                    torch.testing.assert_close(state[key][i], value, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- member subsets

def _snapshot(stack, opt):
    params = {n: stack.param(n).detach().clone() for n in stack.names}
    states = {n: {k: v.clone() for k, v in opt.state[stack.param(n)].items()} for n in stack.names}
    return params, states


@pytest.mark.parametrize("call", ["partial", "sweep", "direct"])
def test_member_subset_balances_only_those_members(call):
    stack, singles = setup(count=4)
    opt, _ = _train_together(stack, singles, OPTIMIZERS["adam"], steps=2)
    params, states = _snapshot(stack, opt)
    chosen = torch.tensor([2, 0])
    if call == "partial":
        result = nb.partial_balance(stack, 2, order="reverse", members=chosen)
        alone = [nb.partial_balance(m, 2, order="reverse") for m in singles]
    else:
        result = nb.full_balance(stack, 2, method=call, members=chosen)
        alone = [nb.full_balance(m, 2, method=call) for m in singles]
    nb.rescale_optimizer_state(opt, result.param_scales())
    assert_members_equal(stack, singles, which=[0, 2])
    assert_results_match(result, alone, which=[2, 0])
    for n in stack.names:            # members 1 and 3: bit-identical, parameters and state
        for i in (1, 3):
            assert torch.equal(stack.param(n)[i], params[n][i])
            for key, value in opt.state[stack.param(n)].items():
                if value.ndim:
                    assert torch.equal(value[i], states[n][key][i])


def test_members_differing_in_p_balance_as_subsets():
    stack, singles = setup(count=4)
    nb.full_balance(stack, 1, method="sweep", members=[0, 1])
    nb.full_balance(stack, 2, method="direct", members=[2, 3])
    for i, m in enumerate(singles):
        nb.full_balance(m, 1 if i < 2 else 2, method="sweep" if i < 2 else "direct")
    assert_members_equal(stack, singles)


def test_a_zeroed_member_is_left_alone_and_does_not_disturb_the_others():
    def zero_member_1(singles):
        with torch.no_grad():
            for q in singles[1].parameters():
                q.zero_()
    stack, singles = setup(prepare=zero_member_1)
    for method in ("direct", "sweep"):
        result = nb.full_balance(stack, 1, method=method)
        for m in singles:
            nb.full_balance(m, 1, method=method)
        assert result.converged == [True] * S and result.cost_after[1] == 0
        assert_members_equal(stack, singles)
    assert all(torch.equal(stack.param(n)[1], torch.zeros_like(stack.param(n)[1]))
               for n in stack.names)


# ---------------------------------------------------------------- NB properties, per member

@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_stacked_balancing_preserves_every_members_outputs(arch):
    stack, _ = setup(arch)
    x = ARCHS[arch][2]()
    y0 = stack(*x).detach()
    nb.partial_balance(stack, 1, order="random")
    torch.testing.assert_close(stack(*x).detach(), y0, rtol=1e-9, atol=1e-10)
    nb.full_balance(stack, 2)
    torch.testing.assert_close(stack(*x).detach(), y0, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("p", (1, 2))
def test_stacked_partial_sweeps_never_raise_any_members_cost(p):
    stack, _ = setup("rnn")
    costs = [nb.total_cost(nb.unit_groups(stack), p)]
    for _ in range(4):
        r = nb.partial_balance(stack, p, order="reverse")
        assert r.cost_before == pytest.approx(costs[-1], rel=1e-12)
        costs.append(r.cost_after)
    for before, after in zip(costs, costs[1:]):
        assert all(b <= a * (1 + 1e-12) for a, b in zip(before, after))
    assert all(b < a for a, b in zip(costs[0], costs[-1]))


@pytest.mark.parametrize("arch", ["fcn", "rnn"])
def test_stacked_orders_and_direct_reach_the_same_state(arch):
    """NB Thm B.34, per member: the balanced state is unique whatever the schedule."""
    finals = {}
    for method, order in [("sweep", "forward"), ("sweep", "reverse"), ("sweep", "random"),
                          ("direct", "forward")]:
        stack, _ = setup(arch)
        nb.full_balance(stack, 2, method=method, order=order, tol=1e-11, seed=5)
        finals[method, order] = torch.cat([q.detach().flatten() for q in stack.parameters()])
    for key, value in finals.items():
        torch.testing.assert_close(value, finals["sweep", "forward"], rtol=1e-8, atol=1e-10)
