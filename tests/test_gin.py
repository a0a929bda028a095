from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Batch, Data
from torch_geometric.utils import erdos_renyi_graph

from models import build_model, validate_model_config
from models.awnn import adaptive_modules, update_widths
from models.gin import GIN, GINLayer, adjacency

CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "gin.yaml"
F, C = 5, 3


def random_graph(num_nodes: int, seed: int) -> Data:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    edge_index = erdos_renyi_graph(num_nodes, 0.4)
    return Data(x=torch.randn(num_nodes, F, generator=g), edge_index=edge_index)


def inputs(graphs: list[Data]):
    b = Batch.from_data_list(graphs)
    return b.x, b.edge_index, b.batch, b.num_graphs


def small_gin(**kw) -> GIN:
    torch.manual_seed(0)
    kw = {"num_layers": 2, "hidden": 16, "adaptive": False, **kw}
    return GIN(F, C, **kw).eval()


VARIANTS = [dict(adaptive=False), dict(adaptive=True), dict(adaptive=False, batch_norm=False),
            dict(adaptive=True, pooling="sum", num_layers=4), dict(adaptive=True, embed_batch_norm=True)]


@pytest.mark.parametrize("kw", VARIANTS)
def test_shape_and_graph_level_invariances(kw):
    model = small_gin(**kw)
    graphs = [random_graph(n, seed) for seed, n in enumerate([6, 9, 4])]
    out = model(*inputs(graphs))
    assert out.shape == (3, C)

    # Each graph's output does not depend on the other graphs in the batch.
    for i, g in enumerate(graphs):
        torch.testing.assert_close(model(*inputs([g]))[0], out[i], rtol=1e-5, atol=1e-5)

    # Relabelling the nodes of a graph leaves its output unchanged.
    g = graphs[1]
    perm = torch.randperm(g.num_nodes, generator=torch.Generator().manual_seed(1))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(g.num_nodes)
    permuted = Data(x=g.x[perm], edge_index=inverse[g.edge_index])
    out_perm = model(*inputs([graphs[0], permuted, graphs[2]]))
    torch.testing.assert_close(out_perm, out, rtol=1e-5, atol=1e-5)


def test_sum_and_mean_pooling():
    """Graph readouts: sum(G + G) = 2 sum(G), mean(G + G) = mean(G), sum(G) = |V| mean(G)."""
    summed, mean = small_gin(pooling="sum"), small_gin(pooling="mean")
    mean.load_state_dict(summed.state_dict())
    g = random_graph(7, 3)
    doubled = Data(x=torch.cat([g.x, g.x]),
                   edge_index=torch.cat([g.edge_index, g.edge_index + 7], dim=1))

    def readout(model, graph):
        seen = []
        hook = model.classifier.register_forward_hook(lambda m, args, out: seen.append(args[0]))
        model(*inputs([graph]))
        hook.remove()
        return seen[0]

    torch.testing.assert_close(readout(summed, doubled), 2 * readout(summed, g))
    torch.testing.assert_close(readout(mean, doubled), readout(mean, g))
    torch.testing.assert_close(readout(summed, g), 7 * readout(mean, g))
    assert not torch.allclose(readout(summed, g), readout(mean, g))


