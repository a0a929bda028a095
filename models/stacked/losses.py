"""Per-member loss, accuracy and weight penalty of a stack's outputs [S, B, C].

The loss a stacked step backpropagates is `member_losses(...).sum()` (+ a penalty that is itself
a sum over members): its gradient with respect to member i's slice is member i's own gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from data.tensors import iterate

FEW_CLASSES = 16          # below it, member_losses reduces over the class axis of [S, C, B]


def _member_target(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if outputs.ndim != 3:
        raise ValueError(f"stacked outputs must be [S, B, C]; got shape {tuple(outputs.shape)}")
    if target.ndim == 1:                       # one target batch shared by every member
        target = target.expand(outputs.shape[0], -1)
    if target.shape != outputs.shape[:2]:
        raise ValueError(f"target of shape {tuple(target.shape)} does not match outputs "
                         f"{tuple(outputs.shape)}; expected [S, B] or [B]")
    return target


def member_losses(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per member, [S]: entry i is F.cross_entropy(outputs[i], target[i])."""
    target = _member_target(outputs, target)
    if outputs.shape[-1] < FEW_CLASSES:
        # torch's kernel over a short last axis is scalar; over axis 1 of [S, C, B] it gives the
        # same floats about 1.3-4x faster (loss and gradient compared bit for bit in the tests)
        return F.cross_entropy(outputs.transpose(1, 2), target, reduction="none").mean(1)
    per_sample = F.cross_entropy(outputs.flatten(0, 1), target.flatten(), reduction="none")
    return per_sample.view(target.shape).mean(1)


def member_correct(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Correct predictions per member, [S] (an int64 count, still on the device)."""
    target = _member_target(outputs, target)
    return (outputs.argmax(-1) == target).sum(1)


@torch.no_grad()
def evaluate_members(model: nn.Module, split, batch_size: int) -> dict[str, list[float]]:
    """Per-member mean loss and accuracy (%) over a split, as experiments.train.evaluate gives
    for one member (classification). Every member sees the same batches; one device sync."""
    model.eval()
    members = model.members
    loss_sum = correct = 0
    for inputs, target in iterate(split, batch_size, shuffle=False):
        # expanded, not copied: the stacked layers see stride 0 and run one shared GEMM
        out = model(*(t.expand(members, *t.shape) for t in inputs))
        per_sample = F.cross_entropy(out.flatten(0, 1), target.repeat(members), reduction="none")
        loss_sum = loss_sum + per_sample.view(members, -1).sum(1)
        correct = correct + member_correct(out, target)
    stats = torch.stack([loss_sum.double(), correct.double()]).cpu() / len(split)
    return {"loss": stats[0].tolist(), "acc": (100.0 * stats[1]).tolist()}


def weight_matrices(model: nn.Module, ndim: int = 2) -> list[torch.Tensor]:
    """Every trainable weight matrix: parameters of rank >= ndim (2; 3 with a member axis), and
    the matrices a module keeps inside a flat parameter (`module.weight_matrices()`, AWNN's θ)."""
    out = []
    for module in model.modules():
        if hasattr(module, "weight_matrices"):
            out += [w for w in module.weight_matrices() if w.requires_grad]
        out += [w for w in module.parameters(recurse=False) if w.ndim >= ndim and w.requires_grad]
    return out


def member_weight_costs(model: nn.Module, p: int) -> torch.Tensor:
    """Σ |w|^p over each member's weight matrices, [S] (biases and vectors excluded, as in
    experiments/regimes/penalty.py: a member weight has ndim > 1, its stacked tensor ndim > 2)."""
    if p not in (1, 2):
        raise ValueError(f"penalty p={p}: allowed 1 (l1) or 2 (l2)")
    weights = weight_matrices(model, ndim=3)
    if p == 1:
        return sum(w.abs().sum(dim=tuple(range(1, w.ndim))) for w in weights)
    return sum(w.pow(2).sum(dim=tuple(range(1, w.ndim))) for w in weights)


def member_weight_penalty(model: nn.Module, p: int, coeff: torch.Tensor | float) -> torch.Tensor:
    """Σ_i coeff_i Σ |w_i|^p: the sum of the members' L1/L2 penalties. `coeff` is a float or a
    [S] tensor (0 for members without a penalty)."""
    costs = member_weight_costs(model, p)
    coeff = torch.as_tensor(coeff, dtype=costs.dtype, device=costs.device)
    if coeff.ndim and coeff.shape != costs.shape:
        raise ValueError(f"penalty coefficients of shape {tuple(coeff.shape)}; expected a float "
                         f"or shape {tuple(costs.shape)} (one per member)")
    return (coeff * costs).sum()
