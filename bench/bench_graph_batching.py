"""One epoch of graph batching: GraphSplit.take (tensor-resident) vs PyG's DataLoader.

NCI1-sized synthetic data: 4110 graphs, ~30 nodes and ~32 undirected edges each, 37 features.
Usage: python bench/bench_graph_batching.py [--device cpu|cuda] [--batch-size 128] [--epochs 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.graphs import GraphSplit  # noqa: E402
from data.tensors import iterate  # noqa: E402


def synthetic_graphs(n_graphs=4110, features=37, seed=0) -> list[Data]:
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(n_graphs):
        n = int(torch.randint(10, 51, (1,), generator=g))
        src = torch.randint(0, n, (n + 2,), generator=g)
        dst = torch.randint(0, n, (n + 2,), generator=g)
        edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
        x = torch.nn.functional.one_hot(torch.randint(0, features, (n,), generator=g), features).float()
        graphs.append(Data(x=x, edge_index=edge_index, y=torch.tensor([i % 2])))
    return graphs


def to_split(graphs: list[Data]) -> GraphSplit:
    ptr = lambda counts: torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(counts).cumsum(0)])
    return GraphSplit(torch.cat([d.x for d in graphs]), torch.cat([d.edge_index for d in graphs], 1),
                      ptr([d.num_nodes for d in graphs]), ptr([d.num_edges for d in graphs]),
                      torch.cat([d.y for d in graphs]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def epoch_take(split: GraphSplit, batch_size: int, seed: int, device: torch.device) -> float:
    start = time.perf_counter()
    for (x, edge_index, batch, _), y in iterate(split, batch_size, torch.Generator().manual_seed(seed)):
        pass
    sync(device)
    return time.perf_counter() - start


def epoch_pyg(graphs: list[Data], batch_size: int, seed: int, device: torch.device) -> float:
    torch.manual_seed(seed)
    start = time.perf_counter()
    for b in DataLoader(graphs, batch_size=batch_size, shuffle=True):
        b = b.to(device, non_blocking=True)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 1
    device = torch.device(args.device)
    graphs = synthetic_graphs()
    split = to_split(graphs).to(device)
    epoch_take(split, args.batch_size, 0, device)  # warm-up
    take = min(epoch_take(split, args.batch_size, s, device) for s in range(args.epochs))
    pyg = min(epoch_pyg(graphs, args.batch_size, s, device) for s in range(args.epochs))
    print(f"device={device} graphs={len(graphs)} batch={args.batch_size} (best of {args.epochs} epochs)")
    print(f"GraphSplit.take: {take * 1e3:8.1f} ms/epoch")
    print(f"PyG DataLoader:  {pyg * 1e3:8.1f} ms/epoch")
    print(f"speed-up (PyG / take): {pyg / take:.1f}x")
    print(f"ratio take/pyg (graph batching, {len(graphs)} graphs, batch {args.batch_size}): "
          f"{take / pyg:.3f}")


if __name__ == "__main__":
    main()
