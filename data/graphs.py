"""TU graph classification (any TU Dortmund set; NCI1 and REDDIT-BINARY are presets) with the
10-fold protocol of Errica et al. 2020.

`dataset=tu dataset.tu_name=<NAME>` reads <root>/TUDataset/<NAME>/raw/ (data/tu.py checks the
files before a run starts).

PyG's `TUDataset` parses the raw TU text files; it writes `processed/` next to `raw/`, so the
raw files are first copied into data.cache. Folds come from a JSON file in the schema of
Errica et al. (a list of folds `{"test": [...], "model_selection": [{"train": [...],
"validation": [...]}]}`, 0-based graph indices); without one, folds are generated (stratified
10-fold, stratified 10% validation holdout, fixed seed) and written to the cache.
Batches are built on the device by `GraphSplit.take` with vectorised gathers.

Node features: `labels` one-hot (NCI1: 37 features); a set without node labels (REDDIT-BINARY)
gets, as in Errica et al., one feature per node, `constant` (1, AWNN's authors' setting
and Errica's `_1` splits) or `degree` (the node's number of neighbours, Errica's `_DEGREE`
splits, read from <root>/TUDataset/splits/degree/ when that file exists). `auto` (the `tu`
default): labels when the set has them, else degree.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from data.tensors import DataBundle, stratified_indices
from data.text import atomic_write, check_choice
from data.tu import N_FOLDS, NODE_FEATURES, prepare_raw, splits_path, tu_folder


@dataclass
class TUConfig:
    name: str = "nci1"                 # tu | nci1 | reddit_binary (presets of tu)
    tu_name: Optional[str] = None      # folder under <root>/TUDataset/; null: the preset's (NCI1, REDDIT-BINARY)
    fraction: float = 1.0              # stratified share of the fold's training part kept
    split_seed: int = 42               # `fraction` subsample and generated folds
    fold: int = 0                      # outer fold 0..9
    splits_file: Optional[str] = None  # default <root>/TUDataset/splits/<NAME>_splits.json
    node_features: str = "labels"      # auto | labels (NCI1) | constant | degree (sets without labels)


class GraphSplit:
    """Graphs held as concatenated tensors on one device.

    x: node features [N, F]; edge_index: [2, E] with node ids local to each graph;
    node_ptr / edge_ptr: [G + 1] offsets of each graph's nodes / edges; target: labels [G].
    """

    def __init__(self, x: Tensor, edge_index: Tensor, node_ptr: Tensor, edge_ptr: Tensor, target: Tensor):
        self.x, self.edge_index, self.target = x, edge_index, target
        self.node_ptr, self.edge_ptr = node_ptr, edge_ptr
        if not len(node_ptr) == len(edge_ptr) == len(target) + 1:
            raise ValueError(f"{len(target)} graphs but {len(node_ptr)} node and {len(edge_ptr)} edge offsets")

    def __len__(self) -> int:
        return len(self.target)

    @property
    def labels(self) -> Tensor:
        return self.target

    def _gather(self, idx: Tensor):
        """Node ids, edge ids, per-graph node counts and the graph of each node/edge, for `idx`."""
        idx = idx.to(self.target.device)
        n_nodes = (self.node_ptr[idx + 1] - self.node_ptr[idx])
        n_edges = (self.edge_ptr[idx + 1] - self.edge_ptr[idx])
        # One host sync per batch: the output sizes of repeat_interleave.
        total_nodes, total_edges = (int(v) for v in torch.stack([n_nodes.sum(), n_edges.sum()]).tolist())
        graphs = torch.arange(len(idx), device=idx.device)
        node_graph = torch.repeat_interleave(graphs, n_nodes, output_size=total_nodes)
        edge_graph = torch.repeat_interleave(graphs, n_edges, output_size=total_edges)
        node_start = torch.cumsum(n_nodes, 0) - n_nodes  # first node of each graph in the batch
        edge_start = torch.cumsum(n_edges, 0) - n_edges
        node_ids = self.node_ptr[idx][node_graph] + torch.arange(total_nodes, device=idx.device) - node_start[node_graph]
        edge_ids = self.edge_ptr[idx][edge_graph] + torch.arange(total_edges, device=idx.device) - edge_start[edge_graph]
        return node_ids, edge_ids, n_nodes, n_edges, node_graph, edge_graph, node_start

    def take(self, idx: Tensor):
        """((x, edge_index, batch, num_graphs), y) for graphs `idx`, as PyG's Batch would give."""
        node_ids, edge_ids, _, _, node_graph, edge_graph, node_start = self._gather(idx)
        edge_index = self.edge_index[:, edge_ids] + node_start[edge_graph]
        return (self.x[node_ids], edge_index, node_graph, len(idx)), self.target[idx.to(self.target.device)]

    def subset(self, idx: Tensor) -> "GraphSplit":
        node_ids, edge_ids, n_nodes, n_edges, _, _, _ = self._gather(idx)
        ptr = lambda n: torch.cat([n.new_zeros(1), torch.cumsum(n, 0)])
        return GraphSplit(self.x[node_ids], self.edge_index[:, edge_ids], ptr(n_nodes), ptr(n_edges),
                          self.target[idx.to(self.target.device)])

    def to(self, device) -> "GraphSplit":
        return GraphSplit(self.x.to(device), self.edge_index.to(device), self.node_ptr.to(device),
                          self.edge_ptr.to(device), self.target.to(device))


