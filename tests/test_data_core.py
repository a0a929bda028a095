"""Embedded data sets, the IDX reader, stratified subsets and device-resident batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from data import load_data
from data.synthetic import SyntheticConfig, generate
from data.tensors import TensorSplit, iterate, stratified_indices, stratified_split
from data.vision import read_idx
from tests.helpers import write_idx, write_mnist_like

CPU = torch.device("cpu")


def data_cfg(root):
    return OmegaConf.create({"root": str(root), "cache": str(root / "cache"), "download": False})


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    array = np.random.default_rng(0).integers(0, 256, (7, 5, 3))
    write_idx(tmp_path / "x-idx3-ubyte", array, compress)
    path = tmp_path / ("x-idx3-ubyte.gz" if compress else "x-idx3-ubyte")
    assert np.array_equal(read_idx(path), array)


def test_idx_rejects_a_truncated_file(tmp_path):
    write_idx(tmp_path / "x", np.zeros((4, 4)), compress=False)
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-3])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "x")


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_loader_on_idx_files(tmp_path, name, folder):
    write_mnist_like(tmp_path, folder, n_train=200, n_test=50)
    b = load_data(OmegaConf.create({"name": name, "val_size": 20}), data_cfg(tmp_path), CPU)
    assert (len(b.train), len(b.val), len(b.test)) == (180, 20, 50)
    x = b.train.inputs[0]
    assert x.shape[1:] == (1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert torch.bincount(b.val.target).tolist() == [2] * 10  # stratified holdout
    assert b.info["in_features"] == 784 and b.info["n_train"] == 180


def test_mnist_missing_files_say_what_and_where(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_data(OmegaConf.create({"name": "mnist"}), data_cfg(tmp_path), CPU)
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "MNIST" / "raw") in message and "data.root" in message


def test_stratified_fraction_keeps_class_proportions():
    labels = torch.arange(1000) % 10
    idx = stratified_indices(labels, 0.05, seed=3)
    assert torch.bincount(labels[idx]).tolist() == [5] * 10
    assert torch.equal(idx, stratified_indices(labels, 0.05, seed=3))  # fixed, recorded split
    assert not torch.equal(idx, stratified_indices(labels, 0.05, seed=4))
    with pytest.raises(ValueError, match="fraction=0"):
        stratified_indices(labels, 0.0, seed=0)


def test_stratified_split_exact_count_and_disjoint():
    labels = torch.tensor([0] * 70 + [1] * 30)
    keep, held = stratified_split(labels, 10, seed=0)
    assert len(held) == 10 and torch.bincount(labels[held]).tolist() == [7, 3]
    assert len(set(keep.tolist()) | set(held.tolist())) == 100


@pytest.mark.parametrize("name, per_class, radius", [("double_moon", 2500, 17), ("spiral", 2500, 14),
                                                     ("spiral_hard", 5000, 14)])
def test_synthetic_sets_match_the_spec(name, per_class, radius):
    x, y = generate(SyntheticConfig(name=name))
    assert x.shape == (2 * per_class, 2) and np.bincount(y).tolist() == [per_class] * 2
    assert np.abs(x).max() < radius
    again, _ = generate(SyntheticConfig(name=name))
    assert np.array_equal(x, again)  # generation seed 0


def test_spiral_arms_are_point_reflections():
    """SPEC B.2: class 1 = -(class 0 formula with an independent draw): same radius law."""
    x, y = generate(SyntheticConfig(name="spiral", noise=0.0))
    r0, r1 = np.linalg.norm(x[y == 0], axis=1), np.linalg.norm(x[y == 1], axis=1)
    assert r0.max() <= 4 * np.pi + 1e-9 and abs(np.median(r0) - np.median(r1)) < 0.5


def test_synthetic_bundle_splits():
    b = load_data(OmegaConf.create({"name": "double_moon"}), None, CPU)
    assert (len(b.train), len(b.val), len(b.test)) == (3600, 400, 1000)  # test 20%, val 10% of rest


def test_batches_are_index_slices_covering_the_split():
    split = TensorSplit(torch.arange(10).float()[:, None], torch.arange(10))
    seen = torch.cat([t for _, t in iterate(split, 3, torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))
    order = [t.tolist() for _, t in iterate(split, 4, shuffle=False)]
    assert order == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
