"""Neuron importance, width rule and kaiming+ scale (AWNN eqs. 11-12, Thm 3.1).

Conventions (SPEC B.1), chosen per model by `importance=`:
- `paper`: f(j; ν) = e^{−νj}(1 − e^{−ν}), j = 0, 1, ... (eq. 12 with the exponent's sign fixed),
  not renormalised: the D kept neurons carry 1 − e^{−νD} ≥ k of the mass.
- `authors`: the authors' code, g_j = (f_j + 1e-6) / Σ_{k<D} (f_k + 1e-6), renormalised over the
  D kept neurons.
- ν = softplus(raw) + ν_min (ν_min > 0 only when a width cap is set).
- D = ⌊−ln(1−k)/ν⌋ + 2 (authors' code; ν = 0.01, k = 0.9 -> 232), decided on the host in float64
  from the raw parameter; a ν that is not finite and positive keeps the current width.

`importance()` is the slow, obviously-correct reference (plain autograd); the training path uses
`Importance`, one autograd node whose backward is the closed-form derivative.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMPORTANCES = ("paper", "authors")
AUTHORS_EPS = 1e-6          # the authors' code adds it to every f(j) before renormalising
SOFTPLUS_THRESHOLD = 20.0   # torch.nn.functional.softplus: x above it is returned as is


def check_convention(convention: str) -> str:
    if convention not in IMPORTANCES:
        raise ValueError(f"importance={convention!r} is unknown; allowed: {list(IMPORTANCES)}")
    return convention


def importance(width: int, nu: torch.Tensor | float, convention: str = "paper") -> torch.Tensor:
    """f(j; ν) for j = 0..width−1 under `convention` (reference implementation, AWNN eq. 12)."""
    check_convention(convention)
    nu = torch.as_tensor(nu, dtype=torch.get_default_dtype(), device="cpu") \
        if not torch.is_tensor(nu) else nu
    j = torch.arange(width, device=nu.device, dtype=nu.dtype)
    f = torch.exp(-nu * j) - torch.exp(-nu * (j + 1))      # cdf(j+1) − cdf(j) of Exp(ν)
    if convention == "authors":
        f = f + AUTHORS_EPS
        f = f / f.sum()
    return f


def softplus_host(raw: float) -> float:
    """torch.nn.functional.softplus on a Python float, in float64."""
    return raw if raw > SOFTPLUS_THRESHOLD else math.log1p(math.exp(raw))


def inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def width_for(nu: float, k: float = 0.9) -> int:
    """D = ⌊−ln(1−k)/ν⌋ + 2: the k-quantile of f(·; ν) as the authors' code rounds it."""
    if not 0.0 < k < 1.0:
        raise ValueError(f"k={k} must lie in (0, 1)")
    if not nu > 0.0:
        raise ValueError(f"nu={nu} must be > 0")
    return int(math.floor(-math.log1p(-k) / nu)) + 2


def target_width(nu: float, k: float, max_width: int | None, current: int) -> int:
    """Algorithm 1 line 13 for one layer; a ν that is not finite and positive (a diverged run)
    keeps `current`, and so does a quantile too large to be a width."""
    if not (math.isfinite(nu) and nu > 0.0):
        return current
    quantile = -math.log1p(-k) / nu
    if not math.isfinite(quantile):
        return current
    width = int(math.floor(quantile)) + 2
    return width if max_width is None else min(width, max_width)


def sum_sq_importance(width: int, nu: float, convention: str = "paper") -> float:
    """Σ_{j<width} f(j; ν)² in closed form (geometric series; Thm 3.1's denominator)."""
    check_convention(convention)
    c = -math.expm1(-nu)                                     # 1 − e^{−ν}
    sq = c * c * math.expm1(-2.0 * nu * width) / math.expm1(-2.0 * nu)
    if convention == "paper":
        return sq
    mass = -math.expm1(-nu * width)                          # Σ f = 1 − e^{−νD}
    total = mass + width * AUTHORS_EPS
    return (sq + 2.0 * AUTHORS_EPS * mass + width * AUTHORS_EPS ** 2) / (total * total)


