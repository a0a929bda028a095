"""The authors' LSTM "balancing" (models/lstm_balance.py, SPEC A.2.5) and its regime hook."""
from __future__ import annotations

import copy

import pytest
import torch

from experiments.regimes.base import RunContext
from experiments.regimes.balance import FullBalanceAtStart, PartialBalancing
from models import lstm_balance
from models.rnn import LSTMClassifier


def lstm(seed=0, layers=3):
    torch.manual_seed(seed)
    model = LSTMClassifier(30, 2, 0, embed_dim=5, hidden=4, num_layers=layers).double()
    with torch.no_grad():   # uneven row scales, so that every λ differs from 1
        for layer in model.layers:
            layer.weight_ih_l0.mul_(torch.rand(16, 1, dtype=torch.float64) * 3)
    return model


def authors_reference(model, order):
    """The authors' code, row by row: λ = sqrt(‖W_hh[r]‖_p / ‖W_ih[r]‖_p); W_ih[r] *= λ, W_hh[r] /= λ."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for layer in out.layers:
            w_ih, w_hh = layer.weight_ih_l0, layer.weight_hh_l0
            for r in range(w_ih.shape[0]):
                lam = torch.sqrt(torch.linalg.vector_norm(w_hh[r], order)
                                 / torch.linalg.vector_norm(w_ih[r], order))
                w_ih[r] *= lam
                w_hh[r] /= lam
    return out


def batch():
    torch.manual_seed(1)
    return torch.randint(1, 30, (4, 7)), torch.tensor([7, 3, 5, 1])


@pytest.mark.parametrize("p", [1, 2])
def test_matches_authors_row_formula_and_balances_every_row(p):
    model = lstm()
    ref = authors_reference(model, p)
    result = lstm_balance.balance_lstm(model, p)
    for (name, got), want in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(got, want, msg=name)
    for a, b in lstm_balance.row_costs(model, p):
        torch.testing.assert_close(a, b)                          # A_r' = B_r'
    assert result.max_log_imbalance < 1e-9 < result.max_log_imbalance_before
    assert result.cost_after < result.cost_before                  # NB eq. 6: the cost drops


def test_is_not_function_preserving_and_leaves_biases_and_is_idempotent():
    model = lstm()
    tokens, lengths = batch()
    before = model(tokens, lengths).detach()
    biases = {n: q.clone() for n, q in model.named_parameters() if "bias" in n}
    lstm_balance.balance_lstm(model, 2)
    assert not torch.allclose(model(tokens, lengths), before, atol=1e-4)
    assert lstm_balance.FUNCTION_PRESERVING is False
    for n, q in model.named_parameters():
        if "bias" in n:
            torch.testing.assert_close(q, biases[n])
    once = [q.clone() for q in model.parameters()]
    lstm_balance.balance_lstm(model, 2)                            # one pass is exact
    for q, q1 in zip(model.parameters(), once):
        torch.testing.assert_close(q, q1)


def test_scales_describe_the_change_and_dead_rows_are_skipped():
    model = lstm(layers=2)
    with torch.no_grad():
        model.layers[1].weight_ih_l0[3].zero_()
    old = {q: q.clone() for q in model.parameters()}
    result = lstm_balance.balance_lstm(model, 1)
    assert all(torch.isfinite(q).all() for q in model.parameters())
    w_hh = model.layers[1].weight_hh_l0
    torch.testing.assert_close(w_hh[3], old[w_hh][3])
    for q, s in result.param_scales().items():
        torch.testing.assert_close(q, old[q] * s)


def ctx_for(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    return RunContext(model=model, optimizer=opt, data=None, cfg=None, device=torch.device("cpu"))


def test_regimes_refuse_lstm_unless_allowed():
    for regime in (FullBalanceAtStart(p=2), PartialBalancing(p=2)):
        with pytest.raises(ValueError, match="NOT function-preserving.*allow_non_homogeneous=true"):
            regime.before_training(ctx_for(lstm()))


def test_regimes_apply_authors_operation_and_mark_it():
    model, ref = lstm(), lstm()
    ctx = ctx_for(model)
    start = FullBalanceAtStart(p=2, allow_non_homogeneous=True)
    start.before_training(ctx)
    lstm_balance.balance_lstm(ref, 2)
    for got, want in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(got, want)
    assert start.on_epoch_end(ctx, 0)["start/balance/function_preserving"] == 0.0

    tokens, lengths = batch()
    torch.nn.functional.cross_entropy(model(tokens, lengths), torch.tensor([0, 1, 1, 0])).backward()
    ctx.optimizer.step()
    with torch.no_grad():   # unbalance again, then one epoch-end balance
        model.layers[0].weight_ih_l0.mul_(2.0)
    w = model.layers[0].weight_ih_l0
    w_before, m_before = w.detach().clone(), ctx.optimizer.state[w]["exp_avg"].clone()
    partial = PartialBalancing(p=2, allow_non_homogeneous=True)
    partial.before_training(ctx)
    metrics = partial.on_epoch_end(ctx, 0)
    assert metrics["balance/function_preserving"] == 0.0
    assert metrics["balance/max_log_imbalance"] < 1e-9
    # the Adam state is rescaled as for every balancing regime: exp_avg / s, s = w_after / w_before
    torch.testing.assert_close(ctx.optimizer.state[w]["exp_avg"], m_before * w_before / w.detach())


def test_regime_marks_function_preserving_balancing_with_one():
    from models.rnn import ReLURNNClassifier

    model = ReLURNNClassifier(20, 2, 0, embed_dim=4, hidden=5, num_layers=2)
    ctx = ctx_for(model)
    regime = FullBalanceAtStart(p=2)
    regime.before_training(ctx)
    assert regime.on_epoch_end(ctx, 0)["start/balance/function_preserving"] == 1.0


def test_a_multi_layer_nn_lstm_is_balanced_layer_by_layer():
    torch.manual_seed(0)
    module = torch.nn.LSTM(5, 4, num_layers=2).double()
    rows = {k: (getattr(module, f"weight_ih_l{k}").detach().clone(),
                getattr(module, f"weight_hh_l{k}").detach().clone()) for k in range(2)}
    lstm_balance.balance_lstm(module, 1)
    for k, (w_ih, w_hh) in rows.items():
        lam = (w_hh.abs().sum(1) / w_ih.abs().sum(1)).sqrt()[:, None]    # (B/A)^(1/2), p = 1
        torch.testing.assert_close(getattr(module, f"weight_ih_l{k}"), w_ih * lam)
        torch.testing.assert_close(getattr(module, f"weight_hh_l{k}"), w_hh / lam)
