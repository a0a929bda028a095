"""Fully connected network: Linear layers with an activation between them (NB §3, A.3)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.activations import make_activation


class FCN(nn.Sequential):
    """`in -> widths[0] -> ... -> widths[-1] -> out`, as an nn.Sequential of Linear and activations.

    Inputs of any shape are flattened first. PyTorch default init (the authors' code).
    """

    def __init__(self, in_features: int, widths: list[int], out_features: int,
                 activation: str = "relu", bias: bool = True):
        sizes = [in_features, *widths, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(sizes) - 2:
                layers.append(make_activation(activation))
        super().__init__(*layers)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]


@dataclass
class FCNConfig:
    name: str = "fcn"
    widths: list[int] = field(default_factory=lambda: [256])
    activation: str = "relu"
    bias: bool = True


def build(cfg: FCNConfig, info: dict) -> FCN:
    return FCN(info["in_features"], list(cfg.widths), info["num_classes"], cfg.activation, cfg.bias)


REGISTERED = {"fcn": ("FCNConfig", "build")}


def stack_members(members: list[FCN], input_shape: tuple[int, ...] | None = None) -> nn.Module:
    from models.stacked.fcn import StackedFCN

    return StackedFCN(members, input_shape)