class ImportanceState:
    """f(j; ν_ℓ) of every hidden layer from raw ν (AWNN eq. 12), and the closed-form map from
    ∂L/∂f back to ∂L/∂raw (the backward of `Importance`, reused by models/awnn/fused.py).

    raw: [..., L] (a leading member axis for stacks). positions[ℓ]: j = 0..P_ℓ−1 ([P_ℓ], on raw's
    device and dtype). masks[ℓ]: None (every position kept) or [..., P_ℓ] with 1 for kept and 0
    for dropped neurons; a dropped neuron's importance is exactly 0. `fs`: one [..., P_ℓ] tensor
    per layer. Backward uses d f_j/dν = e^{−νj}(e^{−ν} − j(1 − e^{−ν})).
    """

    def __init__(self, raw, nu_min: float, authors: bool, positions, masks):
        with torch.no_grad():
            self._compute(raw, nu_min, authors, positions, masks)

    def _compute(self, raw, nu_min, authors, positions, masks) -> None:
        soft = F.softplus(raw)
        nu = soft + nu_min if nu_min else soft
        neg = -nu
        c = -torch.expm1(neg)                               # 1 − e^{−ν}
        # d softplus/d raw = sigmoid(raw) = 1 − e^{−softplus(raw)} (= c when ν_min = 0); above
        # softplus' threshold (raw > 20, width 2) torch's derivative is 1 and this is 1 − e^{−raw}.
        dsoft = c if not nu_min else -torch.expm1(-soft)
        single = raw.shape[-1] == 1                         # one layer: [..., 1] broadcasts as is
        outs, saved = [], []
        for layer, (j, mask) in enumerate(zip(positions, masks)):
            neg_l = neg if single else neg[..., layer, None]
            e = torch.exp(neg_l * j)                        # e^{−νj}
            if mask is not None:
                e = e * mask
            f = e * (c if single else c[..., layer, None])
            total = None
            if authors:
                f = f + AUTHORS_EPS if mask is None else (f + AUTHORS_EPS) * mask
                total = f.sum(-1, keepdim=True)
                f = f / total
            outs.append(f)
            saved.append((e, f, total))
        self.neg, self.c, self.dsoft, self.single = neg, c, dsoft, single
        self.positions, self.saved, self.authors = positions, saved, authors
        self.fs = tuple(outs)
        self._dfs = None

    def derivatives(self) -> list[torch.Tensor]:
        """d f_j/dν of every layer (computed once per state)."""
        if self._dfs is None:
            q = torch.exp(self.neg)                         # e^{−ν}
            dfs = []
            for layer, (j, (e, _, _)) in enumerate(zip(self.positions, self.saved)):
                q_l, c_l = (q, self.c) if self.single else (q[..., layer, None],
                                                            self.c[..., layer, None])
                dfs.append(e * (q_l - j * c_l))             # e^{−νj}(e^{−ν} − j(1 − e^{−ν}))
            self._dfs = dfs
        return self._dfs

    def grad_raw(self, grads) -> torch.Tensor:
        """∂L/∂raw from ∂L/∂f of every layer."""
        grad_nu = []
        for grad, df, (_, f, total) in zip(grads, self.derivatives(), self.saved):
            if self.authors:                                # d/dν of f / Σ f (AWNN code)
                g = ((grad * df).sum(-1, keepdim=True)
                     - (grad * f).sum(-1, keepdim=True) * df.sum(-1, keepdim=True)) / total
            else:
                g = (grad * df).sum(-1, keepdim=True)
            grad_nu.append(g)
        grad_nu = grad_nu[0] if self.single else torch.cat(grad_nu, -1)
        return grad_nu * self.dsoft


class Importance(torch.autograd.Function):
    """f(j; ν_ℓ) of every hidden layer from raw ν, as one autograd node (see ImportanceState)."""

    @staticmethod
    def forward(ctx, raw, nu_min: float, authors: bool, positions, masks):
        ctx.state = ImportanceState(raw, nu_min, authors, positions, masks)
        return ctx.state.fs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        return ctx.state.grad_raw(grads), None, None, None, None
