"""Storage of adaptive layers: fresh-neuron draws, parameter replacement with optimiser state.

Fresh neurons (Algorithm 1, growth) come from a CPU `torch.Generator` owned by the model, in a
canonical order shared by unstacked and stacked layers, so that member i of a stack draws exactly
what the unstacked run of seed i draws: for each weight ℓ = 0..L in turn, the new rows
[r_keep:r_new, :c_new], then the new columns [:r_keep, c_keep:c_new], then (only when fresh biases
are random) the new bias entries [r_keep:r_new]. Draws are made on the CPU in the parameter's
dtype and copied to its device (one small copy per growth).
"""
from __future__ import annotations

import torch
from torch import nn


def peek_seed() -> int:
    """A seed read from the global CPU generator without advancing it: deterministic in the run
    seed and the build order, and the model's init draws stay what they were without it."""
    state = torch.random.get_rng_state()
    seed = int(torch.randint(0, 2 ** 62, (1,), device="cpu").item())
    torch.random.set_rng_state(state)
    return seed


def make_generator(seed: int | None = None, state: torch.Tensor | None = None) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    if state is not None:
        gen.set_state(state.detach().cpu())
    else:
        gen.manual_seed(peek_seed() if seed is None else seed)
    return gen


def _normal(shape: tuple, std: float, generator: torch.Generator, dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="cpu").normal_(0.0, std, generator=generator)


def draw_weight(old: tuple[int, int], new: tuple[int, int], std: float,
                generator: torch.Generator, dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Fresh entries of a weight whose active block goes from `old` to `new` (rows, cols):
    (new rows [r_keep:r_new, :c_new], new columns [:r_keep, c_keep:c_new]), None where empty."""
    r_keep, c_keep = min(old[0], new[0]), min(old[1], new[1])
    rows = cols = None
    if new[0] > r_keep and new[1] > 0:
        rows = _normal((new[0] - r_keep, new[1]), std, generator, dtype)
    if new[1] > c_keep and r_keep > 0:
        cols = _normal((r_keep, new[1] - c_keep), std, generator, dtype)
    return rows, cols


def draw_bias(old: int, new: int, std: float, generator: torch.Generator, dtype) -> torch.Tensor | None:
    """Fresh bias entries [old:new]: N(0, std²) when std > 0, else None (zeros, no draw)."""
    if new <= old or std <= 0.0:
        return None
    return _normal((new - old,), std, generator, dtype)


def state_tensors(param: torch.Tensor, optimizer) -> list[tuple[dict, str]]:
    """(state dict, key) of the optimiser's per-entry tensors of `param` (moments, momentum)."""
    if optimizer is None or param not in optimizer.state:
        return []
    state = optimizer.state[param]
    return [(state, key) for key, t in state.items() if torch.is_tensor(t) and t.shape == param.shape]


def move_optimizer_state(optimizer, moves: list[tuple]) -> None:
    """For each (old, new, move_state): the optimiser's param groups point at `new` and each
    per-entry state tensor s of `old` becomes move_state(s) (one pass over the groups)."""
    if optimizer is None or not moves:
        return
    news = {old: new for old, new, _ in moves}
    for group in optimizer.param_groups:
        params = group["params"]
        if any(p in news for p in params):
            group["params"] = [news.get(p, p) for p in params]
    for old, new, move_state in moves:
        state = optimizer.state.pop(old, None)
        if state is not None:
            optimizer.state[new] = {k: move_state(v) if torch.is_tensor(v) and v.shape == old.shape
                                    else v for k, v in state.items()}


def resized(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Zeros of `shape` (t's device and dtype) holding t's overlapping leading block."""
    out = t.new_zeros(shape)
    keep = tuple(slice(0, min(a, b)) for a, b in zip(t.shape, shape))
    out[keep] = t[keep]
    return out
