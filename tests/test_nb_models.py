"""NB models: ReLU RNN, Transformer classifier, DFA net (NB §3, App. A.5-A.7)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from models import balancing as nb
from models import build_model, validate_model_config
from models.dfa import DFANet
from models import lstm_balance
from models.rnn import LSTMClassifier, ReLURNNClassifier
from models.text_classifier import TransformerClassifier

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
INFO = {"vocab_size": 30, "num_classes": 2, "pad_id": 0, "in_features": 12}


def hand_written_dfa_grads(model: DFANet, x, y):
    """Nøkland 2016: δ_l = (e B_l) ⊙ f'(a_l), ∂W_l = δ_lᵀ h_{l-1}; output layer as in backprop."""
    hs, pre = [x], []
    for lin in model.linears[:-1]:
        pre.append(lin(hs[-1]).detach())
        hs.append(torch.relu(pre[-1]))
    logits = model.linears[-1](hs[-1]).detach().requires_grad_(True)
    torch.nn.functional.cross_entropy(logits, y).backward()
    e = logits.grad
    grads = []
    for k in range(len(model.linears) - 1):
        delta = (e @ model.feedback(k)) * (pre[k] > 0)
        grads += [delta.T @ hs[k], delta.sum(0)]
    grads += [e.T @ hs[-1], e.sum(0)]
    return grads


