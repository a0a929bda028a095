"""Recurrent IMDB classifiers (NB §3, App. A.5): embedding -> stacked RNN -> readout.

- `ReLURNNClassifier`: our model, a stacked Elman RNN with ReLU (BiLU), so NB balancing is
  function-preserving (SPEC A.1). Read at the last token, it fits the training reviews from
  their last words and stays at chance on test (gradients vanish within ~30 tokens); a
  mean- or max-pooled readout learns (IMDB, 20% of the data, 128 tokens: 75% after 3 epochs).
  Pooling over time commutes with the positive per-unit scalings of balancing, so balancing
  stays function-preserving. `recurrent_init="identity"` (IRNN, Le et al. 2015) or
  "orthogonal" are offered too.
- `LSTMClassifier`: the authors' Table 2 model (their "RNN" is an nn.LSTM; code: embedding 100,
  hidden 256, readout on the last two layers' final states). Its "balancing"
  (models.lstm_balance) is NOT function-preserving (SPEC A.2.5).

Inputs: tokens [B, L] long, right-padded; lengths [B] long (>= 1). Both models are causal and
read position length - 1 (or pool over positions < length), so padding never matters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

RNN_ACTIVATIONS = ("relu", "tanh")   # what nn.RNN offers; balancing accepts relu only
RECURRENT_INITS = ("default", "identity", "orthogonal")
RNN_READOUTS = ("last", "mean", "max")
LSTM_READOUTS = ("last", "last_two")


def _check(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not allowed; allowed: {list(allowed)}")


def _check_lengths(lengths: torch.Tensor) -> None:
    if lengths.min() < 1:
        raise ValueError(f"lengths must be >= 1, got min {lengths.min().item()}")


def trim(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding columns at the right of a batch (one host sync; saves the steps)."""
    return tokens[:, :int(lengths.max())]


@torch.no_grad()
def init_recurrent(rnn: nn.RNNBase, how: str, gain: float) -> None:
    """W_hh of every layer: PyTorch's default, gain·I (IRNN, Le et al. 2015) or gain·orthogonal.

    IRNN also zeroes the biases, so that a unit starts by carrying its state forward unchanged.
    """
    _check("model.recurrent_init", how, RECURRENT_INITS)
    if how == "default":
        return
    for k in range(rnn.num_layers):
        w_hh = getattr(rnn, f"weight_hh_l{k}")
        if how == "identity":
            w_hh.copy_(gain * torch.eye(w_hh.shape[0], dtype=w_hh.dtype, device=w_hh.device))
            if rnn.bias:
                getattr(rnn, f"bias_ih_l{k}").zero_()
                getattr(rnn, f"bias_hh_l{k}").zero_()
        else:
            nn.init.orthogonal_(w_hh, gain)


def pool(out: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """[B, L, H] outputs -> [B, H]: the state at length - 1, or the mean / max over valid steps."""
    lengths = lengths.to(out.device)
    if how == "last":
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return out.gather(1, last).squeeze(1)
    valid = (torch.arange(out.shape[1], device=out.device)[None, :] < lengths[:, None])[..., None]
    if how == "mean":
        return (out * valid).sum(1) / lengths[:, None].to(out.dtype)
    return out.masked_fill(~valid, float("-inf")).amax(1)


class ReLURNNClassifier(nn.Module):
    """forward(tokens [B, L], lengths [B]) -> logits [B, C]; see the module docstring."""

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int, embed_dim: int = 128,
                 hidden: int = 128, num_layers: int = 3, activation: str = "relu",
                 dropout: float = 0.0, recurrent_init: str = "default",
                 recurrent_gain: float = 1.0, readout: str = "last"):
        super().__init__()
        _check("model.activation", activation, RNN_ACTIVATIONS)
        _check("model.readout", readout, RNN_READOUTS)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.RNN(embed_dim, hidden, num_layers=num_layers, nonlinearity=activation,
                          batch_first=True, dropout=dropout)
        init_recurrent(self.rnn, recurrent_init, recurrent_gain)
        self.pool = readout
        self.readout = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _check_lengths(lengths)
        out, _ = self.rnn(self.embedding(trim(tokens, lengths)))      # [B, L, H]
        return self.readout(pool(out, lengths, self.pool))

    def unit_groups(self, include_bias: bool = True, allow_non_homogeneous: bool = False) -> list:
        """The balanceable hidden layers (models.balancing): each recurrent layer (SPEC A.1)."""
        from models.balancing.groups import rnn_groups

        return rnn_groups(self.rnn, self.readout, include_bias, allow_non_homogeneous)


class LSTMClassifier(nn.Module):
    """The authors' Table 2 model: embedding -> stacked unidirectional LSTM -> Linear.

    `readout="last_two"` concatenates the final states of the top two layers, as the authors'
    code does (`cat(hidden[-2], hidden[-1])` of a unidirectional LSTM); "last" reads the top one.
    The layers are single-layer nn.LSTMs run on the padded batch, each read at length - 1
    (exact, since an LSTM is causal): packing the sequences instead is ~10x slower on a CPU.
    """

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int, embed_dim: int = 100,
                 hidden: int = 256, num_layers: int = 3, dropout: float = 0.0,
                 readout: str = "last_two"):
        super().__init__()
        _check("model.readout", readout, LSTM_READOUTS)
        if readout == "last_two" and num_layers < 2:
            raise ValueError(f"model.readout='last_two' needs num_layers >= 2, got {num_layers}")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.layers = nn.ModuleList(nn.LSTM(embed_dim if k == 0 else hidden, hidden,
                                            batch_first=True) for k in range(num_layers))
        self.dropout = nn.Dropout(dropout)   # between layers, as nn.LSTM(dropout=...) does
        self.pool = readout
        self.readout = nn.Linear(hidden * (2 if readout == "last_two" else 1), num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _check_lengths(lengths)
        x = self.embedding(trim(tokens, lengths))
        finals = []
        for k, layer in enumerate(self.layers):
            x, _ = layer(self.dropout(x) if k else x)
            finals.append(pool(x, lengths, "last"))
        return self.readout(torch.cat(finals[-2:], 1) if self.pool == "last_two" else finals[-1])


@dataclass
class RNNConfig:
    name: str = "rnn"
    embed_dim: int = 128
    hidden: int = 128
    num_layers: int = 3
    activation: str = "relu"
    dropout: float = 0.0
    recurrent_init: str = "default"   # default | identity (IRNN) | orthogonal
    recurrent_gain: float = 1.0
    readout: str = "mean"             # mean | max (pooling over time) | last (state at the end)


@dataclass
class LSTMConfig:
    name: str = "lstm"
    embed_dim: int = 100
    hidden: int = 256
    num_layers: int = 3
    dropout: float = 0.0
    readout: str = "last_two"         # last_two (authors' code) | last


def build(cfg: RNNConfig, info: dict) -> ReLURNNClassifier:
    return ReLURNNClassifier(info["vocab_size"], info["num_classes"], info["pad_id"],
                             cfg.embed_dim, cfg.hidden, cfg.num_layers, cfg.activation, cfg.dropout,
                             cfg.recurrent_init, cfg.recurrent_gain, cfg.readout)


def build_lstm(cfg: LSTMConfig, info: dict) -> LSTMClassifier:
    return LSTMClassifier(info["vocab_size"], info["num_classes"], info["pad_id"], cfg.embed_dim,
                          cfg.hidden, cfg.num_layers, cfg.dropout, cfg.readout)


REGISTERED = {"rnn": ("RNNConfig", "build"), "lstm": ("LSTMConfig", "build_lstm")}
