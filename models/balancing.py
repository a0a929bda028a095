"""Synaptic neural balancing (NB §2, App. B) for FCNs, ReLU RNNs, Transformer FFNs and DFA nets.

A model is described as a list of `UnitGroup`s: one per hidden layer of BiLU neurons. Neuron i of
a group owns index i of its incoming slices (weight rows, biases), of its outgoing slices (next
weight columns) and, in a recurrent layer, row i (incoming) and column i (outgoing) of the square
recurrent matrix. Scaling neuron i by λ multiplies its incoming slices by λ and divides its
outgoing slices by λ; the network function is unchanged (NB Thm B.5, BiLU homogeneity).

Costs are Lp costs: A_i = Σ_in |w|^p, B_i = Σ_out |w|^p. The recurrent self weight W_hh[i, i] is
both incoming and outgoing, hence invariant, and is left out of both (SPEC A.1).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models.activations import is_bilu

# A unit whose incoming or outgoing cost is below this is treated as dead and never scaled
# (NB Remark B.25; SPEC A.2.2: the authors divide 0 by 0 here).
ZERO_COST = 1e-30
ORDERS = ("forward", "reverse", "random")
METHODS = ("sweep", "direct")
PASS_THROUGH = (nn.Flatten, nn.Dropout, nn.Identity)
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Tanh, nn.Sigmoid, nn.ReLU6, nn.GELU,
                    nn.ELU, nn.SiLU, nn.Softplus, nn.Hardtanh, nn.Mish, nn.SELU, nn.CELU)


@dataclass(frozen=True, eq=False)
class Slice:
    param: nn.Parameter
    dim: int              # the dimension indexed by the group's neurons
    is_bias: bool = False


@dataclass(eq=False)
class UnitGroup:
    name: str
    size: int
    incoming: list[Slice]
    outgoing: list[Slice]
    recurrent: nn.Parameter | None = None   # square; W[i, j] is the weight from j to i


@dataclass
class BalanceResult:
    method: str
    sweeps: int                   # layer-wise sweeps performed (0 for the direct solver)
    newton_steps: int             # Newton iterations (direct solver only)
    converged: bool
    max_log_imbalance: float      # max over live neurons of |log(A_i / B_i)|
    cost_before: float
    cost_after: float
    log_scales: list[torch.Tensor] = field(repr=False)   # cumulative log λ per group
    groups: list[UnitGroup] = field(repr=False)

    def param_scales(self) -> dict[nn.Parameter, torch.Tensor]:
        """Elementwise factor each balanced parameter was multiplied by (for optimiser state)."""
        return param_scales(self.groups, self.log_scales)


# ----------------------------------------------------------------------------- model -> groups

def _check_activation(module: nn.Module, where: str, allow_non_homogeneous: bool) -> None:
    if is_bilu(module):
        return
    if not allow_non_homogeneous:
        raise ValueError(
            f"{where}: activation {type(module).__name__} is not positively homogeneous, so "
            f"balancing would change the network function; allowed: ReLU, LeakyReLU, Identity "
            f"(BiLU, NB §2). Pass allow_non_homogeneous=True for the authors' variant, which is "
            f"NOT function-preserving.")
    warnings.warn(f"{where}: balancing through {type(module).__name__} is not function-preserving",
                  stacklevel=3)


def chain_groups(linears: list[nn.Linear], include_bias: bool) -> list[UnitGroup]:
    """Groups of a feed-forward chain Linear -> act -> Linear -> ... (activations checked by caller)."""
    groups = []
    for k, (lin, nxt) in enumerate(zip(linears[:-1], linears[1:])):
        if nxt.in_features != lin.out_features:
            raise ValueError(f"Linear {k + 1} has in_features={nxt.in_features}, expected "
                             f"{lin.out_features} (out_features of Linear {k})")
        incoming = [Slice(lin.weight, 0)]
        if include_bias and lin.bias is not None:
            incoming.append(Slice(lin.bias, 0, is_bias=True))
        groups.append(UnitGroup(f"hidden{k}", lin.out_features, incoming, [Slice(nxt.weight, 1)]))
    return groups


def _sequential_groups(model: nn.Sequential, include_bias, allow) -> list[UnitGroup]:
    linears = []
    for idx, m in enumerate(_flatten_sequential(model)):
        if isinstance(m, nn.Linear):
            linears.append(m)
        elif isinstance(m, PASS_THROUGH) and not isinstance(m, nn.Identity):
            continue
        elif isinstance(m, ACTIVATION_TYPES):
            if linears:   # an activation before the first Linear acts on the inputs: irrelevant
                _check_activation(m, f"module {idx} of {type(model).__name__}", allow)
        else:
            raise TypeError(f"module {idx} of {type(model).__name__} is {type(m).__name__}; "
                            f"balancing supports Sequentials of Linear, BiLU activations, "
                            f"Flatten and Dropout")
    if len(linears) < 2:
        raise ValueError(f"{type(model).__name__} has {len(linears)} Linear layer(s): no hidden "
                         f"neurons to balance")
    return chain_groups(linears, include_bias)


def _flatten_sequential(model: nn.Sequential):
    for m in model:
        if isinstance(m, nn.Sequential):
            yield from _flatten_sequential(m)
        else:
            yield m


def rnn_groups(rnn: nn.RNN, readout: nn.Linear, include_bias: bool,
               allow_non_homogeneous: bool) -> list[UnitGroup]:
    """Groups of a stacked Elman RNN followed by a readout Linear (SPEC A.1, RNN)."""
    if rnn.bidirectional or getattr(rnn, "proj_size", 0):
        raise ValueError("balancing supports unidirectional nn.RNN without projection")
    if not isinstance(rnn, nn.RNN):
        raise ValueError(f"{type(rnn).__name__} is not an Elman RNN; the authors' LSTM "
                         f"'balancing' is outside the theory (SPEC A.2.5) and not offered")
    if rnn.nonlinearity != "relu":
        if not allow_non_homogeneous:
            raise ValueError(f"nn.RNN nonlinearity={rnn.nonlinearity!r} is not homogeneous; "
                             f"allowed: 'relu'. Pass allow_non_homogeneous=True for a "
                             f"NOT function-preserving variant")
        warnings.warn(f"balancing an RNN with nonlinearity={rnn.nonlinearity!r} is not "
                      f"function-preserving", stacklevel=3)
    groups = []
    for k in range(rnn.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
        incoming = [Slice(w_ih, 0)]
        if include_bias and rnn.bias:
            incoming += [Slice(getattr(rnn, f"bias_ih_l{k}"), 0, True),
                         Slice(getattr(rnn, f"bias_hh_l{k}"), 0, True)]
        nxt = getattr(rnn, f"weight_ih_l{k + 1}") if k + 1 < rnn.num_layers else readout.weight
        groups.append(UnitGroup(f"rnn{k}", rnn.hidden_size, incoming, [Slice(nxt, 1)], w_hh))
    return groups


def ffn_groups(model: nn.Module, include_bias: bool, allow_non_homogeneous: bool) -> list[UnitGroup]:
    """One group per Transformer FFN: linear1 rows (+bias) in, linear2 columns out (NB App. A.6)."""
    groups = []
    for name, layer in model.named_modules():
        if not isinstance(layer, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            continue
        act = layer.activation
        relu = act is torch.nn.functional.relu or (isinstance(act, nn.Module) and is_bilu(act))
        if not relu:
            label = getattr(act, "__name__", type(act).__name__)
            if not allow_non_homogeneous:
                raise ValueError(f"{name}: FFN activation {label} is not homogeneous; allowed: "
                                 f"relu. Pass allow_non_homogeneous=True for a NOT "
                                 f"function-preserving variant")
            warnings.warn(f"{name}: balancing through {label} is not function-preserving",
                          stacklevel=3)
        incoming = [Slice(layer.linear1.weight, 0)]
        if include_bias and layer.linear1.bias is not None:
            incoming.append(Slice(layer.linear1.bias, 0, True))
        groups.append(UnitGroup(f"{name}.ffn", layer.linear1.out_features, incoming,
                                [Slice(layer.linear2.weight, 1)]))
    return groups


def unit_groups(model: nn.Module, include_bias: bool = True,
                allow_non_homogeneous: bool = False) -> list[UnitGroup]:
    """The balanceable hidden layers of `model`; raises a clear error for unsupported models."""
    from models.dfa import DFANet
    from models.rnn import ReLURNNClassifier

    if isinstance(model, ReLURNNClassifier):
        return rnn_groups(model.rnn, model.readout, include_bias, allow_non_homogeneous)
    if isinstance(model, DFANet):
        for k, act in enumerate(model.activations):
            _check_activation(act, f"DFANet hidden layer {k}", allow_non_homogeneous)
        return chain_groups(list(model.linears), include_bias)
    if isinstance(model, nn.Sequential):
        return _sequential_groups(model, include_bias, allow_non_homogeneous)
    groups = ffn_groups(model, include_bias, allow_non_homogeneous)
    if groups:
        return groups
    raise TypeError(f"balancing does not support {type(model).__name__}; supported: nn.Sequential "
                    f"of Linear/BiLU (e.g. FCN), ReLURNNClassifier, DFANet, models containing "
                    f"nn.TransformerEncoderLayer/DecoderLayer (FFN only)")


# ----------------------------------------------------------------------------- costs

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


# ----------------------------------------------------------------------------- scaling

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


# ----------------------------------------------------------------------------- sweeps

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
    base_in, base_out = base_in.numpy().copy(), base_out.numpy().copy()
    r = cache.powered[id(group.recurrent)].numpy().copy()
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
    log_lam_t = torch.from_numpy(log_lam)
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
    return groups, [torch.zeros(g.size, dtype=torch.float64) for g in groups], cache


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


# ----------------------------------------------------------------------------- direct solver

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
    zero = torch.zeros(1, dtype=torch.float64)

    def part(v, k):
        return zero if k is None else v[offsets[k]:offsets[k + 1]]

    def evaluate(u):
        """R(u), per-neuron in/out costs and the scaled term matrices."""
        a, b = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
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

    u = torch.zeros(n, dtype=torch.float64)
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


# ----------------------------------------------------------------------------- tied layers

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
        costs = torch.tensor([w.detach().double().abs().pow(p).sum().item() for w in chain])
        log_mu = (costs.log().mean() - costs.log()) / p            # μ_l = (G / A_l)^(1/p)
        log_big_lambda = torch.cumsum(log_mu, 0)[:-1]               # Λ_k = Π_{l<=k} μ_l
        for g, lg, ll in zip(groups, logs, log_big_lambda):
            lam = torch.full((g.size,), ll.item(), dtype=torch.float64)
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
                    scale_group(g, torch.full((g.size,), math.exp(step), dtype=torch.float64))
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


# ----------------------------------------------------------------------------- optimiser state

# How each optimiser state entry transforms when its parameter is multiplied elementwise by s.
# Momentum buffer (SGD, RMSprop): the pending displacement, scaled like the weights, so a
# zero-gradient momentum step after balancing is the balanced image of the step before.
# Adam moments: rescaled as gradients transform (g -> g / s for a function-preserving
# rescaling): exp_avg / s, exp_avg_sq / s², i.e. the state Adam would hold had every past
# gradient been taken at the balanced weights.
_STATE_POWER = {"momentum_buffer": 1, "exp_avg": -1, "exp_avg_sq": -2, "max_exp_avg_sq": -2}
_STATE_IGNORED = {"step"}


@torch.no_grad()
def rescale_optimizer_state(optimizer: torch.optim.Optimizer,
                            scales: dict[nn.Parameter, torch.Tensor]) -> None:
    """Transform optimiser state after `param <- scales[param] * param` (see _STATE_POWER)."""
    for param, s in scales.items():
        state = optimizer.state.get(param)
        if not state:
            continue
        for key, value in state.items():
            if key in _STATE_IGNORED or not torch.is_tensor(value) or value.ndim == 0:
                continue
            if key not in _STATE_POWER:
                raise ValueError(f"optimizer state {key!r} of {type(optimizer).__name__} has no "
                                 f"known rescaling; supported keys: {sorted(_STATE_POWER)}")
            value.mul_(s.to(value).pow(_STATE_POWER[key]))
