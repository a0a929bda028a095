"""Adaptive Width Neural Networks (AWNN §3): an MLP whose hidden widths are learned by backprop.

Conventions: see models/awnn/importance.py (importance `paper` | `authors`, ν, the width rule).
- kaiming+ (Thm 3.1): weights after the first layer ~ N(0, gain / Σ_j f(j; ν_{ℓ−1})²), Σ f² under
  the model's importance convention; `init="kaiming"` uses gain / D_{ℓ−1}. The first layer is
  kaiming (gain / in_features), biases start at 0.
- Fresh neurons (Algorithm 1, growth) are drawn from the layer's own init at the new widths by
  default; `grow_init="normal"` draws weights and biases from N(0, 1) as the paper states. Draws
  come from the model's own CPU generator (models/awnn/storage.py), seeded at build time from the
  global generator, saved in the state dict (`_extra_state`) so that a resumed run draws on.
- Dropped neurons are discarded; a neuron that comes back later is fresh.

Storage: every weight and bias lives in one flat Parameter θ (models/awnn/layout.py), so the
optimiser, the weight prior and zero_grad touch one tensor; `weight` / `bias` are views. θ holds
each piece at the layer's capacity (models/awnn/capacity.py): the forward pass reads the active
blocks, everything else is exactly zero (parameters and optimiser state). A resize within the
capacity zeroes leaving entries and writes fresh ones in place (kept entries keep their state,
new ones start at zero); only a capacity change replaces θ by a new Parameter, in the optimiser's
param groups and state too, so the same optimiser object keeps working (`storage_version` counts
replacements). State dicts hold `weight.ℓ` / `bias.ℓ` at the active sizes, and the capacity in
`_extra_state`; optimiser states saved while each piece was its own parameter load through
`training.flat_optimizer_state`.

Per step: the whole forward pass is one autograd node with a closed-form backward
(models/awnn/fused.py); the importances are folded into the next layer's weight columns (eq. 14
as an [out, D] product instead of [batch, D]) and reused while ν and the widths stand; the widths
are decided on the host from the raw ν, read once per step. `_run` is the same function in plain
autograd (hidden activations, tests). Stacks: models/awnn/stacked.py.

`load_state_dict()` into any AdaptiveMLP with the same in/out features and depth (e.g. a fresh
model at the config's initial width) re-lays θ out first by swapping `.data`, keeping Parameter
identities, so an optimiser built on the fresh model can then load its own saved state. Load
before training (a model that already ran backward may hold stale autograd shape metadata).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.activations import ACTIVATIONS, make_activation
from models.awnn.capacity import (active_specs, entering_specs, gather, leaving_specs,
                                  next_capacities, regions, relaid, write_entries)
from models.awnn.fused import AdaptiveForward
from models.awnn.importance import (Importance, ImportanceState, check_convention,
                                    inverse_softplus, softplus_host, target_width, width_for)
from models.awnn.layout import FlatLayout, mlp_shapes
from models.awnn.storage import fresh_draws, layer_std, make_generator, replace_theta

INITS = ("kaiming_plus", "kaiming")
GROW_INITS = ("layer", "normal")
# Variance gain of kaiming init per activation (He et al. 2015; relu6 treated as relu).
GAINS = {"relu": 2.0, "relu6": 2.0, "leaky_relu": 2.0 / (1 + 0.01 ** 2), "linear": 1.0,
         "tanh": 25.0 / 9.0, "sigmoid": 1.0}


class AdaptiveMLP(nn.Module):
    """in -> D_1 -> ... -> D_L -> out, hidden widths D_ℓ learned (AWNN eq. 14, Algorithm 1).

    h_j = σ(Σ_k w_jk h_k + b_j) · f(j; ν_ℓ) on every hidden layer; the output layer is linear.
    Inputs may have any leading dims. Call `update_widths(model, optimizer)` after each step.
    """

    def __init__(self, in_features: int, out_features: int, num_hidden: int = 1, *,
                 nu0: float = 0.01, k: float = 0.9, activation: str = "relu6",
                 init: str = "kaiming_plus", out_bias: bool = True,
                 max_width: int | None = None, grow_init: str = "layer",
                 importance: str = "paper"):
        super().__init__()
        if num_hidden < 1:
            raise ValueError(f"num_hidden={num_hidden} must be >= 1")
        if init not in INITS:
            raise ValueError(f"init={init!r} is unknown; allowed: {list(INITS)}")
        if grow_init not in GROW_INITS:
            raise ValueError(f"grow_init={grow_init!r} is unknown; allowed: {list(GROW_INITS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is unknown; allowed: {sorted(ACTIVATIONS)}")
        if max_width is not None and max_width < 2:
            raise ValueError(f"max_width={max_width} must be >= 2 (or None for no cap)")
        width0 = width_for(nu0, k)
        if max_width is not None and width0 > max_width:
            raise ValueError(f"nu0={nu0} starts at width {width0} > max_width={max_width}; "
                             f"raise nu0 or max_width")
        self.in_features, self.out_features, self.num_hidden = in_features, out_features, num_hidden
        self.k, self.max_width, self.init, self.grow_init = k, max_width, init, grow_init
        self.importance = check_convention(importance)
        self.activation_name = activation
        self.activation = make_activation(activation)
        self.gain = GAINS[activation]
        # ν > ν_min ⇔ D ≤ max_width: a smooth lower bound keeps ν's gradient alive at the cap.
        self.nu_min = -math.log1p(-k) / (max_width - 1) if max_width is not None else 0.0
        self.raw_nu = nn.Parameter(torch.full((num_hidden,), inverse_softplus(nu0 - self.nu_min)))
        self._widths = [width0] * num_hidden
        self.has_out_bias = out_bias
        self._caps = list(self._widths)           # θ's capacities (models/awnn/capacity.py)
        self.layout = self._layout_for(self._caps)
        self.theta = nn.Parameter(torch.zeros(self.layout.numel))    # models/awnn/layout.py
        self._views: tuple | None = None   # (θ, its data_ptr, {widths: (active views, specs)})
        self.register_buffer("_positions", torch.arange(width0, dtype=self.raw_nu.dtype),
                             persistent=False)
        self.generator = make_generator()   # growth draws; seeded before the init draws below
        self.storage_version = 0            # +1 whenever a resize replaces Parameter objects
        self._layer_positions: tuple | None = None   # (_positions, [j per layer]) at these widths
        self._no_masks = [None] * num_hidden
        self._raw_seen: tuple | None = None       # (raw_nu, its _version, its values) last read
        self._importance_cache: tuple | None = None   # (raw values, positions, ImportanceState)
        self.reset_parameters()

    # --- widths and importances -------------------------------------------------------------
    @property
    def widths(self) -> list[int]:
        return list(self._widths)

    # --- storage: θ = [W_0 | ... | W_L | b_0 | ...] at the capacities (models/awnn/layout.py,
    # capacity.py); the active blocks are views ----------------------------------------------
    def _layout_for(self, caps: list[int]) -> FlatLayout:
        return FlatLayout(self._shapes(caps))

    def _shapes(self, widths: list[int]) -> tuple:
        return mlp_shapes(self.in_features, widths, self.out_features, self.has_out_bias)

    def active_pieces(self, t: torch.Tensor) -> list[torch.Tensor]:
        """The active block of every piece of t (θ, its gradient or an optimiser state of θ)."""
        if self._caps == self._widths:
            return self.layout.views(t)
        return regions(t, active_specs(self.layout, self._shapes(self._widths)))

    def active_flat(self, t: torch.Tensor) -> torch.Tensor:
        """t (θ-shaped) packed to its active entries: a flat θ as if the widths were the
        capacities (the form a stack's member state takes)."""
        specs = self.active_views()[1]
        return t if specs is None else gather(t, specs)

    @property
    def weight(self) -> tuple[torch.Tensor, ...]:
        """W_ℓ, [D_{ℓ+1}, D_ℓ] for ℓ = 0..L: views of θ (differentiable in grad mode)."""
        return tuple(self.active_pieces(self.theta)[:self.num_hidden + 1])

    @property
    def bias(self) -> tuple[torch.Tensor, ...]:
        """b_ℓ of every hidden layer, then the output bias if any: views of θ."""
        return tuple(self.active_pieces(self.theta)[self.num_hidden + 1:])

    def weight_matrices(self) -> tuple[torch.Tensor, ...]:
        """The weights an L1/L2 penalty sees (models/stacked/losses.py weight_matrices)."""
        return self.weight

    def pieces(self) -> list[torch.Tensor]:
        """Detached views of θ's weights and biases (the fused forward pass reads them), kept
        while θ and its storage stand."""
        return self.active_views()[0]

    def active_views(self) -> tuple:
        """(detached active views of θ's pieces, the strided specs of those blocks in θ or None
        when the widths fill the capacities), per widths (a few kept while θ and its storage
        stand: widths often move back and forth). The fused forward pass reads both."""
        theta, cache = self.theta, self._views
        if cache is None or cache[0] is not theta or cache[1] != theta.data_ptr():
            cache = (theta, theta.data_ptr(), {})
            self.__dict__["_views"] = cache                 # see `update_widths`
        key = tuple(self._widths)
        hit = cache[2].get(key)
        if hit is None:
            if len(cache[2]) >= 8:
                cache[2].clear()
            specs = None if self._caps == self._widths else \
                active_specs(self.layout, self._shapes(self._widths))
            views = self.layout.views(theta.detach()) if specs is None else \
                regions(theta.detach(), specs)
            hit = cache[2][key] = (views, specs)
        return hit

    def nus(self) -> torch.Tensor:
        """ν of every hidden layer as the forward pass uses it (differentiable)."""
        nu = F.softplus(self.raw_nu)
        return nu + self.nu_min if self.nu_min else nu

    def host_nus(self, raw: list[float] | None = None) -> list[float]:
        """ν of every hidden layer in float64 on the host (one device sync unless `raw` given)."""
        raw = self.raw_nu.detach().tolist() if raw is None else raw
        return [softplus_host(r) + self.nu_min for r in raw]

    def target_widths(self, nus: list[float]) -> list[int]:
        return [target_width(nu, self.k, self.max_width, w) for nu, w in zip(nus, self._widths)]

    def importances(self) -> tuple[torch.Tensor, ...]:
        """f(j; ν_ℓ) for j < D_ℓ of every hidden layer, as the forward pass uses them."""
        return Importance.apply(self.raw_nu, self.nu_min, self.importance == "authors",
                                self.positions(), self._no_masks)

    def importance_state(self) -> ImportanceState:
        """The importances of the forward pass and their ν-derivatives; reused while raw ν holds
        the values last read on the host (unchanged `_version` since) and the widths stand."""
        positions, raw = self.positions(), self.raw_nu
        seen, cache = self._raw_seen, self._importance_cache
        known = seen is not None and seen[0] is raw and seen[1] == raw._version
        if known and cache is not None and cache[0] == seen[2] and cache[1] is positions:
            return cache[2]
        state = ImportanceState(raw, self.nu_min, self.importance == "authors", positions,
                                self._no_masks)
        self.__dict__["_importance_cache"] = (seen[2], positions, state) if known else None
        return state

    batched = False                         # models/awnn/fused.py: no member axis

    @property
    def workspace(self) -> dict:
        """models/awnn/fused.py's backward buffer (not state: never saved or copied)."""
        if "_workspace" not in self.__dict__:
            self.__dict__["_workspace"] = {}
        return self.__dict__["_workspace"]

    @property
    def slope(self) -> float:
        """leaky_relu's negative slope (0 for the other activations)."""
        return getattr(self.activation, "negative_slope", 0.0)

    def positions(self) -> list[torch.Tensor]:
        """j = 0..D_ℓ−1 of every hidden layer (views of one buffer, kept until the widths or the
        buffer change)."""
        base, cached = self._positions, self._layer_positions
        if cached is None or cached[0] is not base:
            cached = (base, [base if w == len(base) else base[:w] for w in self._widths])
            self.__dict__["_layer_positions"] = cached
        return cached[1]

    # --- init -------------------------------------------------------------------------------
    def layer_std(self, layer: int, widths: list[int], nus: list[float]) -> float:
        """Init std of weight `layer` (0 = input layer, num_hidden = output layer)."""
        return layer_std(layer, self.in_features, widths, nus, self.gain, self.init, self.importance)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nus = self.host_nus()
        for i, w in enumerate(self.weight):
            w.normal_(0.0, self.layer_std(i, self._widths, nus))
        for b in self.bias:
            b.zero_()

    # --- forward ----------------------------------------------------------------------------
    def _run(self, x: torch.Tensor, collect: list | None) -> torch.Tensor:
        fs = self.importances()
        weights, biases = self.weight, self.bias
        h = x
        for i in range(self.num_hidden):
            # AWNN eq. 14, h_{ℓ−1} ⊙ f(·; ν_{ℓ−1}) folded into the columns of W_ℓ: one [out, D]
            # product instead of one [batch, D] product
            w = weights[i] if i == 0 else weights[i] * fs[i - 1]
            h = self.activation(F.linear(h, w, biases[i]))
            if collect is not None:
                collect.append(h)
        out_bias = biases[self.num_hidden] if self.has_out_bias else None
        return F.linear(h, weights[self.num_hidden] * fs[-1], out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same function as `_run`, as one autograd node (models/awnn/fused.py)."""
        flat = x if x.ndim == 2 else x.reshape(-1, self.in_features)
        out = AdaptiveForward.apply(flat, self.raw_nu, self, self.theta)
        return out if x.ndim == 2 else out.reshape(*x.shape[:-1], self.out_features)

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """α_ℓ = σ(W h_{ℓ−1} + b) of each hidden layer, before the importance (AWNN Fig. 2)."""
        collect: list[torch.Tensor] = []
        self._run(x, collect)
        return collect

    # --- resizing (Algorithm 1) -------------------------------------------------------------
    def update_widths(self, optimizer: torch.optim.Optimizer | None = None,
                      raw: list[float] | None = None) -> bool:
        """Algorithm 1, lines 12–15: widths from the current ν; True if any changed.
        `raw`: the current raw ν already on the host (else read here: one device sync)."""
        if raw is None:
            raw = self.raw_nu.detach().tolist()
        # per-step caches are plain attributes, written past nn.Module.__setattr__'s checks
        self.__dict__["_raw_seen"] = (self.raw_nu, self.raw_nu._version, raw)
        nus = self.host_nus(raw)
        target = self.target_widths(nus)
        if target == self._widths:
            return False
        self.resize(target, optimizer, nus)
        return True

    @torch.no_grad()
    def resize(self, new_widths: list[int], optimizer: torch.optim.Optimizer | None = None,
               nus: list[float] | None = None) -> None:
        """Set hidden widths: drop tail neurons or append fresh ones; kept neurons are untouched,
        and so is their optimiser state; new entries start with zero optimiser state."""
        if len(new_widths) != self.num_hidden:
            raise ValueError(f"got {len(new_widths)} widths {list(new_widths)}, model has "
                             f"{self.num_hidden} hidden layers")
        if any(int(w) < 1 for w in new_widths):
            raise ValueError(f"widths {list(new_widths)} must all be >= 1")
        new_widths = [int(w) for w in new_widths]
        if new_widths == self._widths:
            return
        nus = self.host_nus() if nus is None else nus
        caps = next_capacities(self._caps, new_widths)
        if caps != self._caps:
            self._set_capacities(caps, optimizer)
        old = self._shapes([min(w, c) for w, c in zip(self._widths, caps)])
        new = self._shapes(new_widths)
        fresh = fresh_draws(self, self.generator, self._widths, new_widths, nus, self.theta.dtype)
        enter = entering_specs(self.layout, old, new, self.num_hidden, self.grow_init == "normal")
        write_entries(self.theta, optimizer, leaving_specs(self.layout, old, new), enter, fresh)
        # plain attributes, set past nn.Module.__setattr__'s checks (a resize may run every step)
        self.__dict__.update(_widths=new_widths, _layer_positions=None)
        self._ensure_positions(max(new_widths))

    def _set_capacities(self, caps: list[int], optimizer) -> None:
        """Re-lay θ and its optimiser state out at new capacities (a new Parameter; entries
        beyond them are cut, new room is zero)."""
        layout, old_layout = self._layout_for(caps), self.layout
        replace_theta(self, lambda t: relaid(t, old_layout, layout), optimizer)
        self.__dict__.update(_caps=caps, layout=layout, storage_version=self.storage_version + 1)

    def _ensure_positions(self, n: int) -> None:
        if len(self._positions) < n:
            self._positions = torch.arange(n, dtype=self.raw_nu.dtype, device=self.raw_nu.device)

    # --- state ------------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        """The growth generator, and θ's capacities (so that an optimiser state saved beside
        the model fits θ after loading)."""
        return {"grow_rng": self.generator.get_state(), "capacity": list(self._caps)}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["grow_rng"].detach().cpu())

    def piece_names(self) -> list[str]:
        """State-dict keys of θ's pieces ("weight.ℓ", "bias.ℓ"; the format before θ was flat)."""
        return ([f"weight.{i}" for i in range(self.num_hidden + 1)]
                + [f"bias.{i}" for i in range(len(self.layout.shapes) - self.num_hidden - 1)])

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        theta = destination.pop(prefix + "theta")
        extra = destination.pop(prefix + "_extra_state", None)
        for name, view in zip(self.piece_names(), self.active_pieces(theta)):
            destination[prefix + name] = view
        if extra is not None:
            destination[prefix + "_extra_state"] = extra

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A saved model may have other widths: resize storage in place (same Parameter objects).
        legacy = state_dict.pop(prefix + "width_state", None)   # capacity-sized format, pre-2026-11
        if legacy is not None:
            _trim_legacy(state_dict, prefix, [int(w) for w in legacy.tolist()], self)
        keys = [prefix + name for name in self.piece_names()]
        if all(k in state_dict for k in keys):
            pieces = [state_dict.pop(k) for k in keys]
            widths = [int(w.shape[0]) for w in pieces[:self.num_hidden]]
            extra = state_dict.get(prefix + "_extra_state")
            caps = extra.get("capacity") if isinstance(extra, dict) else None
            if caps is None or len(caps) != len(widths) or any(c < w for c, w in zip(caps, widths)):
                caps = widths                               # files without it, stack members
            self._widths, self._caps, self.layout = widths, list(caps), self._layout_for(list(caps))
            theta = pieces[0].new_zeros(self.layout.numel)
            for block, piece in zip(self.active_pieces(theta), pieces):
                block.copy_(piece)
            state_dict[prefix + "theta"] = theta
            if self.theta.shape != theta.shape:
                self.theta.data = self.theta.data.new_zeros(theta.shape)
                self.theta.grad = None
            self._layer_positions = None
            self._ensure_positions(max(self._widths))
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())  # pre-generator files
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, widths={self._widths}, "
                f"activation={self.activation_name}, init={self.init}, k={self.k}, "
                f"max_width={self.max_width}, importance={self.importance}")


def _trim_legacy(state_dict: dict, prefix: str, widths: list[int], m: AdaptiveMLP) -> None:
    """The older capacity-sized format: keep each tensor's active block."""
    sizes = [m.in_features, *widths, m.out_features]
    for i in range(m.num_hidden + 1):
        key = f"{prefix}weight.{i}"
        if key in state_dict:
            state_dict[key] = state_dict[key][:sizes[i + 1], :sizes[i]].clone()
        key = f"{prefix}bias.{i}"
        if key in state_dict:
            state_dict[key] = state_dict[key][:sizes[i + 1]].clone()
