"""FCN trained with Direct Feedback Alignment (Nøkland 2016; NB App. A.7) by the ordinary loop.

`loss.backward()` yields DFA gradients: each hidden activation h_l passes through an identity
whose backward discards the backpropagated gradient and returns e·B_l, with e = dL/dlogits
(captured by a hook on the logits, which autograd reaches before any hidden layer) and B_l a
fixed random feedback matrix. Hence δ_l = (e B_l) ⊙ f'(a_l) and ∂L/∂W_l = δ_lᵀ h_{l-1}.

Balancing (NB) rescales hidden unit i of layer l by λ_i: h_l -> Λ_l h_l, W_l -> Λ_l W_l Λ_{l-1}^{-1}.
It preserves the function, and backprop gradients transform covariantly (dL/dW_l ->
Λ_l^{-1} dL/dW_l Λ_{l-1}), but with B_l fixed the DFA update does not: δ_l stays the same, so
ΔW_l -> ΔW_l Λ_{l-1}, and e B_l no longer points where the true gradient dL/dh_l Λ_l^{-1} does.
`feedback_transform="covariant"` restores the symmetry: after balancing, B_l -> B_l Λ_l^{-1}
(`after_balancing`), so the DFA update transforms exactly like the backprop gradient. The
paper's setting is "fixed" (B never changes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.activations import make_activation
from models.dfa_feedback import _DirectFeedback, _ErrorSlot  # noqa: F401  (re-exported)

FEEDBACK_TRANSFORMS = ("fixed", "covariant")


class DFANet(nn.Module):
    """`in -> widths -> out` ReLU FCN; feedback buffers B_l [out, width_l] are fixed and seeded."""

    def __init__(self, in_features: int, widths: list[int], out_features: int,
                 activation: str = "relu", feedback_seed: int = 0,
                 feedback_transform: str = "fixed"):
        super().__init__()
        if feedback_transform not in FEEDBACK_TRANSFORMS:
            raise ValueError(f"model.feedback_transform={feedback_transform!r} is not allowed; "
                             f"allowed: {list(FEEDBACK_TRANSFORMS)}")
        self.feedback_transform = feedback_transform
        sizes = [in_features, *widths, out_features]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activations = nn.ModuleList(make_activation(activation) for _ in widths)
        gen = torch.Generator().manual_seed(feedback_seed)
        for k, w in enumerate(widths):
            # uniform(-1/√w, 1/√w), like a default-initialised w -> out Linear
            bound = w ** -0.5
            self.register_buffer(f"feedback{k}",
                                 (torch.rand(out_features, w, generator=gen) * 2 - 1) * bound)

    def feedback(self, k: int) -> torch.Tensor:
        return getattr(self, f"feedback{k}")

    @torch.no_grad()
    def after_balancing(self, log_scales: list[torch.Tensor]) -> None:
        """Called by the balancing regimes with log λ of every hidden layer's units (in order).
        With `feedback_transform="covariant"`: B_l -> B_l Λ_l^{-1} (see the module docstring)."""
        if self.feedback_transform == "fixed":
            return
        for k, log_lam in enumerate(log_scales):
            fb = self.feedback(k)
            fb.mul_(torch.exp(-log_lam).to(device=fb.device, dtype=fb.dtype)[None, :])

    def unit_groups(self, include_bias: bool = True, allow_non_homogeneous: bool = False) -> list:
        """The balanceable hidden layers (models.balancing): the Linear chain."""
        from models.balancing.groups import chain_groups, check_activation

        for k, act in enumerate(self.activations):
            check_activation(act, f"DFANet hidden layer {k}", allow_non_homogeneous)
        return chain_groups(list(self.linears), include_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        slot = _ErrorSlot()
        for k, (lin, act) in enumerate(zip(self.linears[:-1], self.activations)):
            h = _DirectFeedback.apply(act(lin(h)), self.feedback(k), slot)
        logits = self.linears[-1](h)
        if logits.requires_grad:
            logits.register_hook(slot.store)
        return logits


@dataclass
class DFAConfig:
    name: str = "dfa_fcn"
    widths: list[int] = field(default_factory=lambda: [800, 800])
    activation: str = "relu"
    feedback_seed: int = 0
    feedback_transform: str = "fixed"   # fixed (paper) | covariant: B_l -> B_l Λ_l^{-1} on balancing


def build(cfg: DFAConfig, info: dict) -> DFANet:
    return DFANet(info["in_features"], list(cfg.widths), info["num_classes"], cfg.activation,
                  cfg.feedback_seed, cfg.feedback_transform)


REGISTERED = {"dfa_fcn": ("DFAConfig", "build")}


def stackable(cfg) -> bool:
    return cfg.get("feedback_transform", "fixed") == "fixed"   # StackedDFANet keeps B fixed


def stack_members(members: list[DFANet], input_shape: tuple[int, ...] | None = None) -> nn.Module:
    if any(m.feedback_transform != "fixed" for m in members):
        raise TypeError("StackedDFANet keeps the feedback matrices fixed; "
                        "model.feedback_transform=covariant trains unstacked")
    from models.stacked.dfa import StackedDFANet

    return StackedDFANet(members, input_shape)
