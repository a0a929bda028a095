"""TU graph loader on tiny raw TU files, and GraphSplit batching against PyG's Batch."""
import json
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Batch
from torch_geometric.datasets import TUDataset
from torch_geometric.utils import degree

from data import load_data
from data.graphs import GraphSplit, generate_folds
from data.tu import TUInputError, check_inputs

CPU = torch.device("cpu")


def write_tu(raw, name, n_graphs=40, node_labels=True, seed=0):
    """Random undirected graphs in the TU text format (1-based node ids, both edge directions)."""
    rng = random.Random(seed)
    raw.mkdir(parents=True, exist_ok=True)
    edges, indicator, node_lab, graph_lab, offset = [], [], [], [], 0
    for g in range(n_graphs):
        n = rng.randint(2, 7)
        pairs = {(i, i + 1) for i in range(n - 1)} | {tuple(sorted(rng.sample(range(n), 2))) for _ in range(n)}
        for i, j in sorted(pairs):
            edges += [(offset + i + 1, offset + j + 1), (offset + j + 1, offset + i + 1)]
        indicator += [g + 1] * n
        node_lab += [rng.randint(1, 3) for _ in range(n)]
        graph_lab.append(g % 2 if node_labels else [-1, 1][g % 2])
        offset += n
    lines = lambda rows: "\n".join(rows) + "\n"
    (raw / f"{name}_A.txt").write_text(lines(f"{i},{j}" for i, j in edges))
    (raw / f"{name}_graph_indicator.txt").write_text(lines(str(g) for g in indicator))
    (raw / f"{name}_graph_labels.txt").write_text(lines(str(y) for y in graph_lab))
    if node_labels:
        (raw / f"{name}_node_labels.txt").write_text(lines(str(v) for v in node_lab))


