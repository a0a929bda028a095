"""Neural balancing (models/balancing.py) against slow per-neuron references (NB §2, App. B)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from experiments.regimes.balance import FullBalanceAtStart, PartialBalancing
from experiments.regimes.base import RunContext
from models import balancing as nb
from models.dfa import DFANet
from models.fcn import FCN
from models.rnn import ReLURNNClassifier
from models.text_classifier import TransformerClassifier



@pytest.fixture(autouse=True)
def float64_default():
    """Tolerances here need float64; restored afterwards so other test modules are unaffected."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
PS = (1, 2, 3)


def fcn(widths=(7, 5, 6), seed=0, bias=True):
    torch.manual_seed(seed)
    return FCN(4, list(widths), 3, bias=bias)


def rnn(seed=0):
    torch.manual_seed(seed)
    return ReLURNNClassifier(vocab_size=20, num_classes=3, pad_id=0, embed_dim=5, hidden=6,
                             num_layers=3)


def tokens(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 20, (4, 6), generator=g), torch.tensor([6, 2, 4, 1])


def transformer(seed=0):
    torch.manual_seed(seed)
    return TransformerClassifier(20, 3, 0, d_model=8, nhead=2, num_layers=2, dim_feedforward=12,
                                 dropout=0.0).eval()


def cost(a: torch.Tensor, p: float) -> float:
    return a.abs().pow(p).sum().item()


# ---------------------------------------------------------------- slow references

def ref_fcn_neuron_costs(linears, p, k, i, include_bias=True):
    lin, nxt = linears[k], linears[k + 1]
    a = cost(lin.weight[i], p) + (cost(lin.bias[i], p) if include_bias and lin.bias is not None else 0)
    return a, cost(nxt.weight[:, i], p)


@torch.no_grad()
def ref_fcn_balance_neuron(linears, p, k, i):
    a, b = ref_fcn_neuron_costs(linears, p, k, i)
    lam = (b / a) ** (1 / (2 * p))           # NB eq. 5
    linears[k].weight[i] *= lam
    linears[k].bias[i] *= lam
    linears[k + 1].weight[:, i] /= lam
    return a, b


def ref_fcn_sweep(linears, p):
    for k in range(len(linears) - 1):
        for i in range(linears[k].out_features):
            ref_fcn_balance_neuron(linears, p, k, i)


def ref_rnn_costs(model, p, k, i):
    r = model.rnn
    w_ih, w_hh = getattr(r, f"weight_ih_l{k}"), getattr(r, f"weight_hh_l{k}")
    nxt = getattr(r, f"weight_ih_l{k + 1}") if k + 1 < r.num_layers else model.readout.weight
    others = [j for j in range(r.hidden_size) if j != i]
    a = (cost(w_ih[i], p) + cost(w_hh[i, others], p) + cost(getattr(r, f"bias_ih_l{k}")[i], p)
         + cost(getattr(r, f"bias_hh_l{k}")[i], p))
    b = cost(w_hh[others, i], p) + cost(nxt[:, i], p)
    return a, b


@torch.no_grad()
def ref_rnn_sweep(model, p):
    r = model.rnn
    for k in range(r.num_layers):
        for i in range(r.hidden_size):
            a, b = ref_rnn_costs(model, p, k, i)
            lam = (b / a) ** (1 / (2 * p))
            for name in (f"weight_ih_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}"):
                getattr(r, name)[i] *= lam
            w_hh = getattr(r, f"weight_hh_l{k}")
            w_hh[i] *= lam
            w_hh[:, i] /= lam
            nxt = getattr(r, f"weight_ih_l{k + 1}") if k + 1 < r.num_layers else model.readout.weight
            nxt[:, i] /= lam


def all_params(model):
    return torch.cat([q.detach().flatten() for q in model.parameters()])


# ---------------------------------------------------------------- sweeps vs reference

