"""Per-member state of a stacked AWNN layer (docs/STACKING.md): member i's model and optimiser
state in the unstacked format (what its own run saves and loads), and a diverged member's reset.

A mixin of models/awnn/stacked.py StackedAdaptiveMLP: it reads the stack's θ [S, P] (pieces at the
capacities, models/awnn/layout.py), raw ν [S, L], widths, masks and growth generators. Member i's
flat θ is its active blocks packed as an unstacked θ with capacity = widths; an unstacked θ saved
wider than its widths (models/awnn/capacity.py) is cut to them on loading.
"""
from __future__ import annotations

import torch

from models.awnn.capacity import active_specs, capacity_for, gather, regions
from models.awnn.storage import state_tensors
from models.stacked.optim import load_member_optimizer_state, member_optimizer_state


class MemberState:
    """member_state_dict / load_member_state_dict, member_optimizer_state /
    load_member_optimizer_state, zero_member (see StackedAdaptiveMLP)."""

    def _check_member(self, i: int) -> None:
        if not (isinstance(i, int) and 0 <= i < self.members):
            raise IndexError(f"member {i!r} is out of range; this stack has members "
                             f"0..{self.members - 1}")

    def _specs(self, i: int) -> tuple:
        """Member i's active block of each piece, as strided specs into its row of θ."""
        return active_specs(self.layout, self._shapes(self._widths[i]))

    def member_state_dict(self, i: int, prefix: str = "") -> dict:
        """What member i's unstacked AdaptiveMLP `state_dict()` holds (copies)."""
        self._check_member(i)
        out = {prefix + "raw_nu": self.raw_nu.detach()[i].clone()}
        for name, block in zip(self.piece_names(), regions(self.theta.detach()[i], self._specs(i))):
            out[prefix + name] = block.clone()
        out[prefix + "_extra_state"] = {"grow_rng": self.generators[i].get_state()}
        return out

    def _member_entry(self, i: int, p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Member i's unstacked form of v (a per-entry tensor shaped like parameter p)."""
        return v[i].clone() if p is self.raw_nu else gather(v[i], self._specs(i))

    def _set_member_entry(self, i: int, p: torch.Tensor, own: torch.Tensor,
                          value: torch.Tensor) -> None:
        """own[i] <- member i's unstacked value (zeros outside its active blocks)."""
        own[i].zero_()
        if p is self.raw_nu:
            own[i] = value.to(own)
            return
        blocks = regions(own[i], self._specs(i))
        sizes = [b.numel() for b in blocks]
        caps = self._saved_caps.get(i)
        if value.numel() != sum(sizes) and caps is not None:      # saved at an unstacked capacity
            saved = self._layout_for(caps)
            if value.numel() == saved.numel:
                value = gather(value, active_specs(saved, self._shapes(self._widths[i])))
        if value.numel() != sum(sizes):
            raise ValueError(f"member state of {value.numel()} entries does not fit member {i}'s "
                             f"widths {self._widths[i]} ({sum(sizes)} entries)")
        for block, part in zip(blocks, value.split(sizes)):
            block.copy_(part.view(block.shape))

    @torch.no_grad()
    def load_member_state_dict(self, i: int, state: dict, prefix: str = "") -> None:
        """Load an unstacked member's `state_dict()` into member i (load before training and
        before the optimiser state: capacity may grow by swapping `.data`)."""
        self._check_member(i)
        expected = {"raw_nu", *self.piece_names(), "_extra_state"}
        got = {k[len(prefix):] for k in state if k.startswith(prefix)}
        if got != expected:
            raise KeyError(f"member state dict does not fit this stack: missing "
                           f"{sorted(expected - got)}, unexpected {sorted(got - expected)}")
        widths = [int(state[f"{prefix}weight.{layer}"].shape[0]) for layer in range(self.num_hidden)]
        for layer, (w, cap) in enumerate(zip(widths, self.capacities)):
            if w > cap:
                self._set_capacity(layer, capacity_for(w), None, keep_identity=True)
        self._widths[i] = widths
        self.write_masks()
        self.raw_nu.data[i] = state[prefix + "raw_nu"].to(self.raw_nu)
        self.theta.data[i].zero_()
        for name, block in zip(self.piece_names(), regions(self.theta.data[i], self._specs(i))):
            value = state[prefix + name]
            if block.shape != value.shape:
                raise ValueError(f"{name}: member tensor of shape {tuple(value.shape)} does not "
                                 f"fit {tuple(block.shape)}")
            block.copy_(value)
        extra = state[prefix + "_extra_state"]
        self.generators[i].set_state(extra["grow_rng"].detach().cpu())
        self._saved_caps[i] = extra.get("capacity")     # an unstacked θ may be wider (capacity.py)
        self._frozen.discard(i)

    @torch.no_grad()
    def zero_member(self, i: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero member i's parameters and optimiser state (a diverged member), so that its NaNs
        stop flowing, and shrink it to one neuron per layer for good: its record is final, and
        a member whose width ran away no longer makes the others compute at its capacity."""
        self._check_member(i)
        self.resize_members({i: [1] * self.num_hidden}, optimizer)
        for p in self.parameters():
            p.data[i].zero_()
            for state, key in state_tensors(p, optimizer):
                state[key][i].zero_()
        self._frozen.add(i)

    def member_optimizer_state(self, optimizer: torch.optim.Optimizer, i: int) -> dict:
        """The `state_dict()` member i's unstacked optimiser would hold: per-entry state tensors cut
        to member i's active blocks, shared entries (Adam's step) kept, same param groups."""
        self._check_member(i)
        return member_optimizer_state(optimizer, i, lambda p, v: self._member_entry(i, p, v))

    def load_member_optimizer_state(self, optimizer: torch.optim.Optimizer, i: int,
                                    state_dict: dict) -> None:
        """Load member i's unstacked optimiser `state_dict()` (after `load_member_state_dict`)."""
        self._check_member(i)
        load_member_optimizer_state(optimizer, i, state_dict,
                                    lambda p, own, value: self._set_member_entry(i, p, own, value))
