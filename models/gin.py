"""Graph Isomorphism Network (Xu et al. 2019) with fixed or adaptive-width MLPs (AWNN App. C.4).

Layout (Errica et al. 2020, as used by AWNN): an embedding MLP on the node features, then
`num_layers` GINConv layers, each with its own MLP. Every MLP is `in -> hidden layer -> out`:
either fixed (`hidden` units) or an AdaptiveMLP whose hidden width is learned (AWNN eq. 14).
Each block's output goes through optional BatchNorm and a ReLU, so node states are comparable
between the two variants.

Readout (GIN eq. 4.2): every layer's node states h^0 (embedding) ... h^L are pooled per graph,
the L+1 graph vectors are *concatenated*, and one Linear maps them to class logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.nn import GINConv, global_add_pool, global_mean_pool

from models.activations import make_activation
from models.awnn import AdaptiveMLP

POOLINGS = {"sum": global_add_pool, "mean": global_mean_pool}


class FixedMLP(nn.Sequential):
    """`in -> hidden -> out`: Linear, activation, Linear."""

    def __init__(self, in_features: int, hidden: int, out_features: int, activation: str):
        super().__init__(nn.Linear(in_features, hidden), make_activation(activation),
                         nn.Linear(hidden, out_features))


class NodeBlock(nn.Sequential):
    """The MLP of one GIN layer followed by (optional) BatchNorm and ReLU on its output."""

    def __init__(self, mlp: nn.Module, out_features: int, batch_norm: bool):
        layers = [mlp]
        if batch_norm:
            layers.append(nn.BatchNorm1d(out_features))
        layers.append(nn.ReLU())
        super().__init__(*layers)


class GIN(nn.Module):
    def __init__(self, num_node_features: int, num_classes: int, num_layers: int = 2,
                 hidden: int = 64, adaptive: bool = True, nu0: float = 0.02,
                 activation: str = "leaky_relu", pooling: str = "sum", dropout: float = 0.0,
                 batch_norm: bool = True, train_eps: bool = True):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is unknown; allowed: {sorted(POOLINGS)}")
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be >= 1 (the paper uses 1, 2 or 4)")
        make_activation(activation)  # fails early, naming the allowed activations
        self.pool = POOLINGS[pooling]
        self.dropout = nn.Dropout(dropout)

        def block(in_features: int) -> NodeBlock:
            if adaptive:
                mlp = AdaptiveMLP(in_features, hidden, num_hidden=1, nu0=nu0,
                                  activation=activation)
            else:
                mlp = FixedMLP(in_features, hidden, hidden, activation)
            return NodeBlock(mlp, hidden, batch_norm)

        self.embed = block(num_node_features)
        self.convs = nn.ModuleList(GINConv(block(hidden), train_eps=train_eps)
                                   for _ in range(num_layers))
        self.classifier = nn.Linear((num_layers + 1) * hidden, num_classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
                num_graphs: int) -> torch.Tensor:
        # Explicit size=num_graphs: pooling would otherwise read batch.max() (a device sync).
        h = self.embed(x)
        readouts = [self.pool(h, batch, size=num_graphs)]
        for conv in self.convs:
            h = conv(h, edge_index)  # GIN eq. 4.1: MLP((1 + eps) h_v + sum_{u in N(v)} h_u)
            readouts.append(self.pool(h, batch, size=num_graphs))
        return self.classifier(self.dropout(torch.cat(readouts, dim=-1)))


@dataclass
class GINConfig:
    name: str = "gin"
    num_layers: int = 2
    hidden: int = 64
    adaptive: bool = True
    nu0: float = 0.02
    activation: str = "leaky_relu"  # the authors' NCI1/REDDIT-B configs *(code)*
    pooling: str = "sum"
    dropout: float = 0.0
    batch_norm: bool = True
    train_eps: bool = True


def build(cfg: GINConfig, info: dict) -> GIN:
    return GIN(info["num_node_features"], info["num_classes"], num_layers=cfg.num_layers,
               hidden=cfg.hidden, adaptive=cfg.adaptive, nu0=cfg.nu0,
               activation=cfg.activation, pooling=cfg.pooling, dropout=cfg.dropout,
               batch_norm=cfg.batch_norm, train_eps=cfg.train_eps)
