"""Active blocks of an adaptive MLP inside its capacity-sized θ (models/awnn/layout.py).

θ holds every piece at the layers' capacities C_ℓ ≥ D_ℓ. The forward pass reads the active block
[:D_{ℓ+1}, :D_ℓ] of each weight and [:D_{ℓ+1}] of each bias; every other entry is exactly zero,
parameters and optimiser state alike, so the optimiser and the weight prior keep it at zero
(zero gradient, zero moments). A resize within the capacities zeroes the leaving entries and
writes the fresh ones in place (one multi-tensor write each, the same Parameter). Capacity grows
with HEADROOM when a width exceeds it and shrinks when the width falls below SHRINK_AT of it;
only then is θ re-laid out (a new Parameter). A stack computes at its capacities (every member
padded to the widest), so the headroom is paid on every step there.

Blocks are addressed by strided specs (size, stride, offset) into the flat last axis, plain
integers (cached per layout and shapes): `regions(t, specs)` are strided views of t at them.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from models.awnn.layout import FlatLayout
from models.awnn.storage import state_tensors

HEADROOM = 10               # percent of the width added as capacity after a growth
SHRINK_AT = 0.8             # shrink when the width is below this share of the capacity


def capacity_for(width: int) -> int:
    """Capacity for a width: width + ⌈HEADROOM% of it⌉ (at least 1), so that growth re-lays θ
    out rarely."""
    return width + max(1, -(-width * HEADROOM // 100))


def next_capacities(caps: list[int], widths: list[int]) -> list[int]:
    """Capacities after a resize to `widths`: grown past a width that exceeds them, shrunk when
    the width fell below SHRINK_AT of them, else kept."""
    out = []
    for cap, width in zip(caps, widths):
        if width > cap or (width <= SHRINK_AT * cap and capacity_for(width) < cap):
            cap = capacity_for(width)
        out.append(cap)
    return out


def block(layout: FlatLayout, k: int, rows: tuple[int, int], cols: tuple[int, int] | None):
    """Spec of piece k's block [rows[0]:rows[1], cols[0]:cols[1]] (a bias: cols None), or None
    when it is empty."""
    offset, shape = layout.offsets[k], layout.shapes[k]
    n_rows = rows[1] - rows[0]
    if cols is None:
        return ((n_rows,), (1,), offset + rows[0]) if n_rows > 0 else None
    n_cols = cols[1] - cols[0]
    if n_rows <= 0 or n_cols <= 0:
        return None
    return (n_rows, n_cols), (shape[1], 1), offset + rows[0] * shape[1] + cols[0]


@lru_cache(maxsize=1024)
def active_specs(layout: FlatLayout, shapes) -> tuple:
    """Spec of every piece's active block (`shapes`: the pieces at the widths)."""
    return tuple(block(layout, k, (0, s[0]), (0, s[1]) if len(s) == 2 else None)
                 for k, s in enumerate(shapes))


@lru_cache(maxsize=1024)
def leaving_specs(layout: FlatLayout, old, new) -> tuple:
    """Specs of the entries a resize `old` -> `new` (piece shapes, within the capacities) drops."""
    out = []
    for k, (o, n) in enumerate(zip(old, new)):
        out.append(block(layout, k, (n[0], o[0]), (0, o[1]) if len(o) == 2 else None))
        if len(o) == 2:
            out.append(block(layout, k, (0, min(o[0], n[0])), (n[1], o[1])))
    return tuple(s for s in out if s is not None)


@lru_cache(maxsize=1024)
def entering_specs(layout: FlatLayout, old, new, num_hidden: int, fresh_bias: bool) -> tuple:
    """Specs of the entries a resize brings in, in the order the growth draws come
    (models/awnn/storage.py): per layer ℓ the new rows [r_keep:, :c_new] and columns
    [:r_keep, c_keep:] of W_ℓ, then (fresh_bias) the new entries of b_ℓ. Entries that enter
    without a draw (zero biases) are zero already."""
    out = []
    for layer in range(num_hidden + 1):
        (r_old, c_old), (r_new, c_new) = old[layer], new[layer]
        r_keep, c_keep = min(r_old, r_new), min(c_old, c_new)
        out.append(block(layout, layer, (r_keep, r_new), (0, c_new)))
        out.append(block(layout, layer, (0, r_keep), (c_keep, c_new)))
        if fresh_bias and layer < num_hidden:
            out.append(block(layout, num_hidden + 1 + layer, (old[num_hidden + 1 + layer][0],
                                                              new[num_hidden + 1 + layer][0]), None))
    return tuple(s for s in out if s is not None)


def regions(t: torch.Tensor, specs) -> list[torch.Tensor]:
    """Views of t ([..., P], the last axis contiguous) at `specs`; leading axes (a stack's
    members) are kept in each view."""
    lead, lead_stride, base = t.shape[:-1], t.stride()[:-1], t.storage_offset()
    return [t.as_strided((*lead, *size), (*lead_stride, *stride), base + offset)
            for size, stride, offset in specs]


def relaid(t: torch.Tensor, old: FlatLayout, new: FlatLayout) -> torch.Tensor:
    """t ([..., old.numel]) at layout `new`: each piece's overlap of the two shapes kept, entries
    beyond the new shapes cut, new room zero (a capacity change)."""
    overlap = tuple(tuple(min(a, b) for a, b in zip(o, n)) for o, n in zip(old.shapes, new.shapes))
    out = t.new_zeros((*t.shape[:-1], new.numel))
    pairs = [(d, s) for d, s in zip(active_specs(new, overlap), active_specs(old, overlap))
             if d is not None]
    torch._foreach_copy_(regions(out, [d for d, _ in pairs]), regions(t, [s for _, s in pairs]))
    return out


def write_entries(param: torch.Tensor, optimizer, leave, enter, fresh: list[torch.Tensor]) -> None:
    """A resize within the capacities, on a flat θ (1-D view of param): entries at the `leave`
    specs become exactly zero in param and its per-entry optimiser state, then `fresh` (one
    tensor per `enter` spec, shaped as its block) is copied to the `enter` specs (their
    optimiser state is zero already). One multi-tensor write each."""
    if leave:
        tensors = [param.data, *(s[key] for s, key in state_tensors(param, optimizer))]
        torch._foreach_zero_([r for t in tensors for r in regions(t.view(-1), leave)])
    if enter:
        if len(fresh) != len(enter):
            raise RuntimeError(f"{len(fresh)} fresh blocks for {len(enter)} entering blocks")
        torch._foreach_copy_(regions(param.data.view(-1), enter), fresh)


def gather(t: torch.Tensor, specs) -> torch.Tensor:
    """The entries of t at `specs`, flat, in spec order."""
    return torch.cat([r.reshape(-1) for r in regions(t, specs)])
