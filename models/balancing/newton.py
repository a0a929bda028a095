"""Full balance by Newton's method on the convex R(u) over per-neuron log-scales (NB Thm B.34).

Vectorised over the members of a stacked model: u is [S, n], every reduction is per member, and
each member runs its own Newton iteration, CG and line search (a member that has converged, or
is not balanced, is frozen exactly), so each member follows its unstacked iteration.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.balancing.costs import live, log_imbalance, powered, sum_except
from models.balancing.groups import UnitGroup, member_dim, member_view


@dataclass
class _Term:
    """Σ_ab c_ab e^{p(u_g[a] - u_h[b])} per member; g or h None means a visible unit (u = 0)."""
    c: torch.Tensor          # [S, n_g or 1, n_h or 1]
    g: int | None
    h: int | None


def _terms(groups: list[UnitGroup], p: float, cache=None) -> list[_Term]:
    """The terms of R(u), from |w|^p: a fresh CostCache's when given, else computed."""
    def powered_of(group, param):
        return cache.powered[id(param)] if cache is not None else \
            member_view(group, powered(param, p))

    owners: dict[int, dict] = {}
    for k, grp in enumerate(groups):
        for side, slices in (("in", grp.incoming), ("out", grp.outgoing)):
            for s in slices:
                owner = owners.setdefault(id(s.param), {"x": s.param, "grp": grp})
                owner[side] = (k, member_dim(grp, s))
    terms = []
    for o in owners.values():
        x = powered_of(o["grp"], o["x"])                               # [S, ...]
        gi, go = o.get("in"), o.get("out")
        if gi and go:
            keep = [0, gi[1], go[1]]
            x = x.permute(*keep, *[d for d in range(x.ndim) if d not in keep])
            c = x.reshape(*x.shape[:3], -1).sum(-1)
        elif gi:
            c = sum_except(x, (0, gi[1]))[:, :, None]
        else:
            c = sum_except(x, (0, go[1]))[:, None, :]
        terms.append(_Term(c, gi[0] if gi else None, go[0] if go else None))
    for k, grp in enumerate(groups):
        if grp.recurrent is not None:
            r = powered_of(grp, grp.recurrent).clone()
            r.diagonal(dim1=-2, dim2=-1).zero_()                       # invariant (SPEC A.1)
            terms.append(_Term(r, k, k))
    return terms


def _bmv(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per member matrix-vector product: [S, a, b] @ [S, b] -> [S, a]."""
    return (m @ v[:, :, None])[:, :, 0]


def newton_log_scales(groups: list[UnitGroup], p: float, tol: float, active: torch.Tensor,
                      max_steps: int = 200, cache=None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Newton with preconditioned CG and backtracking on the strictly convex R(u) (NB Thm B.34).

    Returns log-scales [S, n_k] per group (zero for members outside `active` [S]) and the
    Newton steps each member took [S]. `cache`: a CostCache of these groups, fresh (its |w|^p
    are reused, not recomputed)."""
    terms = _terms(groups, p, cache)
    offsets = np.cumsum([0, *[g.size for g in groups]])
    n = int(offsets[-1])
    count = len(active)
    work = {"dtype": torch.float64, "device": active.device}
    zero = torch.zeros(count, 1, **work)

    def part(v, k):
        return zero if k is None else v[:, offsets[k]:offsets[k + 1]]

    def evaluate(u):
        """R(u), per-neuron in/out costs and the scaled term matrices, per member."""
        a, b = torch.zeros(count, n, **work), torch.zeros(count, n, **work)
        f = torch.zeros(count, **work)
        mats = []
        for t in terms:
            e = t.c * torch.exp(p * (part(u, t.g)[:, :, None] - part(u, t.h)[:, None, :]))
            mats.append(e)
            f += e.sum((1, 2))
            if t.g is not None:
                a[:, offsets[t.g]:offsets[t.g + 1]] += e.sum(2)
            if t.h is not None:
                b[:, offsets[t.h]:offsets[t.h + 1]] += e.sum(1)
        return f, a, b, mats

    def hess_vec(v, diag, mats):
        out = diag * v
        for t, e in zip(terms, mats):
            if t.g is not None and t.h is not None:
                out[:, offsets[t.g]:offsets[t.g + 1]] -= p * p * _bmv(e, part(v, t.h))
                out[:, offsets[t.h]:offsets[t.h + 1]] -= p * p * _bmv(e.mT, part(v, t.g))
        return out

    u = torch.zeros(count, n, **work)
    f, a, b, mats = evaluate(u)
    alive = live(a, b) & active[:, None]   # dead units stay at u = 0, as the sweeps skip them
    running = active.clone()
    steps = torch.zeros(count, **work)
    for _ in range(max_steps):
        running &= log_imbalance(a, b, alive) >= tol * 1e-2
        if not running.any():
            break
        moving = alive & running[:, None]
        grad = torch.where(moving, p * (a - b), torch.zeros_like(a))
        diag = torch.where(alive, p * p * (a + b), torch.ones_like(a))
        d = _pcg(lambda v: torch.where(moving, hess_vec(v, diag, mats), v), -grad, diag)
        slope = (grad * d).sum(1)
        t_step = torch.ones(count, **work)
        pending = running.clone()
        while True:   # backtracking (Armijo), per member
            f_new, a_new, b_new, mats_new = evaluate(u + t_step[:, None] * d)
            pending &= ~((f_new <= f + 1e-4 * t_step * slope) | (t_step < 1e-10))
            if not pending.any():
                break
            t_step = torch.where(pending, 0.5 * t_step, t_step)
        u = u + t_step[:, None] * d
        f, a, b, mats = f_new, a_new, b_new, mats_new
        steps += running
    return [u[:, offsets[k]:offsets[k + 1]].clone() for k in range(len(groups))], steps


def _pcg(matvec, rhs: torch.Tensor, diag: torch.Tensor, rtol: float = 1e-10,
         max_iter: int = 500) -> torch.Tensor:
    """Jacobi-preconditioned CG per member on [S, n]; a member stops (exactly) at its own
    tolerance."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r / diag
    d = z.clone()
    rz = (r * z).sum(1)
    stop = rtol * rhs.norm(dim=1)
    for _ in range(max_iter):
        going = r.norm(dim=1) > stop
        if not going.any():
            break
        hd = matvec(d)
        alpha = torch.where(going, rz / torch.where(going, (d * hd).sum(1), 1.0), 0.0)
        x += alpha[:, None] * d
        r -= alpha[:, None] * hd
        z = r / diag
        rz_new = (r * z).sum(1)
        beta = torch.where(going, rz_new / torch.where(going, rz, 1.0), 0.0)
        d = z + beta[:, None] * d
        rz = torch.where(going, rz_new, rz)
    return x
