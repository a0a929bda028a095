"""The AdaptiveMLP forward pass as one autograd node (AWNN eq. 14) with a closed-form backward.

out = W_L' h_L + b_L, h_ℓ = σ(W_ℓ' h_{ℓ−1} + b_ℓ), W_ℓ' = W_ℓ · diag(f(·; ν_{ℓ−1})) for ℓ ≥ 1
(the importance folded into the next layer's columns, as the unfused path does). Backward, with
G_ℓ = g_ℓᵀ h_{ℓ−1} the gradient of W_ℓ': ∂W_ℓ = G_ℓ · diag(f), ∂f = Σ_rows G_ℓ ⊙ W_ℓ, ∂b_ℓ = Σ_batch g_ℓ,
∂h_{ℓ−1} = g_ℓ W_ℓ', then σ' (the same aten backward kernels autograd uses); ∂ν from ∂f through
models/awnn/importance.py's closed form. The importances come from the module
(`AdaptiveMLP.importance_state`: cached while ν's values and the widths stand; a stack's are
computed per step, masked per member). Stacks (`module.batched`) carry a leading member axis and
run bmm / baddbmm. The activation is applied over the pre-activation and its backward kernels are
fed σ(z); each hidden layer's backward gradient goes into a buffer the module keeps across steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.awnn.capacity import regions

aten = torch.ops.aten


def activate_(kind: str, slope: float, z: torch.Tensor) -> torch.Tensor:
    """σ(z), written over z (the pre-activation is not kept: `activation_grad` reads σ(z))."""
    if kind == "relu6":
        return F.hardtanh(z, 0.0, 6.0, inplace=True)
    if kind == "relu":
        return torch.relu_(z)
    if kind == "leaky_relu":
        return F.leaky_relu(z, slope, inplace=True)
    if kind == "tanh":
        return torch.tanh_(z)
    if kind == "sigmoid":
        return torch.sigmoid_(z)
    return z


def activation_grad(kind: str, slope: float, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """dL/dz from dL/da, a = σ(z), written over g (a buffer the backward owns: no fresh allocation
    of a large block, hence no page faults): autograd's own backward kernels, fed with a where
    they read z: 0 < a < 6 ⇔ 0 < z < 6 for relu6, and a > 0 ⇔ z > 0 for leaky_relu (slope > 0)."""
    if kind == "relu6":
        return aten.hardtanh_backward.grad_input(g, a, 0.0, 6.0, grad_input=g)
    if kind == "relu":
        return aten.threshold_backward.grad_input(g, a, 0, grad_input=g)
    if kind == "leaky_relu":
        return aten.leaky_relu_backward.grad_input(g, a, slope, True, grad_input=g)
    if kind == "tanh":
        return aten.tanh_backward.grad_input(g, a, grad_input=g)
    if kind == "sigmoid":
        return aten.sigmoid_backward.grad_input(g, a, grad_input=g)
    return g


def _linear(h, w, b, batched: bool):
    """h wᵀ + b: [N, in] x [out, in], or per member [S, N, in] x [S, out, in] (+ b [S, out])."""
    if batched:
        wt = w.transpose(1, 2)
        return torch.bmm(h, wt) if b is None else torch.baddbmm(b.unsqueeze(1), h, wt)
    return torch.mm(h, w.t()) if b is None else torch.addmm(b, h, w.t())


def _weight_grad(g, h, batched: bool):
    """gᵀ h, the gradient of the weight of a layer with input h and output gradient g; per
    member in the orientation whose GEMM output is the wider one (as models/awnn/stacked.py)."""
    if not batched:
        return torch.mm(g.t(), h)
    if h.shape[2] >= g.shape[2]:
        return torch.bmm(g.transpose(1, 2), h)
    return torch.bmm(h.transpose(1, 2), g).transpose(1, 2).contiguous()


def _workspace(workspace: dict, layer: int, like: torch.Tensor) -> torch.Tensor:
    """A buffer shaped like `like`, kept across steps for the backward's gradient of hidden
    layer `layer` (one per layer: the next layer's product reads it; used and released within
    one backward): a large block is not allocated afresh each step."""
    key = (layer, like.shape, like.dtype, like.device)
    buffer = workspace.get(key)
    if buffer is None:
        if len(workspace) >= 16:                         # widths moved on: drop old shapes
            workspace.clear()
        buffer = workspace[key] = torch.empty_like(like, memory_format=torch.contiguous_format)
    return buffer


class AdaptiveForward(torch.autograd.Function):
    """apply(x, raw_nu, module, theta) -> the module's output. x: [N, in], or for a stacked
    module (`module.batched`) [S, N, in]; theta: the module's flat weights and biases
    (models/awnn/layout.py), read through `module.active_views()` (weights [S, out, in], biases
    [S, out] on a stack); its gradient is returned flat in the same layout."""

    @staticmethod
    def forward(ctx, x, raw, module, theta):
        n_w, batched = module.num_hidden + 1, module.batched
        params, active = module.active_views()
        weights, biases = params[:n_w], params[n_w:]
        state = module.importance_state()
        fs = state.fs
        kind, slope = module.activation_name, module.slope
        h, hs, scaled = x, [x], []
        for i in range(n_w):
            if i == 0:
                w = weights[0]
            else:
                w = weights[i] * (fs[i - 1].unsqueeze(1) if batched else fs[i - 1])
            z = _linear(h, w, biases[i] if i < len(biases) else None, batched)
            scaled.append(w)
            h = z
            if i < module.num_hidden:
                h = activate_(kind, slope, z)
                hs.append(h)
        ctx.module_info = (kind, slope, n_w, len(biases), batched)
        ctx.layout, ctx.active = module.layout, active
        ctx.state, ctx.weights, ctx.scaled, ctx.hs = state, weights, scaled, hs
        ctx.workspace = module.workspace
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        kind, slope, n_w, n_b, batched = ctx.module_info
        weights, scaled, hs = ctx.weights, ctx.scaled, ctx.hs
        mm = torch.bmm if batched else torch.mm
        grad_w, grad_b, grad_f = [None] * n_w, [None] * n_b, [None] * (n_w - 1)
        grad_x = None
        for i in range(n_w - 1, -1, -1):
            if i < n_b:
                grad_b[i] = g.sum(-2)
            gw = _weight_grad(g, hs[i], batched)              # ∂W_i' = g_iᵀ h_{i−1}
            if i:
                f = ctx.state.fs[i - 1]
                grad_w[i] = gw * (f.unsqueeze(1) if batched else f)
                grad_f[i - 1] = (gw * weights[i]).sum(-2)
                buffer = _workspace(ctx.workspace, i, hs[i])
                g = activation_grad(kind, slope, mm(g, scaled[i], out=buffer), hs[i])
            else:
                grad_w[0] = gw
                if ctx.needs_input_grad[0]:
                    grad_x = mm(g, scaled[0])
        grad_raw = ctx.state.grad_raw(grad_f) if ctx.needs_input_grad[1] else None
        if ctx.active is None:
            grad_theta = ctx.layout.pack(grad_w + grad_b)
        else:                                             # θ wider than the widths: zeros around
            grad_theta = g.new_zeros(ctx.layout.numel)
            torch._foreach_copy_(regions(grad_theta, ctx.active), grad_w + grad_b)
        return grad_x, grad_raw, None, grad_theta