def two_fold_splits(path, n_graphs=40):
    folds = []
    for k in range(2):
        test = list(range(k, n_graphs, 4))
        rest = [i for i in range(n_graphs) if i not in test]
        folds.append({"test": test, "model_selection": [{"train": rest[4:], "validation": rest[:4]}]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(folds))
    return folds


@pytest.fixture
def nci1_root(tmp_path):
    root = tmp_path / "root"
    write_tu(root / "TUDataset" / "NCI1" / "raw", "NCI1")
    two_fold_splits(root / "TUDataset" / "splits" / "NCI1_splits.json")
    return root


def load(tmp_path, root, **options):
    cfg = OmegaConf.create({"name": "nci1", **options})
    data_cfg = OmegaConf.create({"root": str(root), "cache": str(tmp_path / "cache"), "download": False})
    return load_data(cfg, data_cfg, CPU)


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_nci1_folds_from_file(tmp_path, nci1_root):
    before = files_under(nci1_root)
    b = load(tmp_path, nci1_root, fold=1)
    folds = json.loads((nci1_root / "TUDataset" / "splits" / "NCI1_splits.json").read_text())
    ref = TUDataset(str(tmp_path / "cache" / "TUDataset"), "NCI1")
    assert torch.equal(b.test.target, ref.y[folds[1]["test"]])
    assert torch.equal(b.val.target, ref.y[folds[1]["model_selection"][0]["validation"]])
    assert (len(b.train), len(b.val), len(b.test)) == (26, 4, 10)
    assert b.info == {"num_node_features": 3, "num_classes": 2, "n_train": 26, "constant_node_features": False}
    assert b.splits["fold"] == 1 and not b.splits["generated"]
    assert files_under(nci1_root) == before  # nothing written next to the raw files
    (x, edge_index, batch, num_graphs), y = b.test.take(torch.arange(len(b.test)))
    assert num_graphs == 10 and x.shape[1] == 3 and (x.sum(1) == 1).all()  # one-hot node labels
    assert torch.equal(torch.cat([ref[i].x for i in folds[1]["test"]]), x)


def test_take_matches_pyg_batch(tmp_path, nci1_root):
    b = load(tmp_path, nci1_root, fold=0)
    ref = TUDataset(str(tmp_path / "cache" / "TUDataset"), "NCI1")
    graphs = GraphSplit(b.train.x, b.train.edge_index, b.train.node_ptr, b.train.edge_ptr, b.train.target)
    whole = graphs.subset(torch.arange(len(graphs)))
    train_ids = json.loads((nci1_root / "TUDataset" / "splits" / "NCI1_splits.json").read_text())[0][
        "model_selection"][0]["train"]
    for idx in (torch.tensor([5, 0, 17, 3, 3, 9]), torch.randperm(len(graphs), generator=torch.Generator().manual_seed(1))):
        (x, edge_index, batch, num_graphs), y = whole.take(idx)
        expected = Batch.from_data_list([ref[train_ids[i]] for i in idx.tolist()])
        assert num_graphs == len(idx) and isinstance(num_graphs, int)
        assert torch.equal(x, expected.x) and torch.equal(edge_index, expected.edge_index)
        assert torch.equal(batch, expected.batch) and torch.equal(y, expected.y)


def test_generated_folds_are_stratified_and_cached(tmp_path):
    root = tmp_path / "root"
    write_tu(root / "TUDataset" / "NCI1" / "raw", "NCI1")
    b = load(tmp_path, root, fold=3)
    path = b.splits["splits_file"]
    assert b.splits["generated"] and path.startswith(str(tmp_path / "cache"))
    folds = json.load(open(path))
    assert len(folds) == 10
    assert sorted(i for f in folds for i in f["test"]) == list(range(40))
    for f in folds:
        inner = f["model_selection"][0]
        assert len(set(f["test"]) | set(inner["train"]) | set(inner["validation"])) == 40
        assert len(f["test"]) == 4 and len(inner["validation"]) == 4
    assert torch.bincount(b.test.target).tolist() == [2, 2]
    assert folds == generate_folds(torch.arange(40) % 2, seed=42)
    assert load(tmp_path, root, fold=3).splits["splits_file"] == path


def test_fraction_cache_and_bad_fold(tmp_path, nci1_root, monkeypatch):
    full = load(tmp_path, nci1_root)
    monkeypatch.setattr(TUDataset, "process", lambda self: pytest.fail("cache was not used"))
    part = load(tmp_path, nci1_root, fraction=0.5)
    per_class = torch.bincount(full.train.target).tolist()
    assert torch.bincount(part.train.target).tolist() == [round(c / 2) for c in per_class]
    assert part.info["n_train"] == len(part.train) and torch.equal(part.test.target, full.test.target)
    with pytest.raises(ValueError, match=r"dataset.fold=2: allowed 0..1"):
        load(tmp_path, nci1_root, fold=2)


def test_missing_raw_files_named(tmp_path):
    with pytest.raises(TUInputError) as err:
        load(tmp_path, tmp_path / "empty")
    msg = str(err.value)
    assert "NCI1_A.txt" in msg and "NCI1_graph_indicator.txt" in msg and "data.root=" in msg
    assert str(tmp_path / "empty" / "TUDataset" / "NCI1" / "raw") in msg and "\n" not in msg


@pytest.fixture
def reddit_root(tmp_path):
    root = tmp_path / "root"
    write_tu(root / "TUDataset" / "REDDIT-BINARY" / "raw", "REDDIT-BINARY", node_labels=False)
    return root


def load_reddit(tmp_path, root, **options):
    cfg = OmegaConf.create({"name": "reddit_binary", "node_features": "constant", **options})
    data_cfg = OmegaConf.create({"root": str(root), "cache": str(tmp_path / "cache"), "download": False})
    return load_data(cfg, data_cfg, CPU)


@pytest.mark.parametrize("node_features", ["constant", "degree"])
def test_reddit_node_features(tmp_path, reddit_root, node_features):
    b = load_reddit(tmp_path, reddit_root, node_features=node_features)
    assert b.info["num_node_features"] == 1 and b.info["num_classes"] == 2
    (x, edge_index, batch, _), y = b.train.take(torch.arange(len(b.train)))
    expected = torch.ones(len(x)) if node_features == "constant" else degree(edge_index[0], len(x))
    assert torch.equal(x.view(-1), expected) and set(y.tolist()) == {0, 1}
    assert b.splits["node_features"] == node_features
    assert b.info["constant_node_features"] == (node_features == "constant")


def test_degree_features_read_the_degree_splits_when_present(tmp_path, reddit_root):
    splits = reddit_root / "TUDataset" / "splits"
    constant = two_fold_splits(splits / "REDDIT-BINARY_splits.json")
    assert load_reddit(tmp_path, reddit_root, node_features="degree").splits["splits_file"] == str(
        splits / "REDDIT-BINARY_splits.json")  # no degree file: the common one
    degree_folds = [{"test": f["test"][::-1], "model_selection": f["model_selection"]} for f in constant[::-1]]
    (splits / "degree").mkdir()
    (splits / "degree" / "REDDIT-BINARY_splits.json").write_text(json.dumps(degree_folds))
    b = load_reddit(tmp_path, reddit_root, node_features="degree", fold=0)
    assert b.splits["splits_file"] == str(splits / "degree" / "REDDIT-BINARY_splits.json")
    assert len(b.test) == len(degree_folds[0]["test"])
    assert load_reddit(tmp_path, reddit_root, fold=0).splits["splits_file"] == str(
        splits / "REDDIT-BINARY_splits.json")


def test_node_features_must_fit_the_data_set(tmp_path, nci1_root, reddit_root):
    with pytest.raises(ValueError, match=r"node_features='degree': NCI1 allows \['labels'\]"):
        load(tmp_path, nci1_root, node_features="degree")
    with pytest.raises(ValueError, match=r"node_features='labels': REDDIT-BINARY allows \['constant', 'degree'\]"):
        load_reddit(tmp_path, reddit_root, node_features="labels")
    with pytest.raises(ValueError, match=r"dataset.node_features='ones'"):
        load_reddit(tmp_path, reddit_root, node_features="ones")


def load_tu(tmp_path, root, tu_name, **options):
    cfg = OmegaConf.create({"name": "tu", "tu_name": tu_name, "node_features": "auto", **options})
    data_cfg = OmegaConf.create({"root": str(root), "cache": str(tmp_path / "cache"), "download": False})
    return load_data(cfg, data_cfg, CPU)


def test_any_tu_name_auto_features(tmp_path):
    """dataset=tu reads any folder: labels one-hot when the set has them, else node degree."""
    root = tmp_path / "root"
    write_tu(root / "TUDataset" / "TOY-LABELLED" / "raw", "TOY-LABELLED", n_graphs=30, seed=1)
    write_tu(root / "TUDataset" / "TOY-PLAIN" / "raw", "TOY-PLAIN", n_graphs=30, node_labels=False, seed=2)
    labelled = load_tu(tmp_path, root, "TOY-LABELLED", fold=9)
    assert labelled.splits["node_features"] == "labels" and labelled.info["num_node_features"] == 3
    assert labelled.splits["generated"] and len(labelled.test) == 3
    plain = load_tu(tmp_path, root, "TOY-PLAIN")
    assert plain.splits["node_features"] == "degree" and plain.info["num_node_features"] == 1
    (x, edge_index, _, _), _ = plain.train.take(torch.arange(len(plain.train)))
    assert torch.equal(x.view(-1), degree(edge_index[0], len(x)))
    assert load_tu(tmp_path, root, "TOY-PLAIN", node_features="constant").info["constant_node_features"]


def test_node_attributes_alone_are_not_labels(tmp_path):
    """A set with _node_attributes.txt but no node labels: PyG drops the attributes from x, so
    auto falls back to degree features (not an empty feature matrix)."""
    root = tmp_path / "root"
    raw = root / "TUDataset" / "ATTR" / "raw"
    write_tu(raw, "ATTR", n_graphs=20, node_labels=False)
    n_nodes = len((raw / "ATTR_graph_indicator.txt").read_text().split())
    (raw / "ATTR_node_attributes.txt").write_text("".join(f"{i * 0.5}, 1.0\n" for i in range(n_nodes)))
    b = load_tu(tmp_path, root, "ATTR")
    assert b.splits["node_features"] == "degree" and b.info["num_node_features"] == 1


def test_splits_file_is_used_for_any_tu_name(tmp_path):
    root = tmp_path / "root"
    write_tu(root / "TUDataset" / "TOY" / "raw", "TOY")
    folds = two_fold_splits(root / "TUDataset" / "splits" / "TOY_splits.json")
    b = load_tu(tmp_path, root, "TOY", fold=1)
    assert not b.splits["generated"] and len(b.test) == len(folds[1]["test"])


def test_check_inputs_counts_a_custom_splits_file_and_downloads_nothing(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_tu(root / "TUDataset" / "TOY" / "raw", "TOY")
    splits = two_fold_splits(tmp_path / "my_splits.json")
    data_cfg = OmegaConf.create({"root": str(root), "cache": str(tmp_path / "cache"), "download": True})
    cfg = lambda **o: OmegaConf.create({"name": "tu", "tu_name": "TOY", "node_features": "auto", "fold": 0,
                                        "splits_file": str(tmp_path / "my_splits.json"), **o})
    monkeypatch.setattr("data.tu.fetch_raw", lambda *a: pytest.fail("files are present: no download"))
    check_inputs(cfg(fold=len(splits) - 1), data_cfg)
    with pytest.raises(TUInputError, match=r"dataset.fold=2: allowed 0..1"):
        check_inputs(cfg(fold=2), data_cfg)
    with pytest.raises(TUInputError, match=r"no such file"):
        check_inputs(cfg(splits_file=str(tmp_path / "none.json")), data_cfg)


def test_download_unpacks_the_tu_zip_into_the_cache(tmp_path, monkeypatch):
    """data.download=true: <NAME>.zip (its entries under <NAME>/) becomes <cache>/TUDataset/<NAME>/raw/;
    a failed download leaves no folder behind and names the files."""
    import shutil
    import torch_geometric.data

    write_tu(tmp_path / "zipped" / "TOY", "TOY")
    archive = shutil.make_archive(str(tmp_path / "TOY"), "zip", tmp_path / "zipped")

    def fake_download(url, folder, log=True):
        assert url.endswith("/TOY.zip")
        return shutil.copy(archive, Path(folder).mkdir(parents=True, exist_ok=True) or folder)

    monkeypatch.setattr(torch_geometric.data, "download_url", fake_download)
    data_cfg = OmegaConf.create({"root": str(tmp_path / "none"), "cache": str(tmp_path / "cache"), "download": True})
    cfg = OmegaConf.create({"name": "tu", "tu_name": "TOY", "node_features": "auto", "fold": 0, "splits_file": None})
    check_inputs(cfg, data_cfg)
    assert (tmp_path / "cache" / "TUDataset" / "TOY" / "raw" / "TOY_A.txt").is_file()
    assert len(load_data(cfg, data_cfg, CPU).test) == 4

    def offline(url, folder, log=True):
        Path(folder).mkdir(parents=True, exist_ok=True)
        raise OSError("network unreachable")

    monkeypatch.setattr(torch_geometric.data, "download_url", offline)
    with pytest.raises(TUInputError, match=r"OTHER_A.txt.*download of OTHER failed: OSError"):
        check_inputs(OmegaConf.merge(cfg, {"tu_name": "OTHER"}), data_cfg)
    assert not (tmp_path / "cache" / "TUDataset" / "OTHER").exists()
