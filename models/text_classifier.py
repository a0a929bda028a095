"""Transformer encoder classifier for IMDB (NB App. A.6: 6 layers, 8 heads, FFN 2048, ReLU).

The FFNs are nn.TransformerEncoderLayer's `linear1`/`linear2`: models.balancing finds them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.seq2seq import sinusoidal_positions


class TransformerClassifier(nn.Module):
    """forward(tokens [B, L] long, right-padded; lengths [B] long) -> logits [B, C].

    Embedding·√d + sinusoidal positions -> post-norm encoder (key padding mask from lengths)
    -> mean over valid tokens -> Linear.
    """

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int, d_model: int = 512,
                 nhead: int = 8, num_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.1):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model={d_model} must be divisible by nhead={nhead}")
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           activation="relu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        pad = torch.arange(length, device=tokens.device)[None, :] >= lengths.to(tokens.device)[:, None]
        x = self.embedding(tokens) * math.sqrt(self.d_model)
        x = x + sinusoidal_positions(length, self.d_model, tokens.device).to(x.dtype)
        x = self.encoder(self.dropout(x), src_key_padding_mask=pad)
        valid = (~pad).to(x.dtype)[..., None]
        pooled = (x * valid).sum(1) / valid.sum(1).clamp_min(1.0)
        return self.classifier(self.dropout(pooled))


@dataclass
class TransformerClassifierConfig:
    name: str = "transformer_cls"
    d_model: int = 512
    nhead: int = 8
    num_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1


def build(cfg: TransformerClassifierConfig, info: dict) -> TransformerClassifier:
    return TransformerClassifier(info["vocab_size"], info["num_classes"], info["pad_id"],
                                 cfg.d_model, cfg.nhead, cfg.num_layers, cfg.dim_feedforward,
                                 cfg.dropout)


REGISTERED = {"transformer_cls": ("TransformerClassifierConfig", "build")}
