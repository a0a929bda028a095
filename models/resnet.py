"""ResNet20 (He et al. 2016, §4.2) with a choice of classifier head (AWNN §4, App. C).

3 stages × 3 basic blocks, 16/32/64 channels, option-A shortcuts (strided subsampling and
zero-padded channels: no parameters), BN, global average pooling. Head on the 64 pooled features:
`linear` (He et al.), `fixed` (one hidden layer of `head_width`), or `adaptive` (an AdaptiveMLP
with one hidden layer, ν0 = 0.02, LeakyReLU: the AWNN setting).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.activations import make_activation
from models.awnn import AdaptiveMLP

HEADS = ("linear", "fixed", "adaptive")


class ShortcutA(nn.Module):
    """Option A: x[:, :, ::s, ::s] with the extra channels zero (parameter-free)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        changes = stride != 1 or in_channels != out_channels
        self.shortcut = ShortcutA(in_channels, out_channels, stride) if changes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, head: str = "linear",
                 head_width: int = 0, head_activation: str = "leaky_relu", nu0: float = 0.02,
                 k: float = 0.9, init: str = "kaiming_plus", max_width: int | None = None,
                 blocks_per_stage: int = 3):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head={head!r} is unknown; allowed: {list(HEADS)}")
        if head == "fixed" and head_width < 1:
            raise ValueError(f"head=fixed needs head_width >= 1, got head_width={head_width}")
        self.conv = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        stages, channels = [], 16
        for out_channels, stride in ((16, 1), (32, 2), (64, 2)):
            for b in range(blocks_per_stage):
                stages.append(BasicBlock(channels, out_channels, stride if b == 0 else 1))
                channels = out_channels
        self.stages = nn.Sequential(*stages)
        if head == "linear":
            self.head = nn.Linear(64, num_classes)
        elif head == "fixed":
            self.head = nn.Sequential(nn.Linear(64, head_width), make_activation(head_activation),
                                      nn.Linear(head_width, num_classes))
        else:
            self.head = AdaptiveMLP(64, num_classes, 1, nu0=nu0, k=k, activation=head_activation,
                                    init=init, max_width=max_width)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return self.stages(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class ResNet20Config:
    name: str = "resnet20"
    head: str = "linear"
    head_width: int = 0
    head_activation: str = "leaky_relu"
    nu0: float = 0.02
    k: float = 0.9
    init: str = "kaiming_plus"
    max_width: int | None = None


def build(cfg: ResNet20Config, info: dict) -> ResNet20:
    shape = info["input_shape"]
    if len(shape) != 3:
        raise ValueError(f"resnet20 needs image inputs (C, H, W), got input_shape={tuple(shape)}")
    return ResNet20(shape[0], info["num_classes"], cfg.head, cfg.head_width, cfg.head_activation,
                    cfg.nu0, cfg.k, cfg.init, cfg.max_width)


REGISTERED = {"resnet20": ("ResNet20Config", "build")}