def has_node_labels(dataset) -> bool:
    """PyG keeps node attributes out of x (use_node_attr=False): x holds the one-hot labels only."""
    return "x" in dataset.slices and dataset._data.x is not None and dataset._data.x.shape[1] > 0


def graph_tensors(dataset, node_features: str, name: str = "dataset") -> GraphSplit:
    """Concatenated tensors of a PyG TUDataset (its storage keeps edge ids local to each graph)."""
    data, slices = dataset._data, dataset.slices
    labels = data.y.view(-1).long()
    edge_ptr = slices["edge_index"]
    if has_node_labels(dataset) != (node_features == "labels"):
        allowed = ["labels"] if has_node_labels(dataset) else ["constant", "degree"]
        raise ValueError(f"dataset.node_features={node_features!r}: {name} allows {allowed}")
    if node_features == "labels":
        return GraphSplit(data.x.float(), data.edge_index.long(), slices["x"].long(), edge_ptr.long(), labels)
    counts = getattr(data, "_num_nodes", None)  # PyG keeps per-graph node counts of featureless sets
    if not (isinstance(counts, list) and len(counts) == len(labels)):
        counts = [g.num_nodes for g in dataset]
    counts = torch.tensor(counts, dtype=torch.long)
    node_ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    if node_features == "constant":
        x = torch.ones(int(node_ptr[-1]), 1)
    else:  # degree = number of neighbours: PyG stores each undirected edge once per direction
        edge_graph = torch.repeat_interleave(torch.arange(len(labels)), edge_ptr.diff())
        src = data.edge_index[0] + node_ptr[edge_graph]
        x = torch.bincount(src, minlength=int(node_ptr[-1])).float().view(-1, 1)
    return GraphSplit(x, data.edge_index.long(), node_ptr.long(), edge_ptr.long(), labels)


def generate_folds(labels: Tensor, seed: int, n_folds: int = 10, val_fraction: float = 0.1) -> list[dict]:
    from sklearn.model_selection import StratifiedKFold, train_test_split
    y = labels.numpy()
    folds = []
    for rest, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(y, y):
        train, val = train_test_split(rest, test_size=val_fraction, stratify=y[rest], random_state=seed)
        folds.append({"test": sorted(test.tolist()),
                      "model_selection": [{"train": sorted(train.tolist()), "validation": sorted(val.tolist())}]})
    return folds


def read_folds(cfg: TUConfig, tu_name: str, root: Path, cache: Path, labels: Tensor) -> tuple[list, Path, bool]:
    """(folds, file, generated): the splits file, or folds generated and written to the cache."""
    path = splits_path(cfg, tu_name, root)
    if path is not None and path.is_file():
        return json.loads(path.read_text()), path, False
    if cfg.splits_file:
        raise FileNotFoundError(f"dataset.splits_file={cfg.splits_file}: no such file")
    path = cache / "TUDataset" / "splits" / f"{tu_name}_splits_seed{cfg.split_seed}.json"
    if not path.is_file():
        folds = generate_folds(labels, cfg.split_seed, N_FOLDS)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(folds)))
    return json.loads(path.read_text()), path, True


def load(cfg: TUConfig, data_cfg, device) -> DataBundle:
    check_choice("dataset.node_features", cfg.node_features, NODE_FEATURES)
    from torch_geometric.datasets import TUDataset
    tu_name, root, cache = tu_folder(cfg), Path(data_cfg.root), Path(data_cfg.cache)
    dataset = TUDataset(str(prepare_raw(tu_name, root, cache, bool(data_cfg.download))), tu_name)
    if cfg.node_features == "auto":
        cfg.node_features = "labels" if has_node_labels(dataset) else "degree"
    graphs = graph_tensors(dataset, cfg.node_features, tu_name)

    folds, folds_file, generated = read_folds(cfg, tu_name, root, cache, graphs.target)
    if not 0 <= cfg.fold < len(folds):
        raise ValueError(f"dataset.fold={cfg.fold}: allowed 0..{len(folds) - 1} ({folds_file})")
    fold = folds[cfg.fold]
    parts = {"train": fold["model_selection"][0]["train"], "val": fold["model_selection"][0]["validation"],
             "test": fold["test"]}
    parts = {k: torch.tensor(v, dtype=torch.long) for k, v in parts.items()}
    every = torch.cat(list(parts.values()))
    if len(every) and (every.min() < 0 or every.max() >= len(graphs)):
        raise ValueError(f"{folds_file}: fold {cfg.fold} has indices outside 0..{len(graphs) - 1}")
    if len(torch.unique(every)) != len(every):
        raise ValueError(f"{folds_file}: fold {cfg.fold} train/validation/test overlap")
    train_idx = parts["train"][stratified_indices(graphs.target[parts["train"]], cfg.fraction, cfg.split_seed)]

    graphs = graphs.to(device)
    train, val, test = (graphs.subset(i.to(device)) for i in (train_idx, parts["val"], parts["test"]))
    return DataBundle(
        train=train, val=val, test=test, task="classification",
        info={"num_node_features": graphs.x.shape[1], "num_classes": int(graphs.target.max()) + 1,
              "n_train": len(train), "constant_node_features": cfg.node_features == "constant"},
        splits={"splits_file": str(folds_file), "generated": generated, "fold": cfg.fold,
                "node_features": cfg.node_features,
                "split_seed": cfg.split_seed, "fraction": cfg.fraction, "n_train": len(train),
                "n_val": len(val), "n_test": len(test), "num_graphs": len(graphs)})
