"""Stacked execution: S members (seeds of one config) trained as one model (docs/STACKING.md).

Parameters carry a leading member dimension S and come in each member's parameter order; layers
are batched GEMMs (`torch.bmm`), which bench/bench_stacked.py --routes measured against
torch.func `stack_module_state` + `vmap` on the CPU.

    stack = stack_models([build(seed) for seed in seeds], input_shape=info["input_shape"])
    out = stack(inputs)                                   # [S, B, ...] or [B, ...] -> [S, B, C]
    loss = member_losses(out, target).sum()               # gradient of member i = its own
"""
from __future__ import annotations

import sys

from torch import nn

from models.stacked.base import StackedLinear, StackedModule
from models.stacked.dfa import StackedDFANet
from models.stacked.fcn import StackedFCN
from models.stacked.losses import (evaluate_members, member_correct, member_losses,
                                   member_weight_costs, member_weight_penalty, weight_matrices)
from models.stacked.optim import (clip_grad_norm_per_member, load_member_optimizer_state,
                                  member_optimizer_state, zero_member_optimizer_state)

__all__ = ["StackedDFANet", "StackedFCN", "StackedLinear", "StackedModule",
           "clip_grad_norm_per_member", "evaluate_members", "is_stackable",
           "load_member_optimizer_state", "member_correct", "member_losses",
           "member_optimizer_state", "member_weight_costs", "member_weight_penalty", "stack_models",
           "weight_matrices", "zero_member_optimizer_state"]


def _declared_stacker(model: nn.Module):
    """The `stack_members` that the module defining the model's class (or a package above it)
    declares; a classifier nn.Sequential(nn.Flatten, M) stacks as M's module says."""
    if type(model) is nn.Sequential and len(model) == 2 and isinstance(model[0], nn.Flatten):
        model = model[1]
    name = type(model).__module__
    while name:
        stacker = getattr(sys.modules.get(name), "stack_members", None)
        if stacker is not None:
            return stacker
        name = name.rpartition(".")[0]
    return None


def is_stackable(model: nn.Module) -> bool:
    """Whether `stack_models` accepts members like `model`."""
    return _declared_stacker(model) is not None


def stack_models(models: list[nn.Module], input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """One stacked module from S unstacked members (each built with its own seed, so each keeps its
    own init). `input_shape`, one sample's shape (data.info["input_shape"]), lets forward tell a
    batch per member [S, B, *input_shape] from a shared batch [B, *input_shape] by rank alone."""
    if not models:
        raise ValueError("stack_models needs at least one member")
    first = models[0]
    if any(type(m) is not type(first) for m in models):
        kinds = sorted({type(m).__name__ for m in models})
        raise TypeError(f"members must share one type; got {kinds}")
    stacker = _declared_stacker(first)
    if stacker is None:
        raise TypeError(f"cannot stack {type(first).__name__}: its module declares no stack_members")
    return stacker(models, input_shape)