@pytest.mark.parametrize("p", PS)
def test_partial_sweep_equals_per_neuron_reference_fcn(p):
    model, ref = fcn(), fcn()
    nb.partial_balance(model, p)
    ref_fcn_sweep(ref.linears, p)
    torch.testing.assert_close(all_params(model), all_params(ref), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("p", PS)
def test_partial_sweep_equals_per_neuron_reference_rnn(p):
    model, ref = rnn(), rnn()
    nb.partial_balance(model, p)
    ref_rnn_sweep(ref, p)
    torch.testing.assert_close(all_params(model), all_params(ref), rtol=1e-12, atol=1e-14)


def test_neuron_costs_match_reference():
    model = fcn()
    costs = nb.neuron_costs(model, 2)
    for k, (a, b) in enumerate(costs):
        for i in range(len(a)):
            ra, rb = ref_fcn_neuron_costs(model.linears, 2, k, i)
            assert a[i].item() == pytest.approx(ra, rel=1e-12)
            assert b[i].item() == pytest.approx(rb, rel=1e-12)
    model = rnn()
    for k, (a, b) in enumerate(nb.neuron_costs(model, 1)):
        for i in range(len(a)):
            ra, rb = ref_rnn_costs(model, 1, k, i)
            assert (a[i].item(), b[i].item()) == pytest.approx((ra, rb), rel=1e-12)


# ---------------------------------------------------------------- function preservation

def user_sequential(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 9), nn.LeakyReLU(0.1), nn.Dropout(0.3),
                         nn.Linear(9, 5), nn.ReLU(), nn.Linear(5, 2)).eval()


def dfa(seed=0):
    torch.manual_seed(seed)
    return DFANet(4, [7, 6, 5], 3)


