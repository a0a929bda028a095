"""Stacked execution: S members (seeds of one config) trained as one model (docs/STACKING.md).

Parameters carry a leading member dimension S and come in each member's parameter order; layers
are batched GEMMs (`torch.bmm`), which bench/bench_stacked.py --routes measured against
torch.func `stack_module_state` + `vmap` on the CPU.

    stack = stack_models([build(seed) for seed in seeds], input_shape=info["input_shape"])
    out = stack(inputs)                                   # [S, B, ...] or [B, ...] -> [S, B, C]
    loss = member_losses(out, target).sum()               # gradient of member i = its own
"""
from __future__ import annotations

from torch import nn

from models.dfa import DFANet
from models.fcn import FCN
from models.stacked.base import StackedLinear, StackedModule
from models.stacked.dfa import StackedDFANet
from models.stacked.fcn import StackedFCN
from models.stacked.losses import (evaluate_members, member_correct, member_losses,
                                   member_weight_costs, member_weight_penalty)
from models.stacked.optim import (clip_grad_norm_per_member, load_member_optimizer_state,
                                  member_optimizer_state, zero_member_optimizer_state)

STACKABLE = "FCN, DFANet, nn.Sequential(nn.Flatten, AdaptiveMLP) (the AWNN classifier)"

__all__ = ["StackedDFANet", "StackedFCN", "StackedLinear", "StackedModule",
           "clip_grad_norm_per_member", "evaluate_members", "is_stackable",
           "load_member_optimizer_state", "member_correct", "member_losses",
           "member_optimizer_state", "member_weight_costs", "member_weight_penalty", "stack_models",
           "zero_member_optimizer_state"]


def _is_awnn_classifier(model: nn.Module) -> bool:
    if type(model) is not nn.Sequential or len(model) != 2 or not isinstance(model[0], nn.Flatten):
        return False
    from models.awnn import AdaptiveMLP

    return isinstance(model[1], AdaptiveMLP)


def _awnn_stacker():
    from models.awnn import stack_adaptive   # lazy: models.awnn imports this package

    return stack_adaptive


def is_stackable(model: nn.Module) -> bool:
    """Whether `stack_models` accepts members like `model`."""
    if isinstance(model, (FCN, DFANet)):
        return True
    return _is_awnn_classifier(model)


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
    if isinstance(first, DFANet):
        if any(m.feedback_transform != "fixed" for m in models):
            raise TypeError("StackedDFANet keeps the feedback matrices fixed; "
                            "model.feedback_transform=covariant trains unstacked")
        return StackedDFANet(models, input_shape)
    if isinstance(first, FCN):
        return StackedFCN(models, input_shape)
    if _is_awnn_classifier(first):
        return _awnn_stacker()(models, input_shape)
    raise TypeError(f"cannot stack {type(first).__name__}; stackable: {STACKABLE}")
