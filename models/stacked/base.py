"""The member axis: a batched Linear layer and the per-member state protocol of every stack.

A stacked module holds S members' parameters as tensors with a leading dimension S, under the
same names (state-dict keys) as one member's module, so member i's state is the stacked state
sliced at [i]. A buffer every member holds identically may be kept once (`shared_keys`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.stacked import optim


class _BatchedLinear(torch.autograd.Function):
    """out[s] = x[s] W[s]ᵀ + b[s] with a hand-written backward: one node instead of baddbmm's
    and its views', weight gradients made contiguous, and each weight gradient computed in the
    orientation that keeps the small dimension as the GEMM's rows (measured 2x faster on the CPU
    for a 232 -> 2 layer)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = torch.bmm(x, weight.transpose(1, 2))
        return out.add_(bias.unsqueeze(1)) if bias is not None else out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad, weight)
        if ctx.needs_input_grad[1]:
            if weight.shape[1] <= weight.shape[2]:
                grad_w = torch.bmm(grad.transpose(1, 2), x)
            else:
                grad_w = torch.bmm(x.transpose(1, 2), grad).transpose(1, 2).contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(1)
        return grad_x, grad_w, grad_b


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Member s: x[s] W[s]ᵀ + b[s]. x [S, B, in] is one batch per member; x [B, in], or an
    [S, B, in] expanded from one batch (stride 0 on the member axis), is shared by all members:
    one GEMM against the members' weights side by side."""
    if x.ndim == 2 or x.stride(0) == 0:
        shared = x if x.ndim == 2 else x[0]
        out = F.linear(shared, weight.flatten(0, 1), None if bias is None else bias.flatten())  # [B, S * out]
        return out.view(len(shared), weight.shape[0], weight.shape[1]).transpose(0, 1)
    return _BatchedLinear.apply(x, weight, bias)


