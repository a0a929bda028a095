"""Adaptive Width Neural Networks (AWNN §3): MLPs whose hidden widths are learned by backprop.

Conventions (see SPEC B.1):
- Importance f(j; ν) = e^{−νj}(1 − e^{−ν}), j = 0, 1, ... (eq. 12 with the exponent's sign fixed),
  *not* renormalised over the kept neurons (the paper's math; it sums to 1 − e^{−νD} ≥ k over the
  D kept ones). `importance(..., renormalise=True)` gives the authors' code convention.
- ν = ν_min + softplus(raw) per hidden layer; ν_min > 0 only when `max_width` caps the width.
- Width D = ⌊−ln(1−k)/ν⌋ + 2 (authors' code; ν = 0.01, k = 0.9 -> 232).
- Fresh neurons (Algorithm 1, growth) are drawn from the layer's own init (kaiming+ or kaiming at
  the current widths) by default; `grow_init="normal"` draws N(0, 1) as the paper states.

Storage: every weight is a parameter of *capacity* size; the forward pass uses the active
[:D_out, :D_in] slice. Entries outside the active block are kept exactly zero, and so is their
optimiser state, so weight penalties and weight decay over whole parameters see active weights
only. When a width exceeds its capacity, the capacity doubles: the parameter is replaced by a
zero-padded one, in the module and in the optimiser's param groups and state (so the same
optimiser object keeps working; code holding old Parameter references must re-read them).

`state_dict()` holds the capacity-sized tensors and a `width_state` buffer; `load_state_dict()`
into any AdaptiveMLP built with the same in/out features and depth (e.g. a fresh model at the
config's initial width) resizes it first by swapping `.data`, keeping Parameter identities, so an
optimiser built on the fresh model can then load its own saved state. Load before training
(a model that already ran backward may hold stale autograd shape metadata).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.activations import ACTIVATIONS, make_activation

INITS = ("kaiming_plus", "kaiming")
GROW_INITS = ("layer", "normal")
# Variance gain of kaiming init per activation (He et al. 2015; relu6 treated as relu).
GAINS = {"relu": 2.0, "relu6": 2.0, "leaky_relu": 2.0 / (1 + 0.01 ** 2), "linear": 1.0,
         "tanh": 25.0 / 9.0, "sigmoid": 1.0}


def importance(width: int, nu: torch.Tensor | float, renormalise: bool = False) -> torch.Tensor:
    """f(j; ν) = e^{−νj}(1 − e^{−ν}) for j = 0..width−1 (AWNN eq. 12, sign of exponent fixed).

    Differentiable in ν. Default: the paper's discretised exponential, unnormalised (sums to
    1 − e^{−ν·width}). `renormalise=True`: the authors' code, (f + 1e-6) / Σ (f + 1e-6).
    """
    nu = torch.as_tensor(nu, dtype=torch.get_default_dtype())
    j = torch.arange(width, device=nu.device, dtype=nu.dtype)
    f = torch.exp(-nu * j) * -torch.expm1(-nu)   # cdf(j+1) − cdf(j) of Exp(ν)
    if renormalise:
        f = f + 1e-6
        f = f / f.sum()
    return f


def width_for(nu: float, k: float = 0.9) -> int:
    """D = ⌊−ln(1−k)/ν⌋ + 2: the k-quantile of f(·; ν) as the authors' code rounds it."""
    if not 0.0 < k < 1.0:
        raise ValueError(f"k={k} must lie in (0, 1)")
    if not nu > 0.0:
        raise ValueError(f"nu={nu} must be > 0")
    return int(math.floor(-math.log1p(-k) / nu)) + 2


