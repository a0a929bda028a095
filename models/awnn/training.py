"""Model-level AWNN helpers: width updates, the ELBO priors, post-hoc truncation.

Work on any model holding AdaptiveMLP layers (MLP, ResNet20 head, GIN, seq2seq FFNs) or a stacked
AWNN classifier (models/awnn/stacked.py), whose tensors carry a leading member axis.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
from torch import nn

from models.awnn.mlp import AdaptiveMLP


def _adaptive_types() -> tuple[type, ...]:
    from models.awnn.stacked import StackedAdaptiveMLP

    return AdaptiveMLP, StackedAdaptiveMLP


def adaptive_modules(model: nn.Module) -> list[nn.Module]:
    """The model's AdaptiveMLP (or StackedAdaptiveMLP) layers, in module order."""
    types = _adaptive_types()
    return [m for m in model.modules() if isinstance(m, types)]


def update_widths(model: nn.Module, optimizer: torch.optim.Optimizer | None,
                  modules: Sequence[nn.Module] | None = None) -> bool:
    """Algorithm 1, lines 12–15, for every adaptive layer; True if any width changed.

    The raw ν of all layers reach the host in one transfer (the widths decide the next step's
    shapes, so Algorithm 1 needs them every step). `modules`: adaptive_modules(model), cached.
    Host work only, unless a width changes (the resize itself runs without autograd).
    """
    mods = adaptive_modules(model) if modules is None else modules
    if not mods:
        return False
    if len(mods) == 1:
        raws = [mods[0].raw_nu.detach().tolist()]
    else:
        flat = torch.cat([m.raw_nu.detach().reshape(-1) for m in mods]).tolist()
        raws, start = [], 0
        for m in mods:
            n = m.raw_nu.numel()
            raws.append(_unflatten(flat[start:start + n], m.raw_nu.shape))
            start += n
    changed = False
    for m, raw in zip(mods, raws):
        changed |= m.update_widths(optimizer, raw)
    return changed


def _unflatten(values: list[float], shape: torch.Size) -> list:
    if len(shape) == 1:
        return values
    step = shape[1]
    return [values[i:i + step] for i in range(0, len(values), step)]


def flat_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> dict:
    """An optimiser `state_dict()` saved while adaptive layers held each weight and bias as its own
    parameter (checkpoints before 2026-12-06) in today's form, one flat θ per layer
    (models/awnn/layout.py: the same pieces in the same order, concatenated). Any other state
    dict is returned as it is."""
    pieces = {id(m.theta): len(m.layout.shapes) for m in adaptive_modules(model)}
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    expected = [sum(pieces.get(id(p), 1) for p in g["params"]) for g in optimizer.param_groups]
    if not pieces or sizes != expected or sizes == [len(g["params"]) for g in optimizer.param_groups]:
        return saved
    state, groups, new_id = {}, [], 0
    for group, old in zip(optimizer.param_groups, saved["param_groups"]):
        old_ids, ids = iter(old["params"]), []
        for p in group["params"]:
            entries = [saved["state"].get(next(old_ids)) for _ in range(pieces.get(id(p), 1))]
            if all(e is not None for e in entries):
                state[new_id] = {key: torch.cat([e[key].reshape(-1) for e in entries])
                                 if torch.is_tensor(v) and v.ndim and len(entries) > 1 else v
                                 for key, v in entries[0].items()}
            ids.append(new_id)
            new_id += 1
        groups.append({**old, "params": ids})
    return {"state": state, "param_groups": groups}


def theta_parameters(model: nn.Module, modules: Sequence[nn.Module] | None = None) -> list[torch.Tensor]:
    """Every trainable parameter but the rates ν: the θ of the weight prior."""
    mods = adaptive_modules(model) if modules is None else modules
    nu_ids = {id(m.raw_nu) for m in mods}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in nu_ids]


class _SquaredNorm(torch.autograd.Function):
    """coef · Σ_p Σ p² over a list of tensors in one autograd node; `coef` is a float or, for
    stacked tensors, a [S] tensor applied to each member's slice (leading axis)."""

    @staticmethod
    def forward(ctx, coef, *params):
        ctx.coef, ctx.params = coef, params
        if torch.is_tensor(coef):
            flat = torch.cat([p.reshape(len(p), -1) for p in params], 1)       # [S, n]
            return torch.linalg.vecdot(flat, flat) @ coef
        norms = torch.stack(torch._foreach_norm(params))
        return torch.dot(norms, norms) * coef

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        coef = ctx.coef
        if torch.is_tensor(coef):
            scale = coef * (2.0 * grad)
            grads = [p * scale.view(-1, *[1] * (p.ndim - 1)) for p in ctx.params]
        else:
            grads = torch._foreach_mul(ctx.params, grad * (2.0 * coef))
        return (None, *grads)


