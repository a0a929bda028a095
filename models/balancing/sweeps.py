"""Layer-wise sweeps: partial balance (one sweep) and full balance (sweeps or the direct solver).

Every step acts on all members of a stacked model at once ([S, n] costs and λ); a member outside
the `active` mask [S] gets λ = 1 exactly, so its parameters stay bit-identical.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from models.balancing.costs import ZERO_COST, CostCache, live
from models.balancing.groups import UnitGroup
from models.balancing.newton import newton_log_scales
from models.balancing.result import BalanceResult, start
from models.balancing.scaling import scale_members

ORDERS = ("forward", "reverse", "random")
METHODS = ("sweep", "direct")


def _balance_layer(group: UnitGroup, p: float, cache: CostCache,
                   active: torch.Tensor) -> torch.Tensor:
    """Exact balance of every neuron of a feed-forward layer at once; returns log λ [S, n]."""
    a, b = cache.costs(group)
    on = live(a, b) & active[:, None]
    log_lam = torch.where(on, (b.clamp_min(ZERO_COST).log() - a.clamp_min(ZERO_COST).log())
                          / (2 * p), torch.zeros_like(a))              # NB eq. 5
    lam = log_lam.exp()
    scale_members(group, lam)
    cache.scale(group, lam)
    return log_lam


def _balance_recurrent(group: UnitGroup, p: float, order: np.ndarray, cache: CostCache,
                       active: torch.Tensor) -> torch.Tensor:
    """Gauss-Seidel over the neurons of a recurrent layer: neuron i's λ changes its neighbours'
    costs through W_hh, so each neuron is balanced exactly given the current others (every
    member at once)."""
    base_in = cache.neuron_sums(group, group.incoming)
    base_out = cache.neuron_sums(group, group.outgoing)
    # A sequential loop of scalar steps: one explicit copy to the host and back per layer (once
    # per sweep, i.e. per epoch, never per training step).
    base_in, base_out = base_in.cpu().numpy().copy(), base_out.cpu().numpy().copy()
    r = cache.powered[id(group.recurrent)].cpu().numpy().copy()       # [S, n, n]
    r[:, np.arange(group.size), np.arange(group.size)] = 0.0          # self weight: invariant
    on = active.cpu().numpy()
    log_lam = np.zeros_like(base_in)
    for i in order:
        a = base_in[:, i] + r[:, i].sum(-1)
        b = base_out[:, i] + r[:, :, i].sum(-1)
        ok = on & (a > ZERO_COST) & (b > ZERO_COST)
        step = np.zeros_like(a)
        step[ok] = (np.log(b[ok]) - np.log(a[ok])) / (2 * p)          # NB eq. 5
        f = np.exp(p * step)
        base_in[:, i] *= f
        base_out[:, i] /= f
        r[:, i] *= f[:, None]
        r[:, :, i] /= f[:, None]
        log_lam[:, i] += step
    log_lam_t = torch.from_numpy(log_lam).to(group.device)
    lam = log_lam_t.exp()
    scale_members(group, lam)
    cache.scale(group, lam)
    return log_lam_t


def _sweep(groups: list[UnitGroup], p: float, order: str, rng: np.random.Generator,
           log_scales: list[torch.Tensor], cache: CostCache, active: torch.Tensor) -> None:
    """One sweep over the layers, each member in the same order (the order an unstacked run
    draws from the same rng)."""
    idx = list(range(len(groups)))
    if order == "reverse":
        idx.reverse()
    elif order == "random":
        rng.shuffle(idx)
    for k in idx:
        g = groups[k]
        if g.recurrent is None:
            log_scales[k] += _balance_layer(g, p, cache, active)
        else:
            neurons = np.arange(g.size)
            if order == "reverse":
                neurons = neurons[::-1]
            elif order == "random":
                rng.shuffle(neurons)
            log_scales[k] += _balance_recurrent(g, p, neurons, cache, active)


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order={order!r} is unknown; allowed: {ORDERS}")


def partial_balance(model: nn.Module, p: float, order: str = "forward", include_bias: bool = True,
                    allow_non_homogeneous: bool = False, seed: int = 0,
                    members=None) -> BalanceResult:
    """One layer-wise sweep: every hidden neuron balanced once (NB eq. 5), layer by layer.

    Stacked models: every member (or the index tensor `members`) in one vectorised pass; with
    order="random" every member uses the layer order an unstacked run draws with `seed`, so
    each member equals its unstacked balancing."""
    _check_order(order)
    st = start(model, p, include_bias, allow_non_homogeneous, members)
    before = st.cache.totals()
    _sweep(st.groups, p, order, np.random.default_rng(seed), st.logs, st.cache, st.active)
    return st.report("sweep", 1, 0, False, st.cache.imbalance(), before, st.cache.totals())


def full_balance(model: nn.Module, p: float, tol: float = 1e-6, max_sweeps: int = 10_000,
                 order: str = "forward", include_bias: bool = True, method: str = "direct",
                 allow_non_homogeneous: bool = False, seed: int = 0,
                 members=None) -> BalanceResult:
    """Balance to the unique optimum (NB Thm B.34): stop when max_i |log(A_i/B_i)| < tol.

    tol = 1e-6 leaves every neuron within a relative 1e-6 of NB eq. 7 (A_i = B_i); float32
    weights carry a rounding floor near 1e-7, so much smaller tolerances need float64.
    method="sweep" repeats layer-wise sweeps in `order`; method="direct" minimises the convex
    R(u) = Σ_ij |w_ij|^p e^{p(u_i - u_j)} over per-neuron log-scales u with Newton's method
    (benchmarked faster: bench/bench_balancing.py).

    Stacked models: every member (or the index tensor `members`) at once, each stopping on its
    own imbalance, so each equals its unstacked balancing.
    """
    _check_order(order)
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; allowed: {METHODS}")
    st = start(model, p, include_bias, allow_non_homogeneous, members)
    groups, logs, cache = st.groups, st.logs, st.cache
    before = cache.totals()
    sweeps = torch.zeros_like(before)
    newton = torch.zeros_like(before)
    if method == "direct":
        u, newton = newton_log_scales(groups, p, tol, st.active, cache=cache)
        for g, lg, ug in zip(groups, logs, u):
            scale_members(g, ug.exp())
            lg += ug
        cache.refresh()
    rng = np.random.default_rng(seed)
    running = st.active.clone()
    imb = cache.imbalance()
    fresh = True                     # the cache was just computed from the parameters
    # For "direct" these sweeps only polish float32 rounding, if at all.
    for _ in range(max_sweeps):
        below = running & (imb < tol)
        if below.any():
            if not fresh:            # the cache drifts from the rounded weights: check them
                cache.refresh(below)
                imb = cache.imbalance()
            running &= ~(below & (imb < tol))
        if not running.any():
            break
        _sweep(groups, p, order, rng, logs, cache, running)
        fresh = False
        sweeps += running
        imb = cache.imbalance()
    converged = imb < tol
    unfinished = [m for m, ok in zip(st.chosen, converged[st.chosen].tolist()) if not ok]
    if unfinished:
        which = "" if groups[0].members is None else f" (members {unfinished})"
        warnings.warn(f"full_balance stopped after max_sweeps={max_sweeps} with max log "
                      f"imbalance {imb[unfinished].max().item():.3g} >= tol={tol}{which}",
                      stacklevel=2)
    return st.report(method, sweeps, newton, converged, imb, before, cache.totals())
