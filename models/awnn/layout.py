"""One flat tensor holding every weight and bias of an adaptive MLP, and its re-layout on resize.

θ = [W_0 | W_1 | ... | W_L | b_0 | ... ] (row-major blocks, the order of the former separate
parameters), one Parameter: the optimiser, the weight prior and zero_grad touch one tensor
instead of 2L+2 (their per-tensor cost dominates a small layer's step). A stack keeps a leading
member axis, θ [S, P]. A resize moves every entry with one gather: the kept block of each piece
from the old θ, fresh entries from the growth draws (in their canonical order, models/awnn/
storage.py), zeros for optimiser state; the gather index is cached per (old, new) shapes.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from itertools import accumulate

import numpy as np
import torch

INDEX_CACHE = 16            # gather indices kept per layout (widths oscillate between few values)


def mlp_shapes(in_features: int, widths: list[int], out_features: int,
               out_bias: bool) -> tuple[tuple[int, ...], ...]:
    """Piece shapes: weights (D_{ℓ+1}, D_ℓ) for ℓ = 0..L, then the biases."""
    sizes = [in_features, *widths, out_features]
    weights = [(b, a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [(b,) for b in sizes[1:-1]] + ([(out_features,)] if out_bias else [])
    return tuple(weights + biases)


class FlatLayout:
    """Offsets of each piece in the flat θ; `views(t)` cuts t ([..., P]) into piece views."""

    def __init__(self, shapes: tuple[tuple[int, ...], ...]):
        self.shapes = shapes
        self.numels = [math.prod(s) for s in shapes]
        self.offsets = list(accumulate(self.numels, initial=0))
        self.numel = self.offsets[-1]

    def views(self, t: torch.Tensor) -> list[torch.Tensor]:
        lead = t.shape[:-1]
        return [p.view(*lead, *s) for p, s in zip(t.split(self.numels, -1), self.shapes)]

    def pack(self, pieces) -> torch.Tensor:
        """The flat tensor of `pieces` ([..., *shape] each, same leading dims)."""
        lead = pieces[0].ndim - len(self.shapes[0])
        return torch.cat([p.flatten(lead) for p in pieces], -1)


def gather_index(old: FlatLayout, new: FlatLayout, fresh_bias: bool) -> tuple[np.ndarray, int]:
    """(index into cat([old θ, fresh, 0]), number of fresh entries): entry k of the new θ is
    source[index[k]]. Per weight: kept block, then new rows [r_keep:, :c_new], then new columns
    [:r_keep, c_keep:] (storage.draw_weight's order); new bias entries are fresh when
    `fresh_bias`, else zero (the last source entry)."""
    fresh, chunks, zero_marker = 0, [], -1       # fresh entry k is coded −2 − k until the end
    for o_shape, n_shape, o_off in zip(old.shapes, new.shapes, old.offsets):
        if len(n_shape) == 2:
            (r_old, c_old), (r_new, c_new) = o_shape, n_shape
            r_keep, c_keep = min(r_old, r_new), min(c_old, c_new)
            idx = np.empty((r_new, c_new), dtype=np.int64)
            idx[:r_keep, :c_keep] = (o_off + np.arange(r_keep)[:, None] * c_old
                                     + np.arange(c_keep)[None, :])
            n_rows = (r_new - r_keep) * c_new
            idx[r_keep:, :] = -2 - (fresh + np.arange(n_rows)).reshape(r_new - r_keep, c_new)
            fresh += n_rows
            n_cols = r_keep * (c_new - c_keep)
            idx[:r_keep, c_keep:] = -2 - (fresh + np.arange(n_cols)).reshape(r_keep, c_new - c_keep)
            fresh += n_cols
        else:
            r_old, r_new = o_shape[0], n_shape[0]
            r_keep = min(r_old, r_new)
            idx = np.empty(r_new, dtype=np.int64)
            idx[:r_keep] = o_off + np.arange(r_keep)
            if fresh_bias:
                idx[r_keep:] = -2 - (fresh + np.arange(r_new - r_keep))
                fresh += r_new - r_keep
            else:
                idx[r_keep:] = zero_marker
        chunks.append(idx.reshape(-1))
    index = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    zero = old.numel + fresh
    out = np.where(index == zero_marker, zero, np.where(index <= -2, old.numel + (-2 - index), index))
    return out, fresh


class Relayout:
    """Moves flat tensors from one layout to another (cached gather indices per device)."""

    def __init__(self):
        self._cache: OrderedDict = OrderedDict()      # (shapes, device) -> (index, n fresh)
        self._zero_tails: dict = {}

    def index(self, old: FlatLayout, new: FlatLayout, fresh_bias: bool,
              device: torch.device) -> tuple[torch.Tensor, int]:
        """(gather index on `device`, number of fresh entries) from `old` to `new`."""
        key = (old.shapes, new.shapes, fresh_bias, device)
        hit = self._cache.get(key)
        if hit is None:
            index, fresh = gather_index(old, new, fresh_bias)
            hit = self._cache[key] = (torch.from_numpy(index).to(device), fresh)
            if len(self._cache) > INDEX_CACHE:
                self._cache.popitem(last=False)
        return hit

    def apply(self, t: torch.Tensor, index: torch.Tensor, fresh: torch.Tensor | None,
              n_fresh: int) -> torch.Tensor:
        """t [..., P_old] -> [..., P_new]; fresh [..., n_fresh] (None: zeros, as optimiser state)."""
        if fresh is None:
            source = torch.cat([t, self._zeros(t, n_fresh + 1)], -1)
        else:
            source = torch.cat([t, fresh.to(t), self._zeros(t, 1)], -1)
        return source.index_select(-1, index)

    def _zeros(self, like: torch.Tensor, n: int) -> torch.Tensor:
        """Zeros [..., n] shaped like `like`'s leading dims (kept: only ever read)."""
        key = (like.shape[:-1], n, like.dtype, like.device)
        zeros = self._zero_tails.get(key)
        if zeros is None:
            if len(self._zero_tails) >= INDEX_CACHE:
                self._zero_tails.clear()
            zeros = self._zero_tails[key] = like.new_zeros((*like.shape[:-1], n))
        return zeros