CASES = {
    "fcn1": (lambda: fcn((9,)), lambda: (torch.randn(11, 4),)),
    "fcn3": (lambda: fcn((7, 5, 6)), lambda: (torch.randn(11, 4),)),
    "fcn5": (lambda: fcn((8, 7, 6, 5, 4)), lambda: (torch.randn(11, 4),)),
    "user_sequential": (user_sequential, lambda: (torch.randn(11, 2, 3),)),
    "rnn": (rnn, tokens),
    "transformer": (transformer, tokens),
    "dfa": (dfa, lambda: (torch.randn(11, 4),)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("p", PS)
def test_balancing_preserves_outputs(case, p):
    make, inputs = CASES[case]
    torch.manual_seed(3)
    x = inputs()
    model = make()
    y0 = model(*x).detach()
    nb.partial_balance(model, p)
    torch.testing.assert_close(model(*x).detach(), y0, rtol=1e-9, atol=1e-10)
    result = nb.full_balance(model, p)
    assert result.converged
    torch.testing.assert_close(model(*x).detach(), y0, rtol=1e-9, atol=1e-10)
    assert result.cost_after <= result.cost_before


# ---------------------------------------------------------------- cost decrease, NB eq. 6

@pytest.mark.parametrize("p", PS)
def test_single_neuron_balance_lowers_cost_by_eq6(p):
    model = fcn((9, 8))
    lins = model.linears
    for k, i in [(0, 3), (1, 5), (0, 0)]:
        before = sum(cost(q, p) for q in model.parameters())
        a, b = ref_fcn_balance_neuron(lins, p, k, i)
        after = sum(cost(q, p) for q in model.parameters())
        if p == 2:    # NB eq. 6: ΔR = (√A − √B)² for L2
            assert before - after == pytest.approx((math.sqrt(a) - math.sqrt(b)) ** 2, rel=1e-9)
        assert after <= before + 1e-12
        a2, b2 = ref_fcn_neuron_costs(lins, p, k, i)
        assert a2 == pytest.approx(b2, rel=1e-12)   # NB eq. 7


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("case", ["fcn5", "rnn", "transformer", "dfa"])
def test_partial_sweep_never_increases_cost(case, p):
    model = CASES[case][0]()
    costs = [nb.total_cost(nb.unit_groups(model), p)]
    for _ in range(4):
        r = nb.partial_balance(model, p, order="reverse")
        assert r.cost_before == pytest.approx(costs[-1], rel=1e-12)
        costs.append(r.cost_after)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(costs, costs[1:]))
    assert costs[-1] < costs[0]


# ---------------------------------------------------------------- full balance, uniqueness

@pytest.mark.parametrize("p", PS)
def test_full_balance_every_neuron_satisfies_eq7(p):
    model = fcn((8, 7, 6, 5))
    nb.full_balance(model, p, method="sweep")
    for k in range(4):
        for i in range(model.linears[k].out_features):
            a, b = ref_fcn_neuron_costs(model.linears, p, k, i)
            assert abs(math.log(a / b)) < 1e-6       # default tol
    model = rnn()
    nb.full_balance(model, p, method="sweep")
    for k in range(3):
        for i in range(6):
            a, b = ref_rnn_costs(model, p, k, i)
            assert abs(math.log(a / b)) < 1e-6


@pytest.mark.parametrize("p", [PS[0], *(pytest.param(p, marks=pytest.mark.slow) for p in PS[1:])])
@pytest.mark.parametrize("make", [lambda: fcn((8, 7, 6, 5)), rnn], ids=["fcn", "rnn"])
def test_all_orders_and_direct_reach_same_weights(make, p):
    """NB Thm B.34: the balanced state is unique whatever the schedule."""
    results = {}
    for order in ("forward", "reverse", "random"):
        model = make()
        nb.full_balance(model, p, method="sweep", order=order, tol=1e-11, seed=5)
        results[order] = all_params(model)
    model = make()
    nb.full_balance(model, p, method="direct", tol=1e-11)
    results["direct"] = all_params(model)
    for key in ("reverse", "random", "direct"):
        torch.testing.assert_close(results[key], results["forward"], rtol=1e-8, atol=1e-10)


def test_full_balance_reports_sweeps_and_caps_them():
    model = fcn((8, 7, 6, 5))
    with pytest.warns(UserWarning, match="max_sweeps=2"):
        r = nb.full_balance(model, 1, method="sweep", max_sweeps=2)
    assert r.sweeps == 2 and not r.converged and r.max_log_imbalance >= 1e-6


# ---------------------------------------------------------------- tied layer balance

def ref_tied_iterate(linears, p, iters=5000):
    for _ in range(iters):
        for k in range(len(linears) - 1):
            a, b = cost(linears[k].weight, p), cost(linears[k + 1].weight, p)
            lam = (b / a) ** (1 / (2 * p))
            with torch.no_grad():
                linears[k].weight *= lam
                linears[k + 1].weight /= lam


@pytest.mark.parametrize("p", [PS[0], *(pytest.param(p, marks=pytest.mark.slow) for p in PS[1:])])
def test_tied_closed_form_equals_iterated(p):
    model, ref = fcn((8, 7, 6), bias=False), fcn((8, 7, 6), bias=False)
    r = nb.tied_layer_balance(model, p)
    assert r.sweeps == 0    # closed form used
    ref_tied_iterate(ref.linears, p)
    torch.testing.assert_close(all_params(model), all_params(ref), rtol=1e-8, atol=1e-12)
    layer_costs = [cost(lin.weight, p) for lin in model.linears]
    assert max(layer_costs) == pytest.approx(min(layer_costs), rel=1e-9)


@pytest.mark.parametrize("p", PS)
def test_tied_with_bias_converges_and_preserves_outputs(p):
    model = fcn((8, 7, 6))
    x = torch.randn(5, 4)
    y0 = model(x).detach()
    with pytest.raises(ValueError, match="closed form"):
        nb.tied_layer_balance(copy.deepcopy(model), p, method="closed_form")
    r = nb.tied_layer_balance(model, p)
    assert r.converged and r.sweeps > 0
    torch.testing.assert_close(model(x).detach(), y0, rtol=1e-9, atol=1e-10)
    for k in range(3):
        lin, nxt = model.linears[k], model.linears[k + 1]
        assert cost(lin.weight, p) + cost(lin.bias, p) == pytest.approx(cost(nxt.weight, p), rel=1e-8)


# ---------------------------------------------------------------- traps (SPEC A.2)

def test_include_bias_false_is_not_function_preserving():
    torch.manual_seed(0)
    model = FCN(784, [256], 10)
    x = torch.rand(64, 784) * 2 - 1
    y0 = model(x).detach()
    authors = copy.deepcopy(model)
    nb.full_balance(authors, 1, include_bias=False)
    ours = copy.deepcopy(model)
    nb.full_balance(ours, 1, include_bias=True)
    assert (authors(x) - y0).abs().max() > 1e-2 * y0.abs().max()
    torch.testing.assert_close(ours(x).detach(), y0, rtol=1e-9, atol=1e-10)
    # bias neither counted nor scaled
    torch.testing.assert_close(authors.linears[0].bias, model.linears[0].bias)


@pytest.mark.parametrize("method", ["sweep", "direct"])
def test_zero_cost_units_are_skipped(method):
    model = fcn((6, 5))
    with torch.no_grad():
        model.linears[0].weight[2] = 0
        model.linears[0].bias[2] = 0          # unit (0, 2): no input
        model.linears[2].weight[:, 4] = 0     # unit (1, 4): no output
    x = torch.randn(7, 4)
    y0 = model(x).detach()
    r = nb.full_balance(model, 1, method=method)
    assert r.converged and all(torch.isfinite(q).all() for q in model.parameters())
    assert r.log_scales[0][2] == 0 and r.log_scales[1][4] == 0
    torch.testing.assert_close(model(x).detach(), y0, rtol=1e-9, atol=1e-10)
    nb.partial_balance(model, 2)
    assert all(torch.isfinite(q).all() for q in model.parameters())


@pytest.mark.parametrize("act", [nn.Tanh(), nn.ReLU6(), nn.Sigmoid(), nn.GELU()])
def test_non_homogeneous_activations_refused(act):
    model = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 2))
    with pytest.raises(ValueError, match=f"{type(act).__name__} is not positively homogeneous"):
        nb.partial_balance(model, 1)
    with pytest.warns(UserWarning, match="not function-preserving"):
        nb.partial_balance(model, 1, allow_non_homogeneous=True)


