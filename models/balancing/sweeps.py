"""Layer-wise sweeps: partial balance (one sweep) and full balance (sweeps or the direct solver)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from models.balancing.costs import ZERO_COST, CostCache, _check_p, _live, _sum_except
from models.balancing.groups import UnitGroup, unit_groups
from models.balancing.newton import _newton_log_scales
from models.balancing.result import BalanceResult
from models.balancing.scaling import scale_group

ORDERS = ("forward", "reverse", "random")
METHODS = ("sweep", "direct")


def _balance_layer(group: UnitGroup, p: float, cache: CostCache) -> torch.Tensor:
    """Exact balance of every neuron of a feed-forward layer at once; returns log λ."""
    a, b = cache.costs(group)
    live = _live(a, b)
    log_lam = torch.where(live, (b.clamp_min(ZERO_COST).log() - a.clamp_min(ZERO_COST).log())
                          / (2 * p), torch.zeros_like(a))              # NB eq. 5
    lam = log_lam.exp()
    scale_group(group, lam)
    cache.scale(group, lam)
    return log_lam


def _balance_recurrent(group: UnitGroup, p: float, order: np.ndarray,
                       cache: CostCache) -> torch.Tensor:
    """Gauss-Seidel over the neurons of a recurrent layer: neuron i's λ changes its neighbours'
    costs through W_hh, so each neuron is balanced exactly given the current others."""
    base_in = sum(_sum_except(cache.powered[id(s.param)], s.dim) for s in group.incoming)
    base_out = sum(_sum_except(cache.powered[id(s.param)], s.dim) for s in group.outgoing)
    # A sequential loop of scalar steps: one explicit copy to the host and back per layer (once
    # per sweep, i.e. per epoch, never per training step).
    base_in, base_out = base_in.cpu().numpy().copy(), base_out.cpu().numpy().copy()
    r = cache.powered[id(group.recurrent)].cpu().numpy().copy()
    np.fill_diagonal(r, 0.0)
    log_lam = np.zeros(group.size)
    for i in order:
        a = base_in[i] + r[i].sum()
        b = base_out[i] + r[:, i].sum()
        if a <= ZERO_COST or b <= ZERO_COST:
            continue
        step = (math.log(b) - math.log(a)) / (2 * p)                  # NB eq. 5
        f = math.exp(p * step)
        base_in[i] *= f
        base_out[i] /= f
        r[i] *= f
        r[:, i] /= f
        log_lam[i] += step
    log_lam_t = torch.from_numpy(log_lam).to(group.device)
    lam = log_lam_t.exp()
    scale_group(group, lam)
    cache.scale(group, lam)
    return log_lam_t


def _sweep(groups: list[UnitGroup], p: float, order: str, rng: np.random.Generator,
           log_scales: list[torch.Tensor], cache: CostCache) -> None:
    idx = list(range(len(groups)))
    if order == "reverse":
        idx.reverse()
    elif order == "random":
        rng.shuffle(idx)
    for k in idx:
        g = groups[k]
        if g.recurrent is None:
            log_scales[k] += _balance_layer(g, p, cache)
        else:
            neurons = np.arange(g.size)
            if order == "reverse":
                neurons = neurons[::-1]
            elif order == "random":
                rng.shuffle(neurons)
            log_scales[k] += _balance_recurrent(g, p, neurons, cache)


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order={order!r} is unknown; allowed: {ORDERS}")


def _start(model, p, include_bias, allow_non_homogeneous):
    _check_p(p)
    groups = unit_groups(model, include_bias, allow_non_homogeneous)
    cache = CostCache(groups, p)
    logs = [torch.zeros(g.size, dtype=torch.float64, device=g.device) for g in groups]
    return groups, logs, cache


def partial_balance(model: nn.Module, p: float, order: str = "forward", include_bias: bool = True,
                    allow_non_homogeneous: bool = False, seed: int = 0) -> BalanceResult:
    """One layer-wise sweep: every hidden neuron balanced once (NB eq. 5), layer by layer."""
    _check_order(order)
    groups, logs, cache = _start(model, p, include_bias, allow_non_homogeneous)
    before = cache.total()
    _sweep(groups, p, order, np.random.default_rng(seed), logs, cache)
    imb = cache.max_log_imbalance()
    return BalanceResult("sweep", 1, 0, False, imb, before, cache.total(), logs, groups)


def full_balance(model: nn.Module, p: float, tol: float = 1e-6, max_sweeps: int = 10_000,
                 order: str = "forward", include_bias: bool = True, method: str = "direct",
                 allow_non_homogeneous: bool = False, seed: int = 0) -> BalanceResult:
    """Balance to the unique optimum (NB Thm B.34): stop when max_i |log(A_i/B_i)| < tol.

    tol = 1e-6 leaves every neuron within a relative 1e-6 of NB eq. 7 (A_i = B_i); float32
    weights carry a rounding floor near 1e-7, so much smaller tolerances need float64.
    method="sweep" repeats layer-wise sweeps in `order`; method="direct" minimises the convex
    R(u) = Σ_ij |w_ij|^p e^{p(u_i - u_j)} over per-neuron log-scales u with Newton's method
    (benchmarked faster: bench/bench_balancing.py).
    """
    _check_order(order)
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; allowed: {METHODS}")
    groups, logs, cache = _start(model, p, include_bias, allow_non_homogeneous)
    before = cache.total()
    sweeps = newton = 0
    if method == "direct":
        u, newton = _newton_log_scales(groups, p, tol)
        for g, lg, ug in zip(groups, logs, u):
            scale_group(g, ug.exp())
            lg += ug
        cache.refresh()
    rng = np.random.default_rng(seed)
    imb = cache.max_log_imbalance()
    # For "direct" these sweeps only polish float32 rounding, if at all.
    while sweeps < max_sweeps:
        if imb < tol:
            cache.refresh()           # the cache drifts from the rounded weights: check them
            imb = cache.max_log_imbalance()
            if imb < tol:
                break
        _sweep(groups, p, order, rng, logs, cache)
        sweeps += 1
        imb = cache.max_log_imbalance()
    if imb >= tol:
        warnings.warn(f"full_balance stopped after max_sweeps={max_sweeps} with max log "
                      f"imbalance {imb:.3g} >= tol={tol}", stacklevel=2)
    return BalanceResult(method, sweeps, newton, imb < tol, imb, before, cache.total(), logs, groups)