def sum_sq_importance(width: int, nu: float) -> float:
    """Σ_{j<width} f(j; ν)², closed form of a geometric series (Thm 3.1's denominator)."""
    q = math.exp(-2.0 * nu)
    return (-math.expm1(-nu)) ** 2 * (1.0 - q ** width) / (1.0 - q)


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class AdaptiveMLP(nn.Module):
    """in -> D_1 -> ... -> D_L -> out, hidden widths D_ℓ learned (AWNN eq. 14, Algorithm 1).

    h_j = σ(Σ_k w_jk h_k + b_j) · f(j; ν_ℓ) on every hidden layer; the output layer is linear.
    Inputs may have any leading dims. Call `update_widths(model, optimizer)` after each step.
    """

    def __init__(self, in_features: int, out_features: int, num_hidden: int = 1, *,
                 nu0: float = 0.01, k: float = 0.9, activation: str = "relu6",
                 init: str = "kaiming_plus", out_bias: bool = True,
                 max_width: int | None = None, grow_init: str = "layer"):
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
        self.activation_name = activation
        self.activation = make_activation(activation)
        self.gain = GAINS[activation]
        # ν > ν_min ⇔ D ≤ max_width: a smooth lower bound keeps ν's gradient alive at the cap.
        self.nu_min = -math.log1p(-k) / (max_width - 1) if max_width is not None else 0.0
        self.raw_nu = nn.Parameter(torch.full((num_hidden,), _inverse_softplus(nu0 - self.nu_min)))
        self._widths = [width0] * num_hidden
        sizes = [in_features, *self._widths, out_features]
        self.weight = nn.ParameterList(
            nn.Parameter(torch.zeros(b, a)) for a, b in zip(sizes[:-1], sizes[1:]))
        self.bias = nn.ParameterList(
            nn.Parameter(torch.zeros(b)) for b in sizes[1:-1] + ([out_features] if out_bias else []))
        self.has_out_bias = out_bias
        self.register_buffer("width_state", torch.tensor(self._widths))
        self.register_buffer("_positions", torch.arange(width0, dtype=torch.float32),
                             persistent=False)
        self.reset_parameters()

    # --- widths and importances -------------------------------------------------------------
    @property
    def widths(self) -> list[int]:
        return list(self._widths)

    @property
    def capacities(self) -> list[int]:
        return [self.weight[i].shape[0] for i in range(self.num_hidden)]

    def nus(self) -> torch.Tensor:
        nu = F.softplus(self.raw_nu)
        return nu + self.nu_min if self.nu_min else nu

    def target_widths(self, nus: list[float]) -> list[int]:
        cap = self.max_width if self.max_width is not None else math.inf
        return [int(min(width_for(nu, self.k), cap)) for nu in nus]

    # --- init -------------------------------------------------------------------------------
    def layer_std(self, layer: int, widths: list[int], nus: list[float]) -> float:
        """Init std of weight `layer` (0 = input layer, num_hidden = output layer)."""
        fan_in = self.in_features if layer == 0 else widths[layer - 1]
        if layer == 0 or self.init == "kaiming":
            return math.sqrt(self.gain / fan_in)
        # kaiming+ (AWNN Thm 3.1, eq. 41): Var[w] = 2 / Σ_j f(j; ν_{ℓ−1})² over the previous layer
        return math.sqrt(self.gain / sum_sq_importance(fan_in, nus[layer - 1]))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nus = self.nus().tolist()
        sizes = [self.in_features, *self._widths, self.out_features]
        for i, w in enumerate(self.weight):
            w.zero_()
            w[:sizes[i + 1], :sizes[i]].normal_(0.0, self.layer_std(i, self._widths, nus))
        for b in self.bias:
            b.zero_()

    # --- forward ----------------------------------------------------------------------------
    def importances(self) -> list[torch.Tensor]:
        """f(j; ν_ℓ) for j < D_ℓ of every hidden layer, as the forward pass uses them."""
        # f(j) = q^j (1 − q), q = e^{−ν} (AWNN eq. 12): few autograd nodes, since small CPU
        # steps are bound by per-op overhead; 1 − q via expm1 keeps small ν accurate.
        neg_nu = -self.nus()
        q, one_minus_q = torch.exp(neg_nu), -torch.expm1(neg_nu)
        pairs = zip(q.unbind(), one_minus_q.unbind()) if self.num_hidden > 1 else [(q, one_minus_q)]
        return [qi ** self._positions[:width] * ci for (qi, ci), width in zip(pairs, self._widths)]

    def _run(self, x: torch.Tensor, collect: list | None) -> torch.Tensor:
        h, prev = x, self.in_features
        for i, (width, f) in enumerate(zip(self._widths, self.importances())):
            pre = F.linear(h, _block(self.weight[i], width, prev), _block(self.bias[i], width))
            alpha = self.activation(pre)
            if collect is not None:
                collect.append(alpha)
            h, prev = alpha * f, width                                         # AWNN eq. 14
        out_bias = self.bias[self.num_hidden] if self.has_out_bias else None
        return F.linear(h, _block(self.weight[self.num_hidden], self.out_features, prev), out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """α_ℓ = σ(W h_{ℓ−1} + b) of each hidden layer, before the importance (AWNN Fig. 2)."""
        collect: list[torch.Tensor] = []
        self._run(x, collect)
        return collect

    # --- resizing (Algorithm 1) -------------------------------------------------------------
    @torch.no_grad()
    def resize(self, new_widths: list[int], optimizer: torch.optim.Optimizer | None = None,
               nus: list[float] | None = None) -> None:
        """Set hidden widths: drop tail neurons or append fresh ones; kept neurons are untouched.

        Entries leaving the active block and the optimiser state of every entry outside the kept
        block are zeroed, so new neurons start with zero optimiser state.
        """
        if len(new_widths) != self.num_hidden:
            raise ValueError(f"got {len(new_widths)} widths {new_widths}, model has "
                             f"{self.num_hidden} hidden layers")
        if any(w < 1 for w in new_widths):
            raise ValueError(f"widths {new_widths} must all be >= 1")
        new_widths = [int(w) for w in new_widths]
        if nus is None:
            nus = self.nus().tolist()
        for i, (width, cap) in enumerate(zip(new_widths, self.capacities)):
            if width > cap:
                self._grow_capacity(i, max(2 * cap, width), optimizer)
        old = [self.in_features, *self._widths, self.out_features]
        new = [self.in_features, *new_widths, self.out_features]
        for layer in range(self.num_hidden + 1):
            old_shape, new_shape = (old[layer + 1], old[layer]), (new[layer + 1], new[layer])
            if old_shape == new_shape:
                continue
            std = 1.0 if self.grow_init == "normal" else self.layer_std(layer, new_widths, nus)
            _refill(self.weight[layer], old_shape, new_shape, std, optimizer)
            if layer < len(self.bias):
                _refill(self.bias[layer], old_shape[:1], new_shape[:1],
                        1.0 if self.grow_init == "normal" else 0.0, optimizer)
        self._widths = new_widths
        self.width_state.copy_(torch.tensor(new_widths))

    def _grow_capacity(self, hidden: int, cap: int, optimizer) -> None:
        _reallocate(self.weight, hidden, (cap, self.weight[hidden].shape[1]), optimizer)
        _reallocate(self.bias, hidden, (cap,), optimizer)
        _reallocate(self.weight, hidden + 1, (self.weight[hidden + 1].shape[0], cap), optimizer)
        self._ensure_positions(cap)

    def _ensure_positions(self, n: int) -> None:
        if self._positions.numel() < n:
            self._positions = torch.arange(n, dtype=self._positions.dtype,
                                           device=self._positions.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A saved model may have other widths/capacities: resize storage in place first.
        key = prefix + "width_state"
        if key in state_dict:
            for name, p in self.named_parameters():
                saved = state_dict.get(prefix + name)
                if saved is not None and saved.shape != p.shape:
                    p.data = p.data.new_zeros(saved.shape)
                    p.grad = None
            self._widths = [int(w) for w in state_dict[key].tolist()]
            self._ensure_positions(max(self.capacities))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, widths={self._widths}, "
                f"activation={self.activation_name}, init={self.init}, k={self.k}, "
                f"max_width={self.max_width}")


def _block(p: torch.Tensor, rows: int, cols: int | None = None) -> torch.Tensor:
    """The active [:rows, :cols] block; slices only where capacity exceeds the active size."""
    if p.shape[0] != rows:
        p = p[:rows]
    if cols is not None and p.shape[1] != cols:
        p = p[:, :cols]
    return p


def _state_tensors(param: nn.Parameter, optimizer) -> list[tuple[dict, str]]:
    """(state dict, key) of the optimiser's per-entry tensors of `param` (moments, momentum)."""
    if optimizer is None or param not in optimizer.state:
        return []
    state = optimizer.state[param]
    return [(state, key) for key, t in state.items()
            if torch.is_tensor(t) and t.shape == param.shape]


def _refill(param: nn.Parameter, old: tuple, new: tuple, std: float, optimizer) -> None:
    """Active block `old` -> `new` (leading slices): zero what leaves, draw N(0, std²) for what
    enters, zero the optimiser state of everything outside the kept block."""
    data = param.data if param.ndim == 2 else param.data.unsqueeze(1)
    r_old, c_old = old if len(old) == 2 else (old[0], 1)
    r_new, c_new = new if len(new) == 2 else (new[0], 1)
    r_keep, c_keep = min(r_old, r_new), min(c_old, c_new)
    r_max, c_max = max(r_old, r_new), max(c_old, c_new)
    targets = [data] + [(s[k] if s[k].ndim == 2 else s[k].unsqueeze(1))
                        for s, k in _state_tensors(param, optimizer)]
    for t in targets:
        if r_max > r_keep:
            t[r_keep:r_max, :c_max].zero_()
        if c_max > c_keep:
            t[:r_keep, c_keep:c_max].zero_()
    if std > 0.0:
        if r_new > r_keep:
            data[r_keep:r_new, :c_new].normal_(0.0, std)
        if c_new > c_keep:
            data[:r_keep, c_keep:c_new].normal_(0.0, std)


def _reallocate(params: nn.ParameterList, index: int, shape: tuple, optimizer) -> None:
    """Replace params[index] by a larger zero-padded Parameter, in the optimiser too.

    A new Parameter (not a `.data` swap): autograd caches each leaf's shape in its gradient
    accumulator, which a graph still alive from the previous step would keep stale.
    """
    old = params[index]
    new = nn.Parameter(_padded(old.detach(), shape), requires_grad=old.requires_grad)
    params[index] = new
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    if old in optimizer.state:
        state = optimizer.state.pop(old)
        optimizer.state[new] = {k: _padded(v, shape) if torch.is_tensor(v) and v.shape == old.shape
                                else v for k, v in state.items()}


def _padded(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    out = t.new_zeros(shape)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


# --- model-level helpers ----------------------------------------------------------------------
def adaptive_modules(model: nn.Module) -> list[AdaptiveMLP]:
    return [m for m in model.modules() if isinstance(m, AdaptiveMLP)]


def layer_nus(model: nn.Module) -> list[float]:
    """ν of every adaptive layer of the model, in module order (one device sync)."""
    mods = adaptive_modules(model)
    if not mods:
        return []
    return torch.cat([m.nus().detach() for m in mods]).tolist()


@torch.no_grad()
def update_widths(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> bool:
    """Algorithm 1, lines 12–15, for every adaptive layer; True if any width changed."""
    mods = adaptive_modules(model)
    nus = layer_nus(model)
    changed, start = False, 0
    for m in mods:
        own = nus[start:start + m.num_hidden]
        start += m.num_hidden
        target = m.target_widths(own)
        if target != m._widths:
            m.resize(target, optimizer, own)
            changed = True
    return changed


def _theta(model: nn.Module) -> list[torch.Tensor]:
    nu_ids = {id(m.raw_nu) for m in adaptive_modules(model)}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in nu_ids]


def log_prior_theta(model: nn.Module, sigma_theta: float) -> torch.Tensor:
    """log p(θ) = −Σ θ²/(2σθ²) (up to a constant) over all weights and biases but ν.

    Inactive capacity is exactly zero, so this is the sum over active weights.
    """
    flat = torch.cat([p.reshape(-1) for p in _theta(model)])   # one reduction: fewer ops
    return flat.pow(2).sum() * (-0.5 / sigma_theta ** 2)


def log_prior_nu(model: nn.Module, mu: float, sigma: float) -> torch.Tensor:
    """Σ_ℓ log N(ν_ℓ; μ, σ) over every adaptive layer (AWNN eq. 13's p(ν))."""
    nus = torch.cat([m.nus() for m in adaptive_modules(model)])
    return (-0.5 * ((nus - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum()


def truncate(model: nn.Module, keep: float | list[int]) -> nn.Module:
    """Post-hoc truncation (AWNN §5.4): a copy whose adaptive layers keep their first neurons.

    `keep` is a fraction in (0, 1] of every layer's width (rounded, at least 1 neuron) or the
    explicit widths of all adaptive layers in module order. `keep=1.0` is the identity.
    """
    out = copy.deepcopy(model)
    mods = adaptive_modules(out)
    current = [w for m in mods for w in m.widths]
    if isinstance(keep, (list, tuple)):
        if len(keep) != len(current) or any(not 1 <= k <= w for k, w in zip(keep, current)):
            raise ValueError(f"keep={list(keep)} must give 1 <= width <= current width for each "
                             f"of the {len(current)} adaptive layers, current widths {current}")
        target = [int(k) for k in keep]
    else:
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep={keep} must be a fraction in (0, 1] or a list of widths")
        target = [max(1, round(keep * w)) for w in current]
    start = 0
    for m in mods:
        m.resize(target[start:start + m.num_hidden])
        start += m.num_hidden
    return out


def truncate_to_accuracy(model: nn.Module, evaluate_fn: Callable[[nn.Module], float],
                         max_drop: float, steps: int = 20) -> tuple[nn.Module, float]:
    """Smallest uniform truncation whose accuracy drop from the full model is ≤ max_drop.

    Scans keep fractions 1/steps, 2/steps, ..., 1 from the smallest up and returns
    (truncated copy, its accuracy); `evaluate_fn(model) -> accuracy` (same units as max_drop).
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    full = evaluate_fn(model)
    for i in range(1, steps + 1):
        candidate = truncate(model, i / steps)
        acc = evaluate_fn(candidate)
        if full - acc <= max_drop:
            return candidate, acc
    return truncate(model, 1.0), full


# --- config and builder ------------------------------------------------------------------------
@dataclass
class AdaptiveMLPConfig:
    name: str = "awnn_mlp"
    num_hidden: int = 1
    nu0: float = 0.01
    k: float = 0.9
    activation: str = "relu6"
    init: str = "kaiming_plus"
    max_width: int | None = None
    grow_init: str = "layer"


def build(cfg: AdaptiveMLPConfig, info: dict) -> nn.Module:
    """Classifier: flatten inputs, AdaptiveMLP in_features -> num_classes."""
    mlp = AdaptiveMLP(info["in_features"], info["num_classes"], cfg.num_hidden, nu0=cfg.nu0,
                      k=cfg.k, activation=cfg.activation, init=cfg.init,
                      max_width=cfg.max_width, grow_init=cfg.grow_init)
    return nn.Sequential(nn.Flatten(1), mlp)
