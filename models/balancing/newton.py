"""Full balance by Newton's method on the convex R(u) over per-neuron log-scales (NB Thm B.34)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.balancing.costs import _live, _recurrent_cost, _reduce
from models.balancing.groups import UnitGroup


@dataclass
class _Term:
    """Σ_ab c_ab e^{p(u_g[a] - u_h[b])}; g or h None means a visible unit (u = 0)."""
    c: torch.Tensor          # 2-D [n_g or 1, n_h or 1]
    g: int | None
    h: int | None


def _terms(groups: list[UnitGroup], p: float) -> list[_Term]:
    owners: dict[int, dict] = {}
    for k, grp in enumerate(groups):
        for s in grp.incoming:
            owners.setdefault(id(s.param), {"param": s.param})["in"] = (k, s.dim)
        for s in grp.outgoing:
            owners.setdefault(id(s.param), {"param": s.param})["out"] = (k, s.dim)
    terms = []
    for o in owners.values():
        x = o["param"].detach().double().abs().pow(p)
        gi, go = o.get("in"), o.get("out")
        if gi and go:
            keep = [gi[1], go[1]]
            x = x.permute(*keep, *[d for d in range(x.ndim) if d not in keep])
            c = x.reshape(x.shape[0], x.shape[1], -1).sum(-1)
        elif gi:
            c = _reduce(o["param"], gi[1], p)[:, None]
        else:
            c = _reduce(o["param"], go[1], p)[None, :]
        terms.append(_Term(c, gi[0] if gi else None, go[0] if go else None))
    for k, grp in enumerate(groups):
        if grp.recurrent is not None:
            terms.append(_Term(_recurrent_cost(grp.recurrent, p), k, k))
    return terms


def _newton_log_scales(groups: list[UnitGroup], p: float, tol: float,
                       max_steps: int = 200) -> tuple[list[torch.Tensor], int]:
    """Newton with preconditioned CG and backtracking on the strictly convex R(u) (NB Thm B.34)."""
    terms = _terms(groups, p)
    sizes = [g.size for g in groups]
    offsets = np.cumsum([0, *sizes])
    n = int(offsets[-1])
    work = {"dtype": torch.float64, "device": groups[0].device}
    zero = torch.zeros(1, **work)

    def part(v, k):
        return zero if k is None else v[offsets[k]:offsets[k + 1]]

    def evaluate(u):
        """R(u), per-neuron in/out costs and the scaled term matrices."""
        a, b = torch.zeros(n, **work), torch.zeros(n, **work)
        mats, f = [], 0.0
        for t in terms:
            e = t.c * torch.exp(p * (part(u, t.g)[:, None] - part(u, t.h)[None, :]))
            mats.append(e)
            f += e.sum().item()
            if t.g is not None:
                a[offsets[t.g]:offsets[t.g + 1]] += e.sum(1)
            if t.h is not None:
                b[offsets[t.h]:offsets[t.h + 1]] += e.sum(0)
        return f, a, b, mats

    def hess_vec(v, diag, mats):
        out = diag * v
        for t, e in zip(terms, mats):
            if t.g is not None and t.h is not None:
                out[offsets[t.g]:offsets[t.g + 1]] -= p * p * (e @ part(v, t.h))
                out[offsets[t.h]:offsets[t.h + 1]] -= p * p * (e.T @ part(v, t.g))
        return out

    u = torch.zeros(n, **work)
    f, a, b, mats = evaluate(u)
    live = _live(a, b)   # dead units stay at u = 0, as the sweeps skip them
    steps = 0
    for steps in range(1, max_steps + 1):
        grad = torch.where(live, p * (a - b), zero)
        imb = (a[live].log() - b[live].log()).abs().max().item() if live.any() else 0.0
        if imb < tol * 1e-2:
            steps -= 1
            break
        diag = torch.where(live, p * p * (a + b), torch.ones_like(a))
        d = _pcg(lambda v: torch.where(live, hess_vec(v, diag, mats), v), -grad, diag)
        slope = (grad @ d).item()
        t_step = 1.0
        while True:
            f_new, a_new, b_new, mats_new = evaluate(u + t_step * d)
            if f_new <= f + 1e-4 * t_step * slope or t_step < 1e-10:
                break
            t_step *= 0.5
        u = u + t_step * d
        f, a, b, mats = f_new, a_new, b_new, mats_new
    return [u[offsets[k]:offsets[k + 1]].clone() for k in range(len(groups))], steps


def _pcg(matvec, rhs: torch.Tensor, diag: torch.Tensor, rtol: float = 1e-10,
         max_iter: int = 500) -> torch.Tensor:
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r / diag
    d = z.clone()
    rz = r @ z
    stop = rtol * rhs.norm()
    for _ in range(max_iter):
        if r.norm() <= stop:
            break
        hd = matvec(d)
        alpha = rz / (d @ hd)
        x += alpha * d
        r -= alpha * hd
        z = r / diag
        rz_new = r @ z
        d = z + (rz_new / rz) * d
        rz = rz_new
    return x