def test_tanh_rnn_and_gelu_transformer_refused():
    model = ReLURNNClassifier(20, 2, 0, 4, 5, 2, activation="tanh")
    with pytest.raises(ValueError, match="nonlinearity='tanh'.*allowed: 'relu'"):
        nb.full_balance(model, 1)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, activation="gelu"), 1,
                                enable_nested_tensor=False)
    with pytest.raises(ValueError, match="gelu is not homogeneous"):
        nb.full_balance(enc, 1)


def test_unsupported_model_refused():
    with pytest.raises(TypeError, match="does not support Conv2d"):
        nb.partial_balance(nn.Conv2d(1, 2, 3), 1)
    with pytest.raises(TypeError, match="is BatchNorm1d"):
        nb.partial_balance(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)), 1)
    with pytest.raises(ValueError, match="order='sideways'"):
        nb.full_balance(fcn(), 1, order="sideways")
    with pytest.raises(ValueError, match="method='magic'"):
        nb.full_balance(fcn(), 1, method="magic")


# ---------------------------------------------------------------- optimiser state

def _train_steps(model, opt, steps=3):
    for s in range(steps):
        torch.manual_seed(10 + s)
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_sgd_momentum_step_commutes_with_balancing(weight_decay):
    """Momentum buffers scale like the weights: a (zero-gradient) momentum step after balancing
    is the balanced image of the same step before balancing."""
    model = fcn((7, 6))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=weight_decay)
    _train_steps(model, opt)
    twin = copy.deepcopy(model)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=weight_decay)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))

    r = nb.full_balance(model, 1)
    nb.rescale_optimizer_state(opt, r.param_scales())
    for q in model.parameters():
        q.grad = torch.zeros_like(q)
    opt.step()

    for q in twin.parameters():
        q.grad = torch.zeros_like(q)
    twin_opt.step()
    scales = r.param_scales()
    for got, twin_q in zip(model.parameters(), twin.parameters()):
        want = scales.get(got, torch.ones_like(got)) * twin_q.detach()
        torch.testing.assert_close(got.detach(), want, rtol=1e-10, atol=1e-12)