@torch.no_grad()
def add_theta_prior_grad(params: Sequence[torch.Tensor], coef: float | torch.Tensor) -> None:
    """p.grad += 2·coef·p, the gradient of theta_penalty(params, coef): the weight prior applied
    in the optimiser step instead of a loss term (−log p(θ)/N is coupled weight decay's L2 term).
    A float coef is one fused multiply-add over all tensors (as the optimisers' weight decay; it
    may round differently from the loss term's separate product and sum by one ulp)."""
    if torch.is_tensor(coef):                          # per stacked member: [S]
        scale = coef * 2.0
        prior = [p * scale.view(-1, *[1] * (p.ndim - 1)) for p in params]
    elif all(p.grad is not None for p in params):
        torch._foreach_add_([p.grad for p in params], params, alpha=2.0 * coef)
        return
    else:
        prior = torch._foreach_mul(params, 2.0 * coef)
    for p, q in zip(params, prior):
        if p.grad is None:
            p.grad = q
        else:
            p.grad.add_(q)


def theta_penalty(params: Sequence[torch.Tensor], coef: float | torch.Tensor) -> torch.Tensor:
    """coef · Σ θ² over `params` (one reduction, one autograd node). The gradient of the weight
    prior −log p(θ)/N = Σ θ²/(2σθ²N) is coef = 1/(2σθ²N) of it."""
    return _SquaredNorm.apply(coef, *params)


def log_prior_theta(model: nn.Module, sigma_theta: float) -> torch.Tensor:
    """log p(θ) = −Σ θ²/(2σθ²) (up to a constant) over all weights and biases but ν.

    Parameters hold active entries only (stacks: inactive entries are exactly zero), so this is
    the sum over active weights.
    """
    return -theta_penalty(theta_parameters(model), 0.5 / sigma_theta ** 2)


def log_prior_nu(model: nn.Module, mu: float, sigma: float,
                 modules: Sequence[nn.Module] | None = None) -> torch.Tensor:
    """Σ_ℓ log N(ν_ℓ; μ, σ) over every adaptive layer (and member) (AWNN eq. 13's p(ν))."""
    mods = adaptive_modules(model) if modules is None else modules
    nus = mods[0].nus().reshape(-1) if len(mods) == 1 else \
        torch.cat([m.nus().reshape(-1) for m in mods])
    return (-0.5 * ((nus - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum()


def truncate(model: nn.Module, keep: float | list[int]) -> nn.Module:
    """Post-hoc truncation (AWNN §5.4): a copy whose adaptive layers keep their first neurons.

    `keep` is a fraction in (0, 1] of every layer's width (rounded, at least 1 neuron) or the
    explicit widths of all adaptive layers in module order. `keep=1.0` is the identity.
    """
    out = copy.deepcopy(model)
    mods = adaptive_modules(out)
    if any(not isinstance(m, AdaptiveMLP) for m in mods):
        raise TypeError("truncate works on unstacked models; truncate a stack's members one by one")
    current = [w for m in mods for w in m.widths]
    if isinstance(keep, (list, tuple)):
        if len(keep) != len(current) or any(not 1 <= k <= w for k, w in zip(keep, current)):
            raise ValueError(f"keep={list(keep)} must give 1 <= width <= current width for each "
                             f"of the {len(current)} adaptive layers, current widths {current}")
        target = [int(k) for k in keep]
    else:
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep={keep} must be a fraction in (0, 1] or a list of widths")
        target = [max(1, round(keep * w)) for w in current]
    start = 0
    for m in mods:
        m.resize(target[start:start + m.num_hidden])
        start += m.num_hidden
    return out


def truncate_to_accuracy(model: nn.Module, evaluate_fn: Callable[[nn.Module], float],
                         max_drop: float, steps: int = 20) -> tuple[nn.Module, float]:
    """Smallest uniform truncation whose accuracy drop from the full model is ≤ max_drop.

    Scans keep fractions 1/steps, 2/steps, ..., 1 from the smallest up and returns
    (truncated copy, its accuracy); `evaluate_fn(model) -> accuracy` (same units as max_drop).
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    full = evaluate_fn(model)
    for i in range(1, steps + 1):
        candidate = truncate(model, i / steps)
        acc = evaluate_fn(candidate)
        if full - acc <= max_drop:
            return candidate, acc
    return truncate(model, 1.0), full
