"""Balancing creates every tensor on the device (and float64 work dtype) of the parameters it
meets. Without a GPU: under a `meta` default device any tensor created without an explicit
device lands on `meta`, and a guard raises on every op that mixes devices (torch itself lets
some meta/CPU mixes through); a float64 model balanced under a float32 default dtype must give
exactly what it gives under a float64 default. With a GPU: every entry point on `cuda` matches
the CPU."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from models import balancing as nb
from models.dfa import DFANet
from models.fcn import FCN
from models.rnn import ReLURNNClassifier
from models.text_classifier import TransformerClassifier
from tests.balancing_stacks import StackedMembers


def _fcn():
    return FCN(4, [7, 5, 6], 3)


def _fcn_no_bias():
    return FCN(4, [7, 5, 6], 3, bias=False)


def _rnn():
    return ReLURNNClassifier(vocab_size=20, num_classes=3, pad_id=0, embed_dim=5, hidden=6,
                             num_layers=2)


def _ffn():
    return TransformerClassifier(20, 3, 0, d_model=8, nhead=2, num_layers=2, dim_feedforward=12,
                                 dropout=0.0)


def _dfa():
    return DFANet(4, [7, 6], 3)


def _stacked_fcn():
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(_fcn())
    return StackedMembers(members, chain=True)


def _stacked_rnn():
    members = []
    for seed in range(2):
        torch.manual_seed(seed)
        members.append(_rnn())
    return StackedMembers(members)


def _sgd_state(model, momentum=0.9):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    for q in model.parameters():
        q.grad = torch.ones_like(q)
    opt.step()
    return opt


def _adam_state(model):
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for q in model.parameters():
        q.grad = torch.ones_like(q)
    opt.step()
    return opt


ENTRY_POINTS = {
    "partial_forward": (_fcn, lambda m: nb.partial_balance(m, 1)),
    "partial_random": (_fcn, lambda m: nb.partial_balance(m, 2, order="random", seed=3)),
    "full_sweep": (_fcn, lambda m: nb.full_balance(m, 1, method="sweep")),
    "full_direct": (_fcn, lambda m: nb.full_balance(m, 2, method="direct")),
    "tied_closed_form": (_fcn_no_bias, lambda m: nb.tied_layer_balance(m, 1)),
    "tied_iterate": (_fcn, lambda m: nb.tied_layer_balance(m, 2, method="iterate")),
    "rnn_partial": (_rnn, lambda m: nb.partial_balance(m, 1, order="random")),
    "rnn_full_sweep": (_rnn, lambda m: nb.full_balance(m, 2, method="sweep")),
    "rnn_full_direct": (_rnn, lambda m: nb.full_balance(m, 1, method="direct")),
    "ffn_full_direct": (_ffn, lambda m: nb.full_balance(m, 2)),
    "dfa_partial": (_dfa, lambda m: nb.partial_balance(m, 1)),
    "dfa_full_direct": (_dfa, lambda m: nb.full_balance(m, 1)),
    "param_scales_sgd": (_fcn, lambda m: nb.full_balance(m, 1), _sgd_state),
    "param_scales_adam": (_rnn, lambda m: nb.partial_balance(m, 2), _adam_state),
    "neuron_costs": (_rnn, lambda m: nb.neuron_costs(m, 1)),
    "stacked_partial_random": (_stacked_fcn,
                               lambda m: nb.partial_balance(m, 1, order="random", seed=2)),
    "stacked_full_sweep_subset": (_stacked_fcn, lambda m: nb.full_balance(
        m, 2, method="sweep", members=torch.tensor([2, 0], device="cpu"))),
    "stacked_full_direct_subset": (_stacked_fcn, lambda m: nb.full_balance(
        m, 1, method="direct", members=[1])),
    "stacked_tied_iterate": (_stacked_fcn,
                             lambda m: nb.tied_layer_balance(m, 2, method="iterate")),
    "stacked_rnn_partial": (_stacked_rnn, lambda m: nb.partial_balance(m, 2, order="random")),
    "stacked_rnn_full_direct": (_stacked_rnn, lambda m: nb.full_balance(m, 2)),
    "stacked_param_scales_adam": (_stacked_fcn,
                                  lambda m: nb.full_balance(m, 2, members=[0, 2]), _adam_state),
    "stacked_neuron_costs": (_stacked_rnn, lambda m: nb.neuron_costs(m, 2)),
}


class DeviceMixGuard(TorchFunctionMode):
    """Raises on any torch op whose tensor arguments live on more than one device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        if len(devices) > 1:
            raise RuntimeError(f"{getattr(func, '__name__', func)} mixes devices {devices}")
        return func(*args, **kwargs)


def _build(make, device="cpu"):
    torch.manual_seed(0)
    return make().to(device=device, dtype=torch.float64)


def _outputs(model, result, opt_state):
    """What a balancing call leaves behind: parameters, its result's tensors, optimiser state."""
    out = [q.detach() for q in model.parameters()]
    if isinstance(result, nb.BalanceResult):
        out += list(result.log_scales) + list(result.param_scales().values())
    else:   # neuron_costs
        out += [t for pair in result for t in pair]
    return out + opt_state


def _run(model, balance, make_opt=None, guard=False):
    """Balance `model` (and rescale the state of an optimiser prepared beforehand, outside the
    guard: the optimiser's own state creation is not under test)."""
    opt = make_opt(model) if make_opt else None
    with (torch.device("meta") if guard else contextlib.nullcontext()), \
            (DeviceMixGuard() if guard else contextlib.nullcontext()):   # default device: meta
        result = balance(model)
        if opt is not None:
            nb.rescale_optimizer_state(opt, result.param_scales())
    states = [] if opt is None else [v for st in opt.state.values() for v in st.values()
                                     if torch.is_tensor(v) and v.ndim]
    return _outputs(model, result, states)


@pytest.mark.parametrize("case", sorted(ENTRY_POINTS))
def test_no_tensor_created_off_the_parameters_device(case):
    make, balance, *make_opt = ENTRY_POINTS[case]
    want = _run(_build(make), balance, *make_opt)
    got = _run(_build(make), balance, *make_opt, guard=True)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.device.type == "cpu"
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("case", sorted(ENTRY_POINTS))
def test_float64_model_is_independent_of_the_default_dtype(case):
    make, balance, *make_opt = ENTRY_POINTS[case]
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)   # the same float64 init for both
        want, got = _build(make), _build(make)
        want = _run(want, balance, *make_opt)
        torch.set_default_dtype(torch.float32)
        got = _run(got, balance, *make_opt)
    finally:
        torch.set_default_dtype(previous)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("case", sorted(ENTRY_POINTS))
def test_cuda_matches_cpu(case):
    make, balance, *make_opt = ENTRY_POINTS[case]
    want = _run(_build(make), balance, *make_opt)
    got = _run(_build(make, "cuda"), balance, *make_opt)
    for a, b in zip(got, want):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-12)
