"""Applying per-neuron scales λ to the parameters, and the factor each parameter received."""
from __future__ import annotations

import torch
from torch import nn

from models.balancing.groups import UnitGroup


@torch.no_grad()
def scale_group(group: UnitGroup, lam: torch.Tensor) -> None:
    """Multiply neuron i's incoming weights by lam[i], divide its outgoing ones (NB Def. B.8)."""
    for s in group.incoming:
        s.param.mul_(_along(lam, s.param, s.dim))
    for s in group.outgoing:
        s.param.div_(_along(lam, s.param, s.dim))
    if group.recurrent is not None:
        w = group.recurrent
        w.mul_((lam[:, None] / lam[None, :]).to(w.dtype))


def _along(lam: torch.Tensor, param: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * param.ndim
    shape[dim] = -1
    return lam.to(device=param.device, dtype=param.dtype).reshape(shape)


def param_scales(groups: list[UnitGroup], log_scales: list[torch.Tensor]) -> dict[nn.Parameter, torch.Tensor]:
    out: dict[nn.Parameter, torch.Tensor] = {}

    def mul(param, factor):
        out[param] = out[param] * factor if param in out else factor.expand_as(param).clone()

    for g, u in zip(groups, log_scales):
        lam = u.exp()
        for s in g.incoming:
            mul(s.param, _along(lam, s.param, s.dim))
        for s in g.outgoing:
            mul(s.param, 1.0 / _along(lam, s.param, s.dim))
        if g.recurrent is not None:
            mul(g.recurrent, (lam[:, None] / lam[None, :]).to(g.recurrent))
    return out
