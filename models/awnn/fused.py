"""The AdaptiveMLP forward pass as one autograd node (AWNN eq. 14) with a closed-form backward.

out = W_L' h_L + b_L, h_ℓ = σ(W_ℓ' h_{ℓ−1} + b_ℓ), W_ℓ' = W_ℓ · diag(f(·; ν_{ℓ−1})) for ℓ ≥ 1
(the importance folded into the next layer's columns, as the unfused path does). Backward, with
G_ℓ = g_ℓᵀ h_{ℓ−1} the gradient of W_ℓ': ∂W_ℓ = G_ℓ · diag(f), ∂f = Σ_rows G_ℓ ⊙ W_ℓ, ∂b_ℓ = Σ_batch g_ℓ,
∂h_{ℓ−1} = g_ℓ W_ℓ', then σ' (the same aten backward kernels autograd uses); ∂ν from ∂f through
models/awnn/importance.py's closed form. The importances come from the module's cache
(`AdaptiveMLP.importance_state`), recomputed only when ν or the widths change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def activate(kind: str, slope: float, z: torch.Tensor) -> torch.Tensor:
    if kind == "relu6":
        return F.hardtanh(z, 0.0, 6.0)
    if kind == "relu":
        return torch.relu(z)
    if kind == "leaky_relu":
        return F.leaky_relu(z, slope)
    if kind == "tanh":
        return torch.tanh(z)
    if kind == "sigmoid":
        return torch.sigmoid(z)
    return z


def activation_grad(kind: str, slope: float, g: torch.Tensor, z: torch.Tensor,
                    a: torch.Tensor) -> torch.Tensor:
    """dL/dz from dL/da for a = σ(z): autograd's own backward kernel of each activation."""
    if kind == "relu6":
        return aten.hardtanh_backward(g, z, 0.0, 6.0)
    if kind == "relu":
        return aten.threshold_backward(g, a, 0)
    if kind == "leaky_relu":
        return aten.leaky_relu_backward(g, z, slope, False)
    if kind == "tanh":
        return aten.tanh_backward(g, a)
    if kind == "sigmoid":
        return aten.sigmoid_backward(g, a)
    return g


class AdaptiveForward(torch.autograd.Function):
    """apply(x2d, raw_nu, module, *weights, *biases) -> [N, out]; x2d is [N, in]."""

    @staticmethod
    def forward(ctx, x, raw, module, *params):
        n_w = module.num_hidden + 1
        weights, biases = params[:n_w], params[n_w:]
        state = module.importance_state()
        fs = state.fs
        kind, slope = module.activation_name, module.slope
        h, hs, zs, scaled = x, [x], [], []
        for i in range(n_w):
            w = weights[i] if i == 0 else weights[i] * fs[i - 1]
            b = biases[i] if i < len(biases) else None
            z = torch.addmm(b, h, w.t()) if b is not None else torch.mm(h, w.t())
            scaled.append(w)
            if i < module.num_hidden:
                h = activate(kind, slope, z)
                zs.append(z)
                hs.append(h)
            else:
                h = z
        ctx.module_info = (kind, slope, n_w, len(biases))
        ctx.state, ctx.weights, ctx.scaled, ctx.hs, ctx.zs = state, weights, scaled, hs, zs
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        kind, slope, n_w, n_b = ctx.module_info
        weights, scaled, hs, zs = ctx.weights, ctx.scaled, ctx.hs, ctx.zs
        grad_w, grad_b, grad_f = [None] * n_w, [None] * n_b, [None] * (n_w - 1)
        grad_x = None
        for i in range(n_w - 1, -1, -1):
            if i < n_b:
                grad_b[i] = g.sum(0)
            gw = torch.mm(g.t(), hs[i])                       # ∂W_i' = g_iᵀ h_{i−1}
            if i:
                f = ctx.state.fs[i - 1]
                grad_w[i] = gw * f
                grad_f[i - 1] = (gw * weights[i]).sum(0)
                g = activation_grad(kind, slope, torch.mm(g, scaled[i]), zs[i - 1], hs[i])
            else:
                grad_w[0] = gw
                if ctx.needs_input_grad[0]:
                    grad_x = torch.mm(g, scaled[0])
        grad_raw = ctx.state.grad_raw(grad_f) if ctx.needs_input_grad[1] else None
        return (grad_x, grad_raw, None, *grad_w, *grad_b)
