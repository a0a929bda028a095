"""Per-neuron Lp costs A_i (incoming) and B_i (outgoing), float64, per member: [S, n]."""
from __future__ import annotations

import torch
from torch import nn

from models.balancing.groups import UnitGroup, check_groups, member_dim, member_view, unit_groups
from models.balancing.scaling import along, recurrent_factor

# A unit whose incoming or outgoing cost is below this is treated as dead and never scaled
# (NB Remark B.25; SPEC A.2.2: the authors divide 0 by 0 here).
ZERO_COST = 1e-30


def powered(param: torch.Tensor, p: float) -> torch.Tensor:
    """|w|^p in float64 (a copy: never aliases a float64 parameter)."""
    x = param.detach().to(torch.float64, copy=True).abs_()
    return x if p == 1 else x.pow_(p)


def sum_except(x: torch.Tensor, keep: tuple[int, ...]) -> torch.Tensor:
    others = [d for d in range(x.ndim) if d not in keep]
    return x.sum(dim=others) if others else x


def live(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a > ZERO_COST) & (b > ZERO_COST)


def log_imbalance(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per member: max over the masked neurons of |log(A_i / B_i)| (0 if none): [S, n] -> [S]."""
    ratio = (a.clamp_min(ZERO_COST).log() - b.clamp_min(ZERO_COST).log()).abs()
    return torch.where(mask, ratio, torch.zeros_like(ratio)).amax(-1)


class CostCache:
    """|w|^p (float64, with a leading member dimension) of every balanced parameter, updated
    multiplicatively as neurons are scaled, so a sweep needs one power pass instead of one per
    layer."""

    def __init__(self, groups: list[UnitGroup], p: float):
        self.groups, self.p = groups, p
        self.refresh()

    def _fresh(self):
        seen = set()
        for g in self.groups:
            for prm in g.params():
                if id(prm) not in seen:
                    seen.add(id(prm))
                    yield prm, member_view(g, powered(prm, self.p))

    def refresh(self, members: torch.Tensor | None = None) -> None:
        """Recompute from the parameters: all of them, or only the members where `members` [S]
        is True (the others keep their multiplicatively updated values)."""
        if members is None or bool(members.all()):
            self.powered: dict[int, torch.Tensor] = {}
            for prm, x in self._fresh():
                self.powered[id(prm)] = x
            return
        for prm, x in self._fresh():
            old = self.powered[id(prm)]
            old.copy_(torch.where(members.view(-1, *[1] * (x.ndim - 1)), x, old))

    def neuron_sums(self, g: UnitGroup, slices) -> torch.Tensor | int:
        return sum(sum_except(self.powered[id(s.param)], (0, member_dim(g, s))) for s in slices)

    def costs(self, g: UnitGroup) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B), each [S, n]; the recurrent self weight is left out of both (SPEC A.1)."""
        a, b = self.neuron_sums(g, g.incoming), self.neuron_sums(g, g.outgoing)
        if g.recurrent is not None:
            r = self.powered[id(g.recurrent)]
            diag = r.diagonal(dim1=-2, dim2=-1)
            a, b = a + r.sum(-1) - diag, b + r.sum(-2) - diag
        return a, b

    def scale(self, g: UnitGroup, lam: torch.Tensor) -> None:
        """Follow `scale_members(g, lam)`, lam [S, n]."""
        lam_p = lam.pow(self.p)
        for s in g.incoming:
            x = self.powered[id(s.param)]
            x.mul_(along(lam_p, x, member_dim(g, s)))
        for s in g.outgoing:
            x = self.powered[id(s.param)]
            x.div_(along(lam_p, x, member_dim(g, s)))
        if g.recurrent is not None:
            self.powered[id(g.recurrent)].mul_(recurrent_factor(lam_p))

    def totals(self) -> torch.Tensor:
        """Per member: the Lp cost of every parameter the balancing touches (each once): [S]."""
        return sum(x.flatten(1).sum(1) for x in self.powered.values())

    def imbalance(self) -> torch.Tensor:
        """Per member: max over live neurons of |log(A_i / B_i)|: [S]."""
        worst = []
        for g in self.groups:
            a, b = self.costs(g)
            worst.append(log_imbalance(a, b, live(a, b)))
        return torch.stack(worst).amax(0)


def per_member(groups: list[UnitGroup], values: torch.Tensor) -> float | list[float]:
    """[S] -> a float for an unstacked model, a list of S floats for a stacked one."""
    return values.item() if groups[0].members is None else values.tolist()


def public(group: UnitGroup, x: torch.Tensor) -> torch.Tensor:
    """[S, ...] -> the group's own shape ([...] unstacked)."""
    return x if group.members is not None else x.squeeze(0)


def neuron_costs(model: nn.Module, p: float, include_bias: bool = True,
                 allow_non_homogeneous: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per hidden layer, per neuron: (incoming Lp cost A_i, outgoing Lp cost B_i), float64;
    [n] each, or [S, n] for a stacked model."""
    check_p(p)
    groups = unit_groups(model, include_bias, allow_non_homogeneous)
    cache = CostCache(groups, p)
    return [tuple(public(g, c) for c in cache.costs(g)) for g in groups]


def max_log_imbalance(groups: list[UnitGroup], p: float) -> float | list[float]:
    """max over live neurons of |log(A_i / B_i)| (NB eq. 7 holds when it is 0); per member
    for stacked groups."""
    check_groups(groups)
    return per_member(groups, CostCache(groups, p).imbalance())


def total_cost(groups: list[UnitGroup], p: float) -> float | list[float]:
    """Lp cost of every parameter the balancing touches (each counted once); per member for
    stacked groups."""
    check_groups(groups)
    return per_member(groups, CostCache(groups, p).totals())


def check_p(p: float) -> None:
    if not p > 0:
        raise ValueError(f"p={p!r}: the Lp cost needs p > 0 (NB Thm B.22)")