def test_dfa_backward_equals_hand_written_update():
    torch.manual_seed(0)
    model = DFANet(12, [9, 8, 7], 4, feedback_seed=3).double()
    x, y = torch.randn(6, 12, dtype=torch.float64), torch.randint(0, 4, (6,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    got = [q.grad for q in model.parameters()]
    for g, want in zip(got, hand_written_dfa_grads(model, x, y)):
        torch.testing.assert_close(g, want)
    # and it is not backprop: layer 0's gradient differs from the true gradient
    bp = copy.deepcopy(model)
    h = x
    for lin in bp.linears[:-1]:
        h = torch.relu(lin(h))
    torch.nn.functional.cross_entropy(bp.linears[-1](h), y).backward()
    assert not torch.allclose(bp.linears[0].weight.grad, got[0])


def test_dfa_trains_with_ordinary_loop_and_feedback_is_seeded_and_fixed():
    torch.manual_seed(0)
    a, b = DFANet(12, [16, 16], 3, feedback_seed=7), DFANet(12, [16, 16], 3, feedback_seed=7)
    torch.testing.assert_close(a.feedback(1), b.feedback(1))
    assert not torch.equal(a.feedback(0), DFANet(12, [16, 16], 3, feedback_seed=8).feedback(0))
    assert all(not q.requires_grad for q in a.buffers())
    fb = a.feedback(0).clone()
    x = torch.randn(64, 12)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    opt = torch.optim.SGD(a.parameters(), lr=0.3)
    losses = []
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(a(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    torch.testing.assert_close(a.feedback(0), fb)


def test_dfa_balancing_preserves_outputs_and_leaves_feedback():
    torch.manual_seed(0)
    model = DFANet(12, [10, 10, 10], 4).double()
    x = torch.randn(5, 12, dtype=torch.float64)
    y0 = model(x).detach()
    fb = [model.feedback(k).clone() for k in range(3)]
    nb.full_balance(model, 1)
    torch.testing.assert_close(model(x).detach(), y0)
    for k in range(3):
        torch.testing.assert_close(model.feedback(k), fb[k])


def test_dfa_backward_without_logits_error_is_a_clear_error():
    from models.dfa import _DirectFeedback, _ErrorSlot

    model = DFANet(4, [5], 2)
    h = _DirectFeedback.apply(torch.relu(model.linears[0](torch.randn(3, 4))), model.feedback(0),
                              _ErrorSlot())
    with pytest.raises(RuntimeError, match="dL/dlogits"):
        h.sum().backward()


@pytest.mark.parametrize("make", [
    lambda: ReLURNNClassifier(30, 2, 0, embed_dim=6, hidden=5, num_layers=3),
    lambda: ReLURNNClassifier(30, 2, 0, 6, 5, 2, recurrent_init="identity", readout="mean"),
    lambda: ReLURNNClassifier(30, 2, 0, 6, 5, 2, recurrent_init="orthogonal", readout="max"),
    lambda: LSTMClassifier(30, 2, 0, embed_dim=6, hidden=5, num_layers=3),
    lambda: TransformerClassifier(30, 2, 0, d_model=8, nhead=2, num_layers=2,
                                  dim_feedforward=16, dropout=0.0).eval(),
], ids=["rnn", "irnn_mean", "orthogonal_max", "lstm", "transformer"])
def test_text_models_shapes_and_padding_invariance(make):
    torch.manual_seed(0)
    model = make()
    tokens = torch.randint(1, 30, (3, 5))
    lengths = torch.tensor([5, 2, 3])
    out = model(tokens, lengths)
    assert out.shape == (3, 2)
    padded = torch.cat([tokens, torch.zeros(3, 4, dtype=torch.long)], 1)
    for i, n in enumerate(lengths.tolist()):
        padded[i, n:] = 0
        tokens_garbage = padded.clone()
        tokens_garbage[i, n:] = 7          # what sits after the end must not matter
        torch.testing.assert_close(model(tokens_garbage, lengths)[i], out[i], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(padded, lengths), out, rtol=1e-5, atol=1e-6)


def test_rnn_reads_position_length_minus_one():
    torch.manual_seed(0)
    model = ReLURNNClassifier(30, 2, 0, 6, 5, 3)
    tokens = torch.randint(1, 30, (2, 6))
    full = model(tokens, torch.tensor([6, 6]))
    short = model(tokens[:, :4], torch.tensor([4, 4]))
    torch.testing.assert_close(model(tokens, torch.tensor([4, 6])), torch.stack([short[0], full[1]]))


def one_by_one(model, tokens, lengths):
    """Each sequence alone, unpadded: the reference for batched, padded forwards."""
    return torch.cat([model(tokens[i:i + 1, :n], lengths[i:i + 1]) for i, n in
                      enumerate(lengths.tolist())])


@pytest.mark.parametrize("readout", ["mean", "max"])
def test_rnn_pooled_readout_equals_pooling_by_hand(readout):
    torch.manual_seed(0)
    model = ReLURNNClassifier(30, 2, 0, 6, 5, 2, readout=readout).double()
    tokens, lengths = torch.randint(1, 30, (3, 6)), torch.tensor([6, 2, 4])
    want = []
    for i, n in enumerate(lengths.tolist()):
        out, _ = model.rnn(model.embedding(tokens[i:i + 1, :n]))
        h = out[0].mean(0) if readout == "mean" else out[0].max(0).values
        want.append(model.readout(h))
    torch.testing.assert_close(model(tokens, lengths), torch.stack(want))
    torch.testing.assert_close(model(tokens, lengths), one_by_one(model, tokens, lengths))


@pytest.mark.parametrize("readout", ["last", "last_two"])
def test_lstm_packed_batch_equals_each_sequence_alone(readout):
    torch.manual_seed(0)
    model = LSTMClassifier(30, 2, 0, embed_dim=6, hidden=5, num_layers=3, readout=readout).double()
    tokens, lengths = torch.randint(1, 30, (4, 7)), torch.tensor([7, 1, 4, 6])
    torch.testing.assert_close(model(tokens, lengths), one_by_one(model, tokens, lengths))
    # the top two layers' final states, by hand: one nn.LSTM with the same weights, one sequence
    stacked = torch.nn.LSTM(6, 5, num_layers=3, batch_first=True).double()
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            for name, q in layer.named_parameters():
                getattr(stacked, name.replace("l0", f"l{k}")).copy_(q)
    _, (h, _) = stacked(model.embedding(tokens[2:3, :4]))
    feat = torch.cat([h[-2], h[-1]], 1) if readout == "last_two" else h[-1]
    torch.testing.assert_close(model(tokens, lengths)[2:3], model.readout(feat))


def test_recurrent_inits():
    model = ReLURNNClassifier(30, 2, 0, 6, 5, 3, recurrent_init="identity", recurrent_gain=0.5)
    for k in range(3):
        torch.testing.assert_close(getattr(model.rnn, f"weight_hh_l{k}"), 0.5 * torch.eye(5))
        assert not getattr(model.rnn, f"bias_hh_l{k}").any()
        assert not getattr(model.rnn, f"bias_ih_l{k}").any()
    model = ReLURNNClassifier(30, 2, 0, 6, 5, 2, recurrent_init="orthogonal", recurrent_gain=2.0)
    w = model.rnn.weight_hh_l1.detach()
    torch.testing.assert_close(w @ w.T, 4.0 * torch.eye(5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("readout", ["last", "mean", "max"])
def test_balancing_the_relu_rnn_preserves_outputs_for_every_readout(readout):
    torch.manual_seed(0)
    model = ReLURNNClassifier(30, 2, 0, 6, 5, 3, recurrent_init="identity",
                              readout=readout).double()
    with torch.no_grad():
        for q in model.parameters():
            q.add_(0.3 * torch.randn_like(q))   # off the init, so that balancing moves weights
    tokens, lengths = torch.randint(1, 30, (3, 6)), torch.tensor([6, 2, 4])
    before = model(tokens, lengths).detach()
    result = nb.full_balance(model, 1)
    assert result.cost_after < result.cost_before
    torch.testing.assert_close(model(tokens, lengths), before)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="activation='gelu'.*allowed"):
        ReLURNNClassifier(30, 2, 0, activation="gelu")
    with pytest.raises(ValueError, match="recurrent_init='zeros'.*allowed"):
        ReLURNNClassifier(30, 2, 0, recurrent_init="zeros")
    with pytest.raises(ValueError, match="readout='first'.*allowed"):
        ReLURNNClassifier(30, 2, 0, readout="first")
    with pytest.raises(ValueError, match="readout='mean'.*allowed"):
        LSTMClassifier(30, 2, 0, readout="mean")
    with pytest.raises(ValueError, match="last_two' needs num_layers >= 2"):
        LSTMClassifier(30, 2, 0, num_layers=1)
    with pytest.raises(ValueError, match="d_model=10 must be divisible by nhead=4"):
        TransformerClassifier(30, 2, 0, d_model=10, nhead=4)
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        ReLURNNClassifier(30, 2, 0, 4, 4, 1)(torch.ones(1, 3, dtype=torch.long), torch.tensor([0]))


@pytest.mark.parametrize("name", ["rnn", "lstm", "transformer_cls", "dfa_fcn"])
def test_model_yaml_matches_schema_and_builds(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert cfg.name == name
    cfg = validate_model_config(cfg)
    small = {"rnn": {"hidden": 8, "embed_dim": 4}, "lstm": {"hidden": 8, "embed_dim": 4},
             "transformer_cls": {"d_model": 16, "dim_feedforward": 32, "num_layers": 2},
             "dfa_fcn": {"widths": [8, 8]}}[name]
    model = build_model(OmegaConf.merge(cfg, small), INFO)
    if name == "lstm":   # only the authors' (not function-preserving) operation applies
        assert lstm_balance.find_lstms(model)
        with pytest.raises((TypeError, ValueError), match="does not support|not an Elman"):
            nb.unit_groups(model)
    else:
        assert nb.unit_groups(model)   # every other NB model is balanceable
    if name == "dfa_fcn":
        assert list(OmegaConf.load(CONF / "dfa_fcn.yaml").widths) == [800, 800]
        assert model(torch.randn(2, 12)).shape == (2, 2)
    else:
        assert model(torch.randint(1, 30, (2, 4)), torch.tensor([4, 2])).shape == (2, 2)


def _dfa_grads(model, x, y):
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return [lin.weight.grad.clone() for lin in model.linears]


@pytest.mark.parametrize("transform", ["fixed", "covariant"])
def test_dfa_update_under_balancing_fixed_vs_covariant_feedback(transform):
    """Balancing W_l -> Λ_l W_l Λ_{l-1}^{-1}: backprop gradients become Λ_l^{-1} g Λ_{l-1}.
    With covariant feedback (B_l -> B_l Λ_l^{-1}) the DFA update does the same; with fixed
    feedback it becomes g Λ_{l-1} instead (δ_l unchanged)."""
    torch.manual_seed(0)
    model = DFANet(12, [9, 8, 7], 4, feedback_seed=3, feedback_transform=transform).double()
    with torch.no_grad():
        model.linears[1].weight.mul_(5.0)      # imbalanced, so λ differs from 1
    x, y = torch.randn(16, 12, dtype=torch.float64), torch.randint(0, 4, (16,))
    before, out = _dfa_grads(model, x, y), model(x).detach()
    result = nb.full_balance(model, 2)
    model.after_balancing(result.log_scales)
    torch.testing.assert_close(model(x).detach(), out)
    after = _dfa_grads(model, x, y)
    lam = [torch.ones(12, dtype=torch.float64)] + [u.exp() for u in result.log_scales] \
        + [torch.ones(4, dtype=torch.float64)]
    for k, (g0, g1) in enumerate(zip(before, after)):
        covariant = g0 * lam[k][None, :] / lam[k + 1][:, None]
        if transform == "covariant" or k == len(before) - 1:   # the output layer is backprop
            torch.testing.assert_close(g1, covariant)
        else:
            torch.testing.assert_close(g1, g0 * lam[k][None, :])
            assert not torch.allclose(g1, covariant)


def test_balancing_regime_calls_the_dfa_feedback_hook():
    from experiments.regimes.balance import PartialBalancing
    from experiments.regimes.base import RunContext

    torch.manual_seed(0)
    model = DFANet(12, [9, 8], 4, feedback_transform="covariant")
    with torch.no_grad():
        model.linears[0].weight.mul_(4.0)
    fb = model.feedback(0).clone()
    opt = torch.optim.Adam(model.parameters())
    ctx = RunContext(model=model, optimizer=opt, data=None, cfg=None, device=torch.device("cpu"))
    regime = PartialBalancing(p=2)
    regime.before_training(ctx)
    w = model.linears[0].weight.detach().clone()
    regime.on_epoch_end(ctx, 0)
    lam = (model.linears[0].weight.detach() / w)[:, 0]          # λ of hidden layer 0's units
    torch.testing.assert_close(model.feedback(0), fb / lam[None, :])
    with pytest.raises(ValueError, match="feedback_transform='mirror'.*covariant"):
        DFANet(12, [9], 4, feedback_transform="mirror")
