"""Optimiser state after a balancing step (SPEC A.2.4)."""
from __future__ import annotations

import torch
from torch import nn

# How each optimiser state entry transforms when its parameter is multiplied elementwise by s.
# Momentum buffer (SGD, RMSprop): the pending displacement, scaled like the weights, so a
# zero-gradient momentum step after balancing is the balanced image of the step before.
# Adam moments: rescaled as gradients transform (g -> g / s for a function-preserving
# rescaling): exp_avg / s, exp_avg_sq / s², i.e. the state Adam would hold had every past
# gradient been taken at the balanced weights.
_STATE_POWER = {"momentum_buffer": 1, "exp_avg": -1, "exp_avg_sq": -2, "max_exp_avg_sq": -2}
_STATE_IGNORED = {"step"}


@torch.no_grad()
def rescale_optimizer_state(optimizer: torch.optim.Optimizer,
                            scales: dict[nn.Parameter, torch.Tensor]) -> None:
    """Transform optimiser state after `param <- scales[param] * param` (see _STATE_POWER);
    elementwise, so a stacked parameter's members (and members left at scale 1) come out exact."""
    for param, s in scales.items():
        state = optimizer.state.get(param)
        if not state:
            continue
        for key, value in state.items():
            if key in _STATE_IGNORED or not torch.is_tensor(value) or value.ndim == 0:
                continue
            if key not in _STATE_POWER:
                raise ValueError(f"optimizer state {key!r} of {type(optimizer).__name__} has no "
                                 f"known rescaling; supported keys: {sorted(_STATE_POWER)}")
            value.mul_(s.to(value).pow(_STATE_POWER[key]))
