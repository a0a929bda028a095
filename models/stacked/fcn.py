"""S FCN members (models.fcn.FCN) as one module with a leading member dimension."""
from __future__ import annotations

import copy

import torch
from torch import nn

from models.activations import is_bilu
from models.stacked.base import StackedLinear, StackedModule, check_same_structure, in_place


class StackedFCN(StackedModule, nn.Sequential):
    """Same layer indices (hence state keys and parameter order) as each member's FCN."""

    def __init__(self, members: list[nn.Module], input_shape: tuple[int, ...] | None = None):
        if not members:
            raise ValueError("stacking needs at least one member")
        check_same_structure(members)
        layers = []
        for idx, module in enumerate(members[0]):
            if isinstance(module, nn.Linear):
                layers.append(StackedLinear.from_linears([m[idx] for m in members]))
            else:
                layers.append(in_place(copy.deepcopy(module)))   # parameter-free activation
        nn.Sequential.__init__(self, *layers)
        self.members = len(members)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.activation = members[0].activation

    @property
    def linears(self) -> list[StackedLinear]:
        return [m for m in self if isinstance(m, StackedLinear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.flatten_input(x, self.linears[0].in_features)
        for layer in self:
            h = layer(h)
        return h

    def unit_groups(self, include_bias: bool = True, allow_non_homogeneous: bool = False) -> list:
        """Balancing groups with the member axis (models.balancing, UnitGroup.members = S)."""
        from models.balancing import chain_groups_from_params

        for k, m in enumerate(self):
            if not isinstance(m, StackedLinear) and not is_bilu(m):
                raise ValueError(f"module {k} of StackedFCN is {type(m).__name__}: not positively "
                                 f"homogeneous, so balancing would change the network function; "
                                 f"allowed: ReLU, LeakyReLU, Identity (BiLU, NB §2)")
        linears = self.linears
        return chain_groups_from_params([lin.weight for lin in linears],
                                        [lin.bias for lin in linears], include_bias,
                                        members=self.members)
