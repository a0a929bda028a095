"""S AWNN classifiers trained as one model (docs/STACKING.md): per-member ν and widths inside one
shared capacity.

Every tensor carries a leading member axis S and the capacity C_ℓ of each hidden layer (the
largest width any member has needed, doubled when exceeded, for all members). Member i's active
block is [i, :D_iℓ, ...]; everything outside it, parameters and optimiser state alike, is exactly
zero, and member i's importance is exactly zero beyond D_iℓ (a mask), so one batched GEMM serves
all widths and no gradient reaches inactive entries. Growth draws come from each member's own
generator in the unstacked order (models/awnn/storage.py), so member i draws what the unstacked
run of its seed draws.

    stack = stack_adaptive([build(seed) for seed in seeds])       # nn.Sequential(Flatten, AdaptiveMLP)
    out = stack(x)                                                 # [S, B, ...] or [B, ...] -> [S, B, C]
    stack.update_widths(optimizer)                                 # after each step, per member
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.awnn.capacity import (active_specs, capacity_for, entering_specs, gather,
                                  leaving_specs, next_capacities, regions)
from models.awnn.fused import AdaptiveForward
from models.awnn.importance import Importance, ImportanceState, softplus_host, target_width
from models.awnn.layout import FlatLayout, Relayout, mlp_shapes
from models.awnn.mlp import AdaptiveMLP
from models.awnn.storage import (fresh_draws, make_generator, move_optimizer_state, resized,
                                 state_tensors)
from models.stacked.base import batched_linear

SHARED_SETTINGS = ("in_features", "out_features", "num_hidden", "k", "max_width", "init",
                   "grow_init", "importance", "activation_name", "has_out_bias", "nu_min")


class StackedAdaptiveMLP(nn.Module):
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
        self.layout = FlatLayout(mlp_shapes(self.in_features, caps, self.out_features,
                                            self.has_out_bias))
        self.theta = nn.Parameter(self.layout.pack([
            _stack_padded([m.pieces()[k] for m in members], shape)
            for k, shape in enumerate(self.layout.shapes)]))
        self._relayout = Relayout()
        self._views: tuple | None = None
        self.generators = [make_generator(state=m.generator.get_state()) for m in members]
        self._frozen: set[int] = set()
        self._saved_caps: dict[int, list[int] | None] = {}
        self.storage_version = 0            # +1 whenever capacity growth replaces Parameters
        device, dtype = self.raw_nu.device, self.raw_nu.dtype
        self.register_buffer("_positions", torch.arange(max(caps), dtype=dtype, device=device),
                             persistent=False)
        for layer, cap in enumerate(caps):
            mask = torch.zeros(self.members, cap, dtype=dtype, device=device)
            for i, w in enumerate(self._widths):
                mask[i, :w[layer]] = 1.0
            self.register_buffer(f"_mask{layer}", mask, persistent=False)

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

    def active_specs(self) -> None:
        return None

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
        masks = self.masks()
        for i, widths in targets.items():
            self._widths[i] = widths
            for mask, was, now in zip(masks, old[i], widths):     # member i's row: 1 for j < D_iℓ
                mask[i, min(was, now):max(was, now)].fill_(1.0 if now > was else 0.0)
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
            if fresh is not None:
                enter += [(z, st, o + shift) for z, st, o in entering_specs(
                    self.layout, old_shapes, new_shapes, self.num_hidden, fresh_bias)]
                draws.append(fresh)
        theta = self.theta.data
        if leave:
            tensors = [theta, *(s[key] for s, key in state_tensors(self.theta, optimizer))]
            torch._foreach_zero_([r for t in tensors for r in regions(t, leave)])
        if enter:
            targets = regions(theta, enter)
            parts = torch.cat(draws).to(theta).split([math.prod(z) for z, _, _ in enter])
            torch._foreach_copy_(targets, [p.view(t.shape) for p, t in zip(parts, targets)])

    def _shapes(self, widths: list[int]) -> tuple:
        return mlp_shapes(self.in_features, widths, self.out_features, self.has_out_bias)

    def _set_capacity(self, layer: int, cap: int, optimizer, keep_identity: bool = False) -> None:
        """Capacity of hidden layer `layer` -> cap, for every member (zero padding, or cutting
        entries that are inactive for every member)."""
        S = self.members
        self.storage_version += 1
        caps = self.capacities
        caps[layer] = cap
        layout = FlatLayout(mlp_shapes(self.in_features, caps, self.out_features, self.has_out_bias))
        old_layout = self.layout
        _reallocate(self, lambda t: self._relayout(t, old_layout, layout), optimizer, keep_identity)
        self.layout = layout
        name = f"_mask{layer}"
        setattr(self, name, resized(getattr(self, name), (S, cap)))
        if len(self._positions) != max(self.capacities):
            self._positions = torch.arange(max(self.capacities), dtype=self._positions.dtype,
                                           device=self._positions.device)

    # --- per-member state (docs/STACKING.md) ------------------------------------------------
    def _check_member(self, i: int) -> None:
        if not (isinstance(i, int) and 0 <= i < self.members):
            raise IndexError(f"member {i!r} is out of range; this stack has members "
                             f"0..{self.members - 1}")

    def _blocks(self, i: int) -> list[tuple]:
        """Member i's active block of each piece of θ (its index in the piece's view)."""
        return [(i, *(slice(0, n) for n in shape)) for shape in
                mlp_shapes(self.in_features, self._widths[i], self.out_features, self.has_out_bias)]

    def _named(self, raw: torch.Tensor, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"raw_nu": raw, "weight.ℓ" / "bias.ℓ": views of theta}: member state-dict names."""
        return {"raw_nu": raw, **dict(zip(self.piece_names(), self.layout.views(theta)))}

    def member_state_dict(self, i: int, prefix: str = "") -> dict:
        """What member i's unstacked AdaptiveMLP `state_dict()` holds (copies)."""
        self._check_member(i)
        named = self._named(self.raw_nu.detach(), self.theta.detach())
        out = {prefix + "raw_nu": named.pop("raw_nu")[i].clone()}
        for (name, t), index in zip(named.items(), self._blocks(i)):
            out[prefix + name] = t[index].clone()
        out[prefix + "_extra_state"] = {"grow_rng": self.generators[i].get_state()}
        return out

    def _member_entry(self, i: int, p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Member i's unstacked form of v (a per-entry tensor shaped like parameter p)."""
        if p is self.raw_nu:
            return v[i].clone()
        return torch.cat([t[index].reshape(-1) for t, index in
                          zip(self.layout.views(v), self._blocks(i))])

    def _set_member_entry(self, i: int, p: torch.Tensor, own: torch.Tensor,
                          value: torch.Tensor) -> None:
        """own[i] <- member i's unstacked value (zeros outside its active blocks)."""
        own[i].zero_()
        if p is self.raw_nu:
            own[i] = value.to(own)
            return
        blocks = self._blocks(i)
        sizes = [math.prod(b.stop for b in index[1:]) for index in blocks]
        caps = self._saved_caps.get(i)
        if value.numel() != sum(sizes) and caps is not None:      # saved at an unstacked capacity
            shapes = mlp_shapes(self.in_features, caps, self.out_features, self.has_out_bias)
            widths = mlp_shapes(self.in_features, self._widths[i], self.out_features,
                                self.has_out_bias)
            if value.numel() == FlatLayout(shapes).numel:
                value = gather(value, active_specs(FlatLayout(shapes), widths))
        if value.numel() != sum(sizes):
            raise ValueError(f"member state of {value.numel()} entries does not fit member {i}'s "
                             f"widths {self._widths[i]} ({sum(sizes)} entries)")
        for t, index, part in zip(self.layout.views(own), blocks, value.split(sizes)):
            t[index] = part.view(t[index].shape).to(own)

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
        for layer, mask in enumerate(self.masks()):
            mask[i].zero_()
            mask[i, :widths[layer]].fill_(1.0)
        self.raw_nu.data[i] = state[prefix + "raw_nu"].to(self.raw_nu)
        self.theta.data[i].zero_()
        named = self._named(self.raw_nu.data, self.theta.data)
        del named["raw_nu"]
        for (name, target), index in zip(named.items(), self._blocks(i)):
            value = state[prefix + name]
            if target[index].shape != value.shape:
                raise ValueError(f"{name}: member tensor of shape {tuple(value.shape)} does not "
                                 f"fit {tuple(target[index].shape)}")
            target[index] = value.to(target)
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
        own = (self.raw_nu, self.theta)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        state = {}
        for k, p in enumerate(params):
            if not optimizer.state.get(p):
                continue
            mine = any(p is q for q in own)
            state[k] = {key: (self._member_entry(i, p, v) if mine and torch.is_tensor(v)
                              and v.shape == p.shape else
                              v.clone() if torch.is_tensor(v) else copy.deepcopy(v))
                        for key, v in optimizer.state[p].items()}
        groups, start = [], 0
        for group in optimizer.param_groups:
            n = len(group["params"])
            groups.append({**copy.deepcopy({k: v for k, v in group.items() if k != "params"}),
                           "params": list(range(start, start + n))})
            start += n
        return {"state": state, "param_groups": groups}

    @torch.no_grad()
    def load_member_optimizer_state(self, optimizer: torch.optim.Optimizer, i: int,
                                    state_dict: dict) -> None:
        """Load member i's unstacked optimiser `state_dict()` (after `load_member_state_dict`)."""
        self._check_member(i)
        own_params = (self.raw_nu, self.theta)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        if len(ids) != len(params):
            raise ValueError(f"member optimiser state has {len(ids)} parameters; the stacked "
                             f"optimiser has {len(params)}")
        by_id = dict(zip(ids, params))
        for pid, entries in state_dict["state"].items():
            p = by_id[pid]
            mine = any(p is q for q in own_params)
            own = optimizer.state[p]
            for key, value in entries.items():
                if mine and torch.is_tensor(value) and value.ndim >= 1:
                    if key not in own:
                        own[key] = torch.zeros_like(p)
                    self._set_member_entry(i, p, own[key], value)
                else:
                    own[key] = value.clone() if torch.is_tensor(value) else copy.deepcopy(value)
        for own_group, group in zip(optimizer.param_groups, state_dict["param_groups"]):
            own_group.update(copy.deepcopy({k: v for k, v in group.items() if k != "params"}))

    def extra_repr(self) -> str:
        return (f"members={self.members}, in={self.in_features}, out={self.out_features}, "
                f"capacities={self.capacities}, activation={self.activation_name}, "
                f"importance={self.importance}")


def _stack_padded(tensors: list[torch.Tensor], shape: tuple) -> torch.Tensor:
    return torch.stack([resized(t, shape) for t in tensors])


def _reallocate(module: StackedAdaptiveMLP, move, optimizer, keep_identity: bool) -> None:
    """θ -> move(θ) (zero padding, or cutting entries inactive for every member), optimiser state
    too; a new Parameter unless keep_identity, which swaps `.data` (only before training)."""
    old = module.theta
    if keep_identity:
        old.data = move(old.data)
        old.grad = None
        for state, key in state_tensors(old, optimizer) if optimizer is not None else []:
            state[key] = move(state[key])
        return
    new = nn.Parameter(move(old.detach()), requires_grad=old.requires_grad)
    module._parameters["theta"] = new
    move_optimizer_state(optimizer, [(old, new, move)])


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
