"""Optimiser state of a stack, per member, and per-member gradient clipping.

A stacked module's parameters come in each member's parameter order, so position k of the stacked
optimiser is position k of every member's optimiser. A state tensor shaped like its parameter
([S, ...]) is per member and is sliced at [i]; anything else (Adam's `step`, a None momentum
buffer) is held once for all members, which step in lockstep.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _positions(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _is_per_member(value, param: torch.Tensor) -> bool:
    return torch.is_tensor(value) and value.ndim >= 1 and value.shape == param.shape


def member_optimizer_state(optimizer: torch.optim.Optimizer, i: int, entry=None) -> dict:
    """The `state_dict()` of member i's unstacked optimiser: same param groups (hyper-parameters,
    positions), per-member state tensors sliced at [i] (copies; `entry(p, v)` cuts them instead,
    e.g. to a member's active block), shared entries (`step`) kept."""
    params = _positions(optimizer)
    _check_member(params, i)
    entry = entry or (lambda p, v: v[i].clone())
    state = {}
    for k, p in enumerate(params):
        if optimizer.state.get(p):
            state[k] = {key: (entry(p, v) if _is_per_member(v, p)
                              else v.clone() if torch.is_tensor(v) else copy.deepcopy(v))
                        for key, v in optimizer.state[p].items()}
    groups, start = [], 0
    for group in optimizer.param_groups:
        n = len(group["params"])
        groups.append({**copy.deepcopy({k: v for k, v in group.items() if k != "params"}),
                       "params": list(range(start, start + n))})
        start += n
    return {"state": state, "param_groups": groups}


@torch.no_grad()
def load_member_optimizer_state(optimizer: torch.optim.Optimizer, i: int, state_dict: dict,
                                put=None) -> None:
    """Load an unstacked member optimiser's `state_dict()` into member i of a stacked optimiser
    (`put(p, own, value)` writes a per-member tensor into the stack's `own` instead of own[i]).

    The stack's param groups take the member's hyper-parameters (members step in lockstep and
    share them). A shared entry (`step`) must agree with what other members already loaded.
    """
    params = _positions(optimizer)
    _check_member(params, i)
    groups = state_dict["param_groups"]
    sizes = [len(g["params"]) for g in groups]
    own_sizes = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != own_sizes:
        raise ValueError(f"member optimiser state has param groups of sizes {sizes}; the stacked "
                         f"optimiser has {own_sizes}")
    by_id = dict(zip((pid for g in groups for pid in g["params"]), params))
    for pid, entries in state_dict["state"].items():
        p = by_id[pid]
        own = optimizer.state[p]
        for key, value in entries.items():
            if torch.is_tensor(value) and value.ndim >= 1:
                if put is not None:
                    if key not in own:
                        own[key] = torch.zeros_like(p)
                    put(p, own[key], value)
                    continue
                if value.shape != p.shape[1:]:
                    raise ValueError(f"optimiser state {key!r} at position {pid} has shape "
                                     f"{tuple(value.shape)}; member parameters there have "
                                     f"{tuple(p.shape[1:])}")
                if key not in own:
                    own[key] = torch.zeros_like(p)
                own[key][i].copy_(value)
            else:
                if key in own and not _same(own[key], value):
                    raise ValueError(f"member {i}'s optimiser state {key!r}={value!r} at position "
                                     f"{pid} differs from the stack's {own[key]!r}: the members "
                                     f"of a stack must be at the same step")
                own[key] = value.clone() if torch.is_tensor(value) else copy.deepcopy(value)
    for own_group, group in zip(optimizer.param_groups, groups):
        own_group.update(copy.deepcopy({k: v for k, v in group.items() if k != "params"}))


@torch.no_grad()
def zero_member_optimizer_state(optimizer: torch.optim.Optimizer, i: int) -> None:
    """Zero member i's slice of every per-member state tensor (a diverged member's NaNs)."""
    for p in _positions(optimizer):
        for value in optimizer.state.get(p, {}).values():
            if _is_per_member(value, p):
                value[i].zero_()


@torch.no_grad()
def clip_grad_norm_per_member(params, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (L2) applied to each member's gradients alone.

    Returns the members' total gradient norms [S] before clipping (on the gradients' device).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(len(g), -1), dim=1) for g in grads])
    total = torch.linalg.vector_norm(norms, dim=0)                          # [S]
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)                  # as clip_grad_norm_
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.ndim - 1)).to(g.dtype))
    return total


def _check_member(params: list[torch.Tensor], i: int) -> None:
    members = params[0].shape[0] if params and params[0].ndim else 0
    if not (isinstance(i, int) and 0 <= i < members):
        raise IndexError(f"member {i!r} is out of range; the stacked optimiser's parameters have "
                         f"{members} members")


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.shape == b.shape and torch.equal(a.cpu(), b.cpu().to(a.dtype))
    return a is b or a == b
