"""The stacked AWNN classifier: S nn.Sequential(nn.Flatten, AdaptiveMLP) members (models/awnn
build) as one module with the members' state keys and a leading member axis."""
from __future__ import annotations

import math

import torch
from torch import nn

from models.awnn.mlp import AdaptiveMLP
from models.awnn.stacked import StackedAdaptiveMLP


class MemberFlatten(nn.Module):
    """[S, B, *sample] -> [S, B, in] (a batch per member) or [B, *sample] -> [B, in] (shared)."""

    def __init__(self, members: int, in_features: int, input_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.members, self.in_features = members, in_features
        self.input_shape = tuple(input_shape) if input_shape is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shape is not None:
            per_member = x.ndim == len(self.input_shape) + 2
        else:
            per_member = (x.ndim >= 3 and x.shape[0] == self.members
                          and math.prod(x.shape[2:]) == self.in_features)
            shared = x.ndim >= 2 and math.prod(x.shape[1:]) == self.in_features
            if per_member and shared:
                raise ValueError(f"input of shape {tuple(x.shape)} reads as one batch per member "
                                 f"and as one shared batch; stack with input_shape=<one sample's "
                                 f"shape> to decide by rank")
        if per_member and x.shape[0] != self.members:
            raise ValueError(f"input of shape {tuple(x.shape)} has {x.shape[0]} member batches; "
                             f"this stack has {self.members} members")
        flat = x.flatten(2) if per_member else x.flatten(1)
        if flat.shape[-1] != self.in_features:
            raise ValueError(f"input of shape {tuple(x.shape)} does not flatten to "
                             f"in_features={self.in_features} per sample")
        return flat


class StackedAdaptiveClassifier(nn.Sequential):
    """S AWNN classifiers nn.Sequential(nn.Flatten, AdaptiveMLP) as one: the same state keys
    ("1.raw_nu", ...) and parameter order as a member, with a leading member axis."""

    def __init__(self, members: list[nn.Sequential], input_shape: tuple[int, ...] | None = None):
        for j, m in enumerate(members):
            if not (type(m) is nn.Sequential and len(m) == 2 and isinstance(m[0], nn.Flatten)
                    and m[0].start_dim == 1 and m[0].end_dim == -1 and isinstance(m[1], AdaptiveMLP)):
                raise TypeError(f"member {j} is not nn.Sequential(nn.Flatten(1), AdaptiveMLP) "
                                f"(the AWNN classifier of models/awnn build)")
        mlp = StackedAdaptiveMLP([m[1] for m in members])
        super().__init__(MemberFlatten(len(members), mlp.in_features, input_shape), mlp)
        self.input_shape = tuple(input_shape) if input_shape is not None else None

    @property
    def members(self) -> int:
        return self[1].members

    @property
    def widths(self) -> list[list[int]]:
        return self[1].widths

    def update_widths(self, optimizer=None) -> bool:
        return self[1].update_widths(optimizer)

    def member_state_dict(self, i: int) -> dict:
        return self[1].member_state_dict(i, prefix="1.")

    def load_member_state_dict(self, i: int, state: dict) -> None:
        self[1].load_member_state_dict(i, state, prefix="1.")

    def zero_member(self, i: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        self[1].zero_member(i, optimizer)

    def member_optimizer_state(self, optimizer: torch.optim.Optimizer, i: int) -> dict:
        return self[1].member_optimizer_state(optimizer, i)

    def load_member_optimizer_state(self, optimizer: torch.optim.Optimizer, i: int,
                                    state_dict: dict) -> None:
        self[1].load_member_optimizer_state(optimizer, i, state_dict)


def stack_adaptive(models: list[nn.Module], input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """One stacked module from S unstacked AWNN classifiers nn.Sequential(nn.Flatten, AdaptiveMLP)
    (each built with its own seed, so each keeps its own init and growth generator)."""
    if not models:
        raise ValueError("stack_adaptive needs at least one member")
    return StackedAdaptiveClassifier(list(models), input_shape)
