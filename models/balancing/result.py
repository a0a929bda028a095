"""What a balancing call reports, and the state it starts from."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.balancing.costs import CostCache, check_p, public
from models.balancing.groups import UnitGroup, unit_groups
from models.balancing.scaling import param_scales


@dataclass
class BalanceResult:
    """Scalars for an unstacked model. For a stacked one (UnitGroup.members = S) every
    per-run field is a list over the balanced members, in the order of `members`, and each
    log-scale tensor is [S, n] (zero for members left alone)."""
    method: str
    sweeps: int | list[int]               # layer-wise sweeps performed (0 for the direct solver)
    newton_steps: int | list[int]         # Newton iterations (direct solver only)
    converged: bool | list[bool]
    max_log_imbalance: float | list[float]   # max over live neurons of |log(A_i / B_i)|
    cost_before: float | list[float]
    cost_after: float | list[float]
    log_scales: list[torch.Tensor] = field(repr=False)   # cumulative log λ per group
    groups: list[UnitGroup] = field(repr=False)
    members: list[int] | None = None      # the balanced members (stacked models only)

    def param_scales(self) -> dict[nn.Parameter, torch.Tensor]:
        """Elementwise factor each balanced parameter was multiplied by (for optimiser state)."""
        return param_scales(self.groups, self.log_scales)


@dataclass
class Start:
    """A balancing call's working state: log-scales [S, n] per group (float64, on the groups'
    device), the cost cache, and which members [S] it balances."""
    groups: list[UnitGroup]
    logs: list[torch.Tensor]
    cache: CostCache
    active: torch.Tensor
    chosen: list[int]

    def report(self, method: str, sweeps, newton_steps, converged, imbalance, before,
               after) -> BalanceResult:
        """A BalanceResult from per-member [S] tensors (or Python numbers shared by all)."""
        count = len(self.active)
        values = [torch.as_tensor(v, dtype=torch.float64, device=self.active.device).expand(count)
                  for v in (sweeps, newton_steps, converged, imbalance, before, after)]
        # one host transfer for every reported number
        rows = torch.stack(values)[:, self.chosen].tolist()
        sweeps, newton_steps = [[int(v) for v in r] for r in rows[:2]]
        converged = [bool(v) for v in rows[2]]
        if self.groups[0].members is None:
            return BalanceResult(method, sweeps[0], newton_steps[0], converged[0], rows[3][0],
                                 rows[4][0], rows[5][0], [public(g, lg) for g, lg in
                                                          zip(self.groups, self.logs)],
                                 self.groups)
        return BalanceResult(method, sweeps, newton_steps, converged, *rows[3:], self.logs,
                             self.groups, list(self.chosen))


def start(model: nn.Module, p: float, include_bias: bool, allow_non_homogeneous: bool,
          members=None) -> Start:
    check_p(p)
    groups = unit_groups(model, include_bias, allow_non_homogeneous)
    device, count = groups[0].device, groups[0].stack_size
    chosen = select_members(members, groups[0].members)
    active = torch.zeros(count, dtype=torch.bool, device=device)
    active[torch.tensor(chosen, dtype=torch.long, device=device)] = True
    logs = [torch.zeros(count, g.size, dtype=torch.float64, device=device) for g in groups]
    return Start(groups, logs, CostCache(groups, p), active, chosen)


def select_members(members, stack: int | None) -> list[int]:
    """The member indices to balance: all of them by default (index 0 alone when unstacked)."""
    if members is None:
        return list(range(1 if stack is None else stack))
    if stack is None:
        raise ValueError(f"members={members!r}: only a stacked model (UnitGroup.members set) "
                         f"has members to choose; pass members=None")
    if torch.is_tensor(members) and members.dtype == torch.bool:
        raise ValueError("members must be an index tensor (member numbers), not a mask")
    chosen = members.tolist() if torch.is_tensor(members) else list(members)
    if any(isinstance(m, bool) or not hasattr(m, "__index__") for m in chosen):
        raise ValueError(f"members={chosen}: need integer member indices in [0, {stack})")
    chosen = [m.__index__() for m in chosen]
    if any(not 0 <= m < stack for m in chosen) or len(set(chosen)) != len(chosen):
        raise ValueError(f"members={chosen}: need distinct member indices in [0, {stack})")
    return chosen