class StackedLinear(nn.Module):
    """S independent Linear layers: weight [S, out, in], bias [S, out], as nn.Linear per member.

    Input [S, B, in] (one batch per member) gives [S, B, out] through one batched GEMM. Input
    [B, in], or [S, B, in] expanded from one batch (stride 0 on the member axis), is a batch
    shared by all members: one GEMM against the members' weights side by side.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.members, self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None

    @classmethod
    def from_linears(cls, linears: list[nn.Linear]) -> "StackedLinear":
        weight = torch.stack([lin.weight.detach() for lin in linears])
        has_bias = linears[0].bias is not None
        bias = torch.stack([lin.bias.detach() for lin in linears]) if has_bias else None
        return cls(weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batched_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"members={self.members}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class StackedModule(nn.Module):
    """Per-member views of a stack (docs/STACKING.md). Subclasses set `members`, `input_shape`
    (one sample's shape, or None) and `shared_keys` (state keys held once for all members)."""

    members: int
    input_shape: tuple[int, ...] | None
    shared_keys: frozenset[str] = frozenset()

    def check_member(self, i: int) -> None:
        if not (isinstance(i, int) and 0 <= i < self.members):
            raise IndexError(f"member {i!r} is out of range; this stack has members "
                             f"0..{self.members - 1}")

    def flatten_input(self, x: torch.Tensor, in_features: int) -> torch.Tensor:
        """[S, B, *sample] -> [S, B, in] (a batch per member) or [B, *sample] -> [B, in] (shared).

        With `input_shape` known the rank decides. Without it, x is per member when x.shape[0] == S
        and each member's rows flatten to in_features; an input that reads both ways is refused.
        """
        if self.input_shape is not None:
            per_member = x.ndim == len(self.input_shape) + 2
            if per_member and x.shape[0] != self.members:
                raise ValueError(f"input of shape {tuple(x.shape)} has {x.shape[0]} member "
                                 f"batches; this stack has {self.members} members")
        else:
            per_member = (x.ndim >= 3 and x.shape[0] == self.members
                          and math.prod(x.shape[2:]) == in_features)
            shared = x.ndim >= 2 and math.prod(x.shape[1:]) == in_features
            if per_member and shared:
                raise ValueError(f"input of shape {tuple(x.shape)} reads as one batch per member "
                                 f"and as one shared batch; stack with input_shape=<one sample's "
                                 f"shape> to decide by rank")
        flat = x.flatten(2) if per_member else x.flatten(1)
        if flat.shape[-1] != in_features:
            raise ValueError(f"input of shape {tuple(x.shape)} does not flatten to "
                             f"in_features={in_features} per sample")
        return flat

    # --- per-member state -----------------------------------------------------------------
    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """What member i's unstacked module's `state_dict()` holds (copies)."""
        self.check_member(i)
        return {k: (v if k in self.shared_keys else v[i]).clone()
                for k, v in self.state_dict().items()}

    @torch.no_grad()
    def load_member_state_dict(self, i: int, state: dict[str, torch.Tensor]) -> None:
        """Load an unstacked member's `state_dict()` into member i, keeping Parameter identities."""
        self.check_member(i)
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"member state dict does not fit this stack: missing {missing}, "
                           f"unexpected {unexpected}")
        for key, value in state.items():          # check every shape before changing anything
            expected = own[key].shape if key in self.shared_keys else own[key].shape[1:]
            if value.shape != expected:
                raise ValueError(f"{key}: member tensor of shape {tuple(value.shape)}; this stack "
                                 f"holds {tuple(expected)} per member")
        for key, value in state.items():
            if key in self.shared_keys:
                if torch.equal(own[key], value.to(own[key])):
                    continue
                self.unshare(key)
                own = self.state_dict()
            own[key][i].copy_(value)

    @torch.no_grad()
    def zero_member(self, i: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero member i's parameters and per-member buffers (and its optimiser state, if given),
        so that a diverged member's NaNs stop flowing through its slice. Shared buffers belong to
        every member and are left alone."""
        self.check_member(i)
        for key, value in self.state_dict().items():
            if key not in self.shared_keys:
                value[i].zero_()
        if optimizer is not None:
            optim.zero_member_optimizer_state(optimizer, i)

    def member_optimizer_state(self, optimizer: torch.optim.Optimizer, i: int) -> dict:
        """models.stacked.optim.member_optimizer_state (a method, as on the AWNN stack)."""
        self.check_member(i)
        return optim.member_optimizer_state(optimizer, i)

    def load_member_optimizer_state(self, optimizer: torch.optim.Optimizer, i: int,
                                    state_dict: dict) -> None:
        """models.stacked.optim.load_member_optimizer_state (a method, as on the AWNN stack)."""
        self.check_member(i)
        optim.load_member_optimizer_state(optimizer, i, state_dict)

    def unshare(self, key: str) -> None:
        """Give every member its own copy of the shared buffer `key` (before members diverge)."""
        owner_name, _, name = key.rpartition(".")
        owner = self.get_submodule(owner_name)
        value = getattr(owner, name)
        owner.register_buffer(name, value.expand(self.members, *value.shape).clone())
        self.shared_keys = self.shared_keys - {key}


def in_place(activation: nn.Module) -> nn.Module:
    """ReLU/LeakyReLU rewritten in place: in a stack they always follow a StackedLinear, whose
    backward does not need its output, and one [S, B, width] tensor less per layer is measurably
    faster for small nets (cache-bound at S x the member's activations)."""
    if isinstance(activation, (nn.ReLU, nn.LeakyReLU)):
        activation.inplace = True
    return activation


def check_same_structure(models: list[nn.Module]) -> None:
    """All members must hold the same state keys and shapes, and the same module types."""
    first = models[0]
    ref = {k: (tuple(v.shape), v.dtype, v.device) for k, v in first.state_dict().items()}
    ref_modules = [repr(m) for m in first.modules() if not list(m.children())]
    for j, m in enumerate(models[1:], start=1):
        if type(m) is not type(first):
            raise TypeError(f"member {j} is {type(m).__name__}, member 0 is {type(first).__name__}")
        got = {k: (tuple(v.shape), v.dtype, v.device) for k, v in m.state_dict().items()}
        if got != ref:
            diff = sorted(k for k in set(ref) | set(got) if ref.get(k) != got.get(k))
            raise ValueError(f"member {j} differs from member 0 in {diff} (shape, dtype or device)")
        if [repr(x) for x in m.modules() if not list(x.children())] != ref_modules:
            raise ValueError(f"member {j} has different layers or activations than member 0")
