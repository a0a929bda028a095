"""3-layer Elman RNN with ReLU for IMDB (NB §3, App. A.5): embedding -> RNN -> readout."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

RNN_ACTIVATIONS = ("relu", "tanh")   # what nn.RNN offers; balancing accepts relu only


class ReLURNNClassifier(nn.Module):
    """forward(tokens [B, L] long, right-padded; lengths [B] long) -> logits [B, C].

    The top layer's output is read at position length - 1; the RNN is causal, so padding after
    the end of a sequence does not affect it.
    """

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int, embed_dim: int = 128,
                 hidden: int = 128, num_layers: int = 3, activation: str = "relu",
                 dropout: float = 0.0):
        super().__init__()
        if activation not in RNN_ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not offered by nn.RNN; "
                             f"allowed: {RNN_ACTIVATIONS}")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.RNN(embed_dim, hidden, num_layers=num_layers, nonlinearity=activation,
                          batch_first=True, dropout=dropout)
        self.readout = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if lengths.min() < 1:
            raise ValueError(f"lengths must be >= 1, got min {lengths.min().item()}")
        out, _ = self.rnn(self.embedding(tokens))                      # [B, L, H]
        last = (lengths - 1).to(out.device).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return self.readout(out.gather(1, last).squeeze(1))


@dataclass
class RNNConfig:
    name: str = "rnn"
    embed_dim: int = 128
    hidden: int = 128
    num_layers: int = 3
    activation: str = "relu"
    dropout: float = 0.0


def build(cfg: RNNConfig, info: dict) -> ReLURNNClassifier:
    return ReLURNNClassifier(info["vocab_size"], info["num_classes"], info["pad_id"],
                             cfg.embed_dim, cfg.hidden, cfg.num_layers, cfg.activation, cfg.dropout)
