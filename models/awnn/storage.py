"""Storage of adaptive layers: init scales and fresh-neuron draws, optimiser-state moves.

Fresh neurons (Algorithm 1, growth) come from a CPU `torch.Generator` owned by the model, in a
canonical order shared by unstacked and stacked layers, so that member i of a stack draws exactly
what the unstacked run of seed i draws: for each weight ℓ = 0..L in turn, the new rows
[r_keep:r_new, :c_new], then the new columns [:r_keep, c_keep:c_new], then (only when fresh biases
are random) the new bias entries [r_keep:r_new]. Draws are made on the CPU in the parameter's
dtype and copied to its device (one small copy per growth).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.awnn.importance import sum_sq_importance


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


def replace_theta(module: nn.Module, move, optimizer, keep_identity: bool = False) -> None:
    """module.theta -> move(theta), its optimiser state too. A new Parameter (autograd caches a
    leaf's shape in its gradient accumulator, which a graph still alive from the previous step
    would keep stale), unless keep_identity: a `.data` swap, only before training (loading)."""
    old = module.theta
    if keep_identity:
        old.data = move(old.data)
        old.grad = None
        for state, key in state_tensors(old, optimizer):
            state[key] = move(state[key])
        return
    new = nn.Parameter(move(old.detach()), requires_grad=old.requires_grad)
    module._parameters["theta"] = new
    move_optimizer_state(optimizer, [(old, new, move)])


def resized(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Zeros of `shape` (t's device and dtype) holding t's overlapping leading block."""
    out = t.new_zeros(shape)
    keep = tuple(slice(0, min(a, b)) for a, b in zip(t.shape, shape))
    out[keep] = t[keep]
    return out


def layer_std(layer: int, in_features: int, widths: list[int], nus: list[float], gain: float,
              init: str, convention: str) -> float:
    """Init std of weight `layer` (0 = input layer) of an MLP at hidden `widths` and rates `nus`."""
    fan_in = in_features if layer == 0 else widths[layer - 1]
    if layer == 0 or init == "kaiming":
        return math.sqrt(gain / fan_in)
    # kaiming+ (AWNN Thm 3.1, eq. 41): Var[w] = gain / Σ_j f(j; ν_{ℓ−1})² over the previous layer
    return math.sqrt(gain / sum_sq_importance(fan_in, nus[layer - 1], convention))


def grow_stds(m, layer: int, widths: list[int], nus: list[float]) -> tuple[float, float]:
    """(weight std, bias std) of fresh entries of weight `layer` at the new widths."""
    if m.grow_init == "normal":
        return 1.0, 1.0
    return layer_std(layer, m.in_features, widths, nus, m.gain, m.init, m.importance), 0.0


def fresh_draws(m, generator: torch.Generator, old_widths: list[int], new_widths: list[int],
                nus: list[float], dtype) -> list[torch.Tensor]:
    """Fresh entries of a resize old -> new widths of MLP `m` (or of a stack member), one tensor
    per block in the canonical draw order, shaped as capacity.entering_specs lists the blocks:
    per layer ℓ that grows, W_ℓ's new rows, then its new columns, then b_ℓ's new entries when
    they are random. Empty if nothing grows."""
    old = [m.in_features, *old_widths, m.out_features]
    new = [m.in_features, *new_widths, m.out_features]
    draws = []
    for layer in range(m.num_hidden + 1):
        old_shape, new_shape = (old[layer + 1], old[layer]), (new[layer + 1], new[layer])
        if new_shape[0] <= old_shape[0] and new_shape[1] <= old_shape[1]:
            continue
        std, bias_std = grow_stds(m, layer, new_widths, nus)
        rows, cols = draw_weight(old_shape, new_shape, std, generator, dtype)
        draws += [t for t in (rows, cols) if t is not None]
        if layer < m.num_hidden:
            fresh = draw_bias(old_shape[0], new_shape[0], bias_std, generator, dtype)
            draws += [fresh] if fresh is not None else []
    return draws