def test_gradient_transforms_inversely_and_adam_state_follows():
    """Balancing w -> s·w preserves the function, so the gradient becomes g / s. Adam's moments
    are rescaled the same way: exp_avg / s, exp_avg_sq / s² (state as if every past gradient had
    been taken at the balanced weights)."""
    model = fcn((7, 6))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train_steps(model, opt)
    old = {i: {k: v.clone() for k, v in opt.state[q].items()} for i, q in enumerate(model.parameters())}
    x = torch.randn(8, 4)
    model(x).pow(2).mean().backward()
    g_before = [q.grad.clone() for q in model.parameters()]
    opt.zero_grad()

    r = nb.full_balance(model, 2)
    scales = r.param_scales()
    model(x).pow(2).mean().backward()
    for q, g in zip(model.parameters(), g_before):
        s = scales.get(q, torch.ones_like(q))
        torch.testing.assert_close(q.grad, g / s, rtol=1e-9, atol=1e-12)

    nb.rescale_optimizer_state(opt, scales)
    for i, q in enumerate(model.parameters()):
        s = scales.get(q, torch.ones_like(q))
        torch.testing.assert_close(opt.state[q]["exp_avg"], old[i]["exp_avg"] / s)
        torch.testing.assert_close(opt.state[q]["exp_avg_sq"], old[i]["exp_avg_sq"] / s ** 2)
        assert opt.state[q]["step"] == old[i]["step"]


def test_unknown_optimizer_state_refused():
    model = fcn((5,))
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    _train_steps(model, opt, 1)
    r = nb.full_balance(model, 1)
    with pytest.raises(ValueError, match="'square_avg' of RMSprop"):
        nb.rescale_optimizer_state(opt, r.param_scales())


# ---------------------------------------------------------------- regimes

def ctx_for(model, momentum=0.9):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    return RunContext(model=model, optimizer=opt, data=None, cfg=None, device=torch.device("cpu"))


def test_partial_balancing_regime_every_and_ratios():
    model = fcn((3, 2))
    ctx = ctx_for(model)
    _train_steps(model, ctx.optimizer, 1)
    regime = PartialBalancing(p=1, every=2, record_ratios=True)
    regime.before_training(ctx)
    x = torch.randn(5, 4)
    y0 = model(x).detach()
    m0 = regime.on_epoch_end(ctx, 0)
    assert m0["balance/cost"] < m0["balance/cost_before"]
    assert sorted(k for k in m0 if k.startswith("ratio/")) == sorted(
        ["ratio/0/0", "ratio/0/1", "ratio/0/2", "ratio/1/0", "ratio/1/1"])
    assert m0["ratio/1/0"] == pytest.approx(1.0, rel=1e-9)   # last layer exactly balanced
    torch.testing.assert_close(model(x).detach(), y0)
    m1 = regime.on_epoch_end(ctx, 1)
    assert "balance/cost" not in m1 and "ratio/0/0" in m1


def test_full_balance_at_start_regime():
    model = rnn()
    ctx = ctx_for(model)
    regime = FullBalanceAtStart(p=2)
    regime.before_training(ctx)
    assert ctx.extra["full_balance_at_start"]["balance/max_log_imbalance"] < 1e-6
    m0 = regime.on_epoch_end(ctx, 0)
    assert m0["start/balance/cost"] < m0["start/balance/cost_before"]
    assert regime.on_epoch_end(ctx, 1) == {}


def test_regimes_refuse_unsupported_model_at_start():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    for regime in (FullBalanceAtStart(p=1), PartialBalancing(p=1)):
        with pytest.raises(ValueError, match="Tanh is not positively homogeneous"):
            regime.before_training(ctx_for(model))