@pytest.mark.parametrize("symmetric", [True, False])
def test_gin_layer_matches_pyg_ginconv(symmetric):
    """Forward and gradients of the CSR neighbour sum against PyG's message passing, on edges in
    random order (unsorted rows), directed or not, with repeated edges and isolated nodes."""
    from torch_geometric.nn import GINConv
    g = torch.Generator().manual_seed(0)
    n, e = 30, 90
    edges = torch.randint(0, n - 3, (2, e), generator=g)          # the last 3 nodes are isolated
    if symmetric:
        edges = torch.cat([edges, edges.flip(0)], dim=1)
    edges = torch.cat([edges, edges[:, :5]], dim=1)[:, torch.randperm(edges.shape[1] + 5, generator=g)]
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(F, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).double()
    ours, ref = GINLayer(mlp, train_eps=True).double(), GINConv(mlp, train_eps=True).double()
    with torch.no_grad():
        ours.eps.fill_(0.3)
        ref.eps.fill_(0.3)
    x = torch.randn(n, F, generator=g, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = ours(x1, adjacency(edges, n, x.dtype))
    expected = ref(x2, edges)
    torch.testing.assert_close(out, expected)
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((out * weights).sum(), [x1, ours.eps, *mlp.parameters()])
    ref_grads = torch.autograd.grad((expected * weights).sum(), [x2, ref.eps, *mlp.parameters()])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
    assert ours.eps.shape == ref.eps.shape and GINLayer(mlp, train_eps=False).eps.requires_grad is False


@pytest.mark.parametrize("num_layers", [1, 2, 4])
def test_adaptive_blocks(num_layers):
    assert len(adaptive_modules(small_gin(num_layers=num_layers, adaptive=True))) == num_layers + 1
    assert adaptive_modules(small_gin(num_layers=num_layers, adaptive=False)) == []


def train(model: GIN, steps: int, lr: float = 0.01) -> tuple[list[float], bool]:
    model.train()
    graphs = [random_graph(n, seed) for seed, n in enumerate([5, 8, 6, 7, 4, 9])]
    x, edge_index, batch, num_graphs = inputs(graphs)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses, resized = [], False
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, edge_index, batch, num_graphs), y)
        loss.backward()
        optimizer.step()
        resized |= update_widths(model, optimizer)
        losses.append(loss.item())
        # A graph kept alive across a capacity growth in update_widths breaks the next
        # backward (stale AccumulateGrad shape): drop it, as a training loop must.
        del loss
    model.eval()
    assert torch.isfinite(model(x, edge_index, batch, num_graphs)).all()
    return losses, resized


@pytest.mark.parametrize("adaptive", [False, True])
def test_overfits_a_tiny_batch(adaptive):
    losses, resized = train(small_gin(adaptive=adaptive, hidden=32), steps=40)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.3 * losses[0]
    assert resized == adaptive  # update_widths did resize during training


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="pooling='max'.*mean.*sum"):
        small_gin(pooling="max")
    with pytest.raises(ValueError, match="relu6"):
        small_gin(activation="gelu")
    with pytest.raises(ValueError, match="num_layers"):
        small_gin(num_layers=0)


def test_builds_from_the_real_config():
    cfg = validate_model_config(OmegaConf.load(CONF))
    assert cfg.name == "gin" and cfg.adaptive and cfg.nu0 == 0.02
    model = build_model(cfg, {"num_node_features": F, "num_classes": C})
    assert len(adaptive_modules(model)) == cfg.num_layers + 1
    assert model.eval()(*inputs([random_graph(5, 0), random_graph(3, 1)])).shape == (2, C)


@pytest.mark.parametrize("adaptive", [False, True])
def test_constant_node_features_train_the_embedding(adaptive):
    """REDDIT-B without node labels: every node's feature is 1, so the embedding MLP's output has
    zero variance over a batch. A BatchNorm there would output its bias whatever the MLP's weights
    (zero gradient) in train mode and amplify its running mean's lag by 1/sqrt(eps) in eval mode:
    `build` leaves it out when the data set says its node features are constant."""
    cfg = validate_model_config(OmegaConf.merge(OmegaConf.load(CONF), {"adaptive": adaptive}))
    info = {"num_node_features": F, "num_classes": C}
    torch.manual_seed(0)
    constant = build_model(cfg, {**info, "constant_node_features": True}).train()
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in constant.embed.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in build_model(cfg, info).embed.modules())
    graphs = [random_graph(n, seed) for seed, n in enumerate([5, 8, 6])]
    for g in graphs:
        g.x = torch.ones(g.num_nodes, F)
    out = constant(*inputs(graphs))
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    first = next(p for n, p in constant.embed.named_parameters() if p.ndim and "raw_nu" not in n)
    assert first.grad.abs().sum() > 0
