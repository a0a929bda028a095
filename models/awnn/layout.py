"""One flat tensor holding every weight and bias of an adaptive MLP, and its re-layout.

θ = [W_0 | W_1 | ... | W_L | b_0 | ... ] (row-major blocks, the order of the former separate
parameters), one Parameter: the optimiser, the weight prior and zero_grad touch one tensor
instead of 2L+2 (their per-tensor cost dominates a small layer's step). Pieces have the layers'
capacities (models/awnn/capacity.py); a stack keeps a leading member axis, θ [S, P].
"""
from __future__ import annotations

import math
from functools import lru_cache
from itertools import accumulate

import torch


def mlp_shapes(in_features: int, widths, out_features: int,
               out_bias: bool) -> tuple[tuple[int, ...], ...]:
    """Piece shapes: weights (D_{ℓ+1}, D_ℓ) for ℓ = 0..L, then the biases (cached: a resize asks
    for them every step)."""
    return _mlp_shapes(in_features, tuple(widths), out_features, out_bias)


@lru_cache(maxsize=1024)
def _mlp_shapes(in_features: int, widths: tuple[int, ...], out_features: int,
                out_bias: bool) -> tuple[tuple[int, ...], ...]:
    sizes = [in_features, *widths, out_features]
    weights = [(b, a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [(b,) for b in sizes[1:-1]] + ([(out_features,)] if out_bias else [])
    return tuple(weights + biases)


class FlatLayout:
    """Offsets of each piece in the flat θ; `views(t)` cuts t ([..., P]) into piece views."""

    def __init__(self, shapes: tuple[tuple[int, ...], ...]):
        self.shapes = tuple(shapes)
        self.numels = [math.prod(s) for s in shapes]
        self.offsets = list(accumulate(self.numels, initial=0))
        self.numel = self.offsets[-1]

    def __eq__(self, other) -> bool:
        return isinstance(other, FlatLayout) and other.shapes == self.shapes

    def __hash__(self) -> int:
        return hash(self.shapes)

    def views(self, t: torch.Tensor) -> list[torch.Tensor]:
        lead = t.shape[:-1]
        return [p.view(*lead, *s) for p, s in zip(t.split(self.numels, -1), self.shapes)]

    def pack(self, pieces) -> torch.Tensor:
        """The flat tensor of `pieces` ([..., *shape] each, same leading dims)."""
        lead = pieces[0].ndim - len(self.shapes[0])
        return torch.cat([p.flatten(lead) for p in pieces], -1)
