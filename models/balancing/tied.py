"""Tied layer balance: one λ per hidden layer (NB Thm B.45), per member for stacked models."""
from __future__ import annotations

import torch
from torch import nn

from models.balancing.costs import ZERO_COST, powered
from models.balancing.groups import UnitGroup, member_view
from models.balancing.result import BalanceResult, start
from models.balancing.scaling import scale_members

TIED_METHODS = ("auto", "closed_form", "iterate")


def tied_layer_balance(model: nn.Module, p: float, include_bias: bool = True,
                       method: str = "auto", tol: float = 1e-10, max_sweeps: int = 100_000,
                       allow_non_homogeneous: bool = False, members=None) -> BalanceResult:
    """One λ per hidden layer (NB Thm B.45). Layer cost excludes the (invariant) recurrent matrix.

    method="closed_form" (feed-forward chain, no biases): every weight matrix ends with the
    geometric-mean cost G = (Π_l A_l)^(1/L), W_l scaled by μ_l = (G/A_l)^(1/p). (NB eq. 51 as
    printed drops a square root.) method="iterate": tied sweeps until max_l |log(A_l/B_l)| < tol.
    "auto" picks the closed form where it holds. Stacked models: per member, as
    `full_balance`.
    """
    if method not in TIED_METHODS:
        raise ValueError(f"method={method!r} is unknown; allowed: {TIED_METHODS}")
    st = start(model, p, include_bias, allow_non_homogeneous, members)
    groups, logs = st.groups, st.logs
    before = st.cache.totals()
    chain = _chain_weights(groups)
    if method == "closed_form" and chain is None:
        raise ValueError("tied closed form needs a bias-free feed-forward chain "
                         "(include_bias=False or bias=False); use method='iterate'")
    sweeps = torch.zeros_like(before)
    if method != "iterate" and chain is not None:
        costs = torch.stack([member_view(groups[0], powered(w, p)).flatten(1).sum(1)
                             for w in chain], 1)                     # [S, L]
        log_mu = (costs.log().mean(1, keepdim=True) - costs.log()) / p   # μ_l = (G / A_l)^(1/p)
        log_big_lambda = torch.cumsum(log_mu, 1)[:, :-1]            # Λ_k = Π_{l<=k} μ_l
        log_big_lambda = torch.where(st.active[:, None], log_big_lambda, 0.0)
        for k, (g, lg) in enumerate(zip(groups, logs)):
            lam = log_big_lambda[:, k:k + 1].expand(-1, g.size)
            scale_members(g, lam.exp())
            lg += lam
        imb = _tied_imbalance(groups, p)
    else:
        imb = _tied_imbalance(groups, p)
        running = st.active & (imb >= tol)
        for _ in range(max_sweeps):
            if not running.any():
                break
            for g, lg in zip(groups, logs):
                a, b = _tied_costs(g, p)
                ok = running & (a > ZERO_COST) & (b > ZERO_COST)
                step = torch.where(ok, (b.clamp_min(ZERO_COST).log()
                                        - a.clamp_min(ZERO_COST).log()) / (2 * p), 0.0)
                lam = step[:, None].expand(-1, g.size)
                scale_members(g, lam.exp())
                lg += lam
            sweeps += running
            imb = _tied_imbalance(groups, p)
            running &= imb >= tol
    st.cache.refresh()
    return st.report("tied", sweeps, 0, imb < tol, imb, before, st.cache.totals())


def _layer_cost(g: UnitGroup, slices, p: float) -> torch.Tensor:
    return sum(member_view(g, powered(s.param, p)).flatten(1).sum(1) for s in slices)


def _tied_costs(group: UnitGroup, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per member [S]: the layer's incoming and outgoing Lp costs (recurrent matrix left out)."""
    return _layer_cost(group, group.incoming, p), _layer_cost(group, group.outgoing, p)


def _tied_imbalance(groups: list[UnitGroup], p: float) -> torch.Tensor:
    worst = []
    for g in groups:
        a, b = _tied_costs(g, p)
        ok = (a > ZERO_COST) & (b > ZERO_COST)
        ratio = (a.clamp_min(ZERO_COST).log() - b.clamp_min(ZERO_COST).log()).abs()
        worst.append(torch.where(ok, ratio, 0.0))
    return torch.stack(worst).amax(0)


def _chain_weights(groups: list[UnitGroup]) -> list[nn.Parameter] | None:
    """[W_1, ..., W_L] if the groups form a bias-free feed-forward chain, else None."""
    if not groups or any(g.recurrent is not None or len(g.incoming) != 1 or len(g.outgoing) != 1
                         for g in groups):
        return None
    for prev, nxt in zip(groups[:-1], groups[1:]):
        if prev.outgoing[0].param is not nxt.incoming[0].param:
            return None
    return [groups[0].incoming[0].param] + [g.outgoing[0].param for g in groups]
