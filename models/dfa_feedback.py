"""The DFA trick (Nøkland 2016): hidden layer l receives e · B_l instead of backpropagated error,
where e = dL/dlogits of the same forward pass. Shared by DFANet and its stacked form."""
from __future__ import annotations

import torch


class _ErrorSlot:
    """Holds dL/dlogits of one forward pass until the hidden layers' backward needs it."""

    def __init__(self):
        self.error: torch.Tensor | None = None

    def store(self, grad: torch.Tensor) -> None:
        self.error = grad


class _DirectFeedback(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, feedback, slot):
        ctx.slot = slot
        ctx.save_for_backward(feedback)
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad_h):
        (feedback,) = ctx.saved_tensors
        if ctx.slot.error is None:
            raise RuntimeError("DFA backward reached a hidden layer before dL/dlogits was "
                               "known: the loss must depend on the DFANet's logits")
        return ctx.slot.error.to(feedback.dtype) @ feedback, None, None
