"""What a balancing call reports."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.balancing.groups import UnitGroup
from models.balancing.scaling import param_scales


@dataclass
class BalanceResult:
    method: str
    sweeps: int                   # layer-wise sweeps performed (0 for the direct solver)
    newton_steps: int             # Newton iterations (direct solver only)
    converged: bool
    max_log_imbalance: float      # max over live neurons of |log(A_i / B_i)|
    cost_before: float
    cost_after: float
    log_scales: list[torch.Tensor] = field(repr=False)   # cumulative log λ per group
    groups: list[UnitGroup] = field(repr=False)

    def param_scales(self) -> dict[nn.Parameter, torch.Tensor]:
        """Elementwise factor each balanced parameter was multiplied by (for optimiser state)."""
        return param_scales(self.groups, self.log_scales)
