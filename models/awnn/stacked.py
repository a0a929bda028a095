"""S AWNN classifiers trained as one model (docs/STACKING.md): per-member ν and widths inside one
shared capacity.

Every tensor carries a leading member axis S and the capacity C_ℓ of each hidden layer (the
widest member's width plus headroom, shared by all members; models/awnn/capacity.py). Member i's active
block is [i, :D_iℓ, ...]; everything outside it, parameters and optimiser state alike, is exactly
zero, and member i's importance is exactly zero beyond D_iℓ (a mask), so one batched GEMM serves
all widths and no gradient reaches inactive entries. Growth draws come from each member's own
generator in the unstacked order (models/awnn/storage.py), so member i draws what the unstacked
run of its seed draws.

    stack = stack_adaptive([build(seed) for seed in seeds])       # models/awnn/classifier.py
    out = stack(x)                                                 # [S, B, ...] or [B, ...] -> [S, B, C]
    stack.update_widths(optimizer)                                 # after each step, per member
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from models.awnn.capacity import (capacity_for, entering_specs, leaving_specs, next_capacities,
                                  relaid, write_entries)
from models.awnn.fused import AdaptiveForward
from models.awnn.importance import Importance, ImportanceState, softplus_host, target_width
from models.awnn.members import MemberState
from models.awnn.mlp import AdaptiveMLP
from models.awnn.storage import fresh_draws, make_generator, replace_theta, resized
from models.stacked.base import batched_linear

SHARED_SETTINGS = ("in_features", "out_features", "num_hidden", "k", "max_width", "init",
                   "grow_init", "importance", "activation_name", "has_out_bias", "nu_min")


class StackedAdaptiveMLP(MemberState, nn.Module):
    """S AdaptiveMLP members: raw_nu [S, L] and θ [S, P], each member's weights and biases at the
    shared capacities (models/awnn/layout.py; `weight[ℓ]` [S, rows, cols] and `bias[ℓ]` [S, rows]
    are views). Input [S, B, in] (a batch per member) or [B, in] (shared)."""

    def __init__(self, members: list[AdaptiveMLP]):
        super().__init__()
        if not members:
            raise ValueError("stacking needs at least one member")
        first = members[0]
        for j, m in enumerate(members):
            if not isinstance(m, AdaptiveMLP):
                raise TypeError(f"member {j} is {type(m).__name__}, not AdaptiveMLP")
            diff = [s for s in SHARED_SETTINGS if getattr(m, s) != getattr(first, s)]
            if diff:
                raise ValueError(f"member {j} differs from member 0 in {diff}; stacked members "
                                 f"share their architecture")
        for s in SHARED_SETTINGS:
            setattr(self, s, getattr(first, s))
        self.members = len(members)
        self.activation = copy.deepcopy(first.activation)
        self.gain = first.gain
        self._widths = [m.widths for m in members]
        caps = [max(w[layer] for w in self._widths) for layer in range(self.num_hidden)]
        self.raw_nu = nn.Parameter(torch.stack([m.raw_nu.detach() for m in members]).clone())
        self.layout = self._layout_for(caps)
        self.theta = nn.Parameter(self.layout.pack([
            _stack_padded([m.pieces()[k] for m in members], shape)
            for k, shape in enumerate(self.layout.shapes)]))
        self._views: tuple | None = None
        self.generators = [make_generator(state=m.generator.get_state()) for m in members]
        self._frozen: set[int] = set()
        self._saved_caps: dict[int, list[int] | None] = {}
        self.storage_version = 0            # +1 whenever capacity growth replaces Parameters
        device, dtype = self.raw_nu.device, self.raw_nu.dtype
        self.register_buffer("_positions", torch.arange(max(caps), dtype=dtype, device=device),
                             persistent=False)
        for layer, cap in enumerate(caps):
            self.register_buffer(f"_mask{layer}", torch.zeros(self.members, cap, dtype=dtype,
                                                              device=device), persistent=False)
        self.write_masks()

    # --- widths and importances -------------------------------------------------------------
    @property
    def widths(self) -> list[list[int]]:
        """Hidden widths of every member, [S][L]."""
        return [list(w) for w in self._widths]

    @property
    def capacities(self) -> list[int]:
        return [self.layout.shapes[i][0] for i in range(self.num_hidden)]

    @property
    def weight(self) -> tuple[torch.Tensor, ...]:
        """W_ℓ of every member at the capacities, [S, rows, cols]: views of θ."""
        return tuple(self.layout.views(self.theta)[:self.num_hidden + 1])

    @property
    def bias(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.layout.views(self.theta)[self.num_hidden + 1:])

    def active_pieces(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every piece of t at the capacities (members' widths are masks here)."""
        return self.layout.views(t)

    def active_views(self) -> tuple:
        """(θ's pieces at the capacities, None): a stack's gradient fills all of θ."""
        return self.pieces(), None

    def pieces(self) -> list[torch.Tensor]:
        """Detached views of θ's pieces (the fused forward pass reads them)."""
        theta, views = self.theta, self._views
        if views is None or views[0] is not theta or views[1] != theta.data_ptr():
            views = (theta, theta.data_ptr(), self.layout.views(theta.detach()))
            self.__dict__["_views"] = views
        return views[2]

    weight_matrices = AdaptiveMLP.weight_matrices
    piece_names = AdaptiveMLP.piece_names
    _save_to_state_dict = AdaptiveMLP._save_to_state_dict     # "weight.ℓ" [S, rows, cols], ...

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        keys = [prefix + name for name in self.piece_names()]
        if all(k in state_dict for k in keys):          # same capacities (member_state_dict else)
            state_dict[prefix + "theta"] = self.layout.pack([state_dict.pop(k) for k in keys])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def nus(self) -> torch.Tensor:
        nu = F.softplus(self.raw_nu)
        return nu + self.nu_min if self.nu_min else nu

    def masks(self) -> list[torch.Tensor]:
        return [getattr(self, f"_mask{layer}") for layer in range(self.num_hidden)]

    def write_masks(self) -> None:
        """Row i of layer ℓ's mask: 1 for j < D_iℓ, 0 beyond (one comparison per layer)."""
        positions = self._positions
        widths = torch.tensor(self._widths, dtype=positions.dtype, device=positions.device)
        for layer, mask in enumerate(self.masks()):
            torch.lt(positions[:mask.shape[1]], widths[:, layer, None], out=mask)

    def importances(self) -> tuple[torch.Tensor, ...]:
        """f(j; ν_iℓ) of every hidden layer, [S, C_ℓ] each, exactly 0 beyond member i's width."""
        return Importance.apply(self.raw_nu, self.nu_min, self.importance == "authors",
                                self._capacity_positions(), self.masks())

    batched = True                          # models/awnn/fused.py: leading member axis
    workspace = AdaptiveMLP.workspace

    @property
    def slope(self) -> float:
        """leaky_relu's negative slope (0 for the other activations)."""
        return getattr(self.activation, "negative_slope", 0.0)

    def importance_state(self) -> ImportanceState:
        return ImportanceState(self.raw_nu, self.nu_min, self.importance == "authors",
                               self._capacity_positions(), self.masks())

    def _capacity_positions(self) -> list[torch.Tensor]:
        return [self._positions[:cap] if cap != len(self._positions) else self._positions
                for cap in self.capacities]

    # --- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A batch per member ([S, B, in]) runs as one autograd node (models/awnn/fused.py); a
        shared batch takes the GEMM against all members' rows side by side."""
        if x.ndim == 3 and x.stride(0) != 0:
            return AdaptiveForward.apply(x, self.raw_nu, self, self.theta)
        fs = self.importances()
        weights, biases = self.weight, self.bias
        h = x
        for i in range(self.num_hidden):
            w = weights[i]
            if i:
                w = w * fs[i - 1].unsqueeze(1)              # AWNN eq. 14, folded as unstacked
            h = self.activation(batched_linear(h, w, biases[i]))
        out_bias = biases[self.num_hidden] if self.has_out_bias else None
        return batched_linear(h, weights[self.num_hidden] * fs[-1].unsqueeze(1), out_bias)

    # --- widths (Algorithm 1, per member) ---------------------------------------------------
    def host_nus(self, raw: list[list[float]] | None = None) -> list[list[float]]:
        raw = self.raw_nu.detach().tolist() if raw is None else raw
        return [[softplus_host(r) + self.nu_min for r in row] for row in raw]

    def update_widths(self, optimizer: torch.optim.Optimizer | None = None,
                      raw: list[list[float]] | None = None) -> bool:
        """Each member's widths from its own ν (a member with a non-finite ν, or zeroed after it
        diverged, keeps its widths); capacity grows for all when any member needs it."""
        nus = self.host_nus(raw)
        targets = {}
        for i, widths in enumerate(self._widths):
            if i in self._frozen:
                continue
            target = [target_width(nu, self.k, self.max_width, d) for nu, d in zip(nus[i], widths)]
            if target != widths:
                targets[i] = target
        if targets:
            self.resize_members(targets, optimizer, nus)
        return bool(targets)

    @torch.no_grad()
    def resize_member(self, i: int, new_widths: list[int], optimizer=None) -> None:
        """Member i's hidden widths -> new_widths (see `resize_members`)."""
        self.resize_members({i: new_widths}, optimizer)

    @torch.no_grad()
    def resize_members(self, targets: dict[int, list[int]], optimizer=None,
                       nus: list[list[float]] | None = None) -> None:
        """Members' hidden widths -> targets[i]. Leaving entries and their optimiser state are
        zeroed; each growing member then draws its fresh neurons from its own generator in the
        unstacked order (`_move_entries`)."""
        targets = {i: [int(w) for w in widths] for i, widths in targets.items()
                   if [int(w) for w in widths] != self._widths[i]}
        if not targets:
            return
        for i, widths in targets.items():
            self._check_member(i)
            if len(widths) != self.num_hidden or any(w < 1 for w in widths):
                raise ValueError(f"member {i}: widths {widths} must be {self.num_hidden} "
                                 f"integers >= 1")
        for layer, cap in enumerate(self.capacities):
            need = max(widths[layer] for widths in targets.values())
            if need > cap:
                self._set_capacity(layer, capacity_for(need), optimizer)
        nus = self.host_nus() if nus is None else nus
        old = {i: self._widths[i] for i in targets}
        for i, widths in targets.items():
            self._widths[i] = widths
        self.write_masks()
        self._move_entries(old, targets, nus, optimizer)
        for layer, cap in enumerate(self.capacities):          # every member far below: shrink
            need = max(widths[layer] for widths in self._widths)
            if next_capacities([cap], [need]) != [cap]:
                self._set_capacity(layer, capacity_for(need), optimizer)

    def _move_entries(self, old: dict, new: dict, nus, optimizer) -> None:
        """Zero the entries that members leave (parameters and per-entry optimiser state; all
        other inactive entries are zero already), then write each growing member's fresh draws
        (its own generator, the unstacked order; their optimiser state is zero): one multi-tensor
        write each, on strided views of θ (models/awnn/capacity.py specs, shifted to member i)."""
        numel, fresh_bias = self.layout.numel, self.grow_init == "normal"
        leave, enter, draws = [], [], []
        for i, widths in new.items():
            old_shapes, new_shapes = self._shapes(old[i]), self._shapes(widths)
            shift = i * numel
            leave += [(z, st, o + shift) for z, st, o in leaving_specs(self.layout, old_shapes,
                                                                      new_shapes)]
            fresh = fresh_draws(self, self.generators[i], old[i], widths, nus[i], self.theta.dtype)
            if fresh:
                enter += [(z, st, o + shift) for z, st, o in entering_specs(
                    self.layout, old_shapes, new_shapes, self.num_hidden, fresh_bias)]
                draws += fresh
        write_entries(self.theta, optimizer, leave, enter, draws)

    _shapes, _layout_for = AdaptiveMLP._shapes, AdaptiveMLP._layout_for

    def _set_capacity(self, layer: int, cap: int, optimizer, keep_identity: bool = False) -> None:
        """Capacity of hidden layer `layer` -> cap, for every member (zero padding, or cutting
        entries that are inactive for every member)."""
        S = self.members
        self.storage_version += 1
        caps = self.capacities
        caps[layer] = cap
        layout = self._layout_for(caps)
        old_layout = self.layout
        replace_theta(self, lambda t: relaid(t, old_layout, layout), optimizer, keep_identity)
        self.layout = layout
        name = f"_mask{layer}"
        setattr(self, name, resized(getattr(self, name), (S, cap)))
        if len(self._positions) != max(self.capacities):
            self._positions = torch.arange(max(self.capacities), dtype=self._positions.dtype,
                                           device=self._positions.device)

    def extra_repr(self) -> str:
        return (f"members={self.members}, in={self.in_features}, out={self.out_features}, "
                f"capacities={self.capacities}, activation={self.activation_name}, "
                f"importance={self.importance}")


def _stack_padded(tensors: list[torch.Tensor], shape: tuple) -> torch.Tensor:
    return torch.stack([resized(t, shape) for t in tensors])
