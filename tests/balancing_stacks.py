"""A test double of a stacked model (docs/STACKING.md) for the balancing tests, independent of
models/stacked: S members' parameters stacked on a leading member dimension, described to
balancing by `unit_groups` with `UnitGroup.members = S`. Feed-forward chains (FCN, DFANet) use
`chain_groups_from_params`, as the stacked models do; other architectures map the groups of one
unstacked member onto the stacked parameters."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from models import balancing as nb


class StackedMembers(nn.Module):
    def __init__(self, members: list[nn.Module], chain: bool = False):
        super().__init__()
        self.members, self.chain = len(members), chain
        self._template = [copy.deepcopy(members[0])]   # a list: not a registered submodule
        self.names = [n for n, _ in members[0].named_parameters()]
        for n in self.names:
            stacked = torch.stack([dict(m.named_parameters())[n].detach() for m in members])
            self.register_parameter(n.replace(".", "__"), nn.Parameter(stacked.clone()))

    def param(self, name: str) -> nn.Parameter:
        return getattr(self, name.replace(".", "__"))

    def _stacked_of(self) -> dict[int, nn.Parameter]:
        template = self._template[0]
        return {id(q): self.param(n) for n, q in template.named_parameters()}

    def unit_groups(self, include_bias: bool = True, allow_non_homogeneous: bool = False) -> list[nb.UnitGroup]:
        stacked = self._stacked_of()
        template = self._template[0]
        if self.chain:
            linears = list(template.linears)
            return nb.chain_groups_from_params(
                [stacked[id(lin.weight)] for lin in linears],
                [stacked[id(lin.bias)] if lin.bias is not None else None for lin in linears],
                include_bias, members=self.members)
        groups = []
        for g in nb.unit_groups(template, include_bias):
            def lift(slices):
                return [nb.Slice(stacked[id(s.param)], s.dim + 1, s.is_bias) for s in slices]
            rec = stacked[id(g.recurrent)] if g.recurrent is not None else None
            groups.append(nb.UnitGroup(g.name, g.size, lift(g.incoming), lift(g.outgoing), rec,
                                       members=self.members))
        return groups

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        return {n: self.param(n).detach()[i] for n in self.names}

    def member(self, i: int) -> nn.Module:
        """An unstacked copy of member i."""
        model = copy.deepcopy(self._template[0])
        model.load_state_dict(self.member_state(i), strict=False)
        return model

    def forward(self, *x):
        """[S, B, ...]: every member on the same inputs."""
        return torch.stack([functional_call(self._template[0], self.member_state(i), x)
                            for i in range(self.members)])
