"""model=awnn_mlp: the AWNN classifier (conf/model/awnn_mlp.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from models.awnn.mlp import AdaptiveMLP


@dataclass
class AdaptiveMLPConfig:
    name: str = "awnn_mlp"
    num_hidden: int = 1
    nu0: float = 0.01
    k: float = 0.9
    activation: str = "relu6"
    init: str = "kaiming_plus"
    max_width: int | None = None
    grow_init: str = "layer"
    importance: str = "paper"


def build(cfg: AdaptiveMLPConfig, info: dict) -> nn.Module:
    """Classifier: flatten inputs, AdaptiveMLP in_features -> num_classes."""
    mlp = AdaptiveMLP(info["in_features"], info["num_classes"], cfg.num_hidden, nu0=cfg.nu0,
                      k=cfg.k, activation=cfg.activation, init=cfg.init,
                      max_width=cfg.max_width, grow_init=cfg.grow_init, importance=cfg.importance)
    return nn.Sequential(nn.Flatten(1), mlp)
