"""Encoder-decoder Transformer (Vaswani et al. 2017) whose FFNs are fixed or adaptive (AWNN §C.3).

- Every position-wise FFN is either fixed (`d_model -> dim_feedforward -> d_model`) or an
  AdaptiveMLP(d_model, d_model, num_hidden=1) whose hidden width is learned (AWNN eq. 14).
- Post-norm layers as in Vaswani et al. (the paper's setting); `norm_first` gives pre-norm, which
  adds a final LayerNorm after each stack.
- Sinusoidal positions; embeddings scaled by sqrt(d_model). Source and target have separate
  embeddings; the output projection is tied to the target embedding (Vaswani §3.4). With
  `share_embeddings` (needs a joint vocabulary) all three share one matrix.
- Masks: key padding from `pad_id` on every attention over the source, and on decoder
  self-attention together with the causal mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.activations import make_activation
from models.awnn import AdaptiveMLP


class FixedFFN(nn.Sequential):
    def __init__(self, d_model: int, dim_feedforward: int, activation: str, dropout: float):
        super().__init__(nn.Linear(d_model, dim_feedforward), make_activation(activation),
                         nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model))


def sinusoidal_positions(length: int, d_model: int, device: torch.device) -> torch.Tensor:
    """[length, d_model]: PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(same)."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
                         * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, device=device)
    pe[:, 0::2] = torch.sin(position * inv_freq)
    pe[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
    return pe


class Residual(nn.Module):
    """x + dropout(f(x)) with LayerNorm before f (pre-norm) or after the sum (post-norm)."""

    def __init__(self, d_model: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, ffn: nn.Module, dropout: float,
                 norm_first: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ffn = ffn
        self.attn_block = Residual(d_model, dropout, norm_first)
        self.ffn_block = Residual(d_model, dropout, norm_first)

    def forward(self, x: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        x = self.attn_block(x, lambda h: self.self_attn(
            h, h, h, key_padding_mask=src_pad, need_weights=False)[0])
        return self.ffn_block(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, ffn: nn.Module, dropout: float,
                 norm_first: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout,
                                                batch_first=True)
        self.ffn = ffn
        self.self_block = Residual(d_model, dropout, norm_first)
        self.cross_block = Residual(d_model, dropout, norm_first)
        self.ffn_block = Residual(d_model, dropout, norm_first)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor,
                tgt_pad: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        y = self.self_block(y, lambda h: self.self_attn(
            h, h, h, attn_mask=causal, key_padding_mask=tgt_pad, need_weights=False)[0])
        y = self.cross_block(y, lambda h: self.cross_attn(
            h, memory, memory, key_padding_mask=src_pad, need_weights=False)[0])
        return self.ffn_block(y, self.ffn)


class Seq2SeqTransformer(nn.Module):
    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, pad_id: int,
                 d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.1, adaptive: bool = True, nu0: float = 0.004,
                 activation: str = "relu6", norm_first: bool = False,
                 share_embeddings: bool = False):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model={d_model} must be divisible by nhead={nhead}")
        if d_model % 2:
            raise ValueError(f"d_model={d_model} must be even (sinusoidal positions)")
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError("share_embeddings=true needs src_vocab_size == tgt_vocab_size, got "
                             f"{src_vocab_size} and {tgt_vocab_size}")
        make_activation(activation)  # fails early, naming the allowed activations
        self.pad_id = pad_id
        self.d_model = d_model

        def ffn() -> nn.Module:
            if adaptive:
                return AdaptiveMLP(d_model, d_model, num_hidden=1, nu0=nu0,
                                   activation=activation)
            return FixedFFN(d_model, dim_feedforward, activation, dropout)

        self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model, padding_idx=pad_id)
        self.src_embed = (self.tgt_embed if share_embeddings
                          else nn.Embedding(src_vocab_size, d_model, padding_idx=pad_id))
        self.embed_dropout = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(EncoderLayer(d_model, nhead, ffn(), dropout, norm_first)
                                     for _ in range(num_encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, nhead, ffn(), dropout, norm_first)
                                     for _ in range(num_decoder_layers))
        self.encoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.generator = nn.Linear(d_model, tgt_vocab_size)
        self.generator.weight = self.tgt_embed.weight
        for table in {self.src_embed, self.tgt_embed}:
            nn.init.normal_(table.weight, std=d_model ** -0.5)  # unit scale after * sqrt(d)
            with torch.no_grad():
                table.weight[pad_id].zero_()

    def _embed(self, tokens: torch.Tensor, table: nn.Embedding) -> torch.Tensor:
        positions = sinusoidal_positions(tokens.shape[1], self.d_model, tokens.device)
        return self.embed_dropout(table(tokens) * math.sqrt(self.d_model) + positions)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        src_pad = src == self.pad_id
        x = self._embed(src, self.src_embed)
        for layer in self.encoder:
            x = layer(x, src_pad)
        return self.encoder_norm(x), src_pad

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor,
               src_pad: torch.Tensor) -> torch.Tensor:
        length = tgt_in.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=tgt_in.device).triu(1)
        tgt_pad = tgt_in == self.pad_id
        y = self._embed(tgt_in, self.tgt_embed)
        for layer in self.decoder:
            y = layer(y, memory, causal, tgt_pad, src_pad)
        return self.generator(self.decoder_norm(y))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """src [B, Ls], tgt_in [B, Lt] (starting with BOS) -> logits [B, Lt, V_tgt].

        Splits are padded to their longest sentence (about 3x the mean on Multi30k), so the
        all-padding columns of a batch are cut off first (one host sync) and the logits are
        zero-padded back to Lt: outputs at non-padding positions are unchanged (padded keys are
        masked, the decoder is causal) and padding positions are ignored by the loss.
        """
        src = src[:, :self._content_length(src)]
        length = tgt_in.shape[1]
        tgt_in = tgt_in[:, :self._content_length(tgt_in)]
        memory, src_pad = self.encode(src)
        logits = self.decode(tgt_in, memory, src_pad)
        return nn.functional.pad(logits, (0, 0, 0, length - tgt_in.shape[1]))

    def _content_length(self, tokens: torch.Tensor) -> int:
        """1 + the last column holding a non-padding token (at least 1)."""
        used = (tokens != self.pad_id).any(0).nonzero()
        return int(used.max()) + 1 if len(used) else 1

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, max_len: int, bos_id: int,
                      eos_id: int) -> torch.Tensor:
        """Tokens [B, <= max_len + 1] starting with BOS; positions after EOS hold pad_id.

        Runs in eval mode and restores the previous mode. Checks for "all finished" each step
        (a device sync): meant for qualitative samples, not for the training loop.
        """
        was_training = self.training
        self.eval()
        memory, src_pad = self.encode(src)
        out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
        finished = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            next_token = self.decode(out, memory, src_pad)[:, -1].argmax(-1)
            next_token = next_token.masked_fill(finished, self.pad_id)
            out = torch.cat([out, next_token.unsqueeze(1)], dim=1)
            finished |= next_token == eos_id
            if bool(finished.all()):
                break
        self.train(was_training)
        return out


@dataclass
class Seq2SeqConfig:
    name: str = "seq2seq"
    d_model: int = 512
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048  # fixed FFNs only
    dropout: float = 0.1
    adaptive: bool = True
    nu0: float = 0.004  # AWNN C.3: ~512 starting neurons per FFN
    activation: str = "relu6"
    norm_first: bool = False
    share_embeddings: bool = False


def build(cfg: Seq2SeqConfig, info: dict) -> Seq2SeqTransformer:
    return Seq2SeqTransformer(
        info["src_vocab_size"], info["tgt_vocab_size"], info["pad_id"], d_model=cfg.d_model,
        nhead=cfg.nhead, num_encoder_layers=cfg.num_encoder_layers,
        num_decoder_layers=cfg.num_decoder_layers, dim_feedforward=cfg.dim_feedforward,
        dropout=cfg.dropout, adaptive=cfg.adaptive, nu0=cfg.nu0, activation=cfg.activation,
        norm_first=cfg.norm_first, share_embeddings=cfg.share_embeddings)


REGISTERED = {"seq2seq": ("Seq2SeqConfig", "build")}
