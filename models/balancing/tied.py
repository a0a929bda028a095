"""Tied layer balance: one λ per hidden layer (NB Thm B.45)."""
from __future__ import annotations

import math

import torch
from torch import nn

from models.balancing.costs import ZERO_COST, _check_p, _reduce, total_cost
from models.balancing.groups import UnitGroup
from models.balancing.result import BalanceResult
from models.balancing.scaling import scale_group
from models.balancing.sweeps import _start


def tied_layer_balance(model: nn.Module, p: float, include_bias: bool = True,
                       method: str = "auto", tol: float = 1e-10, max_sweeps: int = 100_000,
                       allow_non_homogeneous: bool = False) -> BalanceResult:
    """One λ per hidden layer (NB Thm B.45). Layer cost excludes the (invariant) recurrent matrix.

    method="closed_form" (feed-forward chain, no biases): every weight matrix ends with the
    geometric-mean cost G = (Π_l A_l)^(1/L), W_l scaled by μ_l = (G/A_l)^(1/p). (NB eq. 51 as
    printed drops a square root.) method="iterate": tied sweeps until max_l |log(A_l/B_l)| < tol.
    "auto" picks the closed form where it holds.
    """
    _check_p(p)
    if method not in ("auto", "closed_form", "iterate"):
        raise ValueError(f"method={method!r} is unknown; allowed: ('auto', 'closed_form', 'iterate')")
    groups, logs, cache = _start(model, p, include_bias, allow_non_homogeneous)
    before = cache.total()
    chain = _chain_weights(groups)
    if method == "closed_form" and chain is None:
        raise ValueError("tied closed form needs a bias-free feed-forward chain "
                         "(include_bias=False or bias=False); use method='iterate'")
    sweeps = 0
    if method != "iterate" and chain is not None:
        costs = torch.stack([w.detach().double().abs().pow(p).sum() for w in chain])
        log_mu = (costs.log().mean() - costs.log()) / p            # μ_l = (G / A_l)^(1/p)
        log_big_lambda = torch.cumsum(log_mu, 0)[:-1]               # Λ_k = Π_{l<=k} μ_l
        for g, lg, ll in zip(groups, logs, log_big_lambda):
            lam = ll.expand(g.size).clone()
            scale_group(g, lam.exp())
            lg += lam
        imb = _tied_imbalance(groups, p)
    else:
        imb = _tied_imbalance(groups, p)
        while imb >= tol and sweeps < max_sweeps:
            for g, lg in zip(groups, logs):
                a, b = _tied_costs(g, p)
                if a > ZERO_COST and b > ZERO_COST:
                    step = (math.log(b) - math.log(a)) / (2 * p)
                    scale_group(g, torch.full((g.size,), math.exp(step), dtype=torch.float64,
                                              device=g.device))
                    lg += step
            sweeps += 1
            imb = _tied_imbalance(groups, p)
    return BalanceResult("tied", sweeps, 0, imb < tol, imb, before, total_cost(groups, p), logs, groups)


def _tied_costs(group: UnitGroup, p: float) -> tuple[float, float]:
    a = sum(_reduce(s.param, s.dim, p).sum().item() for s in group.incoming)
    b = sum(_reduce(s.param, s.dim, p).sum().item() for s in group.outgoing)
    return a, b


def _tied_imbalance(groups: list[UnitGroup], p: float) -> float:
    worst = 0.0
    for g in groups:
        a, b = _tied_costs(g, p)
        if a > ZERO_COST and b > ZERO_COST:
            worst = max(worst, abs(math.log(a) - math.log(b)))
    return worst


def _chain_weights(groups: list[UnitGroup]) -> list[nn.Parameter] | None:
    """[W_1, ..., W_L] if the groups form a bias-free feed-forward chain, else None."""
    if not groups or any(g.recurrent is not None or len(g.incoming) != 1 or len(g.outgoing) != 1
                         for g in groups):
        return None
    for prev, nxt in zip(groups[:-1], groups[1:]):
        if prev.outgoing[0].param is not nxt.incoming[0].param:
            return None
    return [groups[0].incoming[0].param] + [g.outgoing[0].param for g in groups]
