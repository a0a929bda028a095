"""L1 / L2 weight penalties (NB §3: coefficient 1e-5 in the paper's column headers)."""
from __future__ import annotations

import torch

from experiments.regimes.base import Regime, RunContext
from models.stacked import member_weight_penalty, weight_matrices


class Penalty(Regime):
    """coeff * Σ|w|^p over weight matrices (biases excluded, as is usual for weight decay)."""

    def __init__(self, p: int, coeff: float):
        if p not in (1, 2):
            raise ValueError(f"regime.penalty p={p}: allowed 1 (l1) or 2 (l2)")
        self.p, self.coeff = p, coeff
        self.name = f"l{p}"

    def penalty(self, ctx: RunContext) -> torch.Tensor:
        if hasattr(ctx.model, "members"):      # a stack: the sum of its members' penalties
            return member_weight_penalty(ctx.model, self.p, self.coeff)
        # Parameters are re-read every step: AWNN may replace them when a layer resizes.
        weights = weight_matrices(ctx.model)
        if self.p == 1:
            return self.coeff * sum(w.abs().sum() for w in weights)
        return self.coeff * sum(w.pow(2).sum() for w in weights)
