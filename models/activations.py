"""Activation registry. BiLU = positively homogeneous (f(λx) = λf(x), λ > 0): NB §2."""
from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "linear": nn.Identity,
    "relu6": nn.ReLU6,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
# relu6 is bounded (AWNN §5.2), hence *not* homogeneous: balancing refuses it like tanh.
BILU = ("relu", "leaky_relu", "linear")


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; allowed: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def is_bilu(module: nn.Module) -> bool:
    """True for activation modules that commute with positive scaling (NB Def. B.7)."""
    return isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.Identity))
