"""The NB authors' LSTM "balancing" (NB App. A.5, Table 2; SPEC A.2.5): NOT function-preserving.

Their "RNN" is an nn.LSTM. For every layer and every gate row r (4H rows: input, forget, cell,
output gates) their code sets, with A_r = Σ_j |W_ih[r, j]|^p and B_r = Σ_j |W_hh[r, j]|^p,

    λ_r = (B_r / A_r)^(1/(2p)),   W_ih[r, :] *= λ_r,   W_hh[r, :] /= λ_r

(in their code: sqrt(‖W_hh[r]‖_p / ‖W_ih[r]‖_p), the same λ). Both matrices feed the same gate
pre-activation, i.e. both are *incoming* weights: the operation changes the pre-activation
W_ih x + W_hh h to λ W_ih x + W_hh h / λ, which is outside the theory (no homogeneous unit is
rescaled), so it changes the network function. Biases are left alone, as in their code.

Each row's λ depends on that row only, so one pass reaches A_r' = B_r' exactly: partial and
full balance are the same operation. The authors' full balance at start loops until the mean λ
is within 1% of 1, which stops after the second (no-op) pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# A row whose input or recurrent cost is below this is left unscaled (no 0/0, SPEC A.2.2).
ZERO_COST = 1e-30
FUNCTION_PRESERVING = False


@dataclass
class LSTMBalanceResult:
    cost_before: float            # Σ |W_ih|^p + |W_hh|^p over all layers
    cost_after: float
    max_log_imbalance: float      # after: max over live rows of |log(A_r / B_r)| (0 up to rounding)
    max_log_imbalance_before: float
    scales: dict[nn.Parameter, torch.Tensor]   # elementwise factor each weight was multiplied by

    def param_scales(self) -> dict[nn.Parameter, torch.Tensor]:
        return self.scales


def find_lstms(model: nn.Module) -> list[nn.LSTM]:
    """The model's nn.LSTM modules (a stacked LSTM may be one module or one per layer)."""
    return [m for m in model.modules() if isinstance(m, nn.LSTM)]


def _weights(model: nn.Module) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """(W_ih, W_hh) of every LSTM layer of the model, bottom to top."""
    out = []
    for lstm in find_lstms(model):
        if lstm.bidirectional or lstm.proj_size:
            raise ValueError("the authors' LSTM balancing is defined for a unidirectional "
                             "nn.LSTM without projection")
        out += [(getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}"))
                for k in range(lstm.num_layers)]
    return out


def _row_costs(w: torch.Tensor, p: float) -> torch.Tensor:
    return w.detach().to(torch.float64).abs().pow(p).sum(1)


def row_costs(model: nn.Module, p: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per LSTM layer: (A_r, B_r) = (Σ|W_ih[r]|^p, Σ|W_hh[r]|^p) for the 4H gate rows, float64."""
    return [(_row_costs(w_ih, p), _row_costs(w_hh, p)) for w_ih, w_hh in _weights(model)]


def _max_log_imbalance(costs) -> float:
    worst = 0.0
    for a, b in costs:
        live = (a > ZERO_COST) & (b > ZERO_COST)
        if live.any():
            worst = max(worst, (a[live].log() - b[live].log()).abs().max().item())
    return worst


@torch.no_grad()
def balance_lstm(model: nn.Module, p: float) -> LSTMBalanceResult:
    """Apply the authors' operation to every LSTM layer of the model (see module docstring)."""
    if not p > 0:
        raise ValueError(f"p={p!r}: the Lp cost needs p > 0")
    if not find_lstms(model):
        raise TypeError(f"{type(model).__name__} has no nn.LSTM to balance")
    costs = row_costs(model, p)
    before = sum(float(a.sum() + b.sum()) for a, b in costs)
    imbalance_before = _max_log_imbalance(costs)
    scales = {}
    for (w_ih, w_hh), (a, b) in zip(_weights(model), costs):
        live = (a > ZERO_COST) & (b > ZERO_COST)
        log_lam = torch.where(live, (b.clamp_min(ZERO_COST).log() - a.clamp_min(ZERO_COST).log())
                              / (2 * p), torch.zeros_like(a))          # NB eq. 5 form
        lam = log_lam.exp().to(device=w_ih.device, dtype=w_ih.dtype)[:, None]
        w_ih.mul_(lam)
        w_hh.div_(lam)
        scales[w_ih] = lam.expand_as(w_ih).clone()
        scales[w_hh] = (1.0 / lam).expand_as(w_hh).clone()
    after = row_costs(model, p)
    return LSTMBalanceResult(before, sum(float(a.sum() + b.sum()) for a, b in after),
                             _max_log_imbalance(after), imbalance_before, scales)
