"""Applying per-neuron scales λ to the parameters, and the factor each parameter received.

Internally λ is [S, n] (S = 1 for an unstacked model); the public functions take and give the
group's own shapes: [n] unstacked, [S, n] stacked.
"""
from __future__ import annotations

import torch
from torch import nn

from models.balancing.groups import UnitGroup, member_dim, member_view


def along(lam: torch.Tensor, target: torch.Tensor, dim: int) -> torch.Tensor:
    """λ [S, n] shaped to broadcast against `target` [S, ...] whose neuron dimension is `dim`,
    in the target's dtype."""
    shape = [1] * target.ndim
    shape[0], shape[dim] = lam.shape
    return lam.to(dtype=target.dtype).reshape(shape)


def recurrent_factor(lam: torch.Tensor) -> torch.Tensor:
    """W[i, j] (from j to i) -> W[i, j] · λ_i / λ_j, per member: [S, n, n]."""
    return lam[:, :, None] / lam[:, None, :]


@torch.no_grad()
def scale_members(group: UnitGroup, lam: torch.Tensor) -> None:
    """Neuron i of member m: incoming slices times lam[m, i], outgoing ones divided by it."""
    for s in group.incoming:
        w = member_view(group, s.param)
        w.mul_(along(lam, w, member_dim(group, s)))
    for s in group.outgoing:
        w = member_view(group, s.param)
        w.div_(along(lam, w, member_dim(group, s)))
    if group.recurrent is not None:
        w = member_view(group, group.recurrent)
        w.mul_(recurrent_factor(lam).to(w.dtype))


def param_scales(groups: list[UnitGroup],
                 log_scales: list[torch.Tensor]) -> dict[nn.Parameter, torch.Tensor]:
    """The elementwise factor each balanced parameter was multiplied by, shaped like it, given
    the cumulative log λ per group ([n], or [S, n] stacked)."""
    out: dict[nn.Parameter, torch.Tensor] = {}

    def mul(g, param, factor):   # factor broadcasts against member_view(g, param)
        factor = factor.expand_as(member_view(g, param)).reshape(param.shape)
        out[param] = out[param] * factor if param in out else factor.clone()

    for g, u in zip(groups, log_scales):
        lam = member_view(g, u).exp()
        for s in g.incoming:
            mul(g, s.param, along(lam, member_view(g, s.param), member_dim(g, s)))
        for s in g.outgoing:
            mul(g, s.param, 1.0 / along(lam, member_view(g, s.param), member_dim(g, s)))
        if g.recurrent is not None:
            mul(g, g.recurrent, recurrent_factor(lam).to(g.recurrent.dtype))
    return out
