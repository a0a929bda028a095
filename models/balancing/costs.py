"""Per-neuron Lp costs A_i (incoming) and B_i (outgoing), float64."""
from __future__ import annotations

import torch
from torch import nn

from models.balancing.groups import UnitGroup, unit_groups
from models.balancing.scaling import _along

# A unit whose incoming or outgoing cost is below this is treated as dead and never scaled
# (NB Remark B.25; SPEC A.2.2: the authors divide 0 by 0 here).
ZERO_COST = 1e-30


def _powered(param: torch.Tensor, p: float) -> torch.Tensor:
    x = param.detach().to(torch.float64, copy=True).abs_()   # never alias a float64 param
    return x if p == 1 else x.pow_(p)


def _sum_except(x: torch.Tensor, dim: int) -> torch.Tensor:
    others = [d for d in range(x.ndim) if d != dim]
    return x.sum(dim=others) if others else x


def _reduce(param: torch.Tensor, dim: int, p: float) -> torch.Tensor:
    """Σ |w|^p over every dimension but `dim` (float64)."""
    return _sum_except(_powered(param, p), dim)


def _recurrent_cost(w: torch.Tensor, p: float) -> torch.Tensor:
    return _powered(w, p).fill_diagonal_(0.0)   # the self weight is invariant (SPEC A.1)


class CostCache:
    """|w|^p (float64) of every balanced parameter, updated multiplicatively as neurons are
    scaled, so a sweep needs one power pass instead of one per layer."""

    def __init__(self, groups: list[UnitGroup], p: float):
        self.groups, self.p = groups, p
        self.refresh()

    def refresh(self) -> None:
        self.powered: dict[int, torch.Tensor] = {}
        for g in self.groups:
            for prm in _params(g):
                if id(prm) not in self.powered:
                    self.powered[id(prm)] = _powered(prm, self.p)

    def costs(self, g: UnitGroup) -> tuple[torch.Tensor, torch.Tensor]:
        a = sum(_sum_except(self.powered[id(s.param)], s.dim) for s in g.incoming)
        b = sum(_sum_except(self.powered[id(s.param)], s.dim) for s in g.outgoing)
        if g.recurrent is not None:
            r = self.powered[id(g.recurrent)]
            diag = r.diagonal()
            a, b = a + r.sum(1) - diag, b + r.sum(0) - diag
        return a, b

    def scale(self, g: UnitGroup, lam: torch.Tensor) -> None:
        lam_p = lam.pow(self.p)
        for s in g.incoming:
            self.powered[id(s.param)].mul_(_along(lam_p, self.powered[id(s.param)], s.dim))
        for s in g.outgoing:
            self.powered[id(s.param)].div_(_along(lam_p, self.powered[id(s.param)], s.dim))
        if g.recurrent is not None:
            self.powered[id(g.recurrent)].mul_(lam_p[:, None] / lam_p[None, :])

    def total(self) -> float:
        return sum(x.sum().item() for x in self.powered.values())

    def max_log_imbalance(self) -> float:
        worst = 0.0
        for g in self.groups:
            a, b = self.costs(g)
            live = _live(a, b)
            if live.any():
                worst = max(worst, (a[live].log() - b[live].log()).abs().max().item())
        return worst


def _params(g: UnitGroup) -> list[nn.Parameter]:
    out = [s.param for s in g.incoming + g.outgoing]
    return out + ([g.recurrent] if g.recurrent is not None else [])


def group_costs(group: UnitGroup, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    return CostCache([group], p).costs(group)


def neuron_costs(model: nn.Module, p: float, include_bias: bool = True,
                 allow_non_homogeneous: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per hidden layer, per neuron: (incoming Lp cost A_i, outgoing Lp cost B_i), float64."""
    _check_p(p)
    groups = unit_groups(model, include_bias, allow_non_homogeneous)
    cache = CostCache(groups, p)
    return [cache.costs(g) for g in groups]


def _live(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a > ZERO_COST) & (b > ZERO_COST)


def max_log_imbalance(groups: list[UnitGroup], p: float) -> float:
    """max over live neurons of |log(A_i / B_i)| (NB eq. 7 holds when it is 0)."""
    return CostCache(groups, p).max_log_imbalance()


def total_cost(groups: list[UnitGroup], p: float) -> float:
    """Lp cost of every parameter the balancing touches (each counted once)."""
    return CostCache(groups, p).total()


def _check_p(p: float) -> None:
    if not p > 0:
        raise ValueError(f"p={p!r}: the Lp cost needs p > 0 (NB Thm B.22)")
