"""S DFA members (models.dfa.DFANet) as one module; each member keeps its exact DFA gradient.

The stacked loss is the sum of the members' losses, so the error captured on the stacked logits
[S, B, out] is, at [i], member i's own dL_i/dlogits; the feedback e_i · B_l is a batched product
with per-member feedback [S, out, width] (or one shared [out, width] when all members hold the same
matrix, as they do for a common feedback_seed).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from models.activations import is_bilu
from models.dfa_feedback import _DirectFeedback, _ErrorSlot  # the DFA trick itself, reused unchanged
from models.stacked.base import StackedLinear, StackedModule, check_same_structure, in_place


class StackedDFANet(StackedModule):
    """Same state keys and parameter order as each member's DFANet."""

    def __init__(self, members: list[nn.Module], input_shape: tuple[int, ...] | None = None):
        super().__init__()
        if not members:
            raise ValueError("stacking needs at least one member")
        check_same_structure(members)
        first = members[0]
        self.members = len(members)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.linears = nn.ModuleList(StackedLinear.from_linears([m.linears[k] for m in members])
                                     for k in range(len(first.linears)))
        self.activations = nn.ModuleList(in_place(copy.deepcopy(a)) for a in first.activations)
        shared = set()
        for k in range(len(first.activations)):
            mats = [m.feedback(k) for m in members]
            if all(torch.equal(mats[0], b) for b in mats[1:]):
                self.register_buffer(f"feedback{k}", mats[0].clone())
                shared.add(f"feedback{k}")
            else:
                self.register_buffer(f"feedback{k}", torch.stack(mats))
        self.shared_keys = frozenset(shared)

    def feedback(self, k: int) -> torch.Tensor:
        """B_l: [out, width] shared, or [S, out, width] per member."""
        return getattr(self, f"feedback{k}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.flatten_input(x, self.linears[0].in_features)
        slot = _ErrorSlot()
        for k, (lin, act) in enumerate(zip(self.linears[:-1], self.activations)):
            # backward: error [S, B, out] @ B_l ([out, w] or [S, out, w]) -> [S, B, w]
            h = _DirectFeedback.apply(act(lin(h)), self.feedback(k), slot)
        logits = self.linears[-1](h)
        if logits.requires_grad:
            logits.register_hook(slot.store)
        return logits

    def unit_groups(self, include_bias: bool = True, allow_non_homogeneous: bool = False) -> list:
        """Balancing groups with the member axis (models.balancing, UnitGroup.members = S)."""
        from models.balancing import chain_groups_from_params

        for k, act in enumerate(self.activations):
            if not is_bilu(act):
                raise ValueError(f"StackedDFANet hidden layer {k}: activation {type(act).__name__} "
                                 f"is not positively homogeneous; allowed: ReLU, LeakyReLU, "
                                 f"Identity (BiLU, NB §2)")
        return chain_groups_from_params([lin.weight for lin in self.linears],
                                        [lin.bias for lin in self.linears], include_bias,
                                        members=self.members)
